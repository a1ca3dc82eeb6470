r"""AIR and G-AIR: the analytic imbalance rectifier, a class-balanced weighted ridge head (the AIR paper).

.. math::
    \min_W \sum_i \pi_{y_i} \|y_i - x_i W\|^2 + \gamma \|W\|^2
    \;\Rightarrow\; W = \Big(\sum_c \pi_c A_c + \gamma I\Big)^{-1} B\, \mathrm{diag}(\pi),
    \qquad A_c = X_c^\top X_c, \quad \pi_c = \frac{C / n_c}{\sum_{j} 1/n_j}

over the C classes seen so far (so :math:`\sum_c \pi_c = C`). The weights π change whenever a count grows, so the
per-class Grams :math:`A_c` must be kept: C·d² numbers. Two storages:

``"full"``
    the core's per-class Grams (``init_statistics(class_grams=True)``): float64, d² per class, as the reference code.
``"packed32"``
    the upper triangle of each :math:`A_c` packed into d(d+1)/2 float32 numbers — 4× less memory — with the weighted
    Gram assembled and solved in float64. Relative weight error against ``"full"`` measured at 5e-6 to 1.6e-5
    (64-d features, 10 classes in 5 phases) and 5e-5 to 1.4e-4 on offset, badly scaled 256-d pooled-like features —
    largest in the first phase, shrinking as phases add up — instead of ~1e-13 (float32 rounding of A_c).

G-AIR is the same head on generalized streams (classes reappear).
"""


from typing import NamedTuple

import numpy as np

import analytic
from analytic.internal import factorize_matrix, pack_upper, unpack_upper
from continual.acil import ridge_predict, ridge_scores
from continual.learner import Learner, embed, make_learner

STORAGES = ("full", "packed32")


class RectifierModel(NamedTuple):
    """State of AIR.

    Attributes:
      expansion: fixed expansion layer or ``None``.
      statistics: :class:`analytic.Statistics` (B, counts; per-class Grams too with ``"full"`` storage).
      packed_grams: (m, d(d+1)/2) float32 packed upper triangles of :math:`A_c` (``"packed32"``), else ``None``.
      head: the solved weighted :class:`analytic.Head`.
    """

    expansion: object
    statistics: analytic.Statistics
    packed_grams: np.ndarray | None
    head: analytic.Head


def balancing_weights(class_counts) -> np.ndarray:
    r""":math:`\pi_c = (C / n_c) / \sum_j (1/n_j)` over classes with samples (sums to C).

    The class-balancing weights of AIR (REFERENCE.md §3: :math:`\pi_c \propto 1/n_c`, normalised so that the sum
    over the C seen classes is C).

    Args:
      class_counts: (C,) positive sample counts :math:`n_c` of the seen classes.

    Returns:
      (C,) float64 weights :math:`\pi_c` (all 1 for balanced classes).

    Example:
      >>> continual.balancing_weights([10, 30])
      array([1.5, 0.5])
      >>> round(float(continual.balancing_weights([3, 5, 7, 9]).sum()), 12)
      4.0
    """
    counts = np.asarray(class_counts, np.float64)
    inverse = 1.0 / counts
    return counts.size * inverse / inverse.sum()


def air(classes, *, expansion=None, ridge: float = 0.1, storage: str = "full", strict: bool = True,
        name: str | None = None) -> Learner:
    r"""AIR learner (class-balanced ridge); ``strict=False`` is G-AIR.

    Each phase re-solves the class-balanced weighted ridge on every sample seen (REFERENCE.md §3, AIR)

    .. math::
        W = \Big(\sum_c \pi_c A_c + \gamma I\Big)^{-1} B\, \mathrm{diag}(\pi), \qquad A_c = X_c^\top X_c,

    with :math:`\pi` from :func:`balancing_weights`.

    Args:
      classes: declared class ids.
      expansion: fixed expansion layer or ``None``.
      ridge: γ.
      storage: ``"full"`` (float64 d² per class) or ``"packed32"`` (float32 upper triangle, 4× smaller).
      strict: strict class-incremental learning.
      name: display name (default ``"AIR"``, with the storage appended when it is not ``"full"``).

    Returns:
      A :class:`~continual.Learner` with ``scores`` (the weighted ridge outputs, one column per learned class).

    Raises:
      InputError: ``storage`` is not one of ``"full"``, ``"packed32"``, or ``classes`` is empty. The learner's
        ``learn`` raises :class:`~analytic.InputError` for a bad phase (empty, NaN/Inf, labels outside ``classes``)
        and, with ``strict``, :class:`~analytic.IntegrityError` for a class finished in an earlier phase; its
        ``predict`` raises :class:`~analytic.IntegrityError` before the first phase.

    Example:
      Three classes in two phases, the last one with only 5 samples (rebalanced by π):

      >>> rng = np.random.default_rng(0)
      >>> y = np.repeat(np.arange(3), 20)
      >>> x = rng.normal(size=(60, 4)) + 4.0 * np.eye(3, 4)[y]
      >>> learner = continual.air(np.arange(3))
      >>> state = learner.learn(learner.init(), x[y < 2], y[y < 2])
      >>> state = learner.learn(state, x[y == 2][:5], y[y == 2][:5])
      >>> state.learned_classes, learner.predict(state, x[::20])
      (array([0, 1, 2]), array([0, 1, 2]))
      >>> continual.balancing_weights(state.model.statistics.class_counts)
      array([0.5, 0.5, 2. ])
    """
    if name is None:
        name = "AIR" if storage == "full" else f"AIR ({storage})"
    if storage not in STORAGES:
        raise analytic.InputError(f"storage must be one of {STORAGES}, got {storage!r}")

    def update(model, features, labels, learned_classes, phase):
        x = embed(expansion, features)
        if model is None:
            statistics = analytic.init_statistics(x.shape[1], class_grams=storage == "full")
            packed = np.zeros((0, x.shape[1] * (x.shape[1] + 1) // 2), np.float32) if storage == "packed32" else None
        else:
            statistics, packed = model.statistics, model.packed_grams
        before = statistics.class_ids
        statistics = analytic.accumulate(statistics, x, labels)
        if packed is not None:
            packed = _add_packed_grams(packed, before, statistics.class_ids, x, labels)
        head = weighted_head(statistics, packed, ridge)
        return RectifierModel(expansion=expansion, statistics=statistics, packed_grams=packed, head=head)

    return make_learner(name, classes, strict=strict, update=update, predict=ridge_predict, scores=ridge_scores)


def g_air(classes, *, expansion=None, ridge: float = 0.1, storage: str = "full") -> Learner:
    r"""G-AIR: AIR on generalized streams where classes reappear.

    The weighted ridge of :func:`air`, :math:`W = (\sum_c \pi_c A_c + \gamma I)^{-1} B\,\mathrm{diag}(\pi)`
    (REFERENCE.md §3), with ``strict=False``.

    Args:
      classes: declared class ids.
      expansion: fixed expansion layer or ``None``.
      ridge: γ.
      storage: ``"full"`` (float64 d² per class) or ``"packed32"`` (float32 upper triangle, 4× smaller).

    Returns:
      A :class:`~continual.Learner` named ``"G-AIR"`` (``"G-AIR (packed32)"`` for packed storage), with ``scores``.

    Raises:
      InputError: ``storage`` is not one of ``"full"``, ``"packed32"``, or ``classes`` is empty. The learner's
        ``learn`` raises :class:`~analytic.InputError` for a bad phase; its ``predict`` raises
        :class:`~analytic.IntegrityError` before the first phase.

    Example:
      Three classes in two phases; class 1 comes back in the second phase:

      >>> rng = np.random.default_rng(0)
      >>> y = np.repeat(np.arange(3), 20)
      >>> x = rng.normal(size=(60, 4)) + 4.0 * np.eye(3, 4)[y]
      >>> learner = continual.g_air(np.arange(3), storage="packed32")
      >>> state = learner.learn(learner.init(), x[:30], y[:30])
      >>> state = learner.learn(state, x[30:], y[30:])
      >>> learner.name, state.learned_classes, learner.predict(state, x[::20])
      ('G-AIR (packed32)', array([0, 1, 2]), array([0, 1, 2]))
      >>> state.model.packed_grams.shape  # one packed 4 × 4 upper triangle per class
      (3, 10)
    """
    name = "G-AIR" if storage == "full" else f"G-AIR ({storage})"
    return air(classes, expansion=expansion, ridge=ridge, storage=storage, strict=False, name=name)


def weighted_head(statistics: analytic.Statistics, packed_grams: np.ndarray | None, ridge: float) -> analytic.Head:
    """:math:`W = (\\sum_c \\pi_c A_c + \\gamma I)^{-1} B\\,\\mathrm{diag}(\\pi)` in float64 (one Cholesky)."""
    weights = balancing_weights(statistics.class_counts)
    if packed_grams is None:
        gram = sum(weight * analytic.class_gram(statistics, position) for position, weight in enumerate(weights))
    else:
        gram = unpack_upper(weights @ packed_grams.astype(np.float64), statistics.dim)
    factorization = factorize_matrix(gram, ridge)
    solution = factorization.solve(analytic.cross_matrix(statistics) * weights)
    return analytic.Head(weights=solution, class_ids=statistics.class_ids, ridge=float(ridge))


def class_gram_bytes(n_classes: int, dim: int, storage: str) -> int:
    """Bytes the per-class Grams take: C·d²·8 (``"full"``) or C·d(d+1)/2·4 (``"packed32"``).

    Args:
      n_classes: number of classes C.
      dim: feature dimension d (after the expansion).
      storage: ``"full"``; any other value counts as ``"packed32"``.

    Returns:
      The bytes, as an int.

    Example:
      100 classes at d = 8192 (the reference code's out-of-memory case, REFERENCE.md §3) take 50 GiB in float64
      (53.7 GB), 12.5 GiB packed:

      >>> continual.class_gram_bytes(100, 8192, "full") / 2**30
      50.0
      >>> round(continual.class_gram_bytes(100, 8192, "packed32") / 2**30, 2)
      12.5
    """
    return n_classes * (dim * dim * 8 if storage == "full" else dim * (dim + 1) // 2 * 4)


def _add_packed_grams(packed: np.ndarray, before: np.ndarray, class_ids: np.ndarray, x: np.ndarray,
                      labels: np.ndarray) -> np.ndarray:
    """Widen to the new class list and add each class's packed :math:`X_c^\\top X_c` (float64 product, float32 sum)."""
    widened = np.zeros((class_ids.size, packed.shape[1]), np.float32)
    widened[np.searchsorted(class_ids, before)] = packed
    rows = np.asarray(x, np.float64)
    for c in np.unique(labels):
        members = rows[labels == c]
        widened[np.searchsorted(class_ids, c)] += pack_upper(members.T @ members).astype(np.float32)
    return widened
