r"""Sufficient statistics of a ridge head: the state every other part of the library adds, subtracts and re-weights.

The ridge head (README: the math in brief)

.. math::
    W^\star = \arg\min_W \|Y - XW\|^2 + \gamma \|W\|^2 = (G + \gamma I)^{-1} B,
    \qquad G = X^\top X = \sum_i x_i x_i^\top, \quad B = X^\top Y = \sum_i x_i y_i^\top

depends on the data only through the additive statistics ``G``, ``B`` and the counts, so the state of a head is a
commutative monoid: learning a batch, merging two clients and forgetting samples are additions and subtractions of
the same :class:`Statistics`, and the ridge :math:`\gamma` is chosen at solve time (:mod:`analytic.ridge`).

Three precisions share one code path:

``"float64"`` (default)
    float64 accumulation with the host BLAS (``syrk``); solved weights match a float64 direct solve to ~1e-13.
    It needs no global JAX flag: the statistics are NumPy arrays on the host.
``"float32"``
    float32 products around a fixed mean shift :math:`s` (README: precision), accumulated with Kahan
    compensation; half the memory traffic of float64, error reported in the README.
``"fixed"``
    bit-exact: features are quantized to the grid :math:`2^{-f}` (``frac_bits`` = f), every product and partial sum
    is an integer below :math:`2^{53}`, so the float64 GEMM is exact in any summation order and the int64 totals
    are the same for any order or partition of the same multiset of samples (README: precision).

Per-class Grams are opt-in (``class_grams=True``): they cost ``C·d²`` numbers, e.g. 100 classes at d = 8192 in float64
is 51 GiB, at d = 2048 it is 3.2 GiB.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Iterable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from rich.progress import track

from analytic.errors import InputError, IntegrityError

PRECISIONS = ("float64", "float32", "fixed")
_STATE_DTYPES = {"float64": np.float64, "float32": np.float32, "fixed": np.int64}
CHUNK_ROWS = 16384  # float batches are folded in row chunks of at most this many: scratch stays O(chunk · d)
SHIFT_ROWS = 1024  # rows of the first batch whose mean becomes the float32 shift
_COMPUTE_DTYPES = {"float64": np.float64, "float32": np.float32, "fixed": np.float64}
_EXACT_FLOAT_LIMIT = 2**53  # every integer below this is exact in float64
_INT_HEADROOM = 2**62  # int64 sums are refused above this magnitude
_FIXED_VALUE_LIMIT = 2**26  # a quantized value's square stays below 2^53


class Moments(NamedTuple):
    r"""Additive moments in the state's dtype, around the shift :math:`s` (:math:`\tilde x = x - s`).

    Attributes:
      gram: (d, d) symmetric :math:`\sum_i \tilde x_i \tilde x_i^\top`.
      cross: (d, m) :math:`\sum_i \tilde x_i y_i^\top`; for classification column c is the sum of class c's
        features, with ``m`` = number of classes seen.
      feature_sum: (d,) :math:`\sum_i \tilde x_i`.
      target_sum: (m,) :math:`\sum_i y_i` for regression; ``None`` for classification (the class counts are it).
      class_grams: (m, d, d) per-class :math:`\sum_{y_i = c} \tilde x_i \tilde x_i^\top`, or ``None``.
    """

    gram: np.ndarray
    cross: np.ndarray
    feature_sum: np.ndarray
    target_sum: np.ndarray | None
    class_grams: np.ndarray | None


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["moments", "compensation", "count", "class_ids", "class_counts", "shift"],
    meta_fields=["precision", "frac_bits"],
)
@dataclasses.dataclass(frozen=True)
class Statistics:
    """The state of a closed-form head: additive sufficient statistics (a pytree of NumPy arrays).

    Attributes:
      moments: the additive :class:`Moments`.
      compensation: Kahan residuals of ``moments`` (float32 precision only), else ``None``.
      count: () int64, number of samples.
      class_ids: (m,) int64 sorted class ids for classification (column order of ``cross``); ``None`` for regression.
      class_counts: (m,) int64 samples per class; ``None`` for regression.
      shift: (d,) the fixed mean shift :math:`s`, or ``None`` for no shift.
      precision: ``"float64"``, ``"float32"`` or ``"fixed"``.
      frac_bits: fractional bits of the fixed-point grid (``"fixed"`` only, else 0).
    """

    moments: Moments
    compensation: Moments | None
    count: np.ndarray
    class_ids: np.ndarray | None
    class_counts: np.ndarray | None
    shift: np.ndarray | None
    precision: str = "float64"
    frac_bits: int = 0

    @property
    def dim(self) -> int:
        """Feature dimension d."""
        return self.moments.gram.shape[0]

    @property
    def is_classification(self) -> bool:
        """True for a classification head (integer class ids), False for real-valued regression targets."""
        return self.class_ids is not None

    @property
    def n_outputs(self) -> int:
        """Number of output columns: classes seen, or regression targets."""
        return self.moments.cross.shape[1]

    @property
    def nbytes(self) -> int:
        """Memory held by the state's arrays, in bytes."""
        return sum(leaf.nbytes for leaf in jax.tree.leaves(self))


def init_statistics(
    dim: int,
    *,
    precision: str = "float64",
    n_targets: int | None = None,
    class_grams: bool = False,
    shift=None,
    frac_bits: int = 12,
) -> Statistics:
    """Empty statistics for features of dimension ``dim``.

    Args:
      dim: feature dimension d.
      precision: ``"float64"`` (default), ``"float32"`` or ``"fixed"`` (bit-exact), see the module docstring.
      n_targets: ``None`` for classification with integer class ids (classes are added as they appear);
        an int m for real-valued regression with m outputs.
      class_grams: also keep one Gram per class (C·d² memory), needed by class re-weighting (AIR).
      shift: fixed mean shift s of shape (d,). In float32 precision, ``None`` takes the mean of the first batch's
        first ``SHIFT_ROWS`` rows (near the data's mean is all the shift needs to be);
        pass the same shift to every state that will be merged. Not allowed in fixed precision.
      frac_bits: fractional bits f of the fixed-point grid 2^-f (fixed precision only).
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if int(dim) < 1:
        raise InputError(f"dim must be a positive integer, got {dim}")
    if n_targets is not None and int(n_targets) < 1:
        raise InputError(f"n_targets must be a positive integer or None for classification, got {n_targets}")
    if precision == "fixed" and shift is not None:
        raise InputError("fixed precision takes no shift: the integer grid is already exact")
    if precision == "fixed" and not 0 <= frac_bits <= 24:
        raise InputError(f"frac_bits must be in [0, 24], got {frac_bits}")
    dtype = _STATE_DTYPES[precision]
    m = 0 if n_targets is None else int(n_targets)
    moments = Moments(
        gram=np.zeros((dim, dim), dtype),
        cross=np.zeros((dim, m), dtype),
        feature_sum=np.zeros(dim, dtype),
        target_sum=None if n_targets is None else np.zeros(m, dtype),
        class_grams=np.zeros((0, dim, dim), dtype) if class_grams else None,
    )
    if class_grams and n_targets is not None:
        raise InputError("class_grams needs a classification head (n_targets=None)")
    if shift is not None:
        shift = _check_shift(shift, dim, _COMPUTE_DTYPES[precision])
    classification = n_targets is None
    return Statistics(
        moments=moments,
        compensation=_zeros_like(moments) if precision == "float32" else None,
        count=np.int64(0),
        class_ids=np.zeros(0, np.int64) if classification else None,
        class_counts=np.zeros(0, np.int64) if classification else None,
        shift=shift,
        precision=precision,
        frac_bits=frac_bits if precision == "fixed" else 0,
    )


def accumulate(stats: Statistics, features, targets) -> Statistics:
    r"""Learn one batch: :math:`G \mathrel{+}= X^\top X`, :math:`B \mathrel{+}= X^\top Y` (README: the math in brief).

    Args:
      stats: the state to add to (unchanged; a new state is returned).
      features: (n, d) floating array (NumPy or JAX), n ≥ 1, finite.
      targets: (n,) non-negative integer class ids for a classification state (unseen ids add columns),
        or (n, m) / (n,) real values for a regression state.

    Raises:
      InputError: naming the problem (NaN/Inf, shape, dtype, labels); ``stats`` is unchanged.
    """
    accumulator = _Accumulator(stats)
    accumulator.add_batch(features, targets)
    return accumulator.result()


def fit(batches: Iterable, stats: Statistics, *, progress: bool = False, total: int | None = None) -> Statistics:
    """Accumulate a stream of ``(features, targets)`` batches into ``stats``.

    Peak memory is O(d² + batch·d) whatever the number of samples: the state is copied once and each batch is
    folded into the copy in place, then dropped.

    Args:
      batches: iterable of ``(features, targets)`` pairs (see :func:`accumulate`).
      stats: starting state, e.g. :func:`init_statistics` (d) or a state to continue.
      progress: show a progress bar.
      total: number of batches, for the progress bar.
    """
    accumulator = _Accumulator(stats)
    for features, targets in track(batches, total=total, disable=not progress, description="accumulating"):
        accumulator.add_batch(features, targets)
    return accumulator.result()


def merge(a: Statistics, b: Statistics) -> Statistics:
    """Sum of two states: the state of the pooled samples (federated aggregation, README: the math in brief).

    Classes are united (sorted ids), so merging is commutative and associative; in fixed precision the result is
    bit-identical for any order and grouping.
    """
    _check_compatible(a, b)
    if a.is_classification:
        union = np.union1d(a.class_ids, b.class_ids)
        a, b = with_classes(a, union), with_classes(b, union)
    return _combine(a, b, +1)


def subtract(a: Statistics, b: Statistics) -> Statistics:
    """``a`` minus ``b``: the state of ``a``'s samples without ``b``'s (unlearning samples or a client).

    Raises:
      IntegrityError: ``b`` holds a class ``a`` never learned, more samples than ``a`` (overall or for a class),
        or a Gram diagonal larger than ``a``'s — ``b`` was never part of ``a``. Both states are unchanged.
    """
    _check_compatible(a, b)
    if a.is_classification:
        unknown = np.setdiff1d(b.class_ids[b.class_counts > 0], a.class_ids)
        if unknown.size:
            raise IntegrityError(f"cannot subtract classes {unknown.tolist()}: they were never learned")
        dropped_by_a = np.setdiff1d(b.class_ids, a.class_ids)  # empty columns of b that a no longer has
        if dropped_by_a.size:
            b = _select_classes(b, np.flatnonzero(np.isin(b.class_ids, a.class_ids)), np.intersect1d(
                b.class_ids, a.class_ids))
        b = with_classes(b, a.class_ids)
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


def drop_classes(stats: Statistics, class_ids) -> Statistics:
    """Remove the output columns of classes that hold no samples any more (after subtracting all their rows).

    A forgotten class must leave the output space: a zero column still scores 0 and can win the argmax
    (the field's evaluation conventions, the class-removal trap).

    Raises:
      IntegrityError: a class is unknown or still holds samples.
    """
    if not stats.is_classification:
        raise IntegrityError("drop_classes needs a classification state")
    ids = np.unique(np.asarray(class_ids, dtype=np.int64))
    unknown = np.setdiff1d(ids, stats.class_ids)
    if unknown.size:
        raise IntegrityError(f"cannot drop classes {unknown.tolist()}: they are not in the head")
    positions = np.searchsorted(stats.class_ids, ids)
    remaining = stats.class_counts[positions]
    if remaining.any():
        c = int(np.flatnonzero(remaining)[0])
        raise IntegrityError(
            f"class {int(ids[c])} still holds {int(remaining[c])} samples: subtract them before dropping the column"
        )
    keep = np.setdiff1d(np.arange(stats.n_outputs), positions)
    return _select_classes(stats, keep, stats.class_ids[keep])


def with_classes(stats: Statistics, class_ids) -> Statistics:
    """The same state with columns for every id in ``class_ids`` (a sorted superset of ``stats.class_ids``);
    new classes get zero columns."""
    class_ids = np.asarray(class_ids, dtype=np.int64)
    if np.array_equal(class_ids, stats.class_ids):
        return stats
    missing = np.setdiff1d(stats.class_ids, class_ids)
    if missing.size:
        raise IntegrityError(f"with_classes would lose classes {missing.tolist()}")
    positions = np.searchsorted(class_ids, stats.class_ids)

    def widen(array, axis):
        if array is None:
            return None
        shape = list(array.shape)
        shape[axis] = class_ids.size
        out = np.zeros(shape, array.dtype)
        index = [slice(None)] * array.ndim
        index[axis] = positions
        out[tuple(index)] = array
        return out

    def widen_moments(m):
        return m._replace(cross=widen(m.cross, 1), class_grams=widen(m.class_grams, 0))

    return dataclasses.replace(
        stats,
        moments=widen_moments(stats.moments),
        compensation=None if stats.compensation is None else widen_moments(stats.compensation),
        class_ids=class_ids,
        class_counts=widen(stats.class_counts, 0),
    )


def state_hash(stats: Statistics) -> str:
    """A stable sha256 of the state (configuration, class ids, counts and every array's dtype, shape and bytes).

    In fixed precision, equal multisets of samples give equal hashes for any order or partition.
    """
    digest = hashlib.sha256()
    digest.update(f"analytic.Statistics|{stats.precision}|{stats.frac_bits}".encode())
    for path, leaf in jax.tree_util.tree_flatten_with_path(stats, is_leaf=lambda v: v is None)[0]:
        digest.update(jax.tree_util.keystr(path).encode())
        if leaf is None:
            digest.update(b"None")
            continue
        array = np.ascontiguousarray(leaf)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


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
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise InputError(f"features must be a floating-point array, got dtype {x.dtype}")
    if x.ndim != 2:
        raise InputError(f"features must be a 2-D array (n, d), got shape {x.shape}")
    if x.shape[0] == 0:
        raise InputError("empty batch: features have 0 rows")
    if dim is not None and x.shape[1] != dim:
        raise InputError(f"features have dimension {x.shape[1]}, the head expects {dim}")
    if finite and not np.isfinite(x).all():
        raise InputError(_non_finite_message(x))
    return x


def check_labels(labels, n: int) -> np.ndarray:
    """Class ids as a host (n,) int64 array of non-negative integers."""
    y = np.asarray(labels)
    if y.ndim != 1:
        raise InputError(f"labels must be a 1-D array of class ids, got shape {y.shape}")
    if y.shape[0] != n:
        raise InputError(f"features have {n} rows but labels have {y.shape[0]}")
    if not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"labels must be integer class ids, got dtype {y.dtype}")
    if y.size and y.min() < 0:
        raise InputError(f"labels must be non-negative class ids, got {int(y.min())}")
    return y.astype(np.int64, copy=False)


def check_targets(targets, n: int, m: int) -> np.ndarray:
    y = np.asarray(targets)
    if not jnp.issubdtype(y.dtype, jnp.floating):
        raise InputError(f"regression targets must be floating point, got dtype {y.dtype}")
    if y.ndim == 1 and m == 1:
        y = y[:, None]
    if y.shape != (n, m):
        raise InputError(f"regression targets must have shape ({n}, {m}), got {y.shape}")
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
    shifts_differ = (a.shift is None) != (b.shift is None) or (
        a.shift is not None and not np.array_equal(a.shift, b.shift)
    )
    if shifts_differ and a.count > 0 and b.count > 0:
        raise IntegrityError(
            "statistics were accumulated around different mean shifts: pass the same shift= to init_statistics "
            "for every state that will be combined"
        )


def _check_gram_diagonal(result: Statistics, before: Statistics) -> None:
    diagonal = np.diagonal(result.moments.gram)
    if result.precision == "fixed":
        bad = diagonal < 0
    else:
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
    which keeps each total a factor of two inside int64's range.
    """
    return _largest_magnitude(total) + _largest_magnitude(increment) < _INT_HEADROOM


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
        def copy(tree):
            return None if tree is None else jax.tree.map(np.array, tree)

        self.state = dataclasses.replace(stats, moments=copy(stats.moments), compensation=copy(stats.compensation))
        self._scratch: dict[str, np.ndarray] = {}

    def result(self) -> Statistics:
        state, self.state = self.state, None
        return state

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
                state = self.state = with_classes(state, np.union1d(state.class_ids, present))
            y_index, y = np.searchsorted(state.class_ids, labels), None
        else:
            y = check_targets(targets, x.shape[0], state.n_outputs)
            y_index = None
        if state.precision == "float32" and state.shift is None:
            state = self.state = dataclasses.replace(
                state, shift=x[:SHIFT_ROWS].mean(axis=0, dtype=np.float64).astype(np.float32)
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
        q_max = np.abs(q).max()
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
        value = other.moments  # float64 and fixed adds leave the increment alone
        if other.compensation is not None:  # other's compensated value, as new arrays the Kahan step may consume
            value = jax.tree.map(np.subtract, other.moments, other.compensation)
        for name, increment in value._asdict().items():
            if increment is not None:
                self._add_array(name, increment, sign)
        self._add_counts(other.count, other.class_counts, sign)

    def _add_counts(self, count, class_counts, sign: int) -> None:
        state = self.state
        self.state = dataclasses.replace(
            state,
            count=np.int64(state.count + sign * count),
            class_counts=None if class_counts is None else state.class_counts + sign * class_counts.astype(np.int64),
        )


def one_hot(index: np.ndarray, m: int, dtype) -> np.ndarray:
    out = np.zeros((index.size, m), dtype)
    out[np.arange(index.size), index] = 1
    return out


def quantize(values: np.ndarray, frac_bits: int) -> np.ndarray:
    """Round to the fixed-point grid :math:`2^{-f}`: integer-valued float64 :math:`q = \\mathrm{rint}(x 2^f)`."""
    return np.rint(np.ldexp(np.asarray(values, dtype=np.float64), frac_bits))


def _combine(a: Statistics, b: Statistics, sign: int) -> Statistics:
    """``a ± b`` for aligned, compatible states."""
    accumulator = _Accumulator(dataclasses.replace(a, shift=b.shift if a.count == 0 else a.shift))
    accumulator.add_state(b, sign)  # an empty state adopts the other's shift
    return accumulator.result()


def _select_classes(stats: Statistics, keep: np.ndarray, class_ids: np.ndarray) -> Statistics:
    def select(m: Moments) -> Moments:
        return m._replace(
            cross=m.cross[:, keep], class_grams=None if m.class_grams is None else m.class_grams[keep]
        )

    return dataclasses.replace(
        stats,
        moments=select(stats.moments),
        compensation=None if stats.compensation is None else select(stats.compensation),
        class_ids=class_ids,
        class_counts=stats.class_counts[keep],
    )


def _zeros_like(moments: Moments) -> Moments:
    return jax.tree.map(np.zeros_like, moments)
