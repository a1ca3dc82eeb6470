r"""Classification metrics beside top-1 accuracy: top-k accuracy, macro-averaged F1 and balanced accuracy.

Plain functions over host arrays, shared by the continual and unlearning reports. Every value is in percent, like
every accuracy those reports give (scikit-learn returns the same numbers as fractions in [0, 1]). With
:math:`y_i` the true label of row i, :math:`\hat y_i` the predicted one and :math:`s_{ij}` the score of column j,

.. math::
    \text{top-}k = \frac{100}{n} \sum_i \big[\mathrm{rank}_i(y_i) < k\big], \qquad
    F_1^{\text{macro}} = \frac{100}{|K|} \sum_{c \in K} \frac{2\,TP_c}{2\,TP_c + FP_c + FN_c}, \qquad
    \text{balanced} = \frac{100}{|L|} \sum_{c \in L} \frac{TP_c}{TP_c + FN_c},

where :math:`\mathrm{rank}_i(c)` counts the columns scoring higher than c's (ties: the lower column first, as
``argmax``), K is the class set of F1 (by default every class among the labels or the predictions) and L the
classes present among the labels.
"""

from __future__ import annotations

import numpy as np

from analytic.errors import InputError

__all__ = ["balanced_accuracy", "f1_macro", "top_k_accuracy"]


def top_k_accuracy(labels, scores, *, k: int = 5, class_ids=None) -> float:
    r"""Share (percent) of rows whose true class is among the k highest-scoring columns.

    .. math::
        \text{top-}k = \frac{100}{n} \sum_i \big[\mathrm{rank}_i(y_i) < k\big], \qquad
        \mathrm{rank}_i(c) = \#\{j : s_{ij} > s_{ic}\} + \#\{j < c : s_{ij} = s_{ic}\}

    Ties are broken toward the lower column, as ``argmax`` does, so ``k = 1`` is the accuracy of
    ``class_ids[argmax(scores)]`` (scikit-learn's ``top_k_accuracy_score`` breaks ties toward the higher column).
    With ``k`` at least the number of columns every label with a column is within the top k: the result is 100
    when every label has one (scikit-learn's convention; it warns that the score is then meaningless). A label with
    no column (a class the model has no output for) is never within the top k.

    Args:
      labels: (n,) true class ids.
      scores: (n, m) class scores, column j for class ``class_ids[j]``; ``-inf`` marks a class never to predict.
      k: how many top columns count as a hit (≥ 1).
      class_ids: (m,) distinct class id of each column (default ``0 … m−1``).

    Returns:
      Top-k accuracy in percent.

    Raises:
      InputError: no rows, mismatched shapes, k < 1, repeated class ids, or NaN scores.

    Example:
      >>> top_k_accuracy([0, 2], [[0.9, 0.5, 0.1], [0.2, 0.7, 0.1]], k=2)
      50.0
    """
    y = _labels(labels)
    s = np.asarray(scores)
    if s.ndim != 2 or s.shape[0] != y.size or s.shape[1] == 0:
        raise InputError(f"scores must be (n, m) with n = {y.size} labels and m ≥ 1, got shape {s.shape}")
    if np.isnan(s).any():
        raise InputError("scores contain NaN: the ranking is undefined")
    if not (isinstance(k, (int, np.integer)) and k >= 1):
        raise InputError(f"k must be a positive integer, got {k!r}")
    columns, present = _columns(y, s.shape[1], class_ids)
    rows = np.arange(y.size)
    own = s[rows, columns][:, None]
    before = np.arange(s.shape[1])[None, :] < columns[:, None]
    rank = np.sum(s > own, axis=1) + np.sum((s == own) & before, axis=1)
    return 100.0 * float(np.mean(present & (rank < k)))


def f1_macro(labels, predictions, *, class_ids=None) -> float:
    r"""Unweighted mean over classes of the F1 score (percent).

    .. math::
        F_1^{\text{macro}} = \frac{100}{|K|} \sum_{c \in K} \frac{2\,TP_c}{2\,TP_c + FP_c + FN_c}

    A class that is predicted but never true, or true but never predicted, scores 0; a class of ``class_ids`` that
    is neither true nor predicted also scores 0 (scikit-learn's ``zero_division`` default), so it lowers the mean.

    Args:
      labels: (n,) true class ids.
      predictions: (n,) predicted class ids.
      class_ids: the classes K to average over (default: every class among ``labels`` or ``predictions``, as
        scikit-learn's ``f1_score(average="macro")``).

    Returns:
      Macro F1 in percent.

    Raises:
      InputError: no rows, or mismatched shapes.

    Example:
      >>> round(f1_macro([0, 0, 1, 1], [0, 1, 1, 1]), 4)  # F1 = 2/3 for class 0 and 4/5 for class 1
      73.3333
    """
    y, p = _pair(labels, predictions)
    classes = np.union1d(y, p) if class_ids is None else np.unique(np.asarray(class_ids))
    true_positive = np.array([np.sum((y == c) & (p == c)) for c in classes], np.float64)
    true_count = np.array([np.sum(y == c) for c in classes], np.float64)
    predicted_count = np.array([np.sum(p == c) for c in classes], np.float64)
    denominator = true_count + predicted_count  # 2 TP + FP + FN
    f1 = np.divide(2.0 * true_positive, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    return 100.0 * float(np.mean(f1))


def balanced_accuracy(labels, predictions) -> float:
    r"""Mean over the true classes of each class's recall (percent).

    .. math::
        \text{balanced} = \frac{100}{|L|} \sum_{c \in L} \frac{TP_c}{TP_c + FN_c}, \qquad
        L = \{c : c \text{ is some } y_i\}

    Predicted classes that never occur among the labels lower only the recall of the rows they were predicted for
    (as scikit-learn's ``balanced_accuracy_score``, not adjusted for chance).

    Args:
      labels: (n,) true class ids.
      predictions: (n,) predicted class ids.

    Returns:
      Balanced accuracy in percent.

    Raises:
      InputError: no rows, or mismatched shapes.

    Example:
      >>> balanced_accuracy([0, 0, 0, 1], [0, 0, 0, 0])  # recall 1 for class 0, 0 for class 1
      50.0
    """
    y, p = _pair(labels, predictions)
    classes = np.unique(y)
    recall = [np.mean(p[y == c] == c) for c in classes]
    return 100.0 * float(np.mean(recall))


def _labels(labels) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0:
        raise InputError(f"labels must be a non-empty 1-D array, got shape {y.shape}")
    return y


def _pair(labels, predictions) -> tuple[np.ndarray, np.ndarray]:
    y, p = _labels(labels), np.asarray(predictions)
    if p.shape != y.shape:
        raise InputError(f"predictions have shape {p.shape}, labels {y.shape}: one prediction per label")
    return y, p


def _columns(y: np.ndarray, n_columns: int, class_ids) -> tuple[np.ndarray, np.ndarray]:
    """Each label's column (0 where it has none) and whether it has one."""
    ids = np.arange(n_columns) if class_ids is None else np.asarray(class_ids)
    if ids.shape != (n_columns,) or np.unique(ids).size != n_columns:
        raise InputError(f"class_ids must be {n_columns} distinct ids (one per score column), got shape {ids.shape}")
    order = np.argsort(ids, kind="stable")
    found = np.minimum(np.searchsorted(ids[order], y), n_columns - 1)
    present = ids[order][found] == y
    return np.where(present, order[found], 0), present
