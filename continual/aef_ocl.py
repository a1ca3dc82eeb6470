r"""AEF-OCL: analytic exemplar-free online continual learning with a pseudo-feature generator (the AEF-OCL paper).

A ridge head on the (expanded) features learns every real batch exactly (:mod:`continual.acil`). Against class
imbalance, each class c also keeps running backbone-space moments :math:`\sum z` and :math:`\sum z^2` (float64),
giving :math:`\mu_c` and a diagonal :math:`\sigma_c^2`. After each batch, the head used for prediction is solved on
the real statistics *plus* a temporary set of pseudo-features,

.. math::
    \tilde z \sim \mathcal N(\mu_c, \mathrm{diag}\,\sigma_c^2), \quad
    \#\{\tilde z \text{ of class } c\} = \min\big(\max_j n_j - n_c,\ \text{cap}\big),

pushed through φ; they are never added to the kept statistics, so the next real batch starts from the real data only.
Draws are seeded by ``(seed, number of real samples seen)``: the head after a phase depends on the data seen so far,
not on how it was cut into phases, so trained on the same rows in one phase it draws the same pseudo-features.
"""


from typing import NamedTuple

import numpy as np

import analytic
from continual.acil import ridge_predict, ridge_scores
from continual.learner import Learner, embed, make_learner


class GeneratorModel(NamedTuple):
    """State of AEF-OCL.

    Attributes:
      expansion: fixed expansion layer or ``None``.
      statistics: statistics of the *real* expanded features.
      feature_sums: (C, d_in) per declared class :math:`\\sum z` in backbone space, float64.
      square_sums: (C, d_in) per declared class :math:`\\sum z^2`, float64.
      head: the head solved with the temporary pseudo-features.
    """

    expansion: object
    statistics: analytic.Statistics
    feature_sums: np.ndarray
    square_sums: np.ndarray
    head: analytic.Head


def aef_ocl(classes, *, expansion=None, ridge: float = 0.1, seed: int = 0, pseudo_cap: int | None = None,
            strict: bool = False) -> Learner:
    r"""AEF-OCL learner: a ridge head on the real statistics plus temporary pseudo-features of the rarer classes.

    After each batch the head is solved on the real statistics plus, for each seen class c, pseudo-features
    :math:`\tilde z \sim \mathcal N(\mu_c, \mathrm{diag}\,\sigma_c^2)` (:math:`\min(\max_j n_j - n_c, \text{cap})` of
    them) pushed through φ; they are never kept (REFERENCE.md §3, AEF-OCL; module docstring):

    .. math::
        W = \big(G + \tilde G + \gamma I\big)^{-1} \big(B + \tilde B\big), \qquad
        \tilde G = \phi(\tilde Z)^\top \phi(\tilde Z), \quad \tilde B = \phi(\tilde Z)^\top \tilde Y.

    Args:
      classes: declared class ids.
      expansion: fixed expansion layer or ``None``.
      ridge: γ.
      seed: seed of the pseudo-feature draws.
      pseudo_cap: at most this many pseudo-features per class and phase (``None``: the full deficit).
      strict: strict class-incremental learning (online streams usually revisit classes: default False).

    Returns:
      A :class:`~continual.Learner` named ``"AEF-OCL"``, with ``scores`` (the balanced head's outputs, one column
      per learned class).

    Raises:
      InputError: ``classes`` is empty. The learner's ``learn`` raises :class:`~analytic.InputError` for a bad batch
        (empty, NaN/Inf, labels outside ``classes``) and, with ``strict``, :class:`~analytic.IntegrityError` for a
        class finished in an earlier phase; its ``predict`` raises :class:`~analytic.IntegrityError` before the
        first batch.

    Example:
      Three classes in two phases, the last one with only 5 samples; the head sees 15 pseudo-features of class 2,
      the kept statistics only the real rows:

      >>> rng = np.random.default_rng(0)
      >>> y = np.repeat(np.arange(3), 20)
      >>> x = rng.normal(size=(60, 4)) + 4.0 * np.eye(3, 4)[y]
      >>> learner = continual.aef_ocl(np.arange(3))
      >>> state = learner.learn(learner.init(), x[y < 2], y[y < 2])
      >>> state = learner.learn(state, x[y == 2][:5], y[y == 2][:5])
      >>> state.learned_classes, learner.predict(state, x[::20])
      (array([0, 1, 2]), array([0, 1, 2]))
      >>> state.model.statistics.class_counts
      array([20, 20,  5])
    """
    declared = np.unique(np.asarray(classes, np.int64))

    def update(model, features, labels, learned_classes, phase):
        x = embed(expansion, features)
        z = np.asarray(features, np.float64)
        if model is None:
            statistics = analytic.init_statistics(x.shape[1])
            sums, squares = np.zeros((2, declared.size, z.shape[1]))
        else:
            statistics, sums, squares = model.statistics, model.feature_sums, model.square_sums
        statistics = analytic.accumulate(statistics, x, labels)
        positions = np.searchsorted(declared, labels)
        sums, squares = sums.copy(), squares.copy()
        np.add.at(sums, positions, z)
        np.add.at(squares, positions, z * z)
        balanced = statistics
        pseudo_z, pseudo_labels = pseudo_features(statistics, sums, squares, declared, seed, pseudo_cap)
        if pseudo_labels.size:
            balanced = analytic.accumulate(statistics, embed(expansion, pseudo_z.astype(z.dtype)), pseudo_labels)
        return GeneratorModel(expansion=expansion, statistics=statistics, feature_sums=sums, square_sums=squares,
                              head=analytic.solve(balanced, ridge))

    return make_learner("AEF-OCL", classes, strict=strict, update=update, predict=ridge_predict,
                        scores=ridge_scores)


def pseudo_features(statistics: analytic.Statistics, sums: np.ndarray, squares: np.ndarray, declared: np.ndarray,
                    seed: int, cap: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Draw each seen class's deficit :math:`\\max_j n_j - n_c` (capped) from
    :math:`N(\\mu_c, \\mathrm{diag}\\,\\sigma_c^2)`, seeded by ``(seed, samples seen)``."""
    counts = statistics.class_counts
    deficits = counts.max() - counts
    if cap is not None:
        deficits = np.minimum(deficits, cap)
    rng = np.random.default_rng((seed, int(statistics.count)))
    draws, labels = [], []
    for class_id, count, deficit in zip(statistics.class_ids, counts, deficits):
        if deficit == 0:
            continue
        row = np.searchsorted(declared, class_id)
        mean = sums[row] / count
        std = np.sqrt(np.maximum(squares[row] / count - mean * mean, 0.0))
        draws.append(mean + std * rng.standard_normal((int(deficit), mean.size)))
        labels.append(np.full(int(deficit), class_id, np.int64))
    if not draws:
        return np.zeros((0, sums.shape[1])), np.zeros(0, np.int64)
    return np.concatenate(draws), np.concatenate(labels)
