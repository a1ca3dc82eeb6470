r"""Solving the ridge head from its statistics: one Cholesky factorization serves every output column.

.. math::
    G + \gamma I = U^\top U \quad (\text{Cholesky}), \qquad W = U^{-1} U^{-\top} B

(README: the math in brief): the factorization costs :math:`d^3/3`, each solve :math:`O(d^2 m)` for all m columns at once.
The statistics keep moments around a fixed shift :math:`s` (:math:`\tilde x = x - s`); the raw moments are rebuilt
exactly as

.. math::
    G = \tilde G + s \tilde f^\top + \tilde f s^\top + n\, s s^\top, \qquad B = \tilde B + s\, t^\top

with :math:`\tilde f = \sum \tilde x`, :math:`t = \sum y`, in float64 whatever the accumulation precision: rebuilding
in float32 would round :math:`n s s^\top` and undo the benefit of the shift.

An exact intercept (``solve(stats, ridge, intercept=True)``, as scikit-learn's ``Ridge(fit_intercept=True)``: the
bias is not regularized) comes from the same state, centred about the mean feature :math:`\mu = s + \tilde f / n`:

.. math::
    G_c = \tilde G - n \tilde\mu \tilde\mu^\top, \quad B_c = \tilde B - \tilde\mu\, t^\top, \quad
    W = (G_c + \gamma I)^{-1} B_c, \quad b = \bar y - W^\top \mu,

with :math:`\tilde\mu = \tilde f / n` and :math:`\bar y = t / n`. Centring the shifted moments cancels only
:math:`n \tilde\mu \tilde\mu^\top`, small when the shift is near the mean: float32 states take one by default; give a
float64 state whose features share a large offset one too (``shift=x[:1024].mean(axis=0)``). An unshifted float64
state cancels all of :math:`n \mu\mu^\top`, whose rounding G already carries. Fixed-precision moments are exact
integers and are centred in exact integer arithmetic (:func:`_exact_centring`) wherever int64 exists (the host, a
device with x64); a device without x64 centres them in float32, after G was rounded to float32. Measured against
scikit-learn (float64, centring the data) on features of mean 50, d = 24, n = 2,000, γ = 0.1, relative error of
W / b: float64 with a shift at the first rows' mean 7e-14 / 6e-14 (host and device), unshifted 7e-10 / 3e-9 (host),
7e-11 / 2e-10 (device); fixed 8e-14 / 1.5e-13 (host, device with x64; 2e-11 / 7e-11 if centred in float64), 2e-2 /
4e-2 on a device without x64 (its solve without intercept: 1e-2); float32 on a device 3e-5 / 5e-5.
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
    check_state,
    device_float,
    frozen,
    register_pytree,
    select_classes,
)
from analytic.validation import check_feature_shape, check_features, check_ridge

_HIGHEST = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class Head:
    """A solved linear head: ``scores = features @ weights + bias`` (a pytree: weights, ridge and bias are leaves,
    the class ids static).

    Attributes:
      weights: (d, m) weights W (NaN everywhere when solved inside jit from an invalid state or a matrix that is not
        positive definite: the flag a jitted solve carries).
      class_ids: (m,) class id of each column (classification), or ``None`` (regression).
      ridge: the ridge γ it was solved with.
      bias: (m,) unregularized intercept b (``solve(..., intercept=True)``), or ``None`` for a head without one.

    Example:
      >>> stats = analytic.accumulate(analytic.init_statistics(2), np.eye(2), np.array([3, 7]))
      >>> head = solve(stats, 1.0)  # W = (I + 1·I)⁻¹ I
      >>> head.weights
      array([[0.5, 0. ],
             [0. , 0.5]])
      >>> head.class_ids, head.ridge, head.bias
      (array([3, 7]), 1.0, None)
    """

    weights: np.ndarray
    class_ids: np.ndarray | None
    ridge: float
    bias: np.ndarray | None = None

    def __post_init__(self):
        object.__setattr__(self, "class_ids", frozen(self.class_ids, np.int64))


register_pytree(Head, ("weights", "ridge", "bias"), ("class_ids",))


@dataclasses.dataclass(frozen=True)
class Factorization:
    r"""Upper Cholesky factor U of :math:`G + \gamma I` for one state and one ridge (a pytree of both), or of the
    centred :math:`G_c + \gamma I` for an intercept solve (``centred``, static).

    On the host ``upper`` is LAPACK's output as it comes: only its upper triangle is U; the strictly lower triangle
    holds leftovers of the input. Use ``np.triu(upper)`` for U itself.

    Attributes:
      upper: (d, d) array whose upper triangle is U, with :math:`U^\top U = G + \gamma I` (host float64, or the
        device's float; NaN when factorized inside jit from a flagged state or an indefinite matrix).
      ridge: the ridge γ it includes.
      centred: whether it factors the centred Gram :math:`G_c` (for ``solve(..., intercept=True)``).

    Example:
      >>> stats = analytic.accumulate(analytic.init_statistics(2), np.eye(2), np.array([0, 1]))
      >>> factorization = factorize(stats, 3.0)
      >>> np.triu(factorization.upper)  # UᵀU = G + γI = 4I
      array([[2., 0.],
             [0., 2.]])
      >>> factorization.solve(np.ones(2))  # (G + γI)⁻¹ 1
      array([0.25, 0.25])
    """

    upper: np.ndarray
    ridge: float
    centred: bool = False

    def solve(self, rhs):
        """:math:`(G + \\gamma I)^{-1}` rhs, for any number of right-hand-side columns.

        Args:
          rhs: (d,) or (d, k) right-hand side.

        Returns:
          The solution, of ``rhs``'s shape (a JAX array for a device factorization).
        """
        if isinstance(self.upper, jax.Array):
            return jax.scipy.linalg.cho_solve((self.upper, False), jnp.asarray(rhs, self.upper.dtype))
        # U of a C-ordered factor is, read in Fortran order, the lower factor L = Uᵀ: LAPACK takes it without a copy
        lower = self.upper.flags.c_contiguous
        return scipy.linalg.cho_solve((self.upper.T if lower else self.upper, lower), rhs, check_finite=False)


register_pytree(Factorization, ("upper", "ridge"), ("centred",))


def _moment_values(stats: Statistics, names: tuple[str, ...], dtype=None) -> dict:
    """The named moments as floats — host float64 for ``dtype=None``, else JAX arrays of ``dtype`` (float64 with
    x64, else float32): Kahan-compensated for float32, rescaled from the grid :math:`2^{-f}` for fixed (Gram
    :math:`2^{-2f}`; cross :math:`2^{-f}` for one-hot targets, which are not quantized, else :math:`2^{-2f}`). Only
    the moments asked for are converted."""
    arithmetic = precision_of(stats.precision)
    values = {}
    for name in names:
        value = arithmetic.to_float(getattr(stats.moments, name), _grid_exponent(stats, name), dtype)
        if stats.compensation is not None:
            value = value - getattr(stats.compensation, name).astype(value.dtype)
        values[name] = value
    return values


def _grid_exponent(stats: Statistics, name: str) -> int:
    """e of the fixed-point grid :math:`2^{-e}` a moment is kept on (0 for float precisions)."""
    f = stats.frac_bits
    return {"gram": 2 * f, "cross": f if stats.is_classification else 2 * f, "feature_sum": f, "target_sum": f,
            "class_grams": 2 * f}[name]


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
    r"""The raw Gram :math:`G = X^\top X = \sum x x^\top` of the learned samples (shift undone): float64 on the
    host, the device's float (float64 with x64) for a device state.

    .. math::
        G = \tilde G + s \tilde f^\top + \tilde f s^\top + n\, s s^\top \quad \text{(REFERENCE.md §1; module docstring)}

    Args:
      stats: the statistics.

    Returns:
      (d, d) symmetric G.

    Raises:
      InputError: ``stats`` is not a :class:`Statistics`, or carries an error flag for bad input.
      IntegrityError: ``stats`` is malformed (a pytree transform changed a leaf) or flagged inside jit.

    Example:
      >>> x = np.array([[1.0, 2.0], [3.0, 4.0]])
      >>> stats = analytic.accumulate(analytic.init_statistics(2, shift=x.mean(axis=0)), x, np.array([0, 1]))
      >>> stats.moments.gram  # kept around the shift s = (2, 3)
      array([[2., 2.],
             [2., 2.]])
      >>> gram_matrix(stats)  # XᵀX
      array([[10., 14.],
             [14., 20.]])
    """
    check_state(stats)
    dtype = _float_dtype(stats)
    moments = _moment_values(stats, ("gram", "feature_sum"), dtype)
    return _unshifted(moments["gram"], stats.shift, moments["feature_sum"], _count(stats, dtype),
                      np if dtype is None else jnp)


def cross_matrix(stats: Statistics):
    r"""The raw cross-moment :math:`B = X^\top Y` (d, m); for classification column c sums class c's features.

    .. math::
        B = \tilde B + s\, t^\top \quad \text{(REFERENCE.md §1; module docstring)}

    with :math:`t` the class counts (classification) or target sums (regression).

    Args:
      stats: the statistics.

    Returns:
      (d, m) B: float64 on the host, the device's float for a device state.

    Raises:
      InputError: ``stats`` is not a :class:`Statistics`, or carries an error flag for bad input.
      IntegrityError: ``stats`` is malformed (a pytree transform changed a leaf) or flagged inside jit.

    Example:
      >>> x = np.array([[1.0, 2.0], [3.0, 4.0]])
      >>> stats = analytic.accumulate(analytic.init_statistics(2, shift=x.mean(axis=0)), x, np.array([0, 1]))
      >>> cross_matrix(stats)  # column c: the sum of class c's features
      array([[1., 3.],
             [2., 4.]])
    """
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


def _centring(stats: Statistics, dtype):
    r"""The count n, the offset :math:`\tilde\mu = \tilde f / n` of the mean feature from the shift, and the target
    sums t (class counts for classification), as floats (host float64 for ``dtype=None``, else JAX ``dtype``)."""
    names = ("feature_sum",) if stats.is_classification else ("feature_sum", "target_sum")
    moments = _moment_values(stats, names, dtype)
    count = _count(stats, dtype)
    target_sum = _class_counts(stats, dtype) if stats.is_classification else moments["target_sum"]
    xp = np if dtype is None else jnp
    return count, moments["feature_sum"] / count, xp.asarray(target_sum, moments["feature_sum"].dtype)


def _centred_gram(stats: Statistics):
    r"""The centred Gram :math:`G_c = \sum (x - \mu)(x - \mu)^\top = \tilde G - n \tilde\mu \tilde\mu^\top`
    (module docstring): host float64, or the device's float for a device state."""
    check_state(stats)
    dtype = _float_dtype(stats)
    if _exact_integers(stats, dtype):
        return _exact_centred(stats, "gram", dtype)
    count, offset, _ = _centring(stats, dtype)
    gram = _moment_values(stats, ("gram",), dtype)["gram"]
    return gram - count * (np if dtype is None else jnp).outer(offset, offset)


def _centred_cross(stats: Statistics):
    r"""The centred cross-moment :math:`B_c = \sum (x - \mu) y^\top = \tilde B - \tilde\mu t^\top`, the mean
    feature :math:`\mu = s + \tilde\mu` and the mean target :math:`\bar y = t / n` (module docstring)."""
    check_state(stats)
    dtype = _float_dtype(stats)
    xp = np if dtype is None else jnp
    count, offset, target_sum = _centring(stats, dtype)
    if _exact_integers(stats, dtype):
        cross = _exact_centred(stats, "cross", dtype)
    else:
        cross = _moment_values(stats, ("cross",), dtype)["cross"] - xp.outer(offset, target_sum)
    mean = offset if stats.shift is None else offset + xp.asarray(stats.shift, offset.dtype)
    return cross, mean, target_sum / count


def _exact_integers(stats: Statistics, dtype) -> bool:
    """Whether the moments are exact integers that can be centred in int64 (fixed precision; JAX needs x64)."""
    return precision_of(stats.precision).on_grid and (dtype is None or dtype == jnp.float64)


def _exact_centred(stats: Statistics, name: str, dtype):
    """The fixed-point ``gram`` or ``cross`` centred exactly (:func:`_exact_centring`), as floats off the grid."""
    xp = np if dtype is None else jnp
    as_int64 = words.to_int64 if dtype is None else words.to_jax_int64
    sums = as_int64(stats.moments.feature_sum)
    if name == "gram":
        other = sums
    else:
        other = as_int64(stats.class_count_words if stats.is_classification else stats.moments.target_sum)
    centred = _exact_centring(as_int64(getattr(stats.moments, name)), sums, other, as_int64(stats.count_words),
                              np.float64 if dtype is None else dtype, xp)
    return centred * 2.0 ** -_grid_exponent(stats, name)


def _exact_centring(total, left, right, count, dtype, xp=np):
    r""":math:`T - f t^\top / n` for int64 sums :math:`T = \sum a b^\top`, :math:`f = \sum a`, :math:`t = \sum b`
    and count :math:`n > 0`, with one rounding. With :math:`f = q n + r`, :math:`t = p n + u` (:math:`0 \le r, u < n`)

    .. math::
        T - f t^\top / n = (T - n q p^\top - q u^\top - r p^\top) - r u^\top / n,

    the bracket in wrapping int64 (exact: only its value, a centred moment below :math:`2^{63}`, needs to fit) and the
    rest, below n in magnitude, in float. Where the centred moment itself would not fit (regression targets near the
    grid's range), the float value :math:`T - f t^\top / n` is returned instead."""
    n = xp.maximum(count, 1)  # count 0 is refused, or gives NaN weights inside jit
    q, r = xp.divmod(left, n)
    p, u = xp.divmod(right, n)
    bracket = total - n * xp.outer(q, p) - xp.outer(q, u) - xp.outer(r, p)
    exact = bracket.astype(dtype) - xp.outer(r.astype(dtype), u.astype(dtype)) / n.astype(dtype)
    rough = total.astype(dtype) - xp.outer(left.astype(dtype), right.astype(dtype)) / n.astype(dtype)
    return xp.where(xp.abs(rough) < 2.0**62, exact, rough)


def class_gram(stats: Statistics, position: int) -> np.ndarray:
    r"""Full raw Gram :math:`A_c = \sum_{y_i = c} x_i x_i^\top` of the class in column ``position`` (host float64),
    the per-class Gram of class re-weighting (AIR, REFERENCE.md §3).

    Args:
      stats: a classification state created with ``class_grams=True``.
      position: the class's column (0 ≤ position < m; ``np.searchsorted(stats.class_ids, c)`` for class id c).

    Returns:
      (d, d) :math:`A_c`, the shift undone.

    Raises:
      IntegrityError: the state keeps no per-class Grams, or it is malformed or flagged.
      IndexError: ``position`` is outside the state's columns.

    Example:
      >>> x = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
      >>> stats = analytic.accumulate(analytic.init_statistics(2, class_grams=True), x, np.array([0, 1, 0]))
      >>> class_gram(stats, 0)  # rows 0 and 2
      array([[2., 1.],
             [1., 1.]])
    """
    check_state(stats)
    if stats.moments.class_grams is None:
        raise IntegrityError("this state keeps no per-class Grams: create it with init_statistics(class_grams=True)")
    one_class = select_classes(jax.device_get(stats), [position])  # convert this class's Gram only
    moments = _moment_values(one_class, ("cross", "class_grams"))
    class_sum = moments["cross"][:, 0]  # Σ_{y=c} x̃
    return _unshifted(moments["class_grams"][0], stats.shift, class_sum, float(one_class.class_counts[0]))


def class_means(stats: Statistics) -> np.ndarray:
    r"""(m, d) mean feature vector of each class (NaN-free: a class with no samples gets zeros).

    .. math::
        \mu_c = B_{:, c} / \max(n_c, 1)

    Args:
      stats: a classification state.

    Returns:
      (m, d) host float64 class means, rows in the order of ``stats.class_ids``.

    Raises:
      IntegrityError: ``stats`` is a regression state, or it is malformed or flagged.

    Example:
      >>> x = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
      >>> class_means(analytic.accumulate(analytic.init_statistics(2), x, np.array([0, 1, 0])))
      array([[1. , 0.5],
             [0. , 2. ]])
    """
    if not stats.is_classification:
        raise IntegrityError("class_means needs a classification state")
    counts = np.maximum(stats.class_counts, 1)
    return (np.asarray(cross_matrix(stats), np.float64) / counts).T


def factorize_matrix(matrix: np.ndarray, ridge: float) -> Factorization:
    """Cholesky factor of ``matrix + ridge·I`` for a symmetric float64 host ``matrix`` (which is overwritten).

    Args:
      matrix: a symmetric (d, d) float64 host array, consumed.
      ridge: γ ≥ 0.

    Raises:
      InputError: a bad ridge.
      IntegrityError: ``matrix + ridge·I`` is not positive definite, or holds NaN/Inf.
    """
    ridge = check_ridge(ridge)
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


def factorize(stats: Statistics, ridge, *, intercept: bool = False) -> Factorization:
    r"""Cholesky factorization of :math:`G + \gamma I` (README: the math in brief), or of the centred
    :math:`G_c + \gamma I` with ``intercept=True`` (module docstring), reusable for every column and query.

    On a device (and under jit) a matrix that is not positive definite gives a NaN factor, which a solve turns into
    NaN weights; outside jit it raises :class:`IntegrityError`.

    Args:
      stats: the statistics.
      ridge: γ ≥ 0.
      intercept: factor the centred Gram, for :func:`solve` with ``intercept=True`` (recorded as ``centred``).

    Returns:
      A :class:`Factorization` (host for a host state and a concrete ridge, else on the device).

    Raises:
      InputError: a bad ridge, ``intercept`` not a bool, or ``intercept=True`` on a state without samples.
      IntegrityError: the matrix is not positive definite, or the state is flagged or malformed.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> stats = analytic.accumulate(analytic.init_statistics(3), rng.normal(size=(10, 3)), rng.integers(0, 2, 10))
      >>> factorization = factorize(stats, 0.1)  # d³/3 once ...
      >>> head = solve(stats, 0.1, factorization)  # ... then O(d² m) per solve
      >>> np.allclose(head.weights, solve(stats, 0.1).weights)
      True
    """
    intercept = _check_intercept(stats, intercept)
    if not stats.on_device and not isinstance(ridge, jax.core.Tracer):
        gram = _centred_gram(stats) if intercept else gram_matrix(stats)
        return dataclasses.replace(factorize_matrix(gram, ridge), centred=intercept)
    stats = to_device(stats)
    gram = _centred_gram(stats) if intercept else gram_matrix(stats)
    ridge = _device_ridge(ridge, gram.dtype)
    upper, _ = jax.scipy.linalg.cho_factor(gram + ridge * jnp.eye(stats.dim, dtype=gram.dtype), lower=False)
    valid = jnp.all(jnp.isfinite(jnp.diagonal(upper))) & (ridge >= 0) & (stats.error == 0)
    if intercept:
        valid = valid & jnp.any(stats.count_words != 0)  # a mean needs a sample
    upper = jnp.where(valid, upper, jnp.nan)
    if not isinstance(valid, jax.core.Tracer) and not bool(valid):
        raise IntegrityError(
            f"G + γI is not positive definite (γ = {float(ridge):g}): raise the ridge, or the statistics are corrupted"
        )
    return Factorization(upper=upper, ridge=ridge, centred=intercept)


def solve(stats: Statistics, ridge, factorization: Factorization | None = None, *, intercept: bool = False) -> Head:
    r"""Ridge weights :math:`W = (G + \gamma I)^{-1} B` (README: the math in brief), or with ``intercept=True`` the
    weights and unregularized bias of ridge on centred data (module docstring), as scikit-learn's
    ``Ridge(fit_intercept=True)``:

    .. math::
        W = (G_c + \gamma I)^{-1} B_c, \qquad b = \bar y - W^\top \mu, \qquad
        G_c = G - n \mu\mu^\top, \quad B_c = B - n \mu \bar y^\top.

    Works under ``jax.jit`` (the ridge may be traced, e.g. ``jax.vmap`` over a grid of ridges; ``intercept`` is
    static); a state whose error flag is set, a matrix that is not positive definite, or an intercept solve of a
    state without samples gives NaN weights there and raises outside jit.

    Args:
      stats: the statistics.
      ridge: γ ≥ 0 (γ = 0 needs G, or :math:`G_c`, full rank).
      factorization: a :func:`factorize` result for the same state, ridge and ``intercept``, to skip the
        factorization.
      intercept: also fit an unregularized bias b (keyword only, a Python bool).

    Returns:
      A :class:`Head`; its ``bias`` is an (m,) array with ``intercept=True``, else ``None``.

    Raises:
      InputError: a bad ridge, ``intercept`` not a bool, ``intercept=True`` on a state without samples, or a
        factorization made for another ridge or of the other Gram (centred versus raw).
      IntegrityError: the matrix is not positive definite, or the state is flagged or malformed.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, labels = rng.normal(size=(20, 3)), rng.integers(0, 2, 20)
      >>> stats = analytic.accumulate(analytic.init_statistics(3), x, labels)
      >>> head = solve(stats, 0.1)
      >>> head.weights.shape, head.class_ids
      ((3, 2), array([0, 1]))
      >>> np.allclose(head.weights, np.linalg.solve(x.T @ x + 0.1 * np.eye(3), cross_matrix(stats)))
      True
      >>> head = solve(stats, 0.1, intercept=True)  # predict(head, x) = x @ head.weights + head.bias
      >>> head.bias.shape
      (2,)

      On a device (under jit) the same weights come out; a float64 state there needs ``jax_enable_x64``, a
      fixed-precision one (exact integers) does not and is solved in float32 without it:

      >>> fixed = analytic.accumulate(analytic.init_statistics(3, precision="fixed"), x, labels)
      >>> on_device = jax.jit(solve)(jax.device_put(fixed), 0.1)
      >>> np.allclose(on_device.weights, solve(stats, 0.1).weights, atol=1e-4)
      True
      >>> jax.jit(solve, static_argnames="intercept")(jax.device_put(fixed), 0.1, intercept=True).bias.shape
      (2,)
    """
    intercept = _check_intercept(stats, intercept)
    if factorization is None:
        factorization = factorize(stats, ridge, intercept=intercept)
    elif not isinstance(ridge, jax.core.Tracer) and float(factorization.ridge) != float(ridge):
        raise InputError(f"the factorization was made with ridge {float(factorization.ridge)}, not {ridge}")
    elif factorization.centred != intercept:
        made, needed = ("centred", "raw") if factorization.centred else ("raw", "centred")
        raise InputError(
            f"the factorization is of the {made} Gram, an intercept={intercept} solve needs the {needed} one: "
            f"factorize(stats, ridge, intercept={intercept})"
        )
    if isinstance(factorization.upper, jax.Array):
        stats = to_device(stats)
    if not intercept:
        weights = factorization.solve(cross_matrix(stats))
        return Head(weights=weights, class_ids=stats.class_ids, ridge=factorization.ridge)
    cross, mean, target_mean = _centred_cross(stats)
    weights = factorization.solve(cross)  # W = (G_c + γI)⁻¹ B_c
    if isinstance(weights, jax.Array):
        bias = target_mean - jnp.matmul(weights.T, mean.astype(weights.dtype), precision=_HIGHEST)  # b = ȳ − Wᵀμ
    else:
        bias = target_mean - weights.T @ mean
    return Head(weights=weights, class_ids=stats.class_ids, ridge=factorization.ridge, bias=bias)


def predict(head: Head, features):
    r"""Scores :math:`X W + 1 b^\top` (n, m), the bias only for a head that has one: class scores for
    classification, predictions for regression (in JAX for a device head or traced features, where non-finite scores
    cannot raise inside jit).

    Args:
      head: a solved :class:`Head`.
      features: (n, d) floating features (NumPy or JAX), n ≥ 1.

    Returns:
      (n, m) scores: a host array for a host head and host features, else a JAX array.

    Raises:
      InputError: features of the wrong shape or dtype, or scores that are not finite (NaN/Inf features, or
        weights that are NaN because the head was solved inside jit from a flagged state or an indefinite matrix).

    Example:
      >>> x = np.eye(2)
      >>> stats = analytic.accumulate(analytic.init_statistics(2, n_targets=1), x, np.array([2.0, -1.0]))
      >>> head = solve(stats, 1.0)  # W = (I + I)⁻¹ (2, −1)ᵀ = (1, −0.5)ᵀ
      >>> predict(head, np.array([[2.0, 2.0], [1.0, 0.0]]))
      array([[1.],
             [1.]])
    """
    weights = head.weights
    if isinstance(weights, jax.Array) or isinstance(features, jax.core.Tracer):
        x = jnp.asarray(features)
        check_feature_shape(x, weights.shape[0])
        scores = jnp.matmul(x.astype(weights.dtype), weights, precision=_HIGHEST)
        if head.bias is not None:
            scores = scores + jnp.asarray(head.bias, scores.dtype)[None, :]
        if not isinstance(scores, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(scores))):
            raise InputError(_non_finite_scores_message(weights))
        return scores
    x = check_features(features, weights.shape[0])
    scores = x.astype(weights.dtype, copy=False) @ weights
    if head.bias is not None:
        scores += np.asarray(head.bias, scores.dtype)[None, :]
    if not np.isfinite(scores).all():
        raise InputError(_non_finite_scores_message(weights))
    return scores


def predict_labels(head: Head, features):
    """Class id of the highest score for each row: ``class_ids[argmax(predict(head, features), axis=1)]``.

    Args:
      head: a solved classification :class:`Head`.
      features: (n, d) floating features (NumPy or JAX), n ≥ 1.

    Returns:
      (n,) class ids: host int64, or a JAX array for a device head or traced features.

    Raises:
      InputError: a regression head, or bad features / non-finite scores (see :func:`predict`).
      IntegrityError: the head has no classes.

    Example:
      >>> stats = analytic.accumulate(analytic.init_statistics(2), np.eye(2), np.array([3, 7]))
      >>> predict_labels(solve(stats, 0.1), np.array([[0.9, 0.2], [0.1, 0.8]]))
      array([3, 7])
    """
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


def _check_intercept(stats: Statistics, intercept) -> bool:
    """``intercept`` as a bool; raises :class:`InputError` for anything else, or for an intercept of a state that
    holds no samples (known outside jit: inside jit the solve gives NaN weights)."""
    if not isinstance(intercept, (bool, np.bool_)):
        hint = (": under jax.jit mark it static, jax.jit(solve, static_argnames='intercept')"
                if isinstance(intercept, jax.core.Tracer) else "")
        raise InputError(f"intercept must be True or False, got {intercept!r}{hint}")
    if intercept:
        check_state(stats)
        if not isinstance(stats.count_words, jax.core.Tracer) and int(stats.count) == 0:
            raise InputError("an intercept needs the mean of the samples: the state holds no samples")
    return bool(intercept)


def _device_ridge(ridge, dtype):
    if not isinstance(ridge, jax.core.Tracer):
        check_ridge(ridge)
    return jnp.asarray(ridge, dtype)

