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
is 50 GiB (53.7 GB), at d = 2048 it is 3.1 GiB.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

import blake3
import jax
import numpy as np
import scipy.linalg
from rich.progress import track

from analytic import device, words
from analytic.errors import InputError, IntegrityError
from analytic.precision import BAND_ROWS, non_finite_message, precision_of
from analytic.state import (
    CLASS_NOT_EMPTY,
    FOREIGN_CLASS,
    Moments,
    Statistics,
    check_leaves,
    check_state,
    combined_shift,
    flag_if_held,
    mean_shift,
    same_shift,
    select_classes,
    with_classes,
)
from analytic.validation import (
    check_class_ids,
    check_declared_class_ids,
    check_features,
    check_labels,
    check_mask,
    check_shift,
    check_targets,
)

BLOCK_ENTRIES = 2**21  # a block of rows prepared and multiplied at a time holds about this many numbers (8-16 MiB)
MIN_BLOCK_ROWS = 256  # but at least this many rows, so that each syrk call still does a GEMM's worth of work
CLASS_CHUNK_ROWS = 16384  # per-class Grams are added to the state at least every this many rows


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
        shift to every state that will be merged. Not allowed in fixed precision. A float64 state whose features
        share a large offset keeps an intercept solve accurate with a shift near their mean, e.g.
        ``shift=x[:1024].mean(axis=0)`` (:mod:`analytic.ridge`).
      frac_bits: fractional bits f of the fixed-point grid 2^-f (fixed precision only).

    Returns:
      A host :class:`Statistics` with zero moments and counts (and zero columns for the declared classes).

    Raises:
      InputError: an unknown precision; ``dim`` or ``n_targets`` below 1; both ``n_targets`` and ``class_ids``;
        class ids that are not unique non-negative integers; a shift of the wrong shape or with NaN/Inf, or any
        shift in fixed precision; ``frac_bits`` outside [0, 24]; ``class_grams`` on a regression state.

    Example:
      >>> stats = init_statistics(3, class_ids=[0, 1, 2], precision="fixed")
      >>> stats.dim, stats.n_outputs, int(stats.count)
      (3, 3, 0)
      >>> x = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
      >>> stats = jax.jit(accumulate)(stats, x, np.array([0, 1, 2, 0, 1, 2]))  # declared classes: static shapes
      >>> stats.class_counts
      array([2, 2, 2])
    """
    arithmetic = precision_of(precision)
    if int(dim) < 1:
        raise InputError(f"dim must be a positive integer, got {dim}")
    if n_targets is not None and int(n_targets) < 1:
        raise InputError(f"n_targets must be a positive integer or None for classification, got {n_targets}")
    if n_targets is not None and class_ids is not None:
        raise InputError("class_ids declare the classes of a classification head; regression takes n_targets")
    if arithmetic.on_grid and shift is not None:
        raise InputError(f"{precision} precision takes no shift: the integer grid is already exact")
    if arithmetic.on_grid and not 0 <= frac_bits <= 24:
        raise InputError(f"frac_bits must be in [0, 24], got {frac_bits}")
    if class_grams and n_targets is not None:
        raise InputError("class_grams needs a classification head (n_targets=None)")
    classification = n_targets is None
    ids = check_declared_class_ids(class_ids) if classification else None
    m = ids.size if classification else int(n_targets)
    zeros = arithmetic.zeros
    moments = Moments(
        gram=zeros(dim, dim),
        cross=zeros(dim, m),
        feature_sum=zeros(dim),
        target_sum=None if classification else zeros(m),
        class_grams=zeros(m, dim, dim) if class_grams else None,
    )
    if shift is not None:
        shift = check_shift(shift, dim, arithmetic.compute_dtype)
    return Statistics(
        moments=moments,
        compensation=jax.tree.map(np.zeros_like, moments) if arithmetic.compensated else None,
        count_words=words.zeros(()),
        class_count_words=words.zeros((m,)) if classification else None,
        error=np.uint32(0),
        class_ids=ids,
        shift=shift,
        precision=precision,
        frac_bits=frac_bits if arithmetic.on_grid else 0,
    )


def empty_like(stats: Statistics) -> Statistics:
    """Empty host statistics in the configuration of ``stats``: dimension, precision, task, shift and grid (no
    classes declared; they are added as samples arrive).

    Args:
      stats: the statistics whose configuration to copy.

    Returns:
      Statistics of no sample that ``stats`` can be merged with or subtracted from.

    Example:
      >>> stats = accumulate(init_statistics(3, precision="fixed"), np.eye(3), np.array([0, 1, 1]))
      >>> empty = empty_like(stats)
      >>> empty.precision, int(empty.count), empty.class_ids.size
      ('fixed', 0, 0)
    """
    return init_statistics(stats.dim, precision=stats.precision, frac_bits=stats.frac_bits, shift=stats.shift,
                           n_targets=None if stats.is_classification else stats.n_outputs)


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

    Returns:
      A new :class:`Statistics` that also holds the batch; classes the batch introduces get new columns (class ids
      stay sorted). On a device, or under jit, the state's leaves are JAX arrays.

    Raises:
      InputError: naming the problem (NaN/Inf, shape, dtype, labels, a value outside the fixed-point range);
        ``stats`` is unchanged. Inside jit the state's error flag is set instead.
      IntegrityError: ``stats`` is malformed (a pytree transform changed a leaf) or carries an error flag set
        inside jit (a flag for bad input raises InputError), or fixed-point sums would overflow int64.

    Example:
      >>> stats = accumulate(init_statistics(4), np.eye(4), np.array([3, 7, 3, 7]))
      >>> stats.class_ids, int(stats.count)
      (array([3, 7]), 4)
    """
    check_state(stats)
    if _in_jax(stats, features, targets, mask):
        return device.accumulate(stats, features, targets, mask)
    if mask is not None:
        keep = check_mask(mask, np.shape(features)[0] if np.ndim(features) else 0)
        if not keep.any():
            return stats
        features, targets = np.asarray(features)[keep], np.asarray(targets)[keep]
    accumulator = _Accumulator(stats)
    accumulator.add_batch(features, targets)
    return accumulator.result()


def fit(stats: Statistics, batches: Iterable, *, progress: bool = False, total: int | None = None) -> Statistics:
    """Accumulate a stream of ``(features, targets)`` batches into ``stats``: :func:`accumulate` over a stream.

    On the host, peak memory is O(d² + batch·d) whatever the number of samples: the state is copied once and each
    batch is folded into the copy in place, then dropped. A device state folds each batch with :func:`accumulate`.

    Args:
      stats: starting state, e.g. :func:`init_statistics` (d) or a state to continue.
      batches: iterable of ``(features, targets)`` pairs (see :func:`accumulate`).
      progress: show a progress bar.
      total: number of batches, for the progress bar.

    Returns:
      A new :class:`Statistics` holding ``stats``' samples and every batch's; ``stats`` itself is unchanged.

    Raises:
      InputError: a batch that is not a (features, targets) pair or holds bad input (see :func:`accumulate`).
      IntegrityError: ``stats`` is malformed or flagged, or fixed-point sums would overflow (see :func:`accumulate`).

    Example:
      >>> rng = np.random.default_rng(0)
      >>> batches = [(rng.normal(size=(4, 3)), np.array([0, 1, 0, 1])) for _ in range(3)]
      >>> stats = fit(init_statistics(3), batches)
      >>> int(stats.count), stats.class_counts
      (12, array([6, 6]))
      >>> np.allclose(stats.moments.gram, sum(x.T @ x for x, _ in batches))  # G = Σ XₖᵀXₖ
      True
    """
    check_state(stats)
    stream = track(_batch_pairs(batches), total=total, disable=not progress, description="accumulating")
    if stats.on_device:
        for features, targets in stream:
            stats = accumulate(stats, features, targets)
        return stats
    accumulator = _Accumulator(stats)
    for features, targets in stream:
        accumulator.add_batch(features, targets)
    return accumulator.result()


def _batch_pairs(batches: Iterable):
    """The ``(features, targets)`` pairs of a stream, refusing what is not one (e.g. a single batch's pair itself)."""
    if isinstance(batches, tuple) and len(batches) == 2 and np.ndim(batches[0]) == 2:
        raise InputError("fit takes an iterable of (features, targets) batches, not one pair: pass [(features, "
                         "targets)], or call accumulate(stats, features, targets)")
    for number, batch in enumerate(batches):
        try:
            features, targets = batch
        except (TypeError, ValueError) as error:
            raise InputError(f"batch {number} of the stream is not a (features, targets) pair") from error
        yield features, targets


def merge(a: Statistics, b: Statistics) -> Statistics:
    r"""Sum of two states: the state of the pooled samples (federated aggregation, README: the math in brief).

    .. math::
        G = G_a + G_b, \qquad B = B_a + B_b, \qquad n = n_a + n_b \quad \text{(REFERENCE.md §1)}

    Classes are united (sorted ids), so merging is commutative and associative; in fixed precision the result is
    bit-identical for any order and grouping. Under jit the union is static (it depends on the class ids only).

    Args:
      a: a state.
      b: a state of the same configuration: precision (and ``frac_bits``), dimension, task (classification or the
        same number of regression targets), per-class Grams or not, and mean shift (unless one of them is empty).

    Returns:
      A new :class:`Statistics` of the pooled samples, with the union of the class ids.

    Raises:
      InputError: ``a`` or ``b`` is not a :class:`Statistics`.
      IntegrityError: the states' configurations differ (see ``b``), or either is malformed or flagged.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(6, 3)), np.array([0, 1, 0, 2, 2, 1])
      >>> a = accumulate(init_statistics(3, precision="fixed"), x[:3], y[:3])  # classes 0 and 1
      >>> b = accumulate(init_statistics(3, precision="fixed"), x[3:], y[3:])  # classes 1 and 2
      >>> merged = merge(a, b)
      >>> merged.class_ids, merged.class_counts
      (array([0, 1, 2]), array([2, 2, 2]))
      >>> state_hash(merged) == state_hash(accumulate(init_statistics(3, precision="fixed"), x, y))
      True
    """
    _check_pair(a, b)
    if a.is_classification:
        union = np.union1d(a.class_ids, b.class_ids)
        a, b = with_classes(a, union), with_classes(b, union)
    return _combine(a, b, +1)


def subtract(a: Statistics, b: Statistics) -> Statistics:
    r"""``a`` minus ``b``: the state of ``a``'s samples without ``b``'s (unlearning samples or a client).

    .. math::
        G = G_a - G_b, \qquad B = B_a - B_b, \qquad n = n_a - n_b \quad \text{(REFERENCE.md §1)}

    A class that loses all its samples keeps its (zero) column: :func:`drop_classes` removes it.

    Args:
      a: the state to subtract from.
      b: the state of samples that ``a`` holds (same configuration as for :func:`merge`).

    Returns:
      A new :class:`Statistics` with ``a``'s class ids: the state of retraining on ``a``'s samples without ``b``'s.

    Raises:
      InputError: ``a`` or ``b`` is not a :class:`Statistics`.
      IntegrityError: ``b`` holds a class ``a`` never learned, more samples than ``a`` (overall or for a class),
        or a Gram diagonal larger than ``a``'s — ``b`` was never part of ``a``. Both states are unchanged. Inside
        jit the result's error flag is set instead. Also: the configurations differ, or a state is malformed or
        flagged.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(8, 3)), np.array([0, 1, 2, 0, 1, 2, 0, 1])
      >>> full = accumulate(init_statistics(3, precision="fixed"), x, y)
      >>> forget = accumulate(init_statistics(3, precision="fixed"), x[:2], y[:2])
      >>> retrained = accumulate(init_statistics(3, precision="fixed"), x[2:], y[2:])
      >>> state_hash(subtract(full, forget)) == state_hash(retrained)  # exact unlearning, bit for bit
      True
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
    (the field's evaluation conventions, the class-removal trap, REFERENCE.md §5). Under jit ``class_ids`` must be
    static.

    Args:
      stats: a classification state.
      class_ids: the class ids (an int or a sequence of ints) whose columns are removed.

    Returns:
      A new :class:`Statistics` without those classes' columns (the Gram and counts are unchanged: the classes hold
      no samples).

    Raises:
      InputError: a class id is not an integer, or ``stats`` is not a :class:`Statistics`.
      IntegrityError: a class is unknown or still holds samples (inside jit: the error flag is set), ``stats`` is a
        regression state, or it is malformed or flagged.

    Example:
      >>> stats = accumulate(init_statistics(2), np.eye(2), np.array([0, 1]))
      >>> emptied = subtract(stats, accumulate(init_statistics(2), np.eye(2)[1:], np.array([1])))
      >>> emptied.class_ids, emptied.class_counts  # class 1's zero column could still win the argmax
      (array([0, 1]), array([1, 0]))
      >>> drop_classes(emptied, [1]).class_ids
      array([0])
    """
    check_state(stats)
    if not stats.is_classification:
        raise IntegrityError("drop_classes needs a classification state")
    ids = np.unique(check_class_ids(class_ids))
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
    """A stable BLAKE3-256 hash (hex) of the state: configuration, class ids, shift, counts and every array's dtype,
    shape and bytes.

    The same in every home (host, device, any number of devices or processes): device states are read back to the
    host first and every integer leaf is hashed in canonical words. In fixed precision, equal multisets of samples
    give equal hashes for any order or partition. The arrays are hashed in place (no copy) with BLAKE3, a
    cryptographic hash that runs at memory speed, so a receipt's three hashes cost about as much as reading the
    states once.

    Args:
      stats: the state to hash (host or device; not inside ``jax.jit``).

    Returns:
      The 64-character hexadecimal BLAKE3-256 digest.

    Raises:
      InputError: called inside ``jax.jit`` (traced leaves), or ``stats`` is not a :class:`Statistics`.
      IntegrityError: ``stats`` is malformed or carries an error flag.

    Example:
      >>> stats = accumulate(init_statistics(4, precision="fixed"), np.eye(4), np.array([0, 1, 1, 0]))
      >>> state_hash(stats) == state_hash(accumulate(init_statistics(4, precision="fixed"), np.eye(4)[::-1],
      ...                                            np.array([0, 1, 1, 0])))
      True
    """
    check_state(stats)
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(stats)):
        raise InputError("state_hash reads the state on the host: call it outside jax.jit")
    stats = _canonical_on_host(stats)
    digest = blake3.blake3(f"analytic.Statistics|{stats.precision}|{stats.frac_bits}".encode())
    for name, value in (("class_ids", stats.class_ids), ("shift", stats.shift)):
        digest.update(name.encode() + (b"None" if value is None else np.ascontiguousarray(value).tobytes()))
    for path, leaf in jax.tree_util.tree_flatten_with_path(stats, is_leaf=lambda v: v is None)[0]:
        digest.update(jax.tree_util.keystr(path).encode())
        if leaf is None:
            digest.update(b"None")
            continue
        array = np.ascontiguousarray(leaf)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.reshape(-1).view(np.uint8))
    return digest.hexdigest()


def _canonical_on_host(stats: Statistics) -> Statistics:
    """The same state as host arrays (device leaves read back), every integer leaf in canonical words (what a hash
    reads); leaves already so are not copied."""
    host = jax.device_get(stats)

    def recode(leaf):
        if leaf is None:
            return None
        leaf = np.asarray(leaf)
        if leaf.dtype != np.int32 or not (leaf[..., :2] >> words.WORD_BITS).any():
            return leaf
        return words.from_int64(words.to_int64(leaf))

    return jax.tree.map(recode, host, is_leaf=lambda v: v is None)


def host_moments(stats: Statistics) -> Moments:
    """The moments as host arrays: float64/float32 as stored, fixed precision as exact int64 on the grid.

    Args:
      stats: a host state.
    """
    check_state(stats)
    return precision_of(stats.precision).host(stats.moments)


def from_host_moments(moments: Moments, count, class_ids, class_counts, *, precision: str = "float64",
                      frac_bits: int = 0, shift=None) -> Statistics:
    """A host :class:`Statistics` from host moments (int64 in fixed precision, as :func:`host_moments` gives them)
    and int64 counts, checked like any state.

    Args:
      moments: the :class:`Moments`, host arrays.
      count: the number of samples.
      class_ids: (m,) sorted class ids, or ``None`` for regression.
      class_counts: (m,) samples per class, or ``None`` for regression.
      precision: the state's precision.
      frac_bits: fractional bits of the fixed-point grid (fixed precision only).
      shift: the mean shift s, or ``None``.
    """
    arithmetic = precision_of(precision)
    stats = Statistics(
        moments=arithmetic.stored(moments),
        compensation=None,
        count_words=words.from_int64(count),
        class_count_words=None if class_counts is None else words.from_int64(class_counts),
        error=np.uint32(0),
        class_ids=class_ids,
        shift=shift,
        precision=precision,
        frac_bits=frac_bits if arithmetic.on_grid else 0,
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


# ----------------------------------------------------------------------------------------------------------------
# Validation.


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
    if precision_of(result.precision).negative_diagonal(result.moments.gram, before.moments.gram):
        raise IntegrityError(
            "subtracting would make the Gram matrix's diagonal negative: these samples were never learned"
        )


# ----------------------------------------------------------------------------------------------------------------
# Accumulation, in place on a private copy.


def block_rows(width: int) -> int:
    """Rows per block for rows of ``width`` numbers: about ``BLOCK_ENTRIES`` numbers, at least ``MIN_BLOCK_ROWS``
    rows (measured on a 2-core CPU at d = 2,048: 1,024-row blocks keep float32 and float64 syrk at 0.96-1.0× NumPy's
    ``X.T @ X``, 4,096-row blocks lose 5-15 %)."""
    return max(MIN_BLOCK_ROWS, BLOCK_ENTRIES // width)


def _syrk_upper_(product: np.ndarray, rows: np.ndarray, fresh: bool) -> None:
    r"""``product`` (C-contiguous (d, d)) :math:`\mathrel{+}=` rowsᵀ rows on its upper triangle only, in place (BLAS
    syrk: half the flops of a GEMM, no (d, d) temporary); ``fresh`` overwrites that triangle instead. The strictly
    lower triangle is left as it was. ``rows`` (k, d) C-contiguous are read without a copy."""
    syrk = scipy.linalg.blas.get_blas_funcs("syrk", dtype=rows.dtype)
    syrk(1.0, rows.T, beta=0.0 if fresh else 1.0, c=product.T, trans=0, lower=1, overwrite_c=1)


def _gemm_(total: np.ndarray, rows: np.ndarray, targets: np.ndarray, fresh: bool) -> None:
    """``total`` (Fortran-ordered (d, t)) += rowsᵀ targets in place (BLAS gemm; ``targets`` Fortran-ordered (k, t));
    ``fresh`` overwrites instead."""
    gemm = scipy.linalg.blas.get_blas_funcs("gemm", dtype=rows.dtype)
    gemm(1.0, rows.T, targets, beta=0.0 if fresh else 1.0, c=total, overwrite_c=1)


def _symmetrize_upper_(matrix: np.ndarray) -> None:
    """Copy the upper triangle of a square matrix onto its strictly lower triangle, in place, band by band."""
    d = matrix.shape[0]
    for start in range(0, d, BAND_ROWS):
        stop = min(start + BAND_ROWS, d)
        block = matrix[start:stop, start:stop]
        block[...] = np.triu(block) + np.triu(block, 1).T
        matrix[stop:, start:stop] = matrix[start:stop, stop:].T


def _gram_into(buffer: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """rowsᵀ rows written into a reused (d, d) ``buffer`` (NumPy's transposed-product path, BLAS syrk)."""
    return np.matmul(rows.T, rows, out=buffer)


class _Accumulator:
    r"""A private, mutable copy of a state that batches and other states are added into in place.

    :func:`accumulate`, :func:`fit`, :func:`merge` and :func:`subtract` stay pure: each copies the state once here
    and adds in place. A batch is folded in blocks of :func:`block_rows` rows, each read once while it is in cache, with
    BLAS syrk on the upper triangle (half a GEMM's flops, no (d, d) temporary per block):

    - float64: the caller's rows themselves (or a cast copy) go into the state's own Gram, and one GEMM of the block
      with :math:`[Y, 1]` gives the cross-moment and the feature sum;
    - float32 and fixed: the block is copied once into the augmented rows :math:`[\tilde X, Y, 1]` (shifted by
      :math:`s`, or on the fixed grid), whose syrk gives every moment at once; float32 adds that product to the state
      with a Kahan step after each batch (and every ``CHUNK_ROWS`` rows), fixed point flushes its float64 product to
      the int64 state before any partial sum could reach :math:`2^{53}`.

    The Gram's lower triangle is filled once, when the result is read.
    """

    def __init__(self, stats: Statistics):
        """Working copies: float moments as they are, fixed-point moments and counts as int64 (from their words)."""
        check_state(stats)
        self.arithmetic = precision_of(stats.precision)
        self.state = dataclasses.replace(
            stats,
            moments=self.arithmetic.working(stats.moments),
            compensation=None if stats.compensation is None else jax.tree.map(np.array, stats.compensation),
        )
        self.count = np.int64(stats.count)
        self.class_counts = stats.class_counts
        self._scratch: dict[str, np.ndarray] = {}
        self._pending_rows = 0  # rows in the block products not yet added to the state
        self._pending_bound = 0.0  # fixed precision: a bound on every entry of those products
        self._upper_only = False  # the Gram's strictly lower triangle is stale until symmetrized

    def result(self) -> Statistics:
        """The state, its Gram symmetric and its integers back in words."""
        self._flush()
        self._symmetrize()
        state, self.state = self.state, None
        return dataclasses.replace(
            state,
            moments=self.arithmetic.stored(state.moments),
            count_words=words.from_int64(self.count),
            class_count_words=None if self.class_counts is None else words.from_int64(self.class_counts),
        )

    def widen(self, class_ids) -> None:
        """Add zero columns for new classes (the working copy's counts too)."""
        self._flush()
        positions = np.searchsorted(class_ids, self.state.class_ids)
        counts = np.zeros(class_ids.size, np.int64)
        counts[positions] = self.class_counts
        stale = dataclasses.replace(self.state, class_count_words=words.zeros((self.state.n_outputs,)))
        self.state, self.class_counts = with_classes(stale, class_ids), counts

    def _buffer(self, name: str, dtype, shape: tuple[int, ...], order: str = "C") -> np.ndarray:
        """A zero-initialized scratch array kept across batches (recreated when its shape changes)."""
        kept = self._scratch.get(name)
        if kept is None or kept.shape != shape or kept.dtype != dtype:
            self._scratch[name] = kept = np.zeros(shape, dtype, order=order)
        return kept

    def _rows_buffer(self, name: str, dtype, rows: int, width: int) -> np.ndarray:
        """A kept (rows, width) scratch array: the first ``rows`` rows of one at least that tall."""
        kept = self._scratch.get(name)
        if kept is None or kept.shape[0] < rows or kept.shape[1] != width or kept.dtype != dtype:
            self._scratch[name] = kept = np.empty((rows, width), dtype)
        return kept[:rows]

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
        if self.arithmetic.default_shift and state.shift is None:
            self.state = dataclasses.replace(state, shift=mean_shift(x))
        fold = self._fold_direct if self.arithmetic.direct_fold else self._fold_augmented
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite input is reported below
            step = block_rows(state.dim + state.n_outputs + 1)
            for start in range(0, x.shape[0], step):
                part = slice(start, start + step)
                fold(x, part, y_index, None if y is None else y[part])
            if self.state.moments.class_grams is not None:
                self._add_class_grams(x, y_index)
        if self.arithmetic.compensated:
            self._flush()  # each batch's product takes its own Kahan step, as in a stream of accumulate calls
        if not self._diagonal_finite():
            raise InputError(non_finite_message(x))
        counts = None if y_index is None else np.bincount(y_index, minlength=self.state.n_outputs)
        self._add_counts(np.int64(x.shape[0]), counts, +1)

    def _feature_rows(self, rows: np.ndarray, name: str, batch: np.ndarray, out=None) -> tuple[np.ndarray, float]:
        """``rows`` of ``batch`` as the state multiplies them, C-contiguous in its compute dtype: the rows themselves
        when they already are (and need no shift), else prepared by the precision (cast, shifted by :math:`s`, or
        quantized to the grid :math:`2^{-f}` as :func:`quantize` does) into ``out`` (default: the kept buffer
        ``name``). Also returns the bound :meth:`~analytic.precision.Precision.prepare_rows` gives."""
        state, arithmetic = self.state, self.arithmetic
        if (state.shift is None and not arithmetic.on_grid and rows.dtype == arithmetic.compute_dtype
                and rows.flags.c_contiguous and out is None):
            return rows, 0.0
        if out is None:
            out = self._rows_buffer(name, arithmetic.compute_dtype, rows.shape[0], state.dim)
        largest = arithmetic.prepare_rows(rows, out, shift=state.shift, frac_bits=state.frac_bits, batch=batch)
        return out, largest

    def _target_values(self, y_index_part, y_part, out: np.ndarray) -> float:
        r"""Write :math:`[Y, 1]` of a block into ``out`` (k, m + 1): one-hot columns of the class index, or the
        regression targets (on the fixed grid in fixed precision). Returns their largest magnitude (at least 1)."""
        m = self.state.n_outputs
        out[:, m] = 1
        if y_part is None:
            out[:, :m] = 0
            out[np.arange(y_index_part.size), y_index_part] = 1
            return 1.0
        return self.arithmetic.prepare_targets(y_part, out[:, :m], self.state.frac_bits)

    def _fold_direct(self, x: np.ndarray, part: slice, y_index, y_part) -> None:
        r"""One block of a precision that folds directly (float64): syrk of its rows into the state's Gram, and one GEMM :math:`X_b^\top [Y_b, 1]` into the
        pending cross-moment and feature sum (and the regression target sum)."""
        state = self.state
        k, m = x[part].shape[0], state.n_outputs
        rows, _ = self._feature_rows(x[part], "rows", x)
        columns = np.empty((k, m + 1), np.float64, order="F")  # the GEMM's right operand, read without a copy
        index = None if y_index is None else y_index[part]
        self._target_values(index, y_part, columns)
        fresh = self._pending_rows == 0
        _syrk_upper_(state.moments.gram, rows, fresh=False)
        _gemm_(self._buffer("cross", np.float64, (state.dim, m + 1), order="F"), rows, columns, fresh)
        if y_part is not None:
            sums = columns[:, :m].sum(axis=0)
            total = self._buffer("target sum", np.float64, (m,))
            total[...] = sums if fresh else total + sums
        self._pending_rows += k
        self._upper_only = True

    def _fold_augmented(self, x: np.ndarray, part: slice, y_index, y_part) -> None:
        r"""One float32 or fixed-point block: the augmented rows :math:`A = [\tilde X, Y, 1]` written once, then

        .. math::
            A^\top A = \begin{pmatrix} \tilde X^\top \tilde X & \tilde X^\top Y & \tilde X^\top 1 \\
            \cdot & Y^\top Y & Y^\top 1 \\ \cdot & \cdot & n \end{pmatrix}

        on the upper triangle of the pending product: every moment from one syrk (m + 1 extra columns). In fixed
        precision the block is split where a partial sum could reach :math:`2^{53}`, and the product flushed first."""
        state = self.state
        k, d, m = x[part].shape[0], state.dim, state.n_outputs
        augmented = self._rows_buffer("augmented", self.arithmetic.compute_dtype, k, d + m + 1)
        _, largest = self._feature_rows(x[part], "augmented", x, out=augmented[:, :d])
        target = self._target_values(None if y_index is None else y_index[part], y_part, augmented[:, d:])
        row_bound = max(largest * largest, largest * target, target * target, 1.0)
        step = self.arithmetic.rows_per_product(k, row_bound)
        for start in range(0, k, step):
            rows = augmented[start : start + step]
            if self._pending_rows and self.arithmetic.flush_due(self._pending_rows, self._pending_bound,
                                                                rows.shape[0], rows.shape[0] * row_bound):
                self._flush()
            _syrk_upper_(self._product(), rows, fresh=self._pending_rows == 0)
            self._pending_rows += rows.shape[0]
            self._pending_bound += rows.shape[0] * row_bound
            self._upper_only = True

    def _product(self) -> np.ndarray:
        width = self.state.dim + self.state.n_outputs + 1
        return self._buffer("product", self.arithmetic.compute_dtype, (width, width))

    def _flush(self) -> None:
        """Add the pending block products to the state (Kahan in float32, checked int64 in fixed precision)."""
        if self._pending_rows == 0:
            return
        d, m = self.state.dim, self.state.n_outputs
        if self.arithmetic.direct_fold:
            cross = self._scratch["cross"]
            increments = {"cross": cross[:, :m], "feature_sum": cross[:, m]}
            if not self.state.is_classification:
                increments["target_sum"] = self._scratch["target sum"]
        else:
            product = self._product()
            increments = {"gram": product[:d, :d], "cross": product[:d, d : d + m], "feature_sum": product[:d, -1]}
            if not self.state.is_classification:
                increments["target_sum"] = product[d : d + m, -1]
        for name, increment in increments.items():
            self._add_array(name, self._in_state_arithmetic(name, increment), +1, upper=name == "gram")
        self._pending_rows, self._pending_bound = 0, 0.0

    def _symmetrize(self) -> None:
        """Mirror the Gram's (and its compensation's) upper triangle after blocks were folded into it."""
        if not self._upper_only:
            return
        _symmetrize_upper_(self.state.moments.gram)
        if self.state.compensation is not None:
            _symmetrize_upper_(self.state.compensation.gram)
        self._upper_only = False

    def _diagonal_finite(self) -> bool:
        """Whether the Gram's diagonal is finite: a NaN or Inf anywhere in a batch, or a square that overflows,
        reaches it, so this O(d) check replaces a pass over the batch."""
        return bool(np.isfinite(np.diagonal(self.state.moments.gram)).all())

    def _add_class_grams(self, x: np.ndarray, y_index: np.ndarray) -> None:
        """Each class's Gram, from the batch's rows of that class in chunks of at most ``CHUNK_ROWS`` rows (and
        below :math:`2^{53}` per entry in fixed precision)."""
        dtype = self.arithmetic.compute_dtype
        for start in range(0, x.shape[0], CLASS_CHUNK_ROWS):
            index = y_index[start : start + CLASS_CHUNK_ROWS]
            for c in np.unique(index):
                rows, largest = self._feature_rows(x[start : start + CLASS_CHUNK_ROWS][index == c], "class rows", x)
                step = self.arithmetic.rows_per_product(rows.shape[0], max(largest * largest, 1.0))
                for first in range(0, rows.shape[0], step):
                    gram = _gram_into(self._buffer("class gram", dtype, (self.state.dim,) * 2),
                                      rows[first : first + step])
                    self._add_array("class_grams", self._in_state_arithmetic("class gram", gram), +1, c)

    def _in_state_arithmetic(self, name: str, product: np.ndarray) -> np.ndarray:
        """``product`` as the state adds it (fixed precision: copied into a reused int64 buffer)."""
        return self.arithmetic.in_state_arithmetic(
            product, lambda shape, dtype: self._buffer(f"{name} {np.dtype(dtype)}", dtype, shape))

    def _add_array(self, name: str, increment: np.ndarray, sign: int, position: int | None = None, *,
                   upper: bool = False) -> None:
        """``moments.<name>[position] += sign · increment`` in the state's arithmetic; ``increment`` may be consumed.

        The precision's :meth:`~analytic.precision.Precision.add_` does it: float64 adds in place, float32 takes an
        in-place Kahan step, fixed adds int64 with an overflow check.
        ``upper`` adds a (d, d) increment's upper triangle only, band by band (its lower triangle is stale).
        """

        def target(moments):
            array = getattr(moments, name)
            return array if position is None else array[position]

        total = target(self.state.moments)
        residual = None if self.state.compensation is None else target(self.state.compensation)
        bands = [np.s_[start : start + BAND_ROWS, start:] for start in range(0, total.shape[0], BAND_ROWS)]
        for part in bands if upper else [...]:
            self.arithmetic.add_(total[part], None if residual is None else residual[part], increment[part], sign)

    def add_state(self, other: Statistics, sign: int) -> None:
        """``± other`` (same classes, same configuration): merging and subtracting states."""
        self._flush()
        self._symmetrize()
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


def _combine(a: Statistics, b: Statistics, sign: int) -> Statistics:
    """``a ± b`` for aligned, compatible states, in the home of either (JAX if one is on a device)."""
    if a.on_device or b.on_device:
        return device.combine(a, b, sign)
    accumulator = _Accumulator(dataclasses.replace(a, shift=combined_shift(a, b)))
    accumulator.add_state(b, sign)
    return accumulator.result()
