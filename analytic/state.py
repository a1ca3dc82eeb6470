r"""The state of a closed-form head, :class:`Statistics`: a pytree whose leaves are additive and nothing else.

Leaves (what ``jax.tree.map`` sees): the moments, their Kahan residuals, the sample counts and an error flag — all
additive, so ``jax.tree.map(jnp.add, a, b)`` of two compatible states is their merge. Static metadata (in the
treedef, never a leaf): the class ids, the mean shift, the precision and the fixed-point grid. A transform therefore
cannot sum class ids or shifts, two states with different classes or shifts do not even share a tree structure, and
:func:`check_leaves` refuses, at the next operation, a state whose leaf dtypes no longer match its precision (as
``jax.tree.map(jnp.asarray, state)`` does to float64 leaves when x64 is off).

Integer leaves (fixed-point moments, counts) are exact 64-bit integers stored as int32 words
(:mod:`analytic.words`): the same representation on the host and on any JAX device, with or without x64.
"""


import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from analytic import words
from analytic.errors import InputError, IntegrityError
from analytic.precision import PRECISIONS, x64_enabled

SHIFT_ROWS = 1024  # rows of the first batch whose mean becomes the float32 shift
SHIFT_BITS = 4  # significant bits the float32 shift keeps

# Bits of the error flag a state carries through jitted code, where no exception can be raised; the next operation
# outside jit (or a solve) refuses a flagged state with these messages.
NON_FINITE = 1
UNKNOWN_LABEL = 2
FIXED_RANGE = 4
INT_OVERFLOW = 8
NEGATIVE_COUNT = 16
NEGATIVE_DIAGONAL = 32
CLASS_NOT_EMPTY = 64
FOREIGN_CLASS = 128
ERROR_MESSAGES = {
    NON_FINITE: (InputError, "features or targets contain NaN or Inf, or values whose squares overflow"),
    UNKNOWN_LABEL: (InputError, "a label is not one of the state's declared class ids (or is negative)"),
    FIXED_RANGE: (InputError, "a value is outside the fixed-point range |value| < 2^(26 - frac_bits)"),
    INT_OVERFLOW: (IntegrityError, "fixed-point statistics would overflow their exact range (2^62)"),
    NEGATIVE_COUNT: (IntegrityError, "subtracting would make a sample count negative: these samples were never learned"),
    NEGATIVE_DIAGONAL: (IntegrityError, "subtracting would make the Gram matrix's diagonal negative: "
                                        "these samples were never learned"),
    CLASS_NOT_EMPTY: (IntegrityError, "a class that still holds samples was dropped"),
    FOREIGN_CLASS: (IntegrityError, "subtracted samples of a class that was never learned"),
}


class Moments(NamedTuple):
    r"""Additive moments around the shift :math:`s` (:math:`\tilde x = x - s`).

    Float precisions hold them as floats; fixed precision as exact integers on the grid (int32 words, trailing axis
    of 3, :mod:`analytic.words`).

    Attributes:
      gram: (d, d) symmetric :math:`\sum_i \tilde x_i \tilde x_i^\top`.
      cross: (d, m) :math:`\sum_i \tilde x_i y_i^\top`; for classification column c is the sum of class c's
        features, with ``m`` = number of classes.
      feature_sum: (d,) :math:`\sum_i \tilde x_i`.
      target_sum: (m,) :math:`\sum_i y_i` for regression; ``None`` for classification (the class counts are it).
      class_grams: (m, d, d) per-class :math:`\sum_{y_i = c} \tilde x_i \tilde x_i^\top`, or ``None``.

    Example:
      >>> x = np.array([[1.0, 2.0], [3.0, 4.0]])
      >>> moments = analytic.accumulate(analytic.init_statistics(2), x, np.array([0, 1])).moments
      >>> moments.gram  # XᵀX (no shift in float64 by default)
      array([[10., 14.],
             [14., 20.]])
      >>> moments.cross  # column c sums class c's features
      array([[1., 3.],
             [2., 4.]])
      >>> moments.feature_sum, moments.target_sum, moments.class_grams
      (array([4., 6.]), None, None)
    """

    gram: np.ndarray
    cross: np.ndarray
    feature_sum: np.ndarray
    target_sum: np.ndarray | None
    class_grams: np.ndarray | None


class _StaticArray:
    """A small read-only host array that can sit in a treedef: hashable, compared by value."""

    def __init__(self, array: np.ndarray):
        self.array = array

    def __hash__(self):
        return hash((self.array.dtype.str, self.array.shape, self.array.tobytes()))

    def __eq__(self, other):
        return (
            isinstance(other, _StaticArray)
            and self.array.dtype == other.array.dtype
            and np.array_equal(self.array, other.array)
        )


def frozen(array, dtype) -> np.ndarray | None:
    """A read-only host copy (class ids: static metadata that nothing may change in place)."""
    if array is None:
        return None
    out = np.array(array, dtype=dtype)
    out.flags.writeable = False
    return out


@dataclasses.dataclass(frozen=True)
class Statistics:
    """The state of a closed-form head: additive sufficient statistics (a pytree, on the host or a JAX device).

    Attributes:
      moments: the additive :class:`Moments`.
      compensation: Kahan residuals of ``moments`` (float32 precision only), else ``None``.
      count_words: (3,) int32 words of the number of samples.
      class_count_words: (m, 3) int32 words of the samples per class; ``None`` for regression.
      error: () uint32 flag, 0 for a valid state (bits: :data:`ERROR_MESSAGES`), set by jitted operations.
      class_ids: (m,) int64 sorted class ids (column order of ``cross``; static); ``None`` for regression.
      shift: (d,) the fixed mean shift :math:`s` (static), or ``None``.
      precision: ``"float64"``, ``"float32"`` or ``"fixed"``.
      frac_bits: fractional bits of the fixed-point grid (``"fixed"`` only, else 0).

    Build one with :func:`analytic.init_statistics`, never field by field.

    Example:
      >>> stats = analytic.accumulate(analytic.init_statistics(2), np.eye(2), np.array([5, 9]))
      >>> stats.dim, stats.n_outputs, stats.is_classification, int(stats.count), stats.class_counts
      (2, 2, True, 2, array([1, 1]))
      >>> stats.class_ids, stats.precision, stats.on_device
      (array([5, 9]), 'float64', False)
      >>> summed = jax.tree.map(np.add, stats, stats)  # every leaf is additive: the tree sum is the merge
      >>> analytic.state_hash(summed) == analytic.state_hash(analytic.merge(stats, stats))
      True
    """

    moments: Moments
    compensation: Moments | None
    count_words: np.ndarray
    class_count_words: np.ndarray | None
    error: np.ndarray
    class_ids: np.ndarray | None
    shift: np.ndarray | None
    precision: str = "float64"
    frac_bits: int = 0

    def __post_init__(self):
        object.__setattr__(self, "class_ids", frozen(self.class_ids, np.int64))
        if self.shift is not None:
            object.__setattr__(self, "shift", frozen(self.shift, np.asarray(self.shift).dtype))

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
        """Number of output columns: classes, or regression targets."""
        return self.moments.cross.shape[1]

    @property
    def count(self) -> np.int64:
        """Number of samples (host int64; not available inside jit)."""
        return np.int64(words.to_int64(self.count_words))

    @property
    def class_counts(self) -> np.ndarray | None:
        """(m,) samples per class (host int64; not available inside jit), ``None`` for regression."""
        return None if self.class_count_words is None else words.to_int64(self.class_count_words)

    @property
    def on_device(self) -> bool:
        """True when the leaves are JAX arrays (or tracers): operations then run in JAX."""
        return any(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(self))

    @property
    def nbytes(self) -> int:
        """Memory held by the state's arrays, in bytes."""
        return sum(leaf.nbytes for leaf in jax.tree.leaves(self))


def register_pytree(cls, leaves: tuple[str, ...], static: tuple[str, ...]):
    """Register a frozen dataclass as a pytree whose ``static`` fields live in the treedef, never as leaves.

    Static arrays (class ids, a shift) are compared by value, so two objects with different class ids have
    different tree structures: ``jax.tree.map`` over both fails instead of mixing them, and jit recompiles.
    """

    def static_part(obj):
        values = (getattr(obj, name) for name in static)
        return tuple(_StaticArray(v) if isinstance(v, np.ndarray) else v for v in values)

    def flatten_with_keys(obj):
        return tuple((jax.tree_util.GetAttrKey(n), getattr(obj, n)) for n in leaves), static_part(obj)

    def flatten(obj):
        return tuple(getattr(obj, n) for n in leaves), static_part(obj)

    def unflatten(aux, children):
        obj = object.__new__(cls)
        for name, value in zip(leaves, children):
            object.__setattr__(obj, name, value)
        for name, value in zip(static, aux):
            object.__setattr__(obj, name, value.array if isinstance(value, _StaticArray) else value)
        return obj

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
    return cls


register_pytree(Statistics, ("moments", "compensation", "count_words", "class_count_words", "error"),
                ("class_ids", "shift", "precision", "frac_bits"))


def check_leaves(stats) -> None:
    """Refuse a state whose leaves no longer match its precision (a pytree transform changed a dtype or shape).

    Args:
      stats: the state to check.

    Raises:
      InputError: ``stats`` is not a :class:`Statistics`.
      IntegrityError: naming the leaf, its dtype and the one the precision needs.
    """
    if not isinstance(stats, Statistics):
        raise InputError(f"expected analytic.Statistics, got {type(stats).__name__}")
    arithmetic = PRECISIONS.get(stats.precision) if isinstance(stats.precision, str) else None
    if arithmetic is None:
        raise IntegrityError(f"unknown precision {stats.precision!r}")
    d, m = stats.dim, stats.n_outputs
    expected = {
        "gram": (d, d), "cross": (d, m), "feature_sum": (d,),
        "target_sum": None if stats.is_classification else (m,),
        "class_grams": None if stats.moments.class_grams is None else (m, d, d),
    }
    for part in ("moments", "compensation"):
        moments = getattr(stats, part)
        if moments is None:
            continue
        for name, shape in expected.items():
            _check_leaf(f"{part}.{name}", getattr(moments, name), arithmetic.leaf_dtype,
                        None if shape is None else arithmetic.leaf_shape(shape), stats.precision)
    if (stats.compensation is None) == arithmetic.compensated:
        raise IntegrityError("Kahan residuals belong to float32 states only")
    _check_leaf("count_words", stats.count_words, np.int32, (words.N_WORDS,), stats.precision)
    _check_leaf("class_count_words", stats.class_count_words, np.int32,
                (m, words.N_WORDS) if stats.is_classification else None, stats.precision)
    _check_leaf("error", stats.error, np.uint32, (), stats.precision)
    if stats.is_classification and stats.class_ids.shape != (m,):
        raise IntegrityError(f"the state has {m} class columns but {stats.class_ids.size} class ids")


def _check_leaf(name, leaf, dtype, shape, precision) -> None:
    if shape is None:
        if leaf is not None:
            raise IntegrityError(f"the state's {name} should be None in this configuration")
        return
    if leaf is None or not hasattr(leaf, "dtype"):
        raise IntegrityError(f"the state's {name} is missing or not an array")
    if leaf.dtype != dtype:
        hint = (" (JAX without x64 turns float64 into float32: enable jax_enable_x64, or use precision='float32' or "
                "'fixed' on such devices)" if dtype == np.float64 else "")
        raise IntegrityError(
            f"the state's {name} has dtype {leaf.dtype} but {precision} statistics need {np.dtype(dtype)}: a pytree "
            f"transform changed it{hint}"
        )
    if tuple(leaf.shape) != tuple(shape):
        raise IntegrityError(f"the state's {name} has shape {tuple(leaf.shape)}, expected {tuple(shape)}")


def device_float(precision: str):
    """The float dtype a device computes in: float64 with x64, else float32 (float64 states need x64)."""
    PRECISIONS[precision].device_dtype()  # refuses float64 states without x64
    return jnp.float64 if x64_enabled() else jnp.float32


def raise_flagged(error) -> None:
    """Raise the error a concrete flag stands for (no-op for 0 or a traced flag)."""
    if isinstance(error, jax.core.Tracer):
        return
    code = int(np.asarray(error))
    for bit, (kind, message) in ERROR_MESSAGES.items():
        if code & bit:
            raise kind(f"{message} (error flag {code})")
    if code:
        raise IntegrityError(f"the state carries an unknown error flag {code}: it was altered by a pytree transform")


def check_state(stats) -> None:
    """Every operation starts here: leaves that match the precision, and no error flag (outside jit)."""
    check_leaves(stats)
    raise_flagged(stats.error)


def with_classes(stats: Statistics, class_ids) -> Statistics:
    """The same state with columns for every id in ``class_ids`` (a sorted superset of ``stats.class_ids``);
    new classes get zero columns. Static: works under jit.

    This is what :func:`analytic.merge` does to both states first, and what a continual phase needs before new
    classes are learned under jit (REFERENCE.md §1: "new classes add zero columns to B first").

    Args:
      stats: a classification state.
      class_ids: sorted class ids containing every id of ``stats.class_ids``.

    Returns:
      A :class:`Statistics` with one column per id of ``class_ids`` (``stats`` itself when they are its ids).

    Raises:
      IntegrityError: ``class_ids`` lacks one of the state's classes.

    Example:
      >>> stats = analytic.accumulate(analytic.init_statistics(2), np.eye(2), np.array([0, 2]))
      >>> wider = with_classes(stats, [0, 1, 2])
      >>> wider.class_ids, wider.class_counts
      (array([0, 1, 2]), array([1, 0, 1]))
      >>> wider.moments.cross[:, 1]  # class 1's new, empty column
      array([0., 0.])
    """
    class_ids = np.asarray(class_ids, dtype=np.int64)
    if np.array_equal(class_ids, stats.class_ids):
        return stats
    missing = np.setdiff1d(stats.class_ids, class_ids)
    if missing.size:
        raise IntegrityError(f"with_classes would lose classes {missing.tolist()}")
    positions = np.searchsorted(class_ids, stats.class_ids)
    xp = jnp if stats.on_device else np

    def widen(array, axis):
        if array is None:
            return None
        shape = list(array.shape)
        shape[axis] = class_ids.size
        index = [slice(None)] * array.ndim
        index[axis] = positions
        if xp is jnp:
            return jnp.zeros(shape, array.dtype).at[tuple(index)].set(array)
        out = np.zeros(shape, array.dtype)
        out[tuple(index)] = array
        return out

    def widen_moments(m):
        return m._replace(cross=widen(m.cross, 1), class_grams=widen(m.class_grams, 0))

    return dataclasses.replace(
        stats,
        moments=widen_moments(stats.moments),
        compensation=None if stats.compensation is None else widen_moments(stats.compensation),
        class_ids=class_ids,
        class_count_words=widen(stats.class_count_words, 0),
    )


def select_classes(stats: Statistics, keep) -> Statistics:
    """The state restricted to the class columns at positions ``keep`` (static), in their order.

    Only the output columns change: the Gram, feature sums and sample count still hold the samples of the columns
    left out. To remove a forgotten class (one whose samples were subtracted) use :func:`analytic.drop_classes`,
    which checks that the class is empty.

    Args:
      stats: a classification state.
      keep: column positions (0 ≤ position < m, not class ids) to keep, in the order wanted.

    Returns:
      A :class:`Statistics` whose class ids, cross-moment columns, class counts (and per-class Grams) are those at
      ``keep``.

    Raises:
      IndexError: a position is outside the state's columns.

    Example:
      >>> stats = analytic.accumulate(analytic.init_statistics(2), np.eye(2), np.array([3, 7]))
      >>> subset = select_classes(stats, [1])  # the column of class 7
      >>> subset.class_ids, subset.class_counts, int(subset.count)
      (array([7]), array([1]), 2)
    """
    keep = np.asarray(keep, np.int64)

    def select(m: Moments) -> Moments:
        return m._replace(
            cross=m.cross[:, keep], class_grams=None if m.class_grams is None else m.class_grams[keep]
        )

    return dataclasses.replace(
        stats,
        moments=select(stats.moments),
        compensation=None if stats.compensation is None else select(stats.compensation),
        class_ids=stats.class_ids[keep],
        class_count_words=stats.class_count_words[keep],
    )


def mean_shift(features) -> np.ndarray:
    r"""The float32 mean shift for features like ``features``: the mean of their first ``SHIFT_ROWS`` rows, rounded to
    ``SHIFT_BITS`` = 4 significant bits (README: precision).

    Rounding keeps what makes float32 sums of ReLU-like features accurate: a zero feature becomes :math:`-\bar s_j`
    with 4 significant bits, so products of two such values (8 bits) still add exactly, as zeros did, while dense
    features are centred to within 1/16 of their mean. Measured on ReLU buffer features (MobileNetV2 on
    Fashion-MNIST, d = 512 to 2,048): 2.5–8× smaller weight errors than the exact mean, which loses to no shift at all
    on sparse features. Pass the result as ``init_statistics(..., shift=mean_shift(x))`` to jit a float32 state.

    Args:
      features: (n, d) array of representative features, e.g. the first batch; only the first ``SHIFT_ROWS``
        = 1024 rows are read.

    Returns:
      (d,) float32 shift :math:`s`, each entry the column mean rounded to 4 significant bits.

    Example:
      >>> mean_shift(np.array([[1.0], [2.3]]))  # the mean 1.65 on 4 significant bits
      array([1.625], dtype=float32)
      >>> x = np.random.default_rng(0).uniform(0, 8, size=(16, 3)).astype(np.float32)
      >>> stats = analytic.init_statistics(3, precision="float32", shift=mean_shift(x), class_ids=[0, 1])
      >>> stats = jax.jit(analytic.accumulate)(stats, x, np.arange(16) % 2)
      >>> np.allclose(analytic.gram_matrix(stats), x.T.astype(np.float64) @ x, rtol=1e-5)  # the shift undone
      True
    """
    mean = np.asarray(features[:SHIFT_ROWS], np.float64).mean(axis=0)
    mantissa, exponent = np.frexp(mean)
    scale = 2.0**SHIFT_BITS
    return np.ldexp(np.round(mantissa * scale) / scale, exponent).astype(np.float32)


def same_shift(a: Statistics, b: Statistics) -> bool:
    """Whether two states were accumulated around the same (static) mean shift, or both around none."""
    if a.shift is None or b.shift is None:
        return a.shift is None and b.shift is None
    return np.array_equal(a.shift, b.shift)


def combined_shift(a: Statistics, b: Statistics):
    """The shift of ``a ± b``: the common one; an empty ``a`` adopts ``b``'s (read outside jit only, where the
    compatibility check allowed different shifts)."""
    if same_shift(a, b):
        return a.shift
    return b.shift if int(a.count) == 0 else a.shift


def flag_if_held(stats: Statistics, class_count_words, bit: int) -> Statistics:
    """Inside jit, ``stats`` with ``bit`` set in its error flag when any of the given class counts is not zero (the
    check that raises outside jit)."""
    held = jnp.any(jnp.asarray(class_count_words) != 0)
    return dataclasses.replace(stats, error=jnp.asarray(stats.error) | jnp.where(held, bit, 0).astype(jnp.uint32))
