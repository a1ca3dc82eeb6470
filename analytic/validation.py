"""One place that checks what callers pass in: features, labels, targets, class ids, masks, ridges and settings.

Every public entry point of the library (the core, the expansions, the feature extractor, the gradient head, the
partitioners, the continual scenarios and learners, the federated baselines) validates its arguments with these
functions, and all of them raise :class:`~analytic.InputError` naming the argument and what is wrong.

Two kinds of check. Static checks (``check_*_shape``, :func:`target_matrix`) read shapes and dtypes only, so they
hold for NumPy arrays, JAX arrays and tracers alike (inside ``jax.jit`` they raise at trace time). Value checks
(NaN/Inf, negative ids, ranges) read the values, on the host.
"""

from __future__ import annotations

import numbers

import jax.numpy as jnp
import numpy as np

from analytic.errors import InputError
from analytic.precision import non_finite_message

def check_feature_shape(x, dim: int | None = None) -> None:
    """Raise :class:`InputError` unless ``x`` is a non-empty (n, d) floating array with d = ``dim`` (if given).

    Args:
      x: an array with ``dtype``, ``ndim`` and ``shape`` (NumPy, JAX or a tracer).
      dim: the expected d, or ``None`` for any.
    """
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise InputError(f"features must be a floating-point array, got dtype {x.dtype}")
    if x.ndim != 2:
        raise InputError(f"features must be a 2-D array (n, d), got shape {x.shape}")
    if x.shape[0] == 0:
        raise InputError("empty batch: features have 0 rows")
    if dim is not None and x.shape[1] != dim:
        raise InputError(f"features have dimension {x.shape[1]}, the head expects {dim}")


def check_label_shape(y, n: int) -> None:
    """Raise :class:`InputError` unless ``y`` is an (n,) integer array.

    Args:
      y: an array with ``dtype``, ``ndim`` and ``shape`` (NumPy, JAX or a tracer).
      n: the number of rows of the features.
    """
    if y.ndim != 1:
        raise InputError(f"labels must be a 1-D array of class ids, got shape {y.shape}")
    if y.shape[0] != n:
        raise InputError(f"features have {n} rows but labels have {y.shape[0]}")
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise InputError(f"labels must be integer class ids, got dtype {y.dtype}")
    if isinstance(y, np.ndarray) and y.dtype.kind == "u" and y.size and int(y.max()) > np.iinfo(np.int64).max:
        raise InputError(f"label {int(y.max())} does not fit int64: class ids must be below 2^63")


def check_class_ids(class_ids) -> np.ndarray:
    """Class ids given by a caller as a 1-D int64 array; raises :class:`InputError` unless every id is an integer
    (booleans, floats such as 1.7 or 1.0, and strings are refused, never truncated) that fits int64.

    Args:
      class_ids: an integer or a 1-D sequence of integers.

    Example:
      >>> check_class_ids([3, 7]), check_class_ids(np.uint8(2))
      (array([3, 7]), array([2]))
    """
    ids = np.asarray(class_ids)
    if ids.dtype == bool or not (np.issubdtype(ids.dtype, np.integer) or (ids.size == 0 and ids.dtype == float)):
        raise InputError(f"class ids must be integers, got {class_ids!r} ({ids.dtype})")
    if ids.ndim > 1:
        raise InputError(f"class ids must be an integer or a 1-D sequence of integers, got shape {ids.shape}")
    if ids.dtype.kind == "u" and ids.size and int(ids.max()) > np.iinfo(np.int64).max:
        raise InputError(f"class id {int(ids.max())} does not fit int64")
    return ids.reshape(-1).astype(np.int64)


def target_matrix(y, n: int, m: int):
    """Floating regression targets as (n, m) (a 1-D ``y`` is one column when m = 1); raises :class:`InputError`.

    Args:
      y: (n, m) or, when m = 1, (n,) floating targets (NumPy, JAX or a tracer).
      n: the number of rows of the features.
      m: the number of regression outputs.
    """
    if not jnp.issubdtype(y.dtype, jnp.floating):
        raise InputError(f"regression targets must be floating point, got dtype {y.dtype}")
    if y.ndim == 1 and m == 1:
        y = y[:, None]
    if y.shape != (n, m):
        raise InputError(f"regression targets must have shape ({n}, {m}), got {y.shape}")
    return y


def check_mask_shape(keep, n: int) -> None:
    """Raise :class:`InputError` unless ``keep`` is an (n,) boolean array.

    Args:
      keep: the mask (NumPy, JAX or a tracer).
      n: the number of rows of the batch.
    """
    if keep.dtype != np.bool_ or keep.shape != (n,):
        raise InputError(f"mask must be a ({n},) boolean array, got {keep.dtype} of shape {keep.shape}")


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
        raise InputError(non_finite_message(x))
    return x


def check_labels(labels, n: int) -> np.ndarray:
    """Class ids as a host (n,) int64 array of non-negative integers; raises :class:`InputError`.

    Args:
      labels: (n,) integer class ids.
      n: the number of rows of the features.
    """
    y = np.asarray(labels)
    check_label_shape(y, n)
    if y.size and y.min() < 0:
        raise InputError(f"labels must be non-negative class ids, got {int(y.min())}")
    return y.astype(np.int64, copy=False)


def check_targets(targets, n: int, m: int) -> np.ndarray:
    """Regression targets as a host (n, m) floating array, finite; raises :class:`InputError`.

    Args:
      targets: (n, m) or, when m = 1, (n,) floating targets.
      n: the number of rows of the features.
      m: the number of regression outputs.
    """
    y = target_matrix(np.asarray(targets), n, m)
    if not np.isfinite(y).all():
        raise InputError("regression targets contain NaN or Inf")
    return y


def check_shift(shift, dim: int, dtype) -> np.ndarray:
    """A mean shift as a host (d,) array of ``dtype``, finite; raises :class:`InputError`.

    Args:
      shift: the shift s.
      dim: the feature dimension d.
      dtype: the state's compute dtype.
    """
    s = np.asarray(shift)
    if s.shape != (dim,):
        raise InputError(f"shift must have shape ({dim},), got {s.shape}")
    if not np.isfinite(s).all():
        raise InputError("shift contains NaN or Inf")
    return s.astype(dtype)


def check_declared_class_ids(class_ids) -> np.ndarray:
    """Declared classes as a sorted int64 array (empty for ``None``); raises :class:`InputError` unless they are
    unique non-negative integers.

    Args:
      class_ids: ``None`` or a 1-D sequence of integers.
    """
    if class_ids is None:
        return np.zeros(0, np.int64)
    ids = np.asarray(class_ids)
    if ids.ndim != 1 or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
        raise InputError(f"class_ids must be a 1-D sequence of integers, got {ids.dtype} of shape {ids.shape}")
    ids = ids.astype(np.int64)
    if ids.size and (ids.min() < 0 or np.any(np.diff(np.sort(ids)) == 0)):
        raise InputError("class_ids must be unique non-negative integers")
    return np.sort(ids)


def check_mask(mask, n: int) -> np.ndarray:
    """A mask as a host (n,) boolean array; raises :class:`InputError`.

    Args:
      mask: the mask.
      n: the number of rows of the batch.
    """
    keep = np.asarray(mask)
    check_mask_shape(keep, n)
    return keep


def check_ridge(ridge) -> float:
    """The ridge γ as a finite non-negative float; raises :class:`InputError`.

    Args:
      ridge: a number.
    """
    try:
        value = float(ridge)
    except (TypeError, ValueError) as error:
        raise InputError(f"ridge must be a non-negative number, got {ridge!r}") from error
    if not value >= 0 or not np.isfinite(value):
        raise InputError(f"ridge must be a finite non-negative number, got {value}")
    return value


def check_int(name: str, value, *, minimum: int = 1) -> int:
    """``value`` as an int, refusing booleans, floats, strings and values below ``minimum``.

    Args:
      name: the argument's name, for the message.
      value: the value to check.
      minimum: the smallest allowed value.

    Example:
      >>> check_int("width", np.int64(3))
      3
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise InputError(f"{name} must be an integer ≥ {minimum}, got {value}")
    return int(value)


def check_number(name: str, value, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite float within ``[low, high]`` (an end is open when ``low_open`` / ``high_open``).

    Args:
      name: the argument's name, for the message.
      value: the value to check.
      low: the lower end, or ``None`` for none.
      high: the upper end, or ``None`` for none.
      low_open: exclude ``low`` itself.
      high_open: exclude ``high`` itself.

    Example:
      >>> check_number("alpha", 0.5, low=0, low_open=True)
      0.5
    """
    if isinstance(value, (bool, np.bool_, str)) or value is None:
        raise InputError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise InputError(f"{name} must be a number, got {value!r}") from error
    below = low is not None and (number <= low if low_open else number < low)
    above = high is not None and (number >= high if high_open else number > high)
    if not np.isfinite(number) or below or above:
        interval = f"{'(' if low_open else '['}{'-inf' if low is None else low}, {'inf' if high is None else high}" \
                   f"{')' if high_open else ']'}"
        raise InputError(f"{name} must be a finite number in {interval}, got {value!r}")
    return number


def check_choice(name: str, value, choices) -> str:
    """``value`` if it is one of ``choices``, else :class:`InputError` listing them.

    Args:
      name: the argument's name, for the message.
      value: the value to check.
      choices: the allowed strings.

    Example:
      >>> check_choice("path", "flax", ("flax", "torch"))
      'flax'
    """
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value
