r"""What a client sends: its statistics as a flat payload, the symmetric Gram packed as its upper triangle, or as
the triangular factor of its features.

A classification client with d features and m agreed classes sends

.. math::
    \underbrace{d(d+1)/2}_{\text{packed } G_k} + \underbrace{d\,m}_{B_k} + \underbrace{d}_{\sum x} + 1 + 2m

numbers, 8 bytes each (float64, or int64 on the bit-exact fixed-point grid): at d = 1,280 and m = 10 that is
6.7 MB, at d = 2,048 17.0 MB, at d = 8,192 with 100 classes 275 MB — once, whatever the number of samples it
holds (:func:`statistics_nbytes`). A client with fewer samples than features, :math:`n_k < d`, can send instead
the upper-trapezoidal factor :math:`R_k` of its features, :math:`X_k^\top X_k = R_k^\top R_k`
(:func:`encode_factor`): :math:`n_k d - n_k(n_k-1)/2` numbers in place of :math:`d(d+1)/2`. Either form may travel
in float32 (:func:`encode_statistics` / :func:`encode_factor` with ``transport="float32"``): half the bytes, not
exact, and accepted only by an aggregate that allows it (``federated.init_aggregate(..., allow_float32=True)``).

Decoding validates every field and raises :class:`UploadRejected` naming the problem, so a malformed upload never
reaches an aggregate. Beyond shapes, dtypes and finiteness, every upload is checked against what holds for any
true classification statistics (:func:`check_payload`): counts that add up, a count-0 upload that is all zeros,
a non-negative Gram diagonal, Cauchy–Schwarz :math:`|G_{ij}| \le \sqrt{G_{ii} G_{jj}}` and
:math:`|B_{jc}| \le \sqrt{G_{jj} n_c}` (one-hot targets), and feature sums equal to the cross-moments' row sums.
Positive semidefiniteness is a property of the round, checked by the server (:func:`federated.receive_many`).
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np

import analytic
from analytic.internal import (
    check_choice,
    check_features,
    check_labels,
    from_host_moments,
    host_moments,
    int_sum_fits,
    pack_upper,
    packed_length,
    unpack_upper,
)

FIELDS = ("gram", "cross", "feature_sum", "count", "class_ids", "class_counts")
FACTOR_FIELDS = ("factor", "cross", "feature_sum", "count", "class_ids", "class_counts")
ADDITIVE_FIELDS = ("gram", "cross", "feature_sum", "count", "class_counts")  # class_ids are agreed, not summed
_STATE_DTYPES = {"float64": np.float64, "fixed": np.int64}
_TRANSPORTS = {"float64": np.float64, "float32": np.float32}
_LARGEST_SLACK = 2.0**-20  # Cauchy–Schwarz rounding slack never exceeds this, whatever count a client claims
_CHECK_BLOCK = 1 << 18  # packed Gram entries checked per vectorized step


class UploadRejected(analytic.IntegrityError):
    """A client upload the server refuses; the aggregate it was meant for is unchanged.

    A subclass of :class:`analytic.IntegrityError` whose message names the problem (missing field, dtype, shape,
    NaN/Inf, negative Gram diagonal, inconsistent counts, a Gram or cross-moments no data can have, a Gram that
    is not positive semidefinite, class ids, duplicate or replayed upload, unknown client).

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


def factor_length(rows: int, dim: int) -> int:
    """Number of entries :math:`r d - r(r-1)/2` of an (r, d) upper-trapezoidal factor packed row by row."""
    return rows * dim - rows * (rows - 1) // 2


def _trapezoid_mask(rows: int, dim: int) -> np.ndarray:
    return np.triu(np.ones((rows, dim), bool))


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


def statistics_nbytes(dim: int, n_classes: int, *, n_samples: int | None = None, transport: str = "float64") -> int:
    r"""Bytes of one statistics upload at dimension d with m classes.

    .. math::
        b \left( L + d\,m + d \right) + 8 \left( 1 + 2m \right), \qquad
        L = \begin{cases} d(d+1)/2 & \text{packed Gram} \\ r d - r(r-1)/2,\ r = \min(n_k, d) & \text{factor}
        \end{cases}

    with b = 8 bytes per moment (4 with ``transport="float32"``), counts and class ids int64: the packed Gram or
    the packed factor, cross-moments, feature sum, count, class ids and class counts (the module docstring). It
    equals :func:`payload_nbytes` of the upload (:func:`encode_statistics`, or :func:`encode_factor` when
    ``n_samples`` is given).

    Args:
      dim: feature dimension d.
      n_classes: number of agreed classes m.
      n_samples: the client's sample count :math:`n_k` for a factor upload, or ``None`` for the packed Gram.
      transport: ``"float64"`` (default) or ``"float32"``, the moments' dtype on the wire.

    Returns:
      The upload's size in bytes.

    Raises:
      analytic.InputError: an unknown ``transport``.

    Example:
      >>> statistics_nbytes(1280, 10)  # 6.7 MB
      6671528
      >>> statistics_nbytes(1280, 10, n_samples=50)  # a client with 50 samples: the factor
      615008
      >>> statistics_nbytes(3, 3)
      200
    """
    width = np.dtype(_TRANSPORTS[check_choice("transport", transport, tuple(_TRANSPORTS))]).itemsize
    gram = packed_length(dim) if n_samples is None else factor_length(min(n_samples, dim), dim)
    return width * (gram + dim * n_classes + dim) + 8 * (1 + 2 * n_classes)


def _transported(payload: dict[str, np.ndarray], transport: str) -> dict[str, np.ndarray]:
    """The payload with its floating moments cast to the transport dtype (integers stay int64)."""
    dtype = _TRANSPORTS[check_choice("transport", transport, tuple(_TRANSPORTS))]
    return {name: value.astype(dtype, copy=False) if value.dtype.kind == "f" else value
            for name, value in payload.items()}


def encode_statistics(stats: analytic.Statistics, class_ids=None, *, transport: str = "float64") -> dict[str, np.ndarray]:
    """A client's classification statistics as a flat payload (packed Gram), aligned to ``class_ids`` if given.

    Only unshifted float64 or fixed-point statistics travel: float32 states carry a shift and Kahan residuals
    that would make the server's sum depend on the order of arrival. Per-class Grams, if the state keeps them, do
    not travel.

    Args:
      stats: the client's classification :class:`analytic.Statistics` (:func:`federated.client_statistics`), float64
        or fixed precision, without a shift.
      class_ids: the agreed class ids (sorted, a superset of the client's), so that every client's payload has the
        same shapes; ``None`` keeps the client's own class ids.
      transport: ``"float64"`` (default, exact) or ``"float32"``: the float64 moments rounded to float32 on the
        wire, half the bytes and *not exact* (each entry off by up to 2⁻²⁴ of itself); float64 statistics only.

    Returns:
      A dict of host arrays: ``"gram"`` (d(d+1)/2,) the upper triangle of :math:`G_k` row by row, ``"cross"``
      (d, m) :math:`B_k`, ``"feature_sum"`` (d,), ``"count"`` (), ``"class_ids"`` (m,) and ``"class_counts"`` (m,);
      float64 (or float32 in transport), or int64 on the fixed-point grid (counts and ids int64).

    Raises:
      analytic.InputError: float32 statistics, a shifted state, regression statistics, an unknown ``transport``,
        or float32 transport of fixed-point statistics.
      analytic.IntegrityError: the client holds a class outside ``class_ids``, or ``stats`` is flagged.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(12, 3)), rng.integers(0, 2, 12)
      >>> payload = encode_statistics(federated.client_statistics(x, y, 3), class_ids=[0, 1, 2])
      >>> payload["gram"].shape, payload["cross"].shape, payload["class_ids"], payload["class_counts"]
      ((6,), (3, 3), array([0, 1, 2]), array([6, 6, 0]))
      >>> encode_statistics(federated.client_statistics(x, y, 3, precision="fixed"))["gram"].dtype
      dtype('int64')
      >>> encode_statistics(federated.client_statistics(x, y, 3), transport="float32")["gram"].dtype
      dtype('float32')
    """
    if stats.precision not in _STATE_DTYPES or stats.shift is not None or not stats.is_classification:
        raise analytic.InputError(
            "uploads carry unshifted float64 or fixed-point classification statistics, "
            f"got precision={stats.precision!r}, shift={'set' if stats.shift is not None else None}"
        )
    if stats.precision == "fixed" and transport != "float64":
        raise analytic.InputError("fixed-point statistics travel as exact int64: float32 transport is for float64")
    if class_ids is not None:
        stats = analytic.with_classes(stats, np.asarray(class_ids, np.int64))
    moments = host_moments(stats)
    return _transported({
        "gram": pack_upper(moments.gram),
        "cross": moments.cross,
        "feature_sum": moments.feature_sum,
        "count": np.asarray(stats.count, np.int64),
        "class_ids": stats.class_ids,
        "class_counts": stats.class_counts,
    }, transport)


def encode_factor(features, labels, class_ids=None, *, transport: str = "float64") -> dict[str, np.ndarray]:
    r"""A client's upload with its Gram sent as the triangular factor of its features: fewer bytes when
    :math:`n_k < d`.

    .. math::
        X_k = Q_k R_k \ \text{(QR)}, \qquad G_k = X_k^\top X_k = R_k^\top R_k

    :math:`R_k` is (r, d) upper trapezoidal, r = min(n_k, d), packed row by row: :math:`r d - r(r-1)/2` numbers
    against :math:`d(d+1)/2` for the packed Gram (never more). It reveals no more than the Gram it determines: any
    :math:`R` with :math:`R^\top R = G_k` is one orthogonal rotation :math:`Q R` away from every other, and
    :math:`X_k` itself is any of :math:`U R_k` with U orthonormal columns. The rest of the upload (cross-moments,
    feature sum, counts) is :func:`encode_statistics`'s. Float64 only: the fixed-point grid's bit-exact integer
    Gram cannot be rebuilt from a rounded factor.

    Args:
      features: (n_k, d) floating array of the client's samples, as the core accumulates them (unshifted float64).
      labels: (n_k,) non-negative integer class ids.
      class_ids: the agreed class ids (sorted, a superset of the client's), or ``None`` for the client's own.
      transport: ``"float64"`` (default) or ``"float32"`` (half the bytes, not exact).

    Returns:
      A dict of host arrays: ``"factor"`` (r d − r(r−1)/2,) the upper trapezoid of :math:`R_k` row by row, and
      ``"cross"``, ``"feature_sum"``, ``"count"``, ``"class_ids"``, ``"class_counts"`` as in
      :func:`encode_statistics`.

    Raises:
      analytic.InputError: features or labels :func:`analytic.accumulate` refuses, or an unknown ``transport``.
      analytic.IntegrityError: the client holds a class outside ``class_ids``.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(4, 6)), np.array([0, 1, 1, 0])  # 4 samples, 6 features
      >>> upload = encode_factor(x, y, [0, 1])
      >>> upload["factor"].size, encode_statistics(federated.client_statistics(x, y, 6))["gram"].size
      (18, 21)
      >>> np.allclose(decode_statistics(upload, 6).moments.gram, x.T @ x)
      True
    """
    x = check_features(features).astype(np.float64, copy=False)
    stats = analytic.accumulate(analytic.init_statistics(x.shape[1]), x, check_labels(labels, x.shape[0]))
    payload = {name: value for name, value in encode_statistics(stats, class_ids).items() if name != "gram"}
    factor = np.linalg.qr(x, mode="r")
    return _transported({"factor": factor[_trapezoid_mask(*factor.shape)], **payload}, transport)


def _field(payload, name, dtypes, shape) -> np.ndarray:
    value = np.asarray(payload[name])
    if value.dtype not in dtypes:
        expected = " or ".join(str(np.dtype(t)) for t in dtypes)
        raise UploadRejected(f"upload field {name!r} has dtype {value.dtype}, expected {expected}")
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


def is_factor(payload) -> bool:
    """Whether an upload carries its Gram as a triangular factor (:func:`encode_factor`) rather than packed."""
    return "factor" in payload


def unit_roundoff(payload) -> float:
    """The unit roundoff u of an upload's moments as the server checks them: 2⁻²⁴ in float32 transport, else 2⁻⁵³
    (float64, and fixed-point integers, which the positive-semidefiniteness test reads in float64)."""
    return 2.0**-24 if np.asarray(payload["cross"]).dtype == np.float32 else 2.0**-53


def _cauchy_schwarz_slack(payload, dim: int) -> float:
    r"""Relative rounding slack s of the bound checks, :math:`|G_{ij}| \le (1 + s)\sqrt{G_{ii} G_{jj}}`: 0 on the
    fixed-point grid (exact integers); for floats the accumulation bound 2(n + d)u₆₄ of the client's dot products
    plus 4u for the transport's rounding, never above 2⁻²⁰."""
    if np.asarray(payload["cross"]).dtype == np.int64:
        return 0.0
    return min(2.0 * (int(payload["count"]) + dim) * 2.0**-53 + 4.0 * unit_roundoff(payload), _LARGEST_SLACK)


def _exceeding(magnitude: np.ndarray, left: np.ndarray, right: np.ndarray, slack: float) -> np.ndarray:
    r"""Positions where :math:`|v| > (1 + s)\sqrt{a b}` (``magnitude`` = |v|, ``left`` = a, ``right`` = b ≥ 0).

    Integer inputs (slack 0) are decided exactly: a float64 screen with a margin, then :math:`v^2 > a b` in Python
    integers for the few entries near the bound.
    """
    bound = np.sqrt(left.astype(np.float64)) * np.sqrt(right.astype(np.float64))
    value = magnitude.astype(np.float64)
    if magnitude.dtype != np.int64:
        return np.flatnonzero(value > bound * (1.0 + slack))
    near = np.flatnonzero(value > bound * (1.0 - 2.0**-30))
    return np.array([k for k in near if int(magnitude[k]) ** 2 > int(left[k]) * int(right[k])], np.int64)


def _cauchy_schwarz_violation(gram_entries: np.ndarray, gram_diagonal: np.ndarray, dim: int,
                              slack: float) -> tuple[int, int] | None:
    r"""The first entry (i, j), row by row, of the packed Gram with :math:`|G_{ij}| > (1 + s)\sqrt{G_{ii} G_{jj}}`,
    or ``None``; blocks of whole rows (at most about :data:`_CHECK_BLOCK` entries) are checked at once."""
    starts = diagonal_positions(dim)
    step = max(1, _CHECK_BLOCK // dim)
    for first in range(0, dim, step):
        rows = np.arange(first, min(first + step, dim))
        lengths = dim - rows
        row_of = np.repeat(rows, lengths)
        column_of = row_of + np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        block = gram_entries[starts[first] : starts[first] + lengths.sum()]
        bad = _exceeding(np.abs(block), gram_diagonal[row_of], gram_diagonal[column_of], slack)
        if bad.size:
            return int(row_of[bad[0]]), int(column_of[bad[0]])
    return None


def _check_moments(gram_diagonal, payload, dim: int, gram_entries=None) -> None:
    """The bounds every true upload meets (module docstring); ``gram_entries`` is the packed Gram, or ``None`` for
    a factor upload (a Gram :math:`R^\\top R` meets Cauchy–Schwarz by construction)."""
    count, class_counts = int(payload["count"]), np.asarray(payload["class_counts"])
    cross, feature_sum = np.asarray(payload["cross"]), np.asarray(payload["feature_sum"])
    slack = _cauchy_schwarz_slack(payload, dim)
    if (gram_diagonal < 0).any():
        first = int(np.flatnonzero(gram_diagonal < 0)[0])
        raise UploadRejected(f"the Gram matrix has a negative diagonal entry ({first}, {first}): not a sum of squares")
    violation = None if gram_entries is None else _cauchy_schwarz_violation(gram_entries, gram_diagonal, dim, slack)
    if violation is not None:
        i, j = violation
        raise UploadRejected(
            f"the Gram matrix breaks Cauchy–Schwarz at ({i}, {j}): |G_ij| > √(G_ii G_jj), a correlation above 1"
        )
    bad = _exceeding(np.abs(cross).ravel(), np.repeat(gram_diagonal, class_counts.size),
                     np.tile(class_counts, dim), slack)
    if bad.size:
        j, c = divmod(int(bad[0]), class_counts.size)
        raise UploadRejected(
            f"cross-moment ({j}, {c}) exceeds √(G_jj n_c): no one-hot targets give it (class {c} has "
            f"{int(class_counts[c])} samples)"
        )
    if cross.dtype == np.int64:  # exact, in Python integers
        mismatch = np.flatnonzero(feature_sum.astype(object) != cross.astype(object).sum(axis=1))
    else:
        gap = np.abs(feature_sum.astype(np.float64) - cross.sum(axis=1, dtype=np.float64))
        scale = np.sqrt(count * gram_diagonal.astype(np.float64)) + np.abs(feature_sum) + np.abs(cross).sum(axis=1)
        mismatch = np.flatnonzero(gap > 2.0 * slack * scale)
    if mismatch.size:
        raise UploadRejected(
            f"feature sum {int(mismatch[0])} differs from the sum of its cross-moments over the classes "
            "(one-hot targets make them equal)"
        )


def check_payload(payload, dim: int, *, precision: str = "float64", class_ids=None,
                  allow_float32: bool = False) -> None:
    r"""Validate an upload, packed Gram or factor, against everything that holds for true statistics, in
    O(size of the upload) work, without a d×d allocation for a packed Gram.

    Beyond the layout (fields, dtypes, shapes, finite values, sorted class ids) it checks: counts non-negative and
    adding up; a count-0 upload all zeros (it would add statistics no sample made); a non-negative Gram diagonal;
    Cauchy–Schwarz :math:`|G_{ij}| \le \sqrt{G_{ii} G_{jj}}`; :math:`|B_{jc}| \le \sqrt{G_{jj} n_c}` (one-hot
    targets: :math:`B_{jc} = \sum_{i \in c} x_{ij}`); and feature sums equal to :math:`\sum_c B_{jc}`. The bounds are
    exact on the fixed-point grid (integers) and allow the rounding of the client's float64 sums and of the
    transport in floating point (relative slack 2(n + d)·2⁻⁵³ + 4u, at most 2⁻²⁰). Positive semidefiniteness needs
    the whole matrix: the server tests it once per round (:func:`federated.receive_many`); a factor upload is
    positive semidefinite by construction.

    Args:
      payload: the upload, a dict of arrays in the :func:`encode_statistics` or :func:`encode_factor` layout.
      dim: the agreed feature dimension d.
      precision: ``"float64"`` (default; moments in float64, or float32 in transport) or ``"fixed"`` (int64).
      class_ids: the agreed class ids the upload's must equal, or ``None`` to accept any sorted unique ids.
      allow_float32: also accept float32 transport (``precision="float64"`` only; not exact). Off by default, so
        that an exact aggregate cannot be made inexact by a client's choice.

    Raises:
      analytic.InputError: ``precision`` is neither ``"float64"`` nor ``"fixed"``.
      UploadRejected: a missing field, a wrong dtype (float32 moments unless ``allow_float32``) or shape, NaN/Inf, negative or inconsistent counts, a
        non-zero upload with count 0, a negative Gram diagonal, a correlation above 1, cross-moments or feature sums
        no data can give, class ids that are unsorted or differ from the agreed ``class_ids`` — naming which.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> payload = encode_statistics(federated.client_statistics(rng.normal(size=(12, 3)), np.arange(12) % 2, 3))
      >>> check_payload(payload, 3, class_ids=np.array([0, 1])) is None  # accepted
      True
      >>> try:
      ...     check_payload(payload, 4)  # the server expects d = 4
      ... except UploadRejected as error:
      ...     print(error)
      upload field 'cross' has the wrong shape (3, 2), expected (4, 2)
    """
    if precision not in _STATE_DTYPES:
        raise analytic.InputError(f"uploads are float64 or fixed, got precision {precision!r}")
    if not isinstance(payload, dict):
        raise UploadRejected(f"an upload is a dict of arrays, got {type(payload).__name__}")
    if "gram" in payload and "factor" in payload:
        raise UploadRejected("an upload carries its Gram either packed ('gram') or as a factor ('factor'), not both")
    missing = [name for name in (FACTOR_FIELDS if is_factor(payload) else FIELDS) if name not in payload]
    if missing:
        raise UploadRejected(f"upload lacks the fields {missing}")
    ids = np.asarray(payload["class_ids"])
    if ids.ndim != 1 or ids.dtype != np.int64:
        raise UploadRejected(f"class_ids must be a 1-D int64 array, got shape {ids.shape} {ids.dtype}")
    if ids.size and (ids.min() < 0 or np.any(np.diff(ids) <= 0)):
        raise UploadRejected("class_ids must be sorted, unique and non-negative")
    if class_ids is not None and not np.array_equal(ids, class_ids):
        raise UploadRejected(f"upload has class ids {ids.tolist()}, the federation agreed on {np.asarray(class_ids).tolist()}")
    m = ids.size
    count = int(_field(payload, "count", (np.int64,), ()))
    class_counts = _field(payload, "class_counts", (np.int64,), (m,))
    if count < 0 or (class_counts < 0).any() or class_counts.sum() != count:
        raise UploadRejected(f"inconsistent counts: count {count}, class counts summing to {int(class_counts.sum())}")
    if precision == "fixed" and is_factor(payload):
        raise UploadRejected("a factor upload is float64: the fixed-point grid's exact integer Gram cannot be rebuilt "
                             "from a rounded factor, send the packed Gram")
    if precision == "float64" and not allow_float32 and np.asarray(payload["cross"]).dtype == np.float32:
        raise UploadRejected("the upload is in float32 transport, not exact: this aggregate takes float64 uploads "
                             "(allow_float32=True accepts them)")
    floats = (np.float64, np.float32) if allow_float32 else (np.float64,)
    cross = _field(payload, "cross", (np.int64,) if precision == "fixed" else floats, (dim, m))
    feature_sum = _field(payload, "feature_sum", (cross.dtype,), (dim,))
    if is_factor(payload):
        rows = min(count, dim)
        entries = _field(payload, "factor", (cross.dtype,), (factor_length(rows, dim),))
        moments = (("factor", entries), ("cross", cross), ("feature_sum", feature_sum))
    else:
        entries = _field(payload, "gram", (cross.dtype,), (packed_length(dim),))
        moments = (("gram", entries), ("cross", cross), ("feature_sum", feature_sum))
    if precision == "float64":
        for name, value in moments:
            if not np.isfinite(value).all():
                raise UploadRejected(f"upload field {name!r} contains NaN or Inf")
    if count == 0:
        nonzero = [name for name, value in moments if np.any(value)]
        if nonzero:
            raise UploadRejected(f"an upload with count 0 must be all zeros, but {nonzero} are not")
        return
    if is_factor(payload):
        factor = np.zeros((rows, dim), np.float64)
        factor[_trapezoid_mask(rows, dim)] = entries
        _check_moments(np.einsum("ij,ij->j", factor, factor), payload, dim)
    else:
        _check_moments(entries[diagonal_positions(dim)], payload, dim, entries)


def gram_upload(payload, dim: int) -> dict[str, np.ndarray]:
    r"""A checked upload in the packed-Gram layout of the aggregate's dtype: a factor decoded to
    :math:`\text{pack}(R_k^\top R_k)` (one float64 product, O(r d²)), float32 transport widened to float64.

    Args:
      payload: an upload :func:`check_payload` accepted.
      dim: feature dimension d.

    Returns:
      The :func:`encode_statistics` layout, float64 or int64.
    """
    if np.asarray(payload["cross"]).dtype == np.int64:
        return {name: np.asarray(payload[name]) for name in FIELDS}
    out = {name: np.asarray(payload[name]) for name in FIELDS if name in payload}
    for name in ("cross", "feature_sum"):
        out[name] = out[name].astype(np.float64, copy=False)
    if is_factor(payload):
        rows = min(int(payload["count"]), dim)
        factor = np.zeros((rows, dim), np.float64)
        factor[_trapezoid_mask(rows, dim)] = payload["factor"]
        out["gram"] = pack_upper(factor.T @ factor)
    else:
        out["gram"] = out["gram"].astype(np.float64, copy=False)
    return out


def payload_statistics(payload, dim: int, *, precision: str = "float64", frac_bits: int = 12) -> analytic.Statistics:
    """The :class:`analytic.Statistics` of a packed-Gram payload in the aggregate's dtype, unpacked without checks
    (the server's own running sum; uploads go through :func:`decode_statistics`)."""
    moments = analytic.Moments(
        gram=unpack_upper(np.asarray(payload["gram"]), dim), cross=np.array(payload["cross"]),
        feature_sum=np.array(payload["feature_sum"]), target_sum=None, class_grams=None,
    )
    return from_host_moments(
        moments, payload["count"], np.array(payload["class_ids"]), np.array(payload["class_counts"]),
        precision=precision, frac_bits=frac_bits,
    )


def decode_statistics(payload, dim: int, *, precision: str = "float64", frac_bits: int = 12,
                      allow_float32: bool = False) -> analytic.Statistics:
    """Validate an upload (:func:`check_payload`) and rebuild its :class:`analytic.Statistics` (full Gram).

    The inverse of :func:`encode_statistics`: the decoded state is the encoded one (bit-identical, same
    :func:`analytic.state_hash`), aligned to the payload's class ids. A factor upload (:func:`encode_factor`)
    decodes to :math:`G_k = R_k^\\top R_k` in float64, equal to the packed Gram to rounding; float32 transport
    decodes to float64 statistics rounded on the wire.

    Args:
      payload: the upload, a dict of arrays in the :func:`encode_statistics` or :func:`encode_factor` layout.
      dim: feature dimension d.
      precision: ``"float64"`` (default) or ``"fixed"``, the encoder's.
      frac_bits: the fixed-point grid the encoder used (fixed precision; the payload does not carry it).
      allow_float32: accept float32 transport (:func:`check_payload`).

    Returns:
      The host :class:`analytic.Statistics` of the upload (float64, or fixed).

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
    check_payload(payload, dim, precision=precision, allow_float32=allow_float32)
    return payload_statistics(gram_upload(payload, dim), dim, precision=precision, frac_bits=frac_bits)


def add_payloads(total: dict[str, np.ndarray], upload: dict[str, np.ndarray], sign: int = 1) -> dict[str, np.ndarray]:
    """Field-wise ``total + sign · upload`` of two aligned packed-Gram payloads (the packed triangles add as they
    are).

    Sums are refused before they could leave int64's exact range (fixed point) or float64's finite range.
    """
    out = {"class_ids": total["class_ids"]}
    for name in ADDITIVE_FIELDS:
        a, b = np.asarray(total[name]), np.asarray(upload[name])
        if a.dtype == np.int64 and not int_sum_fits(a, b):
            raise UploadRejected("the fixed-point aggregate would overflow int64: lower frac_bits or rescale")
        out[name] = a + b if sign > 0 else a - b
        if out[name].dtype == np.float64 and not np.isfinite(out[name]).all():
            raise UploadRejected(f"the float64 aggregate would overflow: field {name!r} of the sum is not finite")
    return out


def upload_fingerprint(payload: dict[str, np.ndarray]) -> str:
    """sha256 of everything an upload carries (every field's name, dtype, shape and bytes): identifies a replay."""
    digest = hashlib.sha256()
    for name in sorted(payload):
        value = np.ascontiguousarray(payload[name])
        digest.update(f"{name}:{value.dtype.str}:{value.shape};".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()
