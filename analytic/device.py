r"""The JAX path of the statistics: pure functions that run under ``jax.jit`` on any device, sharded or not.

:func:`analytic.accumulate`, :func:`analytic.merge` and :func:`analytic.subtract` come here for a state whose leaves
are JAX arrays, or whose inputs are traced. Shapes are static (class ids and shift live in the treedef), checks on
values set the state's error flag instead of raising inside jit, and outside jit a flagged result raises at once.

Float precisions use one product of the augmented batch :math:`A = [X - s,\; Y,\; 1]` (as the host does):

.. math::
    A^\top A = \begin{pmatrix} \tilde X^\top \tilde X & \tilde X^\top Y & \tilde X^\top 1 \\
    \cdot & Y^\top Y & Y^\top 1 \\ \cdot & \cdot & n \end{pmatrix},

float32 adding it with a Kahan step. Fixed precision is exact without float64 or int64 (an Ozaki-style split):
the quantized batch :math:`Q = \mathrm{rint}(A\,2^f)` is cut into four signed 7-bit limbs
:math:`Q = \sum_{j=0}^{3} 2^{7j} L_j`, each limb product :math:`L_j^\top L_k` is an int8 × int8 → int32 matmul
(exact: every partial sum stays below 2³¹ for chunks of ``LIMB_CHUNK_ROWS`` rows; int8 tensor cores on GPUs), and

.. math::
    Q^\top Q = \sum_{s=0}^{6} 2^{7s} P_s, \qquad P_s = \sum_{j + k = s} L_j^\top L_k,

is carried digit by digit into exact int32 words (:mod:`analytic.words`). The totals are integers, so a sharded
batch (whose partial products XLA reduces across devices or processes) gives the same words as one device.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from analytic import words
from analytic.errors import InputError
from analytic.precision import FIXED_VALUE_LIMIT, precision_of
from analytic.state import (
    FIXED_RANGE,
    INT_OVERFLOW,
    NEGATIVE_COUNT,
    NEGATIVE_DIAGONAL,
    NON_FINITE,
    UNKNOWN_LABEL,
    Moments,
    Statistics,
    check_leaves,
    combined_shift,
    mean_shift,
    raise_flagged,
    with_classes,
)
from analytic.validation import check_feature_shape, check_label_shape, check_mask_shape, target_matrix

LIMB_BITS = 7
N_LIMBS = 4  # 4 limbs of 7 bits hold the fixed-point range |q| < 2^26
LIMB_CHUNK_ROWS = 16384  # 4 · 127² · rows (plus a carry) stays below 2^31
_HIGHEST = jax.lax.Precision.HIGHEST


def to_device(stats: Statistics) -> Statistics:
    """The state with JAX-array leaves (a no-op for a device state), checked against its precision."""
    moved = jax.tree.map(jnp.asarray, stats)
    check_leaves(moved)
    return moved


def accumulate(stats: Statistics, features, targets, mask=None) -> Statistics:
    """:func:`analytic.accumulate` in JAX: the state plus the moments of one batch (see the module docstring);
    rows where ``mask`` is False are replaced by zeros and not counted."""
    x = jnp.asarray(features)
    check_feature_shape(x, stats.dim)
    keep = jnp.ones(x.shape[0], bool) if mask is None else jnp.asarray(mask)
    check_mask_shape(keep, x.shape[0])
    stats = to_device(stats)
    if stats.is_classification:
        labels = jnp.asarray(targets)
        check_label_shape(labels, x.shape[0])
        stats = _with_seen_classes(stats, labels if mask is None or isinstance(keep, jax.core.Tracer)
                                   else labels[np.asarray(keep)])
        class_ids = jnp.asarray(stats.class_ids, labels.dtype)
        y = (labels[:, None] == class_ids[None, :]) & keep[:, None]
        label_error = jnp.where(jnp.all(jnp.any(y, axis=1) | ~keep), 0, UNKNOWN_LABEL).astype(jnp.uint32)
        class_counts = jnp.sum(y, axis=0, dtype=jnp.int32)
    else:
        y = jnp.where(keep[:, None], target_matrix(jnp.asarray(targets), x.shape[0], stats.n_outputs), 0)
        label_error, class_counts = jnp.uint32(0), None
    arithmetic = precision_of(stats.precision)
    if arithmetic.default_shift and stats.shift is None:
        stats = dataclasses.replace(stats, shift=_first_rows_mean(x))
    batch_moments = _fixed_moments if arithmetic.on_grid else _float_moments
    increment, batch_error = batch_moments(stats, x, y, keep)
    batch = dataclasses.replace(
        stats,
        moments=increment,
        compensation=None if stats.compensation is None else jax.tree.map(jnp.zeros_like, increment),
        count_words=words.from_int32(jnp.sum(keep, dtype=jnp.int32)),
        class_count_words=None if class_counts is None else words.from_int32(class_counts),
        error=label_error | batch_error,
    )
    return combine(stats, batch, +1)


def combine(a: Statistics, b: Statistics, sign: int) -> Statistics:
    """``a ± b`` for aligned, compatible states, as JAX arrays; a subtraction flags negative counts or diagonals."""
    a, b = to_device(a), to_device(b)
    shift = combined_shift(a, b)
    arithmetic = precision_of(a.precision)
    moments, compensation, overflow = arithmetic.add(a.moments, a.compensation, b.moments, b.compensation, sign)
    error = jnp.where(overflow, INT_OVERFLOW, 0).astype(jnp.uint32)
    count_words = _add_count_words(a.count_words, b.count_words, sign)
    class_count_words = (None if a.class_count_words is None
                         else _add_count_words(a.class_count_words, b.class_count_words, sign))
    error = error | a.error | b.error
    if sign < 0:
        negative = jnp.any(words.is_negative(count_words))
        if class_count_words is not None:
            negative = negative | jnp.any(words.is_negative(class_count_words))
        error = error | jnp.where(negative, NEGATIVE_COUNT, 0).astype(jnp.uint32)
        negative_diagonal = arithmetic.negative_diagonal(moments.gram, a.moments.gram)
        error = error | jnp.where(negative_diagonal, NEGATIVE_DIAGONAL, 0).astype(jnp.uint32)
    result = dataclasses.replace(
        a, moments=moments, compensation=compensation, count_words=count_words,
        class_count_words=class_count_words, error=error, shift=shift,
    )
    raise_flagged(result.error)
    return result


# ----------------------------------------------------------------------------------------------------------------
# Inputs: static checks raise (shapes and dtypes are known at trace time); value checks become flags.


def _with_seen_classes(stats: Statistics, labels: jnp.ndarray) -> Statistics:
    """Outside jit, concrete labels add their classes (as on the host) and bad ids raise; inside jit the declared
    classes are all there is (an unknown label sets the flag)."""
    if isinstance(labels, jax.core.Tracer):
        return stats
    present = np.unique(np.asarray(labels))
    if present.size and present.min() < 0:
        raise InputError(f"labels must be non-negative class ids, got {int(present.min())}")
    if np.isin(present, stats.class_ids).all():
        return stats
    return with_classes(stats, np.union1d(stats.class_ids, present))


def _first_rows_mean(x: jnp.ndarray) -> np.ndarray:
    """The float32 shift from the first batch, as the host computes it (:func:`analytic.mean_shift`)."""
    if isinstance(x, jax.core.Tracer):
        raise InputError(
            "a float32 state needs its mean shift before jit: init_statistics(d, precision='float32', "
            "shift=analytic.mean_shift(some_features)), or accumulate a first batch outside jit"
        )
    return mean_shift(x)


# ----------------------------------------------------------------------------------------------------------------
# Moments of one batch.


def _float_moments(stats: Statistics, x: jnp.ndarray, y: jnp.ndarray, keep) -> tuple[Moments, jnp.ndarray]:
    dtype = precision_of(stats.precision).device_dtype()
    x = x.astype(dtype)
    if stats.shift is not None:
        x = x - jnp.asarray(stats.shift, dtype)[None, :]
    x = jnp.where(keep[:, None], x, 0)
    d, m = stats.dim, stats.n_outputs
    augmented = jnp.concatenate([x, y.astype(dtype), keep[:, None].astype(dtype)], axis=1)
    product = jnp.matmul(augmented.T, augmented, precision=_HIGHEST)
    error = jnp.where(jnp.all(jnp.isfinite(jnp.diagonal(product))), 0, NON_FINITE).astype(jnp.uint32)
    class_grams = None
    if stats.moments.class_grams is not None:
        class_grams = jnp.einsum("nc,ni,nj->cij", y.astype(dtype), x, x, precision=_HIGHEST)
    return _split_product(product, d, m, stats.is_classification, class_grams), error


def _split_product(product, d: int, m: int, classification: bool, class_grams) -> Moments:
    """The moments as blocks of the augmented product (float, or words with a trailing axis)."""
    return Moments(
        gram=product[:d, :d],
        cross=product[:d, d : d + m],
        feature_sum=product[:d, d + m],
        target_sum=None if classification else product[d : d + m, d + m],
        class_grams=class_grams,
    )


def _fixed_moments(stats: Statistics, x: jnp.ndarray, y: jnp.ndarray, keep) -> tuple[Moments, jnp.ndarray]:
    """Exact integer moments of the quantized batch from int8 limb products (module docstring)."""
    grid = jnp.float64 if x.dtype == jnp.float64 else jnp.float32
    scale = jnp.asarray(2.0**stats.frac_bits, grid)
    q, error = _on_grid(jnp.where(keep[:, None], x.astype(grid) * scale, 0))
    if stats.is_classification:
        t = y.astype(jnp.int32)  # one-hot targets are not quantized
    else:
        t, target_error = _on_grid(y.astype(grid) * scale)
        error = error | target_error
    augmented = jnp.concatenate([q, t, keep[:, None].astype(jnp.int32)], axis=1)
    d, m = stats.dim, stats.n_outputs
    class_grams = None
    if stats.moments.class_grams is not None:
        rows = augmented[:, :d]
        class_grams = jnp.stack([_exact_gram(jnp.where(y[:, c : c + 1], rows, 0)) for c in range(m)])
    return _split_product(_exact_gram(augmented), d, m, stats.is_classification, class_grams), error


def _on_grid(scaled: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """rint(scaled) as int32 and the flag for NaN/Inf or values outside |q| < 2^26 (those become 0)."""
    q = jnp.rint(scaled)
    finite = jnp.isfinite(q)
    inside = jnp.abs(q) < FIXED_VALUE_LIMIT
    error = (jnp.where(jnp.all(finite), 0, NON_FINITE) | jnp.where(jnp.all(inside | ~finite), 0, FIXED_RANGE))
    return jnp.where(finite & inside, q, 0).astype(jnp.int32), error.astype(jnp.uint32)


def _limbs(values: jnp.ndarray) -> list[jnp.ndarray]:
    """Signed 7-bit limbs (int8) with :math:`v = \\sum_j 2^{7j} L_j`: three in [0, 127], the top one signed."""
    mask = (1 << LIMB_BITS) - 1
    limbs = []
    for _ in range(N_LIMBS - 1):
        limbs.append((values & mask).astype(jnp.int8))
        values = values >> LIMB_BITS
    limbs.append(values.astype(jnp.int8))
    return limbs


def _exact_gram(rows: jnp.ndarray) -> jnp.ndarray:
    """Words (D, D, 3) of rowsᵀ rows for int32 rows with |v| < 2^26, exact, in chunks of ``LIMB_CHUNK_ROWS``."""
    total = None
    for start in range(0, rows.shape[0], LIMB_CHUNK_ROWS):
        limbs = _limbs(rows[start : start + LIMB_CHUNK_ROWS])
        digits = [None] * (2 * N_LIMBS - 1)
        for j in range(N_LIMBS):
            for k in range(j, N_LIMBS):
                product = jax.lax.dot_general(limbs[j], limbs[k], (((0,), (0,)), ((), ())),
                                              preferred_element_type=jnp.int32)
                if k != j:
                    product = product + product.T
                digits[j + k] = product if digits[j + k] is None else digits[j + k] + product
        chunk = words.from_digits(digits, LIMB_BITS)
        total = chunk if total is None else words.add(total, chunk)
    return total


# ----------------------------------------------------------------------------------------------------------------
# Adding states.


def _add_count_words(a, b, sign: int):
    return words.add(a, b if sign > 0 else words.negate(b))
