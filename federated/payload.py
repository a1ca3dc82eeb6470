r"""What a client sends: its statistics as a flat payload, the symmetric Gram packed as its upper triangle.

A classification client with d features and m agreed classes sends

.. math::
    \underbrace{d(d+1)/2}_{\text{packed } G_k} + \underbrace{d\,m}_{B_k} + \underbrace{d}_{\sum x} + 1 + 2m

numbers, 8 bytes each (float64, or int64 on the bit-exact fixed-point grid): at d = 1,280 and m = 10 that is
6.7 MB, at d = 2,048 17.0 MB, at d = 8,192 with 100 classes 275 MB — once, whatever the number of samples it
holds (:func:`statistics_nbytes`).
Decoding validates every field and raises :class:`UploadRejected` naming the problem, so a malformed upload never
reaches an aggregate.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np

import analytic
from analytic.internal import (
    check_choice,
    from_host_moments,
    host_moments,
    int_sum_fits,
    pack_upper,
    packed_length,
    unpack_upper,
)

FIELDS = ("gram", "cross", "feature_sum", "count", "class_ids", "class_counts")
ADDITIVE_FIELDS = ("gram", "cross", "feature_sum", "count", "class_counts")  # class_ids are agreed, not summed
_STATE_DTYPES = {"float64": np.float64, "fixed": np.int64}


class UploadRejected(analytic.IntegrityError):
    """A client upload the server refuses; the aggregate it was meant for is unchanged.

    A subclass of :class:`analytic.IntegrityError` whose message names the problem (missing field, dtype, shape,
    NaN/Inf, negative Gram diagonal, inconsistent counts, class ids, duplicate or replayed upload, unknown client).

    Example:
      >>> stats = federated.client_statistics(np.eye(3), np.array([0, 1, 1]), 3)
      >>> payload = dict(encode_statistics(stats), count=np.asarray(5, np.int64))  # counts that do not add up
      >>> try:
      ...     check_payload(payload, 3)
      ... except UploadRejected as error:
      ...     print(error)
      inconsistent counts: count 5, class counts summing to 3
      >>> issubclass(UploadRejected, analytic.IntegrityError)
      True
    """


@functools.lru_cache(maxsize=8)
def diagonal_positions(dim: int) -> np.ndarray:
    """Positions of the diagonal entries :math:`(i, i)` in a row-major packed upper triangle."""
    i = np.arange(dim, dtype=np.int64)
    return i * dim - i * (i - 1) // 2


def payload_nbytes(payload: dict[str, np.ndarray]) -> int:
    """Bytes on the wire: the sum of the payload arrays' sizes.

    Args:
      payload: a dict of arrays, e.g. :func:`encode_statistics`'s.

    Returns:
      The total number of bytes of the arrays' data (no framing or compression counted).

    Example:
      >>> rng = np.random.default_rng(0)
      >>> stats = federated.client_statistics(rng.normal(size=(12, 3)), rng.integers(0, 3, 12), 3)
      >>> payload_nbytes(encode_statistics(stats))  # 8 · (6 + 9 + 3 + 1 + 2 · 3)
      200
    """
    return int(sum(np.asarray(v).nbytes for v in payload.values()))


def statistics_nbytes(dim: int, n_classes: int) -> int:
    r"""Bytes of one statistics upload at dimension d with m classes (8-byte numbers).

    .. math::
        8 \left( \tfrac{d(d+1)}{2} + d\,m + d + 1 + 2m \right)

    (packed Gram, cross-moments, feature sum, count, class ids and class counts; the module docstring). It does not
    depend on the number of samples the client holds; it equals :func:`payload_nbytes` of the upload.

    Args:
      dim: feature dimension d.
      n_classes: number of agreed classes m.

    Returns:
      The upload's size in bytes.

    Example:
      >>> statistics_nbytes(1280, 10)  # 6.7 MB
      6671528
      >>> statistics_nbytes(3, 3)
      200
    """
    return 8 * (packed_length(dim) + dim * n_classes + dim + 1 + 2 * n_classes)


def encode_statistics(stats: analytic.Statistics, class_ids=None) -> dict[str, np.ndarray]:
    """A client's classification statistics as a flat payload (packed Gram), aligned to ``class_ids`` if given.

    Only unshifted float64 or fixed-point statistics travel: float32 states carry a shift and Kahan residuals
    that would make the server's sum depend on the order of arrival. Per-class Grams, if the state keeps them, do
    not travel.

    Args:
      stats: the client's classification :class:`analytic.Statistics` (:func:`federated.client_statistics`), float64
        or fixed precision, without a shift.
      class_ids: the agreed class ids (sorted, a superset of the client's), so that every client's payload has the
        same shapes; ``None`` keeps the client's own class ids.

    Returns:
      A dict of host arrays: ``"gram"`` (d(d+1)/2,) the upper triangle of :math:`G_k` row by row, ``"cross"``
      (d, m) :math:`B_k`, ``"feature_sum"`` (d,), ``"count"`` (), ``"class_ids"`` (m,) and ``"class_counts"`` (m,);
      float64, or int64 on the fixed-point grid (counts and ids int64).

    Raises:
      analytic.InputError: float32 statistics, a shifted state, or regression statistics.
      analytic.IntegrityError: the client holds a class outside ``class_ids``, or ``stats`` is flagged.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(12, 3)), rng.integers(0, 2, 12)
      >>> payload = encode_statistics(federated.client_statistics(x, y, 3), class_ids=[0, 1, 2])
      >>> payload["gram"].shape, payload["cross"].shape, payload["class_ids"], payload["class_counts"]
      ((6,), (3, 3), array([0, 1, 2]), array([6, 6, 0]))
      >>> encode_statistics(federated.client_statistics(x, y, 3, precision="fixed"))["gram"].dtype
      dtype('int64')
    """
    if stats.precision not in _STATE_DTYPES or stats.shift is not None or not stats.is_classification:
        raise analytic.InputError(
            "uploads carry unshifted float64 or fixed-point classification statistics, "
            f"got precision={stats.precision!r}, shift={'set' if stats.shift is not None else None}"
        )
    if class_ids is not None:
        stats = analytic.with_classes(stats, np.asarray(class_ids, np.int64))
    moments = host_moments(stats)
    return {
        "gram": pack_upper(moments.gram),
        "cross": moments.cross,
        "feature_sum": moments.feature_sum,
        "count": np.asarray(stats.count, np.int64),
        "class_ids": stats.class_ids,
        "class_counts": stats.class_counts,
    }


def _field(payload, name, dtype, shape) -> np.ndarray:
    value = np.asarray(payload[name])
    if value.dtype != dtype:
        raise UploadRejected(f"upload field {name!r} has dtype {value.dtype}, expected {np.dtype(dtype)}")
    if value.shape != shape:
        raise UploadRejected(f"upload field {name!r} has the wrong shape {value.shape}, expected {shape}")
    return value


def init_payload(dim: int, class_ids, *, precision: str = "float64") -> dict[str, np.ndarray]:
    """The payload of a client with no samples: zeros aligned to the agreed class ids."""
    class_ids = np.asarray(class_ids, np.int64)
    dtype = _STATE_DTYPES[check_choice("precision", precision, tuple(_STATE_DTYPES))]
    return {
        "gram": np.zeros(packed_length(dim), dtype), "cross": np.zeros((dim, class_ids.size), dtype),
        "feature_sum": np.zeros(dim, dtype), "count": np.asarray(0, np.int64), "class_ids": class_ids,
        "class_counts": np.zeros(class_ids.size, np.int64),
    }


def check_payload(payload, dim: int, *, precision: str = "float64", class_ids=None) -> None:
    """Validate a payload without unpacking it (O(d²) reads, no d×d allocation).

    Args:
      payload: the upload, a dict of arrays in the :func:`encode_statistics` layout.
      dim: the agreed feature dimension d.
      precision: ``"float64"`` (default) or ``"fixed"``: the dtype every moment field must have (float64 or int64).
      class_ids: the agreed class ids the upload's must equal, or ``None`` to accept any sorted unique ids.

    Raises:
      analytic.InputError: ``precision`` is neither ``"float64"`` nor ``"fixed"``.
      UploadRejected: a missing field, a wrong dtype or shape, NaN/Inf, a negative Gram diagonal, negative or
        inconsistent counts, class ids that are unsorted or differ from the agreed ``class_ids`` — naming which.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> payload = encode_statistics(federated.client_statistics(rng.normal(size=(12, 3)), np.arange(12) % 2, 3))
      >>> check_payload(payload, 3, class_ids=np.array([0, 1])) is None  # accepted
      True
      >>> try:
      ...     check_payload(payload, 4)  # the server expects d = 4
      ... except UploadRejected as error:
      ...     print(error)
      upload field 'gram' has the wrong shape (6,), expected (10,)
    """
    if precision not in _STATE_DTYPES:
        raise analytic.InputError(f"uploads are float64 or fixed, got precision {precision!r}")
    if not isinstance(payload, dict):
        raise UploadRejected(f"an upload is a dict of arrays, got {type(payload).__name__}")
    missing = [name for name in FIELDS if name not in payload]
    if missing:
        raise UploadRejected(f"upload lacks the fields {missing}")
    dtype = _STATE_DTYPES[precision]
    ids = np.asarray(payload["class_ids"])
    if ids.ndim != 1 or ids.dtype != np.int64:
        raise UploadRejected(f"class_ids must be a 1-D int64 array, got shape {ids.shape} {ids.dtype}")
    if ids.size and (ids.min() < 0 or np.any(np.diff(ids) <= 0)):
        raise UploadRejected("class_ids must be sorted, unique and non-negative")
    if class_ids is not None and not np.array_equal(ids, class_ids):
        raise UploadRejected(f"upload has class ids {ids.tolist()}, the federation agreed on {np.asarray(class_ids).tolist()}")
    m = ids.size
    gram = _field(payload, "gram", dtype, (packed_length(dim),))
    cross = _field(payload, "cross", dtype, (dim, m))
    feature_sum = _field(payload, "feature_sum", dtype, (dim,))
    count = _field(payload, "count", np.int64, ())
    class_counts = _field(payload, "class_counts", np.int64, (m,))
    if precision == "float64":
        for name, value in (("gram", gram), ("cross", cross), ("feature_sum", feature_sum)):
            if not np.isfinite(value).all():
                raise UploadRejected(f"upload field {name!r} contains NaN or Inf")
    diagonal = gram[diagonal_positions(dim)]
    if (diagonal < 0).any():
        first = int(np.flatnonzero(diagonal < 0)[0])
        raise UploadRejected(f"the Gram matrix has a negative diagonal entry ({first}, {first}): not a sum of squares")
    if count < 0 or (class_counts < 0).any() or class_counts.sum() != count:
        raise UploadRejected(
            f"inconsistent counts: count {int(count)}, class counts summing to {int(class_counts.sum())}"
        )


def decode_statistics(payload, dim: int, *, precision: str = "float64", frac_bits: int = 12) -> analytic.Statistics:
    """Validate a payload (:func:`check_payload`) and rebuild its :class:`analytic.Statistics` (full Gram).

    The inverse of :func:`encode_statistics`: the decoded state is the encoded one (bit-identical, same
    :func:`analytic.state_hash`), aligned to the payload's class ids.

    Args:
      payload: the upload, a dict of arrays in the :func:`encode_statistics` layout.
      dim: feature dimension d.
      precision: ``"float64"`` (default) or ``"fixed"``, the encoder's.
      frac_bits: the fixed-point grid the encoder used (fixed precision; the payload does not carry it).

    Returns:
      The host :class:`analytic.Statistics` of the upload.

    Raises:
      analytic.InputError: ``precision`` is neither ``"float64"`` nor ``"fixed"``.
      UploadRejected: the payload fails :func:`check_payload`.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(12, 3)), rng.integers(0, 2, 12)
      >>> stats = federated.client_statistics(x, y, 3, precision="fixed")
      >>> decoded = decode_statistics(encode_statistics(stats), 3, precision="fixed")
      >>> analytic.state_hash(decoded) == analytic.state_hash(stats), int(decoded.count), decoded.class_ids
      (True, 12, array([0, 1]))
    """
    check_payload(payload, dim, precision=precision)
    moments = analytic.Moments(
        gram=unpack_upper(np.asarray(payload["gram"]), dim), cross=np.array(payload["cross"]),
        feature_sum=np.array(payload["feature_sum"]), target_sum=None, class_grams=None,
    )
    return from_host_moments(
        moments, payload["count"], np.array(payload["class_ids"]), np.array(payload["class_counts"]),
        precision=precision, frac_bits=frac_bits,
    )


def add_payloads(total: dict[str, np.ndarray], upload: dict[str, np.ndarray], sign: int = 1) -> dict[str, np.ndarray]:
    """Field-wise ``total + sign · upload`` of two aligned payloads (the packed triangles add as they are).

    Integer (fixed-point) sums are refused before they could leave int64's exact range.
    """
    out = {"class_ids": total["class_ids"]}
    for name in ADDITIVE_FIELDS:
        a, b = np.asarray(total[name]), np.asarray(upload[name])
        if a.dtype == np.int64 and not int_sum_fits(a, b):
            raise UploadRejected("the fixed-point aggregate would overflow int64: lower frac_bits or rescale")
        out[name] = a + b if sign > 0 else a - b
    return out


def upload_fingerprint(payload: dict[str, np.ndarray], dim: int) -> str:
    """sha256 of an upload's counts, Gram diagonal and cross-moments: O(d·m) work, identifies a replayed upload."""
    digest = hashlib.sha256()
    gram = np.asarray(payload["gram"])
    for value in (payload["count"], payload["class_ids"], payload["class_counts"],
                  gram[diagonal_positions(dim)], payload["cross"]):
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()
