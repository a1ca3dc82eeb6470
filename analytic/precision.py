r"""The three arithmetics a :class:`~analytic.Statistics` state can keep, one object each.

A state names its precision (``"float64"``, ``"float32"`` or ``"fixed"``, static metadata in its treedef);
:func:`precision_of` gives the object that owns everything that differs between them, so that the rest of the
library never branches on the name:

- the stored leaves (:meth:`Precision.zeros`, :attr:`Precision.leaf_dtype`) and the host working copy an
  accumulation adds into in place (:meth:`Precision.working` / :meth:`Precision.stored`);
- how a block of rows is prepared for its product (:meth:`Precision.prepare_rows`: cast, shift by :math:`s`, or
  quantize to the grid :math:`2^{-f}`) and when the pending product must be added to the state
  (:meth:`Precision.flush_due`);
- the addition itself, on the host in place (:meth:`Precision.add_`) and in JAX (:meth:`Precision.add`): plain,
  with a Kahan step (float32), or exact in integers with an overflow check (fixed);
- reading a moment as floats (:meth:`Precision.to_float`): Kahan-corrected, or rescaled from the grid.

``float64``
    plain float64 sums; a device state needs ``jax_enable_x64``.
``float32``
    float32 products around a mean shift, added with Kahan compensation (the residuals are the state's
    ``compensation`` leaves).
``fixed``
    exact integers on the grid :math:`2^{-f}`, stored as int32 words (:mod:`analytic.words`); the host computes its
    block products in float64 below :math:`2^{53}` (exact) and adds them as int64.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from analytic import words
from analytic.errors import InputError, IntegrityError

EXACT_FLOAT_LIMIT = 2**53  # every integer below this is exact in float64
FIXED_VALUE_LIMIT = 2**26  # a quantized value's square stays below 2^53
CHUNK_ROWS = 16384  # float32 products are added to the state at least every this many rows
BAND_ROWS = 128  # rows per band of the in-place (d, d) passes, so that each band stays in cache


def x64_enabled() -> bool:
    """Whether JAX holds float64 arrays (``jax_enable_x64``); read, never set, by the library."""
    return jax.dtypes.canonicalize_dtype(np.float64) == np.float64


@dataclasses.dataclass(frozen=True)
class Precision:
    """What one arithmetic owns (see the module docstring). Stateless: one instance per precision."""

    name: ClassVar[str]
    leaf_dtype: ClassVar[type]  # dtype of the stored moment leaves
    compute_dtype: ClassVar[type]  # dtype of the host block products
    compensated: ClassVar[bool] = False  # whether states keep Kahan residuals
    on_grid: ClassVar[bool] = False  # values live on the fixed-point grid 2^-f (frac_bits applies; no shift)
    default_shift: ClassVar[bool] = False  # a state without a shift takes the first batch's mean shift
    direct_fold: ClassVar[bool] = False  # the host folds rows straight into the state's Gram (no augmented copy)

    def zeros(self, *shape: int) -> np.ndarray:
        """Stored zeros for a moment of ``shape``."""
        return np.zeros(shape, self.leaf_dtype)

    def leaf_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The stored shape of a moment of logical ``shape``."""
        return shape

    def host(self, moments):
        """Stored moments as host values: floats as stored (no copy), fixed point as exact int64."""
        return jax.device_get(moments)

    def working(self, moments):
        """Host working copies of stored moments (new arrays the accumulator adds into in place)."""
        return jax.tree.map(np.array, self.host(moments))

    def stored(self, moments):
        """Stored leaves from host values."""
        return moments

    def device_dtype(self):
        """The float dtype this precision computes in on a JAX device."""
        return jnp.float32

    def prepare_rows(self, rows: np.ndarray, out: np.ndarray, *, shift, frac_bits: int, batch: np.ndarray) -> float:
        """Write ``rows`` into ``out`` as the products read them (cast to the compute dtype, minus ``shift`` if
        any); returns their largest magnitude when it bounds the exactness of a product (fixed), else 0.
        ``batch`` (the rows' whole batch) is what an error message about them names."""
        if shift is None:
            np.copyto(out, rows, casting="same_kind")
        else:
            np.subtract(rows, shift, out=out, casting="same_kind")
        return 0.0

    def prepare_targets(self, values: np.ndarray, out: np.ndarray, frac_bits: int) -> float:
        """Write regression targets into ``out`` as the products read them; returns a bound on their magnitude
        (at least 1) for the exactness bound of a product."""
        out[...] = values
        return 1.0

    def as_seen(self, values, frac_bits: int) -> np.ndarray:
        """``values`` as this precision's products see them, in float64 (float32: rounded to float32 first)."""
        return np.asarray(values, self.compute_dtype).astype(np.float64)

    def rows_per_product(self, rows: int, row_bound: float) -> int:
        """How many rows may go into one block product (all of them unless exactness bounds it)."""
        return rows

    def flush_due(self, pending_rows: int, pending_bound: float, rows: int, bound: float) -> bool:
        """Whether the pending product must be added to the state before taking ``rows`` more rows."""
        return pending_rows + rows > CHUNK_ROWS

    def in_state_arithmetic(self, product: np.ndarray, buffer) -> np.ndarray:
        """A block product as the state adds it (``buffer(shape, dtype)`` gives a reused scratch array)."""
        return product

    def add_(self, total: np.ndarray, residual: np.ndarray | None, increment: np.ndarray, sign: int) -> None:
        """Host, in place: ``total += sign · increment`` (``increment`` may be consumed)."""
        (np.add if sign > 0 else np.subtract)(total, increment, out=total)

    def add(self, total, residual, increment, increment_residual, sign: int):
        """JAX: ``total ± increment`` of moment trees; returns the new totals, residuals and an overflow flag."""
        moments = jax.tree.map(lambda t, v: t + sign * v, total, increment)
        return moments, None, jnp.bool_(False)

    def to_float(self, value, grid_exponent: int, dtype=None):
        """A stored moment as floats: host float64 for ``dtype=None``, else a JAX array of ``dtype``."""
        return np.asarray(value, np.float64) if dtype is None else value.astype(dtype)

    def negative_diagonal(self, gram, before_gram) -> bool:
        """Whether a subtraction left the stored Gram ``gram`` (host or JAX) with a diagonal entry below zero
        (floats: below −1e-6 of the largest diagonal entry of ``before_gram``)."""
        xp = np if isinstance(gram, np.ndarray) else jnp
        scale = xp.max(xp.abs(xp.diagonal(before_gram)))
        return xp.any(xp.diagonal(gram) < -1e-6 * scale)


@dataclasses.dataclass(frozen=True)
class Float64(Precision):
    """Plain float64 sums (a device state needs ``jax_enable_x64``)."""

    name: ClassVar[str] = "float64"
    leaf_dtype: ClassVar[type] = np.float64
    compute_dtype: ClassVar[type] = np.float64
    direct_fold: ClassVar[bool] = True

    def device_dtype(self):
        if not x64_enabled():
            raise IntegrityError("float64 statistics on a JAX device need jax_enable_x64; without it use "
                                 "precision='float32' or 'fixed'")
        return jnp.float64


@dataclasses.dataclass(frozen=True)
class Float32(Precision):
    """float32 products around a mean shift, added with a Kahan step."""

    name: ClassVar[str] = "float32"
    leaf_dtype: ClassVar[type] = np.float32
    compute_dtype: ClassVar[type] = np.float32
    compensated: ClassVar[bool] = True
    default_shift: ClassVar[bool] = True

    def add_(self, total, residual, increment, sign):
        if sign < 0:
            np.negative(increment, out=increment)
        kahan_add_(total, residual, increment)

    def add(self, total, residual, increment, increment_residual, sign):
        value = jax.tree.map(lambda v, c: sign * (v - c), increment, increment_residual)
        corrected = jax.tree.map(jnp.subtract, value, residual)
        new_total = jax.tree.map(jnp.add, total, corrected)
        new_residual = jax.tree.map(lambda t, old, c: (t - old) - c, new_total, total, corrected)
        return new_total, new_residual, jnp.bool_(False)


@dataclasses.dataclass(frozen=True)
class Fixed(Precision):
    """Exact integers on the grid :math:`2^{-f}`, stored as int32 words."""

    name: ClassVar[str] = "fixed"
    leaf_dtype: ClassVar[type] = np.int32
    compute_dtype: ClassVar[type] = np.float64
    on_grid: ClassVar[bool] = True

    def zeros(self, *shape):
        return words.zeros(shape)

    def leaf_shape(self, shape):
        return (*shape, words.N_WORDS)

    def host(self, moments):
        return jax.tree.map(words.to_int64, jax.device_get(moments))

    def working(self, moments):
        return self.host(moments)  # already new arrays

    def stored(self, moments):
        return jax.tree.map(words.from_int64, moments)

    def prepare_rows(self, rows, out, *, shift, frac_bits, batch):
        np.multiply(rows, 2.0**frac_bits, out=out)
        np.rint(out, out=out)
        largest = max(out.max(), -out.min())  # NaN propagates; no |q| array
        if not np.isfinite(largest):
            raise InputError(non_finite_message(batch))
        check_fixed_range("features", largest, frac_bits)
        return float(largest)

    def prepare_targets(self, values, out, frac_bits):
        values = quantize(values, frac_bits)
        largest = max(float(np.abs(values).max()), 1.0)
        check_fixed_range("targets", largest, frac_bits)
        out[...] = values
        return largest

    def as_seen(self, values, frac_bits):
        return np.ldexp(quantize(values, frac_bits), -frac_bits)

    def rows_per_product(self, rows, row_bound):
        return max(1, int(EXACT_FLOAT_LIMIT // row_bound) - 1)

    def flush_due(self, pending_rows, pending_bound, rows, bound):
        return pending_bound + bound >= EXACT_FLOAT_LIMIT

    def in_state_arithmetic(self, product, buffer):
        integer = buffer(product.shape, np.int64)
        np.copyto(integer, product, casting="unsafe")  # exact: every entry is an integer below 2^53
        return integer

    def add_(self, total, residual, increment, sign):
        if not int_sum_fits(total, increment):
            raise IntegrityError("fixed-point statistics would overflow int64: lower frac_bits or rescale the features")
        (np.add if sign > 0 else np.subtract)(total, increment, out=total)

    def add(self, total, residual, increment, increment_residual, sign):
        increment = increment if sign > 0 else jax.tree.map(words.negate, increment)
        moments = jax.tree.map(words.add, total, increment)
        overflow = jnp.logical_not(jnp.all(jnp.stack([words.in_range(leaf) for leaf in jax.tree.leaves(moments)])))
        return moments, None, overflow

    def to_float(self, value, grid_exponent, dtype=None):
        value = words.to_int64(value).astype(np.float64) if dtype is None else words.to_float(value, dtype)
        return value * 2.0**-grid_exponent  # a power of two: exact

    def negative_diagonal(self, gram, before_gram):
        diagonal = gram.diagonal(axis1=0, axis2=1).T  # (d, words)
        if isinstance(gram, np.ndarray):
            return bool((words.to_int64(diagonal) < 0).any())
        return jnp.any(words.is_negative(diagonal))


PRECISIONS = {p.name: p for p in (Float64(), Float32(), Fixed())}


def precision_of(name: str) -> Precision:
    """The :class:`Precision` object named ``name`` (a state's ``precision`` field).

    Args:
      name: ``"float64"``, ``"float32"`` or ``"fixed"``.

    Raises:
      InputError: an unknown name.

    Example:
      >>> precision_of("fixed").leaf_shape((4, 4))
      (4, 4, 3)
    """
    try:
        return PRECISIONS[name]
    except (KeyError, TypeError):
        raise InputError(f"precision must be one of {tuple(PRECISIONS)}, got {name!r}") from None


# ----------------------------------------------------------------------------------------------------------------
# Host kernels.


def kahan_add_(total: np.ndarray, residual: np.ndarray, increment: np.ndarray) -> None:
    """In-place Kahan step ``total += increment`` (true sum ``total - residual``); ``increment`` is consumed. Runs in
    bands of rows so that the five passes of each band stay in cache."""
    if total.ndim == 2 and total.shape[0] > BAND_ROWS:
        for start in range(0, total.shape[0], BAND_ROWS):
            band = slice(start, start + BAND_ROWS)
            kahan_add_(total[band], residual[band], increment[band])
        return
    increment -= residual  # y = increment - c
    residual[...] = total  # keep the old total
    total += increment  # t = total + y
    np.subtract(total, residual, out=residual)
    residual -= increment  # c = (t - total) - y


def _largest_magnitude(array: np.ndarray) -> int:
    return int(max(array.max(initial=0), -array.min(initial=0)))


def int_sum_fits(total: np.ndarray, increment: np.ndarray) -> bool:
    r"""Whether ``total ± increment`` of int64 arrays provably stays exact: :math:`\max|t| + \max|i| < 2^{62}`.

    Every fixed-point sum in the library (batches, merged states, federated totals) is checked against this bound,
    the exact range of :mod:`analytic.words`, which keeps each total a factor of two inside int64's range.

    Args:
      total: an int64 array.
      increment: an int64 array added to or subtracted from it.

    Example:
      >>> int_sum_fits(np.array([2**61]), np.array([2**60])), int_sum_fits(np.array([2**61]), np.array([2**61]))
      (True, False)
    """
    return _largest_magnitude(total) + _largest_magnitude(increment) < words.INT_HEADROOM


def quantize(values: np.ndarray, frac_bits: int) -> np.ndarray:
    """Round to the fixed-point grid :math:`2^{-f}`: integer-valued float64 :math:`q = \\mathrm{rint}(x 2^f)`
    (the product by a power of two is exact; one new array, rounded in place).

    Args:
      values: a floating array.
      frac_bits: the fractional bits f of the grid.

    Example:
      >>> quantize(np.array([0.1, -1.5]), 2)
      array([ 0., -6.])
    """
    scaled = np.multiply(values, 2.0**frac_bits, dtype=np.float64)
    return np.rint(scaled, out=scaled)


def check_fixed_range(name: str, largest: float, frac_bits: int) -> None:
    """Refuse quantized values at or above :math:`2^{26}` (their squares would leave float64's exact integers)."""
    if largest >= FIXED_VALUE_LIMIT:
        raise InputError(
            f"{name} reach {np.ldexp(largest, -frac_bits):.6g}, outside the fixed-point range |value| < "
            f"2^{26 - frac_bits} at frac_bits={frac_bits}: rescale them or lower frac_bits"
        )


def non_finite_message(x: np.ndarray) -> str:
    """What is wrong with features whose products are not finite: the first NaN/Inf row, or overflowing squares."""
    rows = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if rows.size == 0:
        return "features are too large: their squares overflow the accumulation dtype"
    kind = "NaN" if np.isnan(x[rows[0]]).any() else "Inf"
    return f"features contain {kind} (first in row {int(rows[0])}, {rows.size} bad rows)"
