r"""The unlearning metrics of the field (the field's evaluation conventions), and output-level agreement with the retrained model.

Classification metrics, all in percent:

* UA (unlearning accuracy) = 100 − accuracy on the forget set; RA = accuracy on the retained training set;
  TA = accuracy on the test set (the forgotten classes removed for class-wise forgetting).
* MIA-efficacy: an SVC(C=3, gamma='auto', kernel='rbf') is fitted on one feature per sample, the true-class softmax
  confidence, with members = retained training samples (as many as the non-members) and non-members = test
  samples; the score is the share of forget samples it calls non-members.
* Avg. Gap = mean over {UA, MIA, RA, TA} of :math:`|m - m_{\text{retrain}}|`.
* Beside TA, on the same test set: top-k accuracy, macro F1 and balanced accuracy (:func:`top_k_accuracy`,
  :func:`f1_macro`, :func:`balanced_accuracy`, from :mod:`analytic.metrics`, which the continual reports share).

Output-level agreement with the retrained model: relative Frobenius weight error
:math:`\|W - W_r\|_F / \|W_r\|_F`, max |logit difference|, argmax agreement and mean
:math:`\mathrm{KL}(p_r \,\|\, p)` of the softmax outputs on the test set.
"""

from __future__ import annotations

import numpy as np

from analytic.metrics import balanced_accuracy, f1_macro, top_k_accuracy

__all__ = ["GAP_METRICS", "accuracy", "argmax_agreement", "avg_gap", "balanced_accuracy", "f1_macro",
           "max_logit_difference", "mean_kl", "mia_efficacy", "relative_weight_error", "softmax",
           "top_k_accuracy", "true_class_confidence"]

GAP_METRICS = ("UA", "MIA", "RA", "TA")


def accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    r"""Share of ``predicted == labels``, in percent: :math:`\frac{100}{n} \sum_i [\hat y_i = y_i]`.

    The UA, RA and TA of the field are this on the forget, retained and test sets (REFERENCE.md §5).

    Args:
      predicted: (n,) predicted class ids.
      labels: (n,) true class ids.

    Returns:
      The accuracy in percent (NaN for n = 0).

    Example:
      >>> accuracy(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2]))
      75.0
    """
    return 100.0 * float(np.mean(np.asarray(predicted) == np.asarray(labels)))


def softmax(logits: np.ndarray) -> np.ndarray:
    r"""Row-wise softmax in float64: :math:`p_{ij} = e^{z_{ij}} / \sum_k e^{z_{ik}}` (computed after subtracting
    each row's maximum, so large logits do not overflow).

    Args:
      logits: (n, m) scores.

    Returns:
      (n, m) float64 probabilities, each row summing to 1.

    Example:
      >>> softmax(np.array([[0.0, 0.0], [1000.0, 1000.0 + np.log(3.0)]])).round(3)
      array([[0.5 , 0.5 ],
             [0.25, 0.75]])
    """
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def true_class_confidence(logits: np.ndarray, labels: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
    """Softmax probability of each sample's true class; 0 for a class the model has no output for.

    This is the one feature per sample of the MIA (REFERENCE.md §5); a class dropped by class-wise forgetting has
    no column, hence confidence 0.

    Args:
      logits: (n, m) scores over the model's output columns.
      labels: (n,) true class ids.
      class_ids: (m,) sorted class id of each column.

    Returns:
      (n,) float64 confidences in [0, 1].

    Example:
      >>> logits = np.array([[0.0, np.log(3.0)], [0.0, 0.0]])
      >>> true_class_confidence(logits, np.array([7, 5]), class_ids=np.array([3, 7])).round(3)
      array([0.75, 0.  ])
    """
    probabilities = softmax(logits)
    position = np.searchsorted(class_ids, labels)
    position = np.minimum(position, class_ids.size - 1)
    present = class_ids[position] == labels
    return np.where(present, probabilities[np.arange(len(labels)), position], 0.0)


def mia_efficacy(retain_confidence, test_confidence, forget_confidence, *, max_samples: int | None = None,
                 seed: int = 0) -> float:
    r"""Share (percent) of forget samples an SVC on true-class confidence calls non-members (the field's evaluation conventions).

    Members are retained samples, as many as the non-members (test samples); ``max_samples`` caps both sides (a
    seeded subset) to bound the SVC's quadratic fitting time.

    .. math::
        \mathrm{MIA} = \frac{100}{|D_f|} \sum_{x \in D_f} [\mathrm{SVC}(\mathrm{conf}(x)) = \text{non-member}]

    with ``SVC(C=3, gamma="auto", kernel="rbf")`` fitted on the confidences of members (label 1) and non-members
    (label 0) (REFERENCE.md §5).

    Args:
      retain_confidence: (n_r,) true-class confidences of the retained training samples (members).
      test_confidence: (n_t,) those of the test samples (non-members).
      forget_confidence: (n_f,) those of the forget samples, the attack's targets.
      max_samples: cap on the non-members (and so on the members); ``None``: all test samples.
      seed: the seed of the member and non-member subsets.

    Returns:
      The share of forget samples called non-members, in percent.

    Raises:
      ValueError: the members or the non-members are empty (the SVC needs both).

    Example:
      >>> rng = np.random.default_rng(0)
      >>> retained, test = rng.uniform(0.9, 1.0, 100), rng.uniform(0.2, 0.6, 50)
      >>> mia_efficacy(retained, test, rng.uniform(0.2, 0.6, 20)), mia_efficacy(retained, test, retained[:20])
      (100.0, 0.0)
    """
    from sklearn.svm import SVC

    rng = np.random.default_rng(seed)
    test_confidence = np.asarray(test_confidence)
    if max_samples is not None and test_confidence.size > max_samples:
        test_confidence = rng.choice(test_confidence, max_samples, replace=False)
    members = rng.choice(np.asarray(retain_confidence), min(test_confidence.size, len(retain_confidence)),
                         replace=False)
    inputs = np.concatenate([members, test_confidence])[:, None]
    targets = np.concatenate([np.ones(members.size), np.zeros(test_confidence.size)])
    attack = SVC(C=3, gamma="auto", kernel="rbf").fit(inputs, targets)
    return 100.0 * float(np.mean(attack.predict(np.asarray(forget_confidence)[:, None]) == 0))


def avg_gap(metrics: dict, reference: dict) -> float:
    r"""Mean over UA, MIA, RA, TA of the absolute difference to the retrained model's value:
    :math:`\frac14 \sum_{m \in \{UA, MIA, RA, TA\}} |m - m_{\text{retrain}}|` (REFERENCE.md §5).

    Args:
      metrics: a method's scores (e.g. :func:`unlearning.methods.evaluate`); other keys are ignored.
      reference: the retrained model's scores.

    Returns:
      The Avg. Gap, in percentage points.

    Raises:
      KeyError: one of UA, MIA, RA, TA is missing.

    Example:
      >>> avg_gap({"UA": 10.0, "MIA": 20.0, "RA": 90.0, "TA": 80.0}, {"UA": 12.0, "MIA": 16.0, "RA": 90.0, "TA": 82.0})
      2.0
    """
    return float(np.mean([abs(metrics[name] - reference[name]) for name in GAP_METRICS]))


def relative_weight_error(weights: np.ndarray, reference: np.ndarray) -> float:
    """:math:`\\|W - W_r\\|_F / \\|W_r\\|_F` (NaN when the shapes differ).

    The weight error of an exact method against retraining (REFERENCE.md §5).

    Args:
      weights: (d, m) weights W.
      reference: (d, m) weights :math:`W_r` of the retrained model.

    Returns:
      The relative Frobenius error, or NaN when the shapes differ.

    Example:
      >>> relative_weight_error(np.array([[3.0, 4.5]]), np.array([[3.0, 4.0]]))
      0.1
      >>> relative_weight_error(np.ones((2, 3)), np.ones((2, 2)))
      nan
    """
    if np.shape(weights) != np.shape(reference):
        return float("nan")
    reference = np.asarray(reference, np.float64)
    return float(np.linalg.norm(np.asarray(weights, np.float64) - reference) / np.linalg.norm(reference))


def max_logit_difference(logits: np.ndarray, reference: np.ndarray) -> float:
    r"""Largest absolute difference between two models' outputs (NaN when the shapes differ):
    :math:`\max_{i,j} |z_{ij} - z^r_{ij}|` (REFERENCE.md §5).

    Args:
      logits: (n, m) scores of one model.
      reference: (n, m) scores of the other (the retrained model).

    Returns:
      The largest absolute difference, or NaN when the shapes differ.

    Example:
      >>> max_logit_difference(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[1.0, 2.5], [3.0, 3.75]]))
      0.5
    """
    if np.shape(logits) != np.shape(reference):
        return float("nan")
    return float(np.max(np.abs(np.asarray(logits, np.float64) - reference)))


def argmax_agreement(predicted: np.ndarray, reference: np.ndarray) -> float:
    """Share (percent) of samples on which two models predict the same class (REFERENCE.md §5).

    Args:
      predicted: (n,) class ids predicted by one model.
      reference: (n,) class ids predicted by the other (the retrained model).

    Returns:
      The agreement in percent.

    Example:
      >>> argmax_agreement(np.array([0, 2, 2, 1]), np.array([0, 2, 1, 1]))
      75.0
    """
    return accuracy(predicted, reference)


def mean_kl(logits: np.ndarray, reference: np.ndarray) -> float:
    """Mean :math:`\\mathrm{KL}(p_r \\| p)` between the softmax outputs (NaN when the shapes differ).

    .. math::
        \\frac{1}{n} \\sum_i \\sum_j p^r_{ij} \\log \\frac{p^r_{ij}}{p_{ij}}, \\qquad
        p = \\mathrm{softmax}(z), \\; p^r = \\mathrm{softmax}(z^r)

    (REFERENCE.md §5); rounding below zero is clipped to 0.

    Args:
      logits: (n, m) scores of the model checked.
      reference: (n, m) scores of the reference (the retrained model).

    Returns:
      The mean KL divergence in nats, or NaN when the shapes differ.

    Example:
      >>> reference = np.array([[0.0, np.log(3.0)]])  # p_r = (1/4, 3/4)
      >>> round(mean_kl(np.zeros((1, 2)), reference), 4), mean_kl(reference, reference)
      (0.1308, 0.0)
    """
    if np.shape(logits) != np.shape(reference):
        return float("nan")
    p_ref, p = softmax(reference), softmax(logits)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p_ref > 0, p_ref * (np.log(p_ref) - np.log(np.maximum(p, 1e-300))), 0.0)
    return max(float(np.mean(terms.sum(axis=1))), 0.0)  # KL ≥ 0; clip rounding below zero
