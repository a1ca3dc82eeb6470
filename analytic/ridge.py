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

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from analytic import words
from analytic.errors import InputError, IntegrityError
from analytic.device import to_device
from analytic.precision import precision_of
from analytic.state import (
    Statistics,
    check_feature_shape,
    check_state,
    device_float,
    frozen,
    register_pytree,
    select_classes,
)
from analytic.statistics import check_features

_HIGHEST = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class Head:
    """A solved linear head: ``scores = features @ weights`` (a pytree: weights and ridge are leaves, the class ids
    static).

    Attributes:
      weights: (d, m) weights W (NaN everywhere when solved inside jit from an invalid state or a matrix that is not
        positive definite: the flag a jitted solve carries).
      class_ids: (m,) class id of each column (classification), or ``None`` (regression).
      ridge: the ridge γ it was solved with.
    """

    weights: np.ndarray
    class_ids: np.ndarray | None
    ridge: float

    def __post_init__(self):
        object.__setattr__(self, "class_ids", frozen(self.class_ids, np.int64))


register_pytree(Head, ("weights", "ridge"), ("class_ids",))


@dataclasses.dataclass(frozen=True)
class Factorization:
    """Upper Cholesky factor U of :math:`G + \\gamma I` for one state and one ridge (a pytree of both).

    On the host ``upper`` is LAPACK's output as it comes: only its upper triangle is U; the strictly lower triangle
    holds leftovers of the input. Use ``np.triu(upper)`` for U itself.
    """

    upper: np.ndarray
    ridge: float

    def solve(self, rhs):
        """:math:`(G + \\gamma I)^{-1}` rhs, for any number of right-hand-side columns."""
        if isinstance(self.upper, jax.Array):
            return jax.scipy.linalg.cho_solve((self.upper, False), jnp.asarray(rhs, self.upper.dtype))
        # U of a C-ordered factor is, read in Fortran order, the lower factor L = Uᵀ: LAPACK takes it without a copy
        lower = self.upper.flags.c_contiguous
        return scipy.linalg.cho_solve((self.upper.T if lower else self.upper, lower), rhs, check_finite=False)


register_pytree(Factorization, ("upper", "ridge"), ())


def _moment_values(stats: Statistics, names: tuple[str, ...], dtype=None) -> dict:
    """The named moments as floats — host float64 for ``dtype=None``, else JAX arrays of ``dtype`` (float64 with
    x64, else float32): Kahan-compensated for float32, rescaled from the grid :math:`2^{-f}` for fixed (Gram
    :math:`2^{-2f}`; cross :math:`2^{-f}` for one-hot targets, which are not quantized, else :math:`2^{-2f}`). Only
    the moments asked for are converted."""
    f = stats.frac_bits
    grid_exponents = {"gram": 2 * f, "cross": f if stats.is_classification else 2 * f, "feature_sum": f,
                      "target_sum": f, "class_grams": 2 * f}
    arithmetic = precision_of(stats.precision)
    values = {}
    for name in names:
        value = arithmetic.to_float(getattr(stats.moments, name), grid_exponents[name], dtype)
        if stats.compensation is not None:
            value = value - getattr(stats.compensation, name).astype(value.dtype)
        values[name] = value
    return values


def _unshifted(gram, shift, feature_sum, count, xp=np):
    """:math:`\\tilde G + s \\tilde f^\\top + \\tilde f s^\\top + n s s^\\top` as a new array (host float64, or the
    JAX dtype of ``gram``)."""
    full = xp.array(gram, dtype=gram.dtype if xp is jnp else np.float64)
    if shift is not None:
        s = xp.asarray(shift, full.dtype)
        full = full + xp.outer(s, feature_sum) + xp.outer(feature_sum, s) + count * xp.outer(s, s)
    return full


def _count(stats: Statistics, dtype=None):
    """The sample count as a float: host float, or a JAX scalar of ``dtype``."""
    return float(stats.count) if dtype is None else words.to_float(stats.count_words, dtype)


def _class_counts(stats: Statistics, dtype=None):
    return stats.class_counts if dtype is None else words.to_float(stats.class_count_words, dtype)


def _float_dtype(stats: Statistics):
    return device_float(stats.precision) if stats.on_device else None


def gram_matrix(stats: Statistics):
    """The raw Gram :math:`G = X^\\top X = \\sum x x^\\top` of the learned samples (shift undone): float64 on the
    host, the device's float (float64 with x64) for a device state."""
    check_state(stats)
    dtype = _float_dtype(stats)
    moments = _moment_values(stats, ("gram", "feature_sum"), dtype)
    return _unshifted(moments["gram"], stats.shift, moments["feature_sum"], _count(stats, dtype),
                      np if dtype is None else jnp)


def cross_matrix(stats: Statistics):
    """The raw cross-moment :math:`B = X^\\top Y` (d, m); for classification column c sums class c's features."""
    check_state(stats)
    dtype = _float_dtype(stats)
    xp = np if dtype is None else jnp
    names = ("cross",) if stats.is_classification or stats.shift is None else ("cross", "target_sum")
    moments = _moment_values(stats, names, dtype)
    cross = xp.array(moments["cross"], dtype=np.float64 if dtype is None else dtype)
    if stats.shift is not None:
        target_sum = _class_counts(stats, dtype) if stats.is_classification else moments["target_sum"]
        cross = cross + xp.outer(xp.asarray(stats.shift, cross.dtype), xp.asarray(target_sum, cross.dtype))
    return cross


def class_gram(stats: Statistics, position: int) -> np.ndarray:
    """Full raw Gram :math:`A_c = \\sum_{y_i = c} x_i x_i^\\top` of the class in column ``position`` (host float64)."""
    check_state(stats)
    if stats.moments.class_grams is None:
        raise IntegrityError("this state keeps no per-class Grams: create it with init_statistics(class_grams=True)")
    one_class = select_classes(jax.device_get(stats), [position])  # convert this class's Gram only
    moments = _moment_values(one_class, ("cross", "class_grams"))
    class_sum = moments["cross"][:, 0]  # Σ_{y=c} x̃
    return _unshifted(moments["class_grams"][0], stats.shift, class_sum, float(one_class.class_counts[0]))


def class_means(stats: Statistics) -> np.ndarray:
    """(m, d) mean feature vector of each class (NaN-free: a class with no samples gets zeros)."""
    if not stats.is_classification:
        raise IntegrityError("class_means needs a classification state")
    counts = np.maximum(stats.class_counts, 1)
    return (np.asarray(cross_matrix(stats), np.float64) / counts).T


def factorize_matrix(matrix: np.ndarray, ridge: float) -> Factorization:
    """Cholesky factor of ``matrix + ridge·I`` for a symmetric float64 host ``matrix`` (which is overwritten)."""
    ridge = _check_ridge(ridge)
    matrix[np.diag_indices_from(matrix)] += ridge
    # LAPACK potrf in place on the Fortran view of the symmetric matrix (no layout copy, half the time of
    # scipy.linalg.cho_factor at d = 1,280): its lower factor L is, read in C order, U = Lᵀ with G + γI = UᵀU.
    potrf = scipy.linalg.lapack.get_lapack_funcs("potrf", (matrix,))
    lower, info = potrf(matrix.T, lower=True, overwrite_a=True, clean=False)
    if info != 0:
        raise IntegrityError(
            f"G + γI is not positive definite (γ = {ridge:g}): raise the ridge, or the statistics are corrupted"
        )
    upper = lower.T
    if not np.isfinite(np.diagonal(upper)).all():
        raise IntegrityError("the statistics contain NaN or Inf")
    return Factorization(upper=upper, ridge=ridge)


def factorize(stats: Statistics, ridge) -> Factorization:
    """Cholesky factorization of :math:`G + \\gamma I` (README: the math in brief), reusable for every column and
    query. On a device (and under jit) a matrix that is not positive definite gives a NaN factor, which a solve
    turns into NaN weights; outside jit it raises :class:`IntegrityError`."""
    if not stats.on_device and not isinstance(ridge, jax.core.Tracer):
        return factorize_matrix(gram_matrix(stats), ridge)
    stats = to_device(stats)
    gram = gram_matrix(stats)
    ridge = _device_ridge(ridge, gram.dtype)
    upper, _ = jax.scipy.linalg.cho_factor(gram + ridge * jnp.eye(stats.dim, dtype=gram.dtype), lower=False)
    valid = jnp.all(jnp.isfinite(jnp.diagonal(upper))) & (ridge >= 0) & (stats.error == 0)
    upper = jnp.where(valid, upper, jnp.nan)
    if not isinstance(valid, jax.core.Tracer) and not bool(valid):
        raise IntegrityError(
            f"G + γI is not positive definite (γ = {float(ridge):g}): raise the ridge, or the statistics are corrupted"
        )
    return Factorization(upper=upper, ridge=ridge)


def solve(stats: Statistics, ridge, factorization: Factorization | None = None) -> Head:
    r"""Ridge weights :math:`W = (G + \gamma I)^{-1} B` (README: the math in brief).

    Works under ``jax.jit`` (the ridge may be traced, e.g. ``jax.vmap`` over a grid of ridges); a state whose error
    flag is set, or a matrix that is not positive definite, gives NaN weights there and raises outside jit.

    Args:
      stats: the statistics.
      ridge: γ ≥ 0 (γ = 0 needs G full rank).
      factorization: a :func:`factorize` result for the same state and ridge, to skip the factorization.

    Example:
      >>> head = solve(stats, 0.1)
      >>> head = jax.jit(solve)(jax.device_put(stats), 0.1)  # the same weights, computed on the device
    """
    if factorization is None:
        factorization = factorize(stats, ridge)
    elif not isinstance(ridge, jax.core.Tracer) and float(factorization.ridge) != float(ridge):
        raise InputError(f"the factorization was made with ridge {float(factorization.ridge)}, not {ridge}")
    weights = factorization.solve(cross_matrix(to_device(stats) if isinstance(factorization.upper, jax.Array)
                                               else stats))
    return Head(weights=weights, class_ids=stats.class_ids, ridge=factorization.ridge)


def predict(head: Head, features):
    """Scores :math:`X W` (n, m): class scores for classification, predictions for regression (in JAX for a device
    head or traced features, where non-finite scores cannot raise inside jit)."""
    weights = head.weights
    if isinstance(weights, jax.Array) or isinstance(features, jax.core.Tracer):
        x = jnp.asarray(features)
        check_feature_shape(x, weights.shape[0])
        scores = jnp.matmul(x.astype(weights.dtype), weights, precision=_HIGHEST)
        if not isinstance(scores, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(scores))):
            raise InputError(_non_finite_scores_message(weights))
        return scores
    x = check_features(features, weights.shape[0])
    scores = x.astype(weights.dtype, copy=False) @ weights
    if not np.isfinite(scores).all():
        raise InputError(_non_finite_scores_message(weights))
    return scores


def predict_labels(head: Head, features):
    """Class id of the highest score for each row."""
    if head.class_ids is None:
        raise InputError("predict_labels needs a classification head")
    if head.class_ids.size == 0:
        raise IntegrityError("the head has no classes: learn some data first")
    scores = predict(head, features)
    if isinstance(scores, jax.Array):
        return jnp.asarray(head.class_ids)[jnp.argmax(scores, axis=1)]
    return head.class_ids[np.argmax(scores, axis=1)]


def _non_finite_scores_message(weights) -> str:
    if not bool(np.all(np.isfinite(np.asarray(weights)))):
        return "the head's weights are NaN: it was solved inside jit from a flagged state or an indefinite G + γI"
    return "features contain NaN or Inf (scores are not finite)"


def _check_ridge(ridge) -> float:
    try:
        value = float(ridge)
    except (TypeError, ValueError) as error:
        raise InputError(f"ridge must be a non-negative number, got {ridge!r}") from error
    if not value >= 0 or not np.isfinite(value):
        raise InputError(f"ridge must be a finite non-negative number, got {value}")
    return value


def _device_ridge(ridge, dtype):
    if not isinstance(ridge, jax.core.Tracer):
        _check_ridge(ridge)
    return jnp.asarray(ridge, dtype)

