r"""Solving the ridge head from its statistics: one Cholesky factorization serves every output column.

.. math::
    G + \gamma I = U^\top U \quad (\text{Cholesky}), \qquad W = U^{-1} U^{-\top} B

(README: the math in brief): the factorization costs :math:`d^3/3`, each solve :math:`O(d^2 m)` for all m columns at once.
The statistics keep moments around a fixed shift :math:`s` (:math:`\tilde x = x - s`); the raw moments are rebuilt
exactly as

.. math::
    G = \tilde G + s \tilde f^\top + \tilde f s^\top + n\, s s^\top, \qquad B = \tilde B + s\, t^\top

with :math:`\tilde f = \sum \tilde x`, :math:`t = \sum y`, in float64 whatever the accumulation precision: rebuilding
in float32 would round :math:`n s s^\top` and undo the benefit of the shift. The head has no intercept (append a
constant feature for one).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np
import scipy.linalg

from analytic.errors import InputError, IntegrityError
from analytic.statistics import Statistics, check_features


@functools.partial(jax.tree_util.register_dataclass, data_fields=["weights", "class_ids"], meta_fields=["ridge"])
@dataclasses.dataclass(frozen=True)
class Head:
    """A solved linear head: ``scores = features @ weights``.

    Attributes:
      weights: (d, m) weights W.
      class_ids: (m,) class id of each column (classification), or ``None`` (regression).
      ridge: the ridge γ it was solved with.
    """

    weights: np.ndarray
    class_ids: np.ndarray | None
    ridge: float


@functools.partial(jax.tree_util.register_dataclass, data_fields=["upper"], meta_fields=["ridge"])
@dataclasses.dataclass(frozen=True)
class Factorization:
    """Upper Cholesky factor U of :math:`G + \\gamma I` for one state and one ridge.

    ``upper`` is LAPACK's output as it comes (Fortran-ordered): only its upper triangle is U; the strictly lower
    triangle holds leftovers of the input. Use ``np.triu(upper)`` for U itself.
    """

    upper: np.ndarray
    ridge: float

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """:math:`(G + \\gamma I)^{-1}` rhs, for any number of right-hand-side columns."""
        return scipy.linalg.cho_solve((self.upper, False), rhs, check_finite=False)


def _moments_value(stats: Statistics):
    """The moments in float64: Kahan-compensated for float32, rescaled from the integer grid for fixed."""
    moments = stats.moments
    if stats.compensation is not None:
        moments = jax.tree.map(lambda v, c: v.astype(np.float64) - c, moments, stats.compensation)
    if stats.precision != "fixed":
        return moments
    f = stats.frac_bits
    cross_scale = f if stats.is_classification else 2 * f  # one-hot targets are not quantized
    return moments._replace(
        gram=np.ldexp(moments.gram.astype(np.float64), -2 * f),
        cross=np.ldexp(moments.cross.astype(np.float64), -cross_scale),
        feature_sum=np.ldexp(moments.feature_sum.astype(np.float64), -f),
        target_sum=None if moments.target_sum is None else np.ldexp(moments.target_sum.astype(np.float64), -f),
        class_grams=None
        if moments.class_grams is None
        else np.ldexp(moments.class_grams.astype(np.float64), -2 * f),
    )


def _unshifted(gram: np.ndarray, shift: np.ndarray | None, feature_sum: np.ndarray, count) -> np.ndarray:
    """:math:`\\tilde G + s \\tilde f^\\top + \\tilde f s^\\top + n s s^\\top` as a new float64 array."""
    full = np.array(gram, dtype=np.float64)
    if shift is not None:
        s = shift.astype(np.float64)
        full += np.outer(s, feature_sum) + np.outer(feature_sum, s) + float(count) * np.outer(s, s)
    return full


def gram_matrix(stats: Statistics) -> np.ndarray:
    """The raw Gram :math:`G = X^\\top X = \\sum x x^\\top` of the learned samples (shift undone), float64."""
    moments = _moments_value(stats)
    return _unshifted(moments.gram, stats.shift, moments.feature_sum, stats.count)


def cross_matrix(stats: Statistics) -> np.ndarray:
    """The raw cross-moment :math:`B = X^\\top Y` (d, m); for classification column c sums class c's features."""
    moments = _moments_value(stats)
    cross = np.array(moments.cross, dtype=np.float64)
    if stats.shift is not None:
        target_sum = stats.class_counts if stats.is_classification else moments.target_sum
        cross += np.outer(stats.shift.astype(np.float64), target_sum)
    return cross


def class_gram(stats: Statistics, position: int) -> np.ndarray:
    """Full raw Gram :math:`A_c = \\sum_{y_i = c} x_i x_i^\\top` of the class in column ``position``."""
    if stats.moments.class_grams is None:
        raise IntegrityError("this state keeps no per-class Grams: create it with init_statistics(class_grams=True)")
    moments = _moments_value(stats)
    class_sum = moments.cross[:, position]  # Σ_{y=c} x̃
    return _unshifted(moments.class_grams[position], stats.shift, class_sum, stats.class_counts[position])


def class_means(stats: Statistics) -> np.ndarray:
    """(m, d) mean feature vector of each class (NaN-free: a class with no samples gets zeros)."""
    if not stats.is_classification:
        raise IntegrityError("class_means needs a classification state")
    counts = np.maximum(stats.class_counts, 1)
    return (cross_matrix(stats) / counts).T


def factorize_matrix(matrix: np.ndarray, ridge: float) -> Factorization:
    """Cholesky factor of ``matrix + ridge·I`` for a symmetric float64 ``matrix`` (which is overwritten)."""
    ridge = float(ridge)
    if not ridge >= 0:
        raise InputError(f"ridge must be a non-negative number, got {ridge}")
    matrix[np.diag_indices_from(matrix)] += ridge
    try:
        upper, _ = scipy.linalg.cho_factor(matrix, lower=False, overwrite_a=True, check_finite=False)
    except np.linalg.LinAlgError as error:
        raise IntegrityError(
            f"G + γI is not positive definite (γ = {ridge:g}): raise the ridge, or the statistics are corrupted"
        ) from error
    if not np.isfinite(np.diagonal(upper)).all():
        raise IntegrityError("the statistics contain NaN or Inf")
    return Factorization(upper=upper, ridge=ridge)


def factorize(stats: Statistics, ridge: float) -> Factorization:
    """Cholesky factorization of :math:`G + \\gamma I` (README: the math in brief), reusable for every column and query."""
    return factorize_matrix(gram_matrix(stats), ridge)


def solve(stats: Statistics, ridge: float, factorization: Factorization | None = None) -> Head:
    r"""Ridge weights :math:`W = (G + \gamma I)^{-1} B` (README: the math in brief).

    Args:
      stats: the statistics.
      ridge: γ ≥ 0 (γ = 0 needs G full rank).
      factorization: a :func:`factorize` result for the same state and ridge, to skip the factorization.
    """
    if factorization is None:
        factorization = factorize(stats, ridge)
    elif factorization.ridge != float(ridge):
        raise InputError(f"the factorization was made with ridge {factorization.ridge}, not {ridge}")
    weights = factorization.solve(cross_matrix(stats))
    return Head(weights=weights, class_ids=stats.class_ids, ridge=float(ridge))


def predict(head: Head, features) -> np.ndarray:
    """Scores :math:`X W` (n, m): class scores for classification, predictions for regression."""
    x = check_features(features, head.weights.shape[0])
    scores = x.astype(head.weights.dtype, copy=False) @ head.weights
    if not np.isfinite(scores).all():
        raise InputError("features contain NaN or Inf (scores are not finite)")
    return scores


def predict_labels(head: Head, features) -> np.ndarray:
    """Class id of the highest score for each row."""
    if head.class_ids is None:
        raise InputError("predict_labels needs a classification head")
    if head.class_ids.size == 0:
        raise IntegrityError("the head has no classes: learn some data first")
    return head.class_ids[np.argmax(predict(head, features), axis=1)]
