r"""Sufficient statistics of a ridge head: the state every other part of the library adds, subtracts and re-weights.

The ridge head (README: the math in brief)

.. math::
    W^\star = \arg\min_W \|Y - XW\|^2 + \gamma \|W\|^2 = (G + \gamma I)^{-1} B,
    \qquad G = X^\top X = \sum_i x_i x_i^\top, \quad B = X^\top Y = \sum_i x_i y_i^\top

depends on the data only through the additive statistics ``G``, ``B`` and the counts, so the state of a head is a
commutative monoid: learning a batch, merging two clients and forgetting samples are additions and subtractions of
the same :class:`Statistics`, and the ridge :math:`\gamma` is chosen at solve time (:mod:`analytic.ridge`).

Two homes (README: where it runs). A state of NumPy arrays is computed on the host with NumPy's BLAS; a state of
JAX arrays (``jax.device_put(stats)``, or any state inside ``jax.jit``) is computed in JAX on its device
(:mod:`analytic.device`). Features that are traced follow the JAX path too. Both homes hold the same leaves and
give the same results (bit-identical in fixed precision).

Three precisions:

``"float64"`` (default)
    float64 accumulation; solved weights match a float64 direct solve to ~1e-13. On the host it needs no JAX flag;
    on a device it needs ``jax_enable_x64``.
``"float32"``
    float32 products around a fixed mean shift :math:`s` (README: precision), accumulated with Kahan
    compensation; half the memory traffic of float64, error reported in the README.
``"fixed"``
    bit-exact: features are quantized to the grid :math:`2^{-f}` (``frac_bits`` = f) and every product is summed
    exactly as an integer (float64 GEMMs below :math:`2^{53}` on the host, int8 limb products into int32 on a device),
    so the totals are the same for any order, partition, device or process count (README: precision).

Under ``jax.jit`` shapes are static: declare the classes up front (``init_statistics(d, class_ids=[...])``); a label
outside them, NaN/Inf, or an impossible subtraction sets the state's error flag, which the next operation outside
jit (and every solve) refuses.

Per-class Grams are opt-in (``class_grams=True``): they cost ``C·d²`` numbers, e.g. 100 classes at d = 8192 in float64
is 51 GiB, at d = 2048 it is 3.2 GiB.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Iterable

import jax
import numpy as np
from rich.progress import track

from analytic import device, words
from analytic.errors import InputError, IntegrityError
from analytic.state import (
    CLASS_NOT_EMPTY,
    FOREIGN_CLASS,
    PRECISIONS,
    Moments,
    Statistics,
    check_feature_shape,
    check_label_shape,
    check_leaves,
    check_mask_shape,
    check_state,
    combined_shift,
    flag_if_held,
    mean_shift,
    same_shift,
    select_classes,
    target_matrix,
    with_classes,
)

CHUNK_ROWS = 16384  # float batches are folded in row chunks of at most this many: scratch stays O(chunk · d)
_STATE_DTYPES = {"float64": np.float64, "float32": np.float32, "fixed": np.int64}  # host working arrays
_COMPUTE_DTYPES = {"float64": np.float64, "float32": np.float32, "fixed": np.float64}
_EXACT_FLOAT_LIMIT = 2**53  # every integer below this is exact in float64
_FIXED_VALUE_LIMIT = 2**26  # a quantized value's square stays below 2^53


def init_statistics(
    dim: int,
    *,
    precision: str = "float64",
    n_targets: int | None = None,
    class_ids=None,
    class_grams: bool = False,
    shift=None,
    frac_bits: int = 12,
) -> Statistics:
    """Empty statistics for features of dimension ``dim`` (host arrays; ``jax.device_put`` moves them).

    Args:
      dim: feature dimension d.
      precision: ``"float64"`` (default), ``"float32"`` or ``"fixed"`` (bit-exact), see the module docstring.
      n_targets: ``None`` for classification with integer class ids; an int m for real-valued regression with m
        outputs.
      class_ids: classes declared up front (classification): their columns exist from the start, which jitted code
        needs (static shapes). Outside jit, unseen classes are still added as they appear.
      class_grams: also keep one Gram per class (C·d² memory), needed by class re-weighting (AIR).
      shift: fixed mean shift s of shape (d,). In float32 precision, ``None`` takes :func:`analytic.mean_shift` of
        the first batch outside jit (inside jit, declare it, e.g. ``shift=analytic.mean_shift(x)``); pass the same
        shift to every state that will be merged. Not allowed in fixed precision.
      frac_bits: fractional bits f of the fixed-point grid 2^-f (fixed precision only).

    Example:
      >>> stats = init_statistics(64, class_ids=[0, 1, 2], precision="fixed")
      >>> stats = jax.jit(accumulate)(stats, features, labels)  # doctest: +SKIP
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if int(dim) < 1:
        raise InputError(f"dim must be a positive integer, got {dim}")
    if n_targets is not None and int(n_targets) < 1:
        raise InputError(f"n_targets must be a positive integer or None for classification, got {n_targets}")
    if n_targets is not None and class_ids is not None:
        raise InputError("class_ids declare the classes of a classification head; regression takes n_targets")
    if precision == "fixed" and shift is not None:
        raise InputError("fixed precision takes no shift: the integer grid is already exact")
    if precision == "fixed" and not 0 <= frac_bits <= 24:
        raise InputError(f"frac_bits must be in [0, 24], got {frac_bits}")
    if class_grams and n_targets is not None:
        raise InputError("class_grams needs a classification head (n_targets=None)")
    classification = n_targets is None
    ids = _check_class_ids(class_ids) if classification else None
    m = ids.size if classification else int(n_targets)

    def zeros(*shape):
        return words.zeros(shape) if precision == "fixed" else np.zeros(shape, _STATE_DTYPES[precision])

    moments = Moments(
        gram=zeros(dim, dim),
        cross=zeros(dim, m),
        feature_sum=zeros(dim),
        target_sum=None if classification else zeros(m),
        class_grams=zeros(m, dim, dim) if class_grams else None,
    )
    if shift is not None:
        shift = _check_shift(shift, dim, _COMPUTE_DTYPES[precision])
    return Statistics(
        moments=moments,
        compensation=jax.tree.map(np.zeros_like, moments) if precision == "float32" else None,
        count_words=words.zeros(()),
        class_count_words=words.zeros((m,)) if classification else None,
        error=np.uint32(0),
        class_ids=ids,
        shift=shift,
        precision=precision,
        frac_bits=frac_bits if precision == "fixed" else 0,
    )


def accumulate(stats: Statistics, features, targets, *, mask=None) -> Statistics:
    r"""Learn one batch: :math:`G \mathrel{+}= X^\top X`, :math:`B \mathrel{+}= X^\top Y` (README: the math in brief).

    Runs on the host for a host state and host (or concrete JAX) features, in JAX on the state's device otherwise;
    works under ``jax.jit`` on a state with declared classes.

    Args:
      stats: the state to add to (unchanged; a new state is returned).
      features: (n, d) floating array (NumPy or JAX), n ≥ 1, finite.
      targets: (n,) non-negative integer class ids for a classification state (unseen ids add columns outside
        jit), or (n, m) / (n,) real values for a regression state.
      mask: optional (n,) booleans; rows where it is False are not learned (their values are not even read), so
        batches of varying size can be padded to one static shape for ``jit``, ``vmap`` or ``lax.scan``.

    Raises:
      InputError: naming the problem (NaN/Inf, shape, dtype, labels); ``stats`` is unchanged. Inside jit the
        state's error flag is set instead.

    Example:
      >>> stats = accumulate(init_statistics(4), np.eye(4), np.array([3, 7, 3, 7]))
      >>> stats.class_ids, int(stats.count)
      (array([3, 7]), 4)
    """
    check_state(stats)
    if _in_jax(stats, features, targets, mask):
        return device.accumulate(stats, features, targets, mask)
    if mask is not None:
        keep = _check_mask(mask, np.shape(features)[0] if np.ndim(features) else 0)
        if not keep.any():
            return stats
        features, targets = np.asarray(features)[keep], np.asarray(targets)[keep]
    accumulator = _Accumulator(stats)
    accumulator.add_batch(features, targets)
    return accumulator.result()


def fit(batches: Iterable, stats: Statistics, *, progress: bool = False, total: int | None = None) -> Statistics:
    """Accumulate a stream of ``(features, targets)`` batches into ``stats``.

    On the host, peak memory is O(d² + batch·d) whatever the number of samples: the state is copied once and each
    batch is folded into the copy in place, then dropped. A device state folds each batch with :func:`accumulate`.

    Args:
      batches: iterable of ``(features, targets)`` pairs (see :func:`accumulate`).
      stats: starting state, e.g. :func:`init_statistics` (d) or a state to continue.
      progress: show a progress bar.
      total: number of batches, for the progress bar.
    """
    check_state(stats)
    stream = track(batches, total=total, disable=not progress, description="accumulating")
    if stats.on_device:
        for features, targets in stream:
            stats = accumulate(stats, features, targets)
        return stats
    accumulator = _Accumulator(stats)
    for features, targets in stream:
        accumulator.add_batch(features, targets)
    return accumulator.result()


def merge(a: Statistics, b: Statistics) -> Statistics:
    """Sum of two states: the state of the pooled samples (federated aggregation, README: the math in brief).

    Classes are united (sorted ids), so merging is commutative and associative; in fixed precision the result is
    bit-identical for any order and grouping. Under jit the union is static (it depends on the class ids only).
    """
    _check_pair(a, b)
    if a.is_classification:
        union = np.union1d(a.class_ids, b.class_ids)
        a, b = with_classes(a, union), with_classes(b, union)
    return _combine(a, b, +1)


def subtract(a: Statistics, b: Statistics) -> Statistics:
    """``a`` minus ``b``: the state of ``a``'s samples without ``b``'s (unlearning samples or a client).

    Raises:
      IntegrityError: ``b`` holds a class ``a`` never learned, more samples than ``a`` (overall or for a class),
        or a Gram diagonal larger than ``a``'s — ``b`` was never part of ``a``. Both states are unchanged. Inside
        jit the result's error flag is set instead.
    """
    _check_pair(a, b)
    if a.is_classification:
        b = _aligned_for_subtraction(a, b)
    if a.on_device or b.on_device:
        return device.combine(a, b, -1)
    if b.count > a.count:
        raise IntegrityError(
            f"subtracting {int(b.count)} samples from a state of {int(a.count)} would make the count negative: "
            "these samples were never learned"
        )
    if a.is_classification:
        negative = np.flatnonzero(a.class_counts < b.class_counts)
        if negative.size:
            c = negative[0]
            raise IntegrityError(
                f"subtracting would make the count of class {int(a.class_ids[c])} negative "
                f"({int(a.class_counts[c])} - {int(b.class_counts[c])}): these samples were never learned"
            )
    result = _combine(a, b, -1)
    _check_gram_diagonal(result, a)
    return result


def _aligned_for_subtraction(a: Statistics, b: Statistics) -> Statistics:
    """``b`` on ``a``'s class columns; a class ``b`` holds samples of that ``a`` lacks is refused (static check)."""
    foreign = np.setdiff1d(b.class_ids, a.class_ids)
    if foreign.size:
        positions = np.searchsorted(b.class_ids, foreign)
        counts = b.class_count_words[positions]
        if isinstance(counts, jax.core.Tracer):
            b = flag_if_held(b, counts, FOREIGN_CLASS)
        elif words.to_int64(counts).any():
            held = foreign[words.to_int64(counts) != 0]
            raise IntegrityError(f"cannot subtract classes {held.tolist()}: they were never learned")
        b = select_classes(b, np.flatnonzero(np.isin(b.class_ids, a.class_ids)))
    return with_classes(b, a.class_ids)


def drop_classes(stats: Statistics, class_ids) -> Statistics:
    """Remove the output columns of classes that hold no samples any more (after subtracting all their rows).

    A forgotten class must leave the output space: a zero column still scores 0 and can win the argmax
    (the field's evaluation conventions, the class-removal trap). Under jit ``class_ids`` must be static.

    Raises:
      IntegrityError: a class is unknown or still holds samples.
    """
    check_state(stats)
    if not stats.is_classification:
        raise IntegrityError("drop_classes needs a classification state")
    ids = np.unique(np.asarray(class_ids, dtype=np.int64))
    unknown = np.setdiff1d(ids, stats.class_ids)
    if unknown.size:
        raise IntegrityError(f"cannot drop classes {unknown.tolist()}: they are not in the head")
    positions = np.searchsorted(stats.class_ids, ids)
    remaining = stats.class_count_words[positions]
    if isinstance(remaining, jax.core.Tracer):
        stats = flag_if_held(stats, remaining, CLASS_NOT_EMPTY)
    else:
        held = words.to_int64(remaining)
        if held.any():
            c = int(np.flatnonzero(held)[0])
            raise IntegrityError(
                f"class {int(ids[c])} still holds {int(held[c])} samples: subtract them before dropping the column"
            )
    keep = np.setdiff1d(np.arange(stats.n_outputs), positions)
    return select_classes(stats, keep)


def state_hash(stats: Statistics) -> str:
    """A stable sha256 of the state (configuration, class ids, counts and every array's dtype, shape and bytes).

    The same in every home (host, device, any number of devices or processes): device states are read back to the
    host first. In fixed precision, equal multisets of samples give equal hashes for any order or partition.
    """
    check_state(stats)
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(stats)):
        raise InputError("state_hash reads the state on the host: call it outside jax.jit")
    stats = _canonical_on_host(stats)
    digest = hashlib.sha256()
    digest.update(f"analytic.Statistics|{stats.precision}|{stats.frac_bits}".encode())
    for name, value in (("class_ids", stats.class_ids), ("shift", stats.shift)):
        digest.update(name.encode() + (b"None" if value is None else np.ascontiguousarray(value).tobytes()))
    for path, leaf in jax.tree_util.tree_flatten_with_path(stats, is_leaf=lambda v: v is None)[0]:
        digest.update(jax.tree_util.keystr(path).encode())
        if leaf is None:
            digest.update(b"None")
            continue
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _canonical_on_host(stats: Statistics) -> Statistics:
    """The same state read back to host arrays, every integer leaf in canonical words (what a hash reads)."""
    host = jax.device_get(stats)

    def recode(leaf):
        if leaf is None or leaf.dtype != np.int32:
            return None if leaf is None else np.asarray(leaf)
        return words.from_int64(words.to_int64(leaf))

    return jax.tree.map(recode, host, is_leaf=lambda v: v is None)


def host_moments(stats: Statistics) -> Moments:
    """The moments as host arrays: float64/float32 as stored, fixed precision as exact int64 on the grid."""
    check_state(stats)
    moments = jax.device_get(stats.moments)
    if stats.precision != "fixed":
        return moments
    return jax.tree.map(words.to_int64, moments)


def from_host_moments(moments: Moments, count, class_ids, class_counts, *, precision: str = "float64",
                      frac_bits: int = 0, shift=None) -> Statistics:
    """A host :class:`Statistics` from host moments (int64 in fixed precision, as :func:`host_moments` gives them)
    and int64 counts, checked like any state."""
    encode = words.from_int64 if precision == "fixed" else (lambda a: a)
    stats = Statistics(
        moments=jax.tree.map(encode, moments),
        compensation=None,
        count_words=words.from_int64(count),
        class_count_words=None if class_counts is None else words.from_int64(class_counts),
        error=np.uint32(0),
        class_ids=class_ids,
        shift=shift,
        precision=precision,
        frac_bits=frac_bits if precision == "fixed" else 0,
    )
    check_leaves(stats)
    return stats


def _check_pair(a: Statistics, b: Statistics) -> None:
    check_state(a)
    check_state(b)
    _check_compatible(a, b)


def _in_jax(stats: Statistics, *arrays) -> bool:
    """Whether an operation runs in JAX: a device state, or traced inputs."""
    return stats.on_device or any(isinstance(a, jax.core.Tracer) for a in arrays)


def _check_mask(mask, n: int) -> np.ndarray:
    keep = np.asarray(mask)
    check_mask_shape(keep, n)
    return keep


def _check_class_ids(class_ids) -> np.ndarray:
    if class_ids is None:
        return np.zeros(0, np.int64)
    ids = np.asarray(class_ids)
    if ids.ndim != 1 or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
        raise InputError(f"class_ids must be a 1-D sequence of integers, got {ids.dtype} of shape {ids.shape}")
    ids = ids.astype(np.int64)
    if ids.size and (ids.min() < 0 or np.any(np.diff(np.sort(ids)) == 0)):
        raise InputError("class_ids must be unique non-negative integers")
    return np.sort(ids)


# ----------------------------------------------------------------------------------------------------------------
# Validation.


def check_features(features, dim: int | None = None, *, finite: bool = False) -> np.ndarray:
    """Features as a host (n, d) floating array; raises :class:`InputError` naming what is wrong.

    Args:
      features: NumPy or JAX array.
      dim: the expected d, or ``None`` for any.
      finite: also check for NaN/Inf here. :func:`accumulate` leaves it off and detects them from the batch Gram's
        diagonal instead (a NaN or Inf in any row makes it non-finite), which costs O(d), not a pass over the batch.
    """
    x = np.asarray(features)
    check_feature_shape(x, dim)
    if finite and not np.isfinite(x).all():
        raise InputError(_non_finite_message(x))
    return x


def check_labels(labels, n: int) -> np.ndarray:
    """Class ids as a host (n,) int64 array of non-negative integers."""
    y = np.asarray(labels)
    check_label_shape(y, n)
    if y.size and y.min() < 0:
        raise InputError(f"labels must be non-negative class ids, got {int(y.min())}")
    return y.astype(np.int64, copy=False)


def check_targets(targets, n: int, m: int) -> np.ndarray:
    y = target_matrix(np.asarray(targets), n, m)
    if not np.isfinite(y).all():
        raise InputError("regression targets contain NaN or Inf")
    return y


def _check_shift(shift, dim: int, dtype) -> np.ndarray:
    s = np.asarray(shift)
    if s.shape != (dim,):
        raise InputError(f"shift must have shape ({dim},), got {s.shape}")
    if not np.isfinite(s).all():
        raise InputError("shift contains NaN or Inf")
    return s.astype(dtype)


def _non_finite_message(x: np.ndarray) -> str:
    rows = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if rows.size == 0:
        return "features are too large: their squares overflow the accumulation dtype"
    kind = "NaN" if np.isnan(x[rows[0]]).any() else "Inf"
    return f"features contain {kind} (first in row {int(rows[0])}, {rows.size} bad rows)"


def _check_compatible(a: Statistics, b: Statistics) -> None:
    if (a.precision, a.frac_bits) != (b.precision, b.frac_bits):
        raise IntegrityError(
            f"cannot combine {a.precision} (frac_bits={a.frac_bits}) with {b.precision} "
            f"(frac_bits={b.frac_bits}) statistics"
        )
    if a.dim != b.dim:
        raise IntegrityError(f"cannot combine statistics of dimension {a.dim} and {b.dim}")
    if a.is_classification != b.is_classification or (not a.is_classification and a.n_outputs != b.n_outputs):
        raise IntegrityError("cannot combine statistics of different tasks (classification vs regression outputs)")
    if (a.moments.class_grams is None) != (b.moments.class_grams is None):
        raise IntegrityError("cannot combine statistics with and without per-class Grams")
    traced = any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((a, b)))
    if not same_shift(a, b) and (traced or (a.count > 0 and b.count > 0)):
        raise IntegrityError(
            "statistics were accumulated around different mean shifts: pass the same shift= to init_statistics "
            "for every state that will be combined"
        )


def _check_gram_diagonal(result: Statistics, before: Statistics) -> None:
    if result.precision == "fixed":
        bad = words.to_int64(np.diagonal(result.moments.gram).T) < 0
    else:
        diagonal = np.diagonal(result.moments.gram)
        scale = np.abs(np.diagonal(before.moments.gram)).max(initial=0.0)
        bad = diagonal < -1e-6 * scale
    if bad.any():
        raise IntegrityError(
            "subtracting would make the Gram matrix's diagonal negative: these samples were never learned"
        )


# ----------------------------------------------------------------------------------------------------------------
# Accumulation, in place on a private copy.


def _gram_into(buffer: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """rowsᵀ rows written into a reused (d, d) ``buffer`` (NumPy's transposed-product path, BLAS syrk)."""
    return np.matmul(rows.T, rows, out=buffer)


def _kahan_add_(total: np.ndarray, residual: np.ndarray, increment: np.ndarray) -> None:
    """In-place Kahan step ``total += increment`` (true sum ``total - residual``); ``increment`` is consumed."""
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
    """
    return _largest_magnitude(total) + _largest_magnitude(increment) < words.INT_HEADROOM


def _checked_int_add_(total: np.ndarray, increment: np.ndarray, sign: int) -> None:
    """``total += sign · increment`` for int64 arrays, refusing sums that could overflow."""
    if not int_sum_fits(total, increment):
        raise IntegrityError("fixed-point statistics would overflow int64: lower frac_bits or rescale the features")
    (np.add if sign > 0 else np.subtract)(total, increment, out=total)


class _Accumulator:
    """A private, mutable copy of a state that batches and other states are added into in place.

    :func:`accumulate`, :func:`fit`, :func:`merge` and :func:`subtract` stay pure: each copies the state once here
    and adds in place, each batch's Gram going through one reused (d, d) buffer, so a stream of batches allocates
    no d×d array per batch.
    """

    def __init__(self, stats: Statistics):
        """Working copies: float moments as they are, fixed-point moments and counts as int64 (from their words)."""
        def copy(tree):
            return None if tree is None else jax.tree.map(np.array, tree)

        moments = host_moments(stats)
        self.state = dataclasses.replace(
            stats,
            moments=jax.tree.map(np.array, moments) if stats.precision != "fixed" else moments,
            compensation=copy(stats.compensation),
        )
        self.count = np.int64(stats.count)
        self.class_counts = stats.class_counts
        self._scratch: dict[str, np.ndarray] = {}

    def result(self) -> Statistics:
        """The state, its integers back in words."""
        state, self.state = self.state, None
        if state.precision == "fixed":
            state = dataclasses.replace(state, moments=jax.tree.map(words.from_int64, state.moments))
        return dataclasses.replace(
            state,
            count_words=words.from_int64(self.count),
            class_count_words=None if self.class_counts is None else words.from_int64(self.class_counts),
        )

    def widen(self, class_ids) -> None:
        """Add zero columns for new classes (the working copy's counts too)."""
        positions = np.searchsorted(class_ids, self.state.class_ids)
        counts = np.zeros(class_ids.size, np.int64)
        counts[positions] = self.class_counts
        stale = dataclasses.replace(self.state, class_count_words=words.zeros((self.state.n_outputs,)))
        self.state, self.class_counts = with_classes(stale, class_ids), counts

    def _buffer(self, name: str, dtype, shape: tuple[int, int] | None = None) -> np.ndarray:
        """A scratch array reused across batches: (d, d) by default, or ``shape`` (its first ``shape[0]`` rows of a
        kept array at least that tall and exactly that wide)."""
        shape = (self.state.dim, self.state.dim) if shape is None else shape
        kept = self._scratch.get(name)
        if kept is None or kept.shape[0] < shape[0] or kept.shape[1] != shape[1]:
            self._scratch[name] = kept = np.zeros(shape, dtype)
        return kept[: shape[0]]

    def _augmented(self, x: np.ndarray, y_index, y, dtype) -> np.ndarray:
        r""":math:`[\tilde X,\; Y,\; 1]` in ``dtype``, written into a reused (n, d + m + 1) buffer (no new
        batch-sized array per batch); :math:`\tilde X = X - s` when the state has a shift."""
        state = self.state
        d, m = state.dim, state.n_outputs
        augmented = self._buffer("augmented", dtype, (x.shape[0], d + m + 1))
        if state.shift is None:
            np.copyto(augmented[:, :d], x, casting="same_kind")
        else:
            np.subtract(x, state.shift, out=augmented[:, :d], casting="same_kind")
        if y_index is None:
            augmented[:, d : d + m] = y
        else:
            augmented[:, d : d + m] = 0
            augmented[np.arange(x.shape[0]), d + y_index] = 1
        augmented[:, -1] = 1
        return augmented

    def add_batch(self, features, targets) -> None:
        """Fold one batch in: :math:`G \\mathrel{+}= X^\\top X`, :math:`B \\mathrel{+}= X^\\top Y`."""
        state = self.state
        x = check_features(features, state.dim)
        if state.is_classification:
            labels = check_labels(targets, x.shape[0])
            present = np.unique(labels)
            if not np.isin(present, state.class_ids).all():
                self.widen(np.union1d(state.class_ids, present))
                state = self.state
            y_index, y = np.searchsorted(state.class_ids, labels), None
        else:
            y = check_targets(targets, x.shape[0], state.n_outputs)
            y_index = None
        if state.precision == "float32" and state.shift is None:
            state = self.state = dataclasses.replace(
                state, shift=mean_shift(x)
            )
        chunk = CHUNK_ROWS  # bounded scratch memory for any batch size
        if state.precision == "fixed":
            x, y, exact_chunk = self._fixed_grid(x, y)
            chunk = min(chunk, exact_chunk)
        for start in range(0, x.shape[0], chunk):
            part = slice(start, start + chunk)
            index = None if y_index is None else y_index[part]
            augmented = self._augmented(x[part], index, None if y is None else y[part],
                                        _COMPUTE_DTYPES[state.precision])
            with np.errstate(invalid="ignore", over="ignore"):  # non-finite input is reported just below
                self._add_rows(augmented, index)
        if state.precision != "fixed" and not np.isfinite(np.diagonal(self.state.moments.gram)).all():
            raise InputError(_non_finite_message(x))
        counts = None if y_index is None else np.bincount(y_index, minlength=self.state.n_outputs)
        self._add_counts(np.int64(x.shape[0]), counts, +1)

    def _add_rows(self, augmented, y_index) -> None:
        r"""Every moment from one syrk of the augmented rows :math:`A = [\tilde X, Y, 1]`:

        .. math::
            A^\top A = \begin{pmatrix} \tilde X^\top \tilde X & \tilde X^\top Y & \tilde X^\top 1 \\
            \cdot & Y^\top Y & Y^\top 1 \\ \cdot & \cdot & n \end{pmatrix},

        so the Gram, cross-moment, feature sum and target sum cost one pass over the batch (m + 1 extra columns).
        """
        d, m = self.state.dim, self.state.n_outputs
        product = self._in_state_arithmetic(
            "product", _gram_into(self._buffer("product", augmented.dtype, (d + m + 1, d + m + 1)), augmented))
        self._add_array("gram", product[:d, :d], +1)
        self._add_array("cross", product[:d, d : d + m], +1)
        self._add_array("feature_sum", product[:d, -1], +1)
        if y_index is None:
            self._add_array("target_sum", product[d : d + m, -1], +1)
        elif self.state.moments.class_grams is not None:
            rows = augmented[:, :d]
            for c in np.unique(y_index):
                gram = _gram_into(self._buffer("batch", rows.dtype), rows[y_index == c])
                self._add_array("class_grams", self._in_state_arithmetic("batch", gram), +1, c)

    def _in_state_arithmetic(self, name: str, product: np.ndarray) -> np.ndarray:
        """``product`` as the state adds it: as it is in float precisions, copied into a reused int64 buffer in
        fixed precision (exact: :meth:`_fixed_grid` keeps every entry the state uses an integer below 2^53)."""
        if self.state.precision != "fixed":
            return product
        integer = self._buffer(f"{name} int64", np.int64, product.shape)
        np.copyto(integer, product, casting="unsafe")
        return integer

    def _fixed_grid(self, x, y) -> tuple[np.ndarray, np.ndarray | None, int]:
        """Features (and regression targets) on the grid :math:`2^{-f}` as integer-valued float64, and the row chunk
        small enough that no partial sum of the float64 syrk reaches 2^53 (so it is exact in any order)."""
        state = self.state
        q = quantize(x, state.frac_bits)
        q_max = max(q.max(), -q.min())  # NaN propagates; no |q| array
        if not np.isfinite(q_max):
            raise InputError(_non_finite_message(x))
        if y is not None:
            y = quantize(y, state.frac_bits)
        t_max = 1.0 if y is None else max(np.abs(y).max(), 1.0)
        for name, largest in (("features", q_max), ("targets", t_max)):
            if largest >= _FIXED_VALUE_LIMIT:
                raise InputError(
                    f"{name} reach {np.ldexp(largest, -state.frac_bits):.6g}, outside the fixed-point range "
                    f"|value| < 2^{26 - state.frac_bits} at frac_bits={state.frac_bits}: rescale them or lower frac_bits"
                )
        return q, y, max(1, int(_EXACT_FLOAT_LIMIT // max(q_max * q_max, q_max * t_max, 1.0)))

    def _add_array(self, name: str, increment: np.ndarray, sign: int, position: int | None = None) -> None:
        """``moments.<name>[position] += sign · increment`` in the state's arithmetic; ``increment`` may be consumed.

        float64 adds in place, float32 takes an in-place Kahan step, fixed adds int64 with an overflow check.
        """

        def target(moments):
            array = getattr(moments, name)
            return array if position is None else array[position]

        total = target(self.state.moments)
        if self.state.precision == "fixed":
            _checked_int_add_(total, increment, sign)
        elif self.state.compensation is not None:
            if sign < 0:
                np.negative(increment, out=increment)
            _kahan_add_(total, target(self.state.compensation), increment)
        else:
            (np.add if sign > 0 else np.subtract)(total, increment, out=total)

    def add_state(self, other: Statistics, sign: int) -> None:
        """``± other`` (same classes, same configuration): merging and subtracting states."""
        value = host_moments(other)  # float64 and fixed adds leave the increment alone
        if other.compensation is not None:  # other's compensated value, as new arrays the Kahan step may consume
            value = jax.tree.map(np.subtract, other.moments, other.compensation)
        for name, increment in value._asdict().items():
            if increment is not None:
                self._add_array(name, increment, sign)
        self._add_counts(other.count, other.class_counts, sign)

    def _add_counts(self, count, class_counts, sign: int) -> None:
        self.count = np.int64(self.count + sign * count)
        if class_counts is not None:
            self.class_counts = self.class_counts + sign * np.asarray(class_counts, np.int64)


def one_hot(index: np.ndarray, m: int, dtype) -> np.ndarray:
    out = np.zeros((index.size, m), dtype)
    out[np.arange(index.size), index] = 1
    return out


def quantize(values: np.ndarray, frac_bits: int) -> np.ndarray:
    """Round to the fixed-point grid :math:`2^{-f}`: integer-valued float64 :math:`q = \\mathrm{rint}(x 2^f)`
    (the product by a power of two is exact; one new array, rounded in place)."""
    scaled = np.multiply(values, 2.0**frac_bits, dtype=np.float64)
    return np.rint(scaled, out=scaled)


def _combine(a: Statistics, b: Statistics, sign: int) -> Statistics:
    """``a ± b`` for aligned, compatible states, in the home of either (JAX if one is on a device)."""
    if a.on_device or b.on_device:
        return device.combine(a, b, sign)
    accumulator = _Accumulator(dataclasses.replace(a, shift=combined_shift(a, b)))
    accumulator.add_state(b, sign)
    return accumulator.result()
