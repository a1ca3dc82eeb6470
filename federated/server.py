r"""The AFL server: validated receipt of client uploads, aggregation, and client-level unlearning.

Every receipt is a pure function from an aggregate to a new aggregate. An upload that is malformed or that no data
can produce (:func:`federated.check_payload`: wrong shape or dtype, NaN/Inf, inconsistent counts, a non-zero
count-0 upload, a negative Gram diagonal, a correlation above 1, cross-moments out of bounds), a Gram that is not
positive semidefinite, or a duplicate (the same client id again, or the same upload replayed under another id)
raises :class:`~federated.payload.UploadRejected` naming the reason, and the aggregate passed in is unchanged; in
a round (:func:`receive_many`) it is left out, reported, and the round solves on the rest.

Positive semidefiniteness costs one Cholesky factorization per round, not one per client: the round's packed-Gram
uploads are summed and the sum tested (a sum of positive semidefinite matrices is positive semidefinite); only when
it fails are the offending clients isolated by bisection over partial sums of the round's uploads, about
2·log₂ K factorizations per offender among K. Factor uploads (:func:`federated.encode_factor`) are positive
semidefinite by construction and are not tested. The test allows the rounding of the uploads: the sum G of a
group is accepted when :math:`D^{-1/2} G D^{-1/2} + \tau I` is positive definite, D = diag(G) (on the features
with :math:`G_{ii} > 0`), τ = 4 d u with u the uploads' unit roundoff (:func:`federated.payload.unit_roundoff`;
a group's τ is the diagonal-weighted mean of its members'). A client whose indefinite Gram is outweighed by the
rest of its round is not detected (its sum with the others is a valid Gram); neither is any fabricated but
valid upload.

Client-level unlearning (README: the math in brief): :math:`G \mathrel{-}= G_k`, :math:`B \mathrel{-}= B_k` with
:func:`analytic.subtract`; the server keeps a fingerprint of each accepted upload (a sha256 of all it carries, not
the d² Gram) and accepts a removal only for the upload it received.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from types import MappingProxyType
from typing import Mapping

import numpy as np
import scipy.linalg

import analytic
from analytic.internal import unpack_upper
from federated.aggregation import LocalSolution, PartialSums, combine_partials, push_solution
from federated.payload import (
    UploadRejected,
    add_payloads,
    check_payload,
    diagonal_positions,
    gram_upload,
    init_payload,
    is_factor,
    payload_statistics,
    unit_roundoff,
    upload_fingerprint,
)

PSD_TOLERANCE = 4.0  # τ = PSD_TOLERANCE · d · u (module docstring)
HELD_BYTES = 2**30  # a round holds at most about this many bytes of uploads before testing and adding them


def _admit(clients: dict, senders: dict, client_id: str, digest: str, *, empty: bool = False) -> None:
    """Register ``client_id`` with its upload's fingerprint; refuse a known id or a replayed upload. The empty
    upload (all zeros) is the same for every client without samples, so only its id is checked."""
    if client_id in clients:
        raise UploadRejected(f"duplicate submission: client {client_id!r} has already been aggregated")
    if not empty and digest in senders:
        raise UploadRejected(f"duplicate submission: client {client_id!r} replays the upload of client {senders[digest]!r}")
    clients[client_id] = digest
    if not empty:
        senders[digest] = client_id


def _withdraw(clients: dict, senders: dict, client_id: str) -> None:
    """Undo :func:`_admit` for an upload refused later in its round."""
    digest = clients.pop(client_id)
    if senders.get(digest) == client_id:
        del senders[digest]


@dataclasses.dataclass(frozen=True)
class ClientRegistry:
    """Which clients were aggregated: client id → upload fingerprint, and fingerprint → client id (read-only).

    Every upload is fingerprinted (:func:`federated.payload.upload_fingerprint`), the empty one included; the empty
    upload (count 0, all zeros) is the same for every client without samples and adds nothing, so it may come from
    several ids. The server keeps the registry as an aggregate's ``received``; ``len(registry)`` is the number of
    clients.

    Attributes:
      clients: read-only mapping client id → sha256 fingerprint of its accepted upload.
      senders: read-only mapping fingerprint → client id, for every non-empty upload: a replay of the same upload
        under another id is refused.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> stats = federated.client_statistics(rng.normal(size=(12, 3)), np.arange(12) % 2, 3)
      >>> aggregate = receive(init_aggregate(3, [0, 1]), "alice", federated.encode_statistics(stats))
      >>> registry = aggregate.received
      >>> len(registry), list(registry.clients), registry.senders[registry.clients["alice"]]
      (1, ['alice'], 'alice')
      >>> len(registry.release("alice", registry.clients["alice"]))  # what remove_client does to the registry
      0
    """

    clients: Mapping[str, str] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    senders: Mapping[str, str] = dataclasses.field(default_factory=lambda: MappingProxyType({}))

    def __len__(self) -> int:
        return len(self.clients)

    def release(self, client_id: str, digest: str) -> "ClientRegistry":
        """The ledger without ``client_id``; raises :class:`UploadRejected` unless it sent the upload ``digest``."""
        if client_id not in self.clients:
            raise UploadRejected(f"client {client_id!r} is not part of the aggregate")
        if self.clients[client_id] != digest:
            raise UploadRejected(f"the payload is not the upload client {client_id!r} contributed")
        clients = {k: v for k, v in self.clients.items() if k != client_id}
        senders = {k: v for k, v in self.senders.items() if v != client_id}
        return ClientRegistry(MappingProxyType(clients), MappingProxyType(senders))


@dataclasses.dataclass(frozen=True)
class StatisticsAggregate:
    """Server state of the summed-statistics form: the running sum of the accepted payloads, still packed.

    Summing packed triangles (d(d+1)/2 numbers per client) and unpacking once at the end halves the server's
    memory traffic against summing full matrices.

    Built by :func:`init_aggregate`, grown by :func:`receive` / :func:`receive_many`, shrunk by
    :func:`remove_client` (each returns a new aggregate), solved by :func:`solve`. ``n_clients``, ``class_ids``
    and ``statistics`` (the decoded :class:`analytic.Statistics`) are derived properties.

    Attributes:
      total: :math:`\\sum_k` of the accepted payloads (:func:`federated.payload.encode_statistics` layout).
      received: the :class:`ClientRegistry` of accepted clients.
      dim: feature dimension d.
      precision: ``"float64"`` or ``"fixed"``.
      frac_bits: the fixed-point grid (fixed precision).
      allow_float32: whether uploads in float32 transport are accepted (not exact).

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(12, 3)), rng.integers(0, 2, 12)
      >>> upload = federated.encode_statistics(federated.client_statistics(x, y, 3), [0, 1, 2])
      >>> aggregate = receive(init_aggregate(3, [0, 1, 2]), "alice", upload)
      >>> aggregate.n_clients, aggregate.class_ids, aggregate.total["gram"].shape, int(aggregate.statistics.count)
      (1, array([0, 1, 2]), (6,), 12)
    """

    total: Mapping[str, np.ndarray]
    received: ClientRegistry
    dim: int
    precision: str = "float64"
    frac_bits: int = 12
    allow_float32: bool = False

    @property
    def n_clients(self) -> int:
        """Number of accepted clients."""
        return len(self.received)

    @property
    def class_ids(self) -> np.ndarray:
        """The agreed class ids (the columns of every upload)."""
        return self.total["class_ids"]

    @functools.cached_property
    def statistics(self) -> analytic.Statistics:
        """The aggregate as :class:`analytic.Statistics`: :math:`G = \\sum_k G_k`, :math:`B = \\sum_k B_k`.

        Decoded (validated and unpacked) once per aggregate, which is immutable; treat the arrays as read-only.
        """
        return payload_statistics(self.total, self.dim, precision=self.precision, frac_bits=self.frac_bits)


def init_aggregate(dim: int, class_ids, *, precision: str = "float64", frac_bits: int = 12,
                   allow_float32: bool = False) -> StatisticsAggregate:
    """An empty summed-statistics aggregate for clients that agreed on ``class_ids``.

    Args:
      dim: feature dimension d.
      class_ids: the agreed class ids (sorted, unique): the columns every upload must have
        (:func:`federated.encode_statistics` with the same ``class_ids``).
      precision: ``"float64"`` (default) or ``"fixed"``, the precision of every upload.
      frac_bits: the fixed-point grid of the uploads (fixed precision).
      allow_float32: also accept uploads in float32 transport (``transport="float32"``; float64 precision only):
        half the bytes, and the head is no longer exact. Off by default.

    Returns:
      A :class:`StatisticsAggregate` with zero sums and no client.

    Raises:
      analytic.InputError: ``precision`` is neither ``"float64"`` nor ``"fixed"``, or ``allow_float32`` with fixed
        precision.

    Example:
      >>> aggregate = init_aggregate(3, [0, 1, 2], precision="fixed")
      >>> aggregate.n_clients, aggregate.class_ids, int(aggregate.statistics.count)
      (0, array([0, 1, 2]), 0)
    """
    total = init_payload(dim, class_ids, precision=precision)
    if allow_float32 and precision != "float64":
        raise analytic.InputError("float32 transport is for float64 aggregates: fixed-point uploads are exact int64")
    return StatisticsAggregate(MappingProxyType(total), ClientRegistry(), int(dim), precision, frac_bits,
                               bool(allow_float32))


def _checked_fingerprint(aggregate: StatisticsAggregate, payload: dict) -> str:
    """The upload's fingerprint, after :func:`federated.check_payload` against the aggregate's layout."""
    check_payload(payload, aggregate.dim, precision=aggregate.precision, class_ids=aggregate.class_ids,
                  allow_float32=aggregate.allow_float32)
    return upload_fingerprint(payload)


def _positive_semidefinite(gram: np.ndarray, slack: np.ndarray, dim: int) -> bool:
    r"""Whether :math:`D^{-1/2} (G + \operatorname{diag}(\text{slack})) D^{-1/2}`, D = diag(G), is positive definite
    on the features with :math:`G_{ii} > 0` (one Cholesky factorization); a packed float64 G. Features with
    :math:`G_{ii} = 0` have zero rows (Cauchy–Schwarz, checked per upload)."""
    if not np.isfinite(gram).all():
        return False
    matrix = unpack_upper(gram, dim)
    diagonal = np.diagonal(matrix).copy()
    active = np.flatnonzero(diagonal > 0)
    scale = 1.0 / np.sqrt(diagonal[active])
    scaled = matrix[np.ix_(active, active)] * scale[:, None] * scale[None, :]
    scaled[np.diag_indices_from(scaled)] += slack[active] / diagonal[active]
    try:
        scipy.linalg.cholesky(scaled, check_finite=False, overwrite_a=True)
    except np.linalg.LinAlgError:
        return False
    return True


def indefinite_members(grams: list, units: list, dim: int) -> list[int]:
    r"""Positions of the uploads whose Gram keeps the round's sum from being positive semidefinite, found by
    bisection over partial sums.

    The sum :math:`\sum_{k \in S} G_k` of a group S is tested (:func:`_positive_semidefinite`, slack
    :math:`\sum_k 4 d u_k \operatorname{diag}(G_k)`); if it fails, S is split in halves and each half searched, down
    to single uploads. A sum of positive semidefinite matrices is positive semidefinite, so a failing group holds at
    least one failing upload and the uploads kept form a positive semidefinite sum. One factorization when all
    pass; about 2·log₂ K per offender among K.

    Args:
      grams: the packed Grams of the round's uploads (any dtype; tested in float64).
      units: each upload's unit roundoff u.
      dim: feature dimension d.

    Returns:
      The positions in ``grams`` of the uploads left out, ascending.
    """
    diagonal = diagonal_positions(dim)

    def search(members: list[int]) -> list[int]:
        gram = functools.reduce(np.add, (np.asarray(grams[k], np.float64) for k in members))
        slack = functools.reduce(
            np.add, (PSD_TOLERANCE * dim * units[k] * np.asarray(grams[k][diagonal], np.float64) for k in members)
        )
        if _positive_semidefinite(gram, slack, dim):
            return []
        if len(members) == 1:
            return members
        half = len(members) // 2
        return search(members[:half]) + search(members[half:])

    return search(list(range(len(grams)))) if grams else []


def receive(aggregate: StatisticsAggregate, client_id: str, payload: dict) -> StatisticsAggregate:
    r"""Validate one client's payload (:func:`federated.encode_statistics` or :func:`federated.encode_factor`) and add
    it to the aggregate.

    The server side of the summed form, :math:`G \mathrel{+}= G_k`, :math:`B \mathrel{+}= B_k` (REFERENCE.md §1,
    federated aggregation), on the packed payloads.

    Args:
      aggregate: the current aggregate (unchanged; a new one is returned).
      client_id: the sender's id, unique within the aggregate.
      payload: the client's upload, aligned to the aggregate's class ids, of its precision.

    Returns:
      The :class:`StatisticsAggregate` with the upload added and the client registered.

    Raises:
      UploadRejected: the reason (an upload :func:`federated.check_payload` refuses, other class ids, a Gram that
        is not positive semidefinite, a duplicate client id, the same non-empty upload replayed under another id, a
        sum that would overflow int64 or float64); ``aggregate`` is unchanged.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(12, 3)), rng.integers(0, 2, 12)
      >>> upload = federated.encode_statistics(federated.client_statistics(x, y, 3), [0, 1])
      >>> aggregate = receive(init_aggregate(3, [0, 1]), "alice", upload)
      >>> aggregate.n_clients
      1
      >>> try:
      ...     receive(aggregate, "bob", upload)  # alice's upload, replayed
      ... except federated.UploadRejected as error:
      ...     print(error)
      duplicate submission: client 'bob' replays the upload of client 'alice'
    """
    aggregate, rejected = receive_many(aggregate, [(client_id, payload)])
    if rejected:
        raise UploadRejected(rejected[client_id])
    return aggregate


def receive_many(aggregate: StatisticsAggregate, uploads) -> tuple[StatisticsAggregate, dict[str, str]]:
    """:func:`receive` for a round of ``(client_id, payload)`` pairs; rejected uploads are left out.

    Rejections do not raise: each rejected upload is skipped (the aggregate never contains part of it) and its
    reason reported, and the round goes on with the rest: the new aggregate is the sum of the accepted uploads in
    the order received, the same (bit for bit) as a round without the rejected ones. Positive semidefiniteness is
    tested once for the round's packed-Gram uploads and, only if that fails, the offenders isolated by bisection
    (:func:`indefinite_members`); the uploads are held until then, up to about 1 GiB (``HELD_BYTES``): a longer
    round is tested in consecutive groups of that size, one factorization each. One copy of the sums for the whole
    round.

    Args:
      aggregate: the current aggregate (unchanged; a new one is returned).
      uploads: iterable of ``(client_id, payload)`` pairs, received in this order.

    Returns:
      The new aggregate and ``{client_id: reason}`` for every rejected upload.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(30, 3)), rng.integers(0, 3, 30)
      >>> uploads = [(f"client-{k}", federated.encode_statistics(federated.client_statistics(x[p], y[p], 3),
      ...                                                        [0, 1, 2]))
      ...            for k, p in enumerate(federated.iid_partition(30, 3))]
      >>> aggregate, rejected = receive_many(init_aggregate(3, [0, 1, 2]), uploads + [uploads[0]])
      >>> aggregate.n_clients, rejected
      (3, {'client-0': "duplicate submission: client 'client-0' has already been aggregated"})
      >>> central = analytic.accumulate(analytic.init_statistics(3), x, y)
      >>> np.allclose(solve(aggregate, 0.1).weights, analytic.solve(central, 0.1).weights)
      True
    """
    clients, senders = dict(aggregate.received.clients), dict(aggregate.received.senders)
    rejected, held, held_bytes = {}, [], 0
    total = dict(aggregate.total)
    for client_id, payload in uploads:
        try:
            digest = _checked_fingerprint(aggregate, payload)
            _admit(clients, senders, client_id, digest, empty=int(payload["count"]) == 0)
        except UploadRejected as error:
            rejected[client_id] = str(error)
            continue
        upload = gram_upload(payload, aggregate.dim)
        held.append((client_id, upload, unit_roundoff(payload), is_factor(payload)))
        held_bytes += upload["gram"].nbytes
        if held_bytes >= HELD_BYTES:
            total = _settle(total, held, clients, senders, rejected, aggregate.dim)
            held, held_bytes = [], 0
    total = _settle(total, held, clients, senders, rejected, aggregate.dim)
    received = ClientRegistry(MappingProxyType(clients), MappingProxyType(senders))
    return dataclasses.replace(aggregate, total=MappingProxyType(total), received=received), rejected


def _settle(total: dict, held: list, clients: dict, senders: dict, rejected: dict, dim: int) -> dict:
    """Test the held uploads' packed Grams positive semidefinite (:func:`indefinite_members`) and add the rest to
    ``total`` in the order received; refused uploads are reported in ``rejected`` and withdrawn from the registry."""
    tested = [k for k, (_, upload, _, factor) in enumerate(held) if not factor and int(upload["count"]) > 0]
    left_out = {tested[k] for k in indefinite_members(
        [held[k][1]["gram"] for k in tested], [held[k][2] for k in tested], dim)}
    for k, (client_id, upload, _, _) in enumerate(held):
        try:
            if k in left_out:
                raise UploadRejected("the Gram matrix is not positive semidefinite: no data gives it")
            total = add_payloads(total, upload)  # may refuse an overflow
        except UploadRejected as error:
            rejected[client_id] = str(error)
            _withdraw(clients, senders, client_id)
    return total


def remove_client(aggregate: StatisticsAggregate, client_id: str, payload: dict) -> StatisticsAggregate:
    r"""Client-level unlearning: subtract the upload client ``client_id`` contributed (README: the math in brief).

    :math:`G \mathrel{-}= G_k`, :math:`B \mathrel{-}= B_k` (REFERENCE.md §1, "unlearn client k"). The result equals
    the aggregate of the remaining clients (bit-identical in fixed precision). A class that no remaining client
    holds keeps a zero column: :func:`solve` drops it.

    Args:
      aggregate: the aggregate holding the client (unchanged; a new one is returned).
      client_id: the client to remove.
      payload: the upload it sent, as received (the server keeps only its fingerprint, not the d² Gram).

    Returns:
      The :class:`StatisticsAggregate` of the remaining clients.

    Raises:
      UploadRejected: the client was never aggregated, or ``payload`` is not the upload it sent.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(30, 3)), rng.integers(0, 3, 30)
      >>> a, b = x[:20], x[20:]
      >>> upload_a = federated.encode_statistics(federated.client_statistics(a, y[:20], 3, precision="fixed"))
      >>> upload_b = federated.encode_statistics(federated.client_statistics(b, y[20:], 3, precision="fixed"))
      >>> both, _ = receive_many(init_aggregate(3, [0, 1, 2], precision="fixed"), [("a", upload_a), ("b", upload_b)])
      >>> without_b = remove_client(both, "b", upload_b)
      >>> only_a = receive(init_aggregate(3, [0, 1, 2], precision="fixed"), "a", upload_a)
      >>> without_b.n_clients, analytic.state_hash(without_b.statistics) == analytic.state_hash(only_a.statistics)
      (1, True)
    """
    received = aggregate.received.release(client_id, _checked_fingerprint(aggregate, payload))
    total = add_payloads(aggregate.total, gram_upload(payload, aggregate.dim), sign=-1)
    return dataclasses.replace(aggregate, total=MappingProxyType(total), received=received)


def solve(aggregate: StatisticsAggregate, ridge: float, *, intercept: bool = False) -> analytic.Head:
    r"""The federated ridge head :math:`(G + \gamma I)^{-1} B`, over the classes some accepted client holds; with
    ``intercept=True`` also an unregularized bias, :math:`W = (G_c + \gamma I)^{-1} B_c`, :math:`b = \bar y - W^\top
    \mu` (:func:`analytic.solve`), from the summed counts and sums: equal to the pooled data's intercept solve.

    The ridge head of REFERENCE.md §1, :math:`W^\star = (G + \gamma I)^{-1} B` with :math:`G = \sum_k G_k`,
    :math:`B = \sum_k B_k`: the centralized head, whatever the split.

    Args:
      aggregate: the summed-statistics aggregate.
      ridge: γ ≥ 0 (γ = 0 needs the pooled G full rank).
      intercept: also fit an unregularized bias (keyword only, a Python bool).

    Returns:
      The :class:`analytic.Head` over the classes with at least one sample (a class no accepted client holds, or
      whose clients were all removed, has no column).

    Raises:
      analytic.InputError: ``intercept`` is not a bool, or no samples were aggregated and ``intercept=True``; a bad
        ridge.
      analytic.IntegrityError: :math:`G + \gamma I` is not positive definite (e.g. γ = 0 with a rank-deficient G).

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(30, 3)), rng.integers(0, 2, 30)  # class 2 is agreed but nobody holds it
      >>> uploads = [(k, federated.encode_statistics(federated.client_statistics(x[p], y[p], 3), [0, 1, 2]))
      ...            for k, p in enumerate(federated.shard_partition(y, 3))]
      >>> aggregate, _ = receive_many(init_aggregate(3, [0, 1, 2]), uploads)
      >>> head = solve(aggregate, 0.1, intercept=True)
      >>> central = analytic.solve(analytic.accumulate(analytic.init_statistics(3), x, y), 0.1, intercept=True)
      >>> head.class_ids, np.allclose(head.weights, central.weights), np.allclose(head.bias, central.bias)
      (array([0, 1]), True, True)
    """
    stats = aggregate.statistics
    return analytic.solve(analytic.drop_classes(stats, stats.class_ids[stats.class_counts == 0]), ridge,
                          intercept=intercept)


# ----------------------------------------------------------------------------------------------------------------
# Paper form.


@dataclasses.dataclass(frozen=True)
class SolutionAggregate:
    """Server state of the paper form: the running sums :math:`\\sum_k C_k`, :math:`\\sum_k C_k W_k` of the folded
    absolute-aggregation law.

    Built by :func:`init_solution_aggregate`, grown by :func:`receive_solution` / :func:`receive_solutions`; the
    derived property ``solution`` is the aggregate :class:`LocalSolution` (raises
    :class:`analytic.IntegrityError` before the first client), the input to
    :func:`federated.remove_regularization`.

    Attributes:
      partials: the sums over the accepted clients (:func:`federated.aggregation.push_solution`), ``None`` before
        the first.
      received: the :class:`ClientRegistry` of accepted clients.
      dim: feature dimension d every message must match.
      class_ids: (m,) the agreed class ids every message must carry.
      ridge: the agreed γ every message must be solved with.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(20, 3)), rng.integers(0, 2, 20)
      >>> message = federated.local_solution(federated.client_statistics(x, y, 3), 0.1, [0, 1])
      >>> aggregate = receive_solution(init_solution_aggregate(3, [0, 1], 0.1), "alice", message)
      >>> len(aggregate.received), int(aggregate.partials.n_clients), aggregate.solution.weights.shape
      (1, 1, (3, 2))
    """

    partials: PartialSums | None
    received: ClientRegistry
    dim: int
    class_ids: np.ndarray
    ridge: float

    @functools.cached_property
    def solution(self) -> LocalSolution:
        """The absolute aggregate of every accepted client: :math:`(\\sum_k C_k, (\\sum_k C_k)^{-1} \\sum_k C_k W_k)`.

        Solved (one d×d factorization) once per aggregate, which is immutable; treat the arrays as read-only.
        """
        return combine_partials(self.partials)


def init_solution_aggregate(dim: int, class_ids, ridge: float) -> SolutionAggregate:
    """An empty paper-form aggregate for clients that agreed on ``class_ids`` and the ridge γ.

    Nothing is validated here: every message is checked against ``dim``, ``class_ids`` and ``ridge`` on receipt.

    Args:
      dim: feature dimension d.
      class_ids: the agreed class ids (the columns of every :func:`federated.local_solution` message).
      ridge: the agreed γ > 0 every client solves with.

    Returns:
      A :class:`SolutionAggregate` with no client (``partials`` is ``None``).

    Example:
      >>> aggregate = init_solution_aggregate(3, [0, 1, 2], 0.1)
      >>> aggregate.partials is None, len(aggregate.received), aggregate.class_ids, aggregate.ridge
      (True, 0, array([0, 1, 2]), 0.1)
    """
    return SolutionAggregate(None, ClientRegistry(), int(dim), np.asarray(class_ids, np.int64), float(ridge))


def check_solution(aggregate: SolutionAggregate, solution: LocalSolution) -> None:
    """Raise :class:`UploadRejected` unless ``solution`` is a well-formed single-client message (W_k, C_k)."""
    d, m = aggregate.dim, aggregate.class_ids.size
    weights, regularized = np.asarray(solution.weights), np.asarray(solution.regularized_gram)
    if weights.shape != (d, m):
        raise UploadRejected(f"weights have the wrong shape {weights.shape}, expected {(d, m)}")
    if regularized.shape != (d, d):
        raise UploadRejected(f"the regularized Gram has the wrong shape {regularized.shape}, expected {(d, d)}")
    if int(solution.n_clients) != 1 or solution.ridge != aggregate.ridge:
        raise UploadRejected(
            f"a client message must be one client's solution with the agreed ridge {aggregate.ridge}, got "
            f"{int(solution.n_clients)} clients with ridge {solution.ridge}"
        )
    if not np.array_equal(solution.class_ids, aggregate.class_ids):
        raise UploadRejected("the solution's class ids differ from the agreed class ids")
    if not (np.isfinite(weights).all() and np.isfinite(regularized).all()):
        raise UploadRejected("the upload contains NaN or Inf")
    if not np.array_equal(regularized, regularized.T):
        i, j = np.argwhere(regularized != regularized.T)[0]
        raise UploadRejected(f"the regularized Gram is not symmetric (entries ({i}, {j}) and ({j}, {i}) differ)")
    diagonal = np.diagonal(regularized) - aggregate.ridge
    if (diagonal < 0).any():
        first = int(np.flatnonzero(diagonal < 0)[0])
        raise UploadRejected(
            f"the Gram matrix has a negative diagonal entry ({first}, {first}) once γI is removed: not a sum of squares"
        )
    try:
        scipy.linalg.cholesky(regularized, check_finite=False)
    except np.linalg.LinAlgError:
        raise UploadRejected("the regularized Gram X_kᵀX_k + γI is not positive definite: not a client's statistics")


def _solution_fingerprint(solution: LocalSolution) -> str:
    """The message's fingerprint, or ``""`` for an empty client (which adds nothing and may repeat)."""
    if not np.any(solution.weights):
        return ""
    digest = hashlib.sha256(np.ascontiguousarray(solution.weights).tobytes())
    digest.update(np.ascontiguousarray(np.diagonal(solution.regularized_gram)).tobytes())
    return digest.hexdigest()


def receive_solutions(
    aggregate: SolutionAggregate, uploads
) -> tuple[SolutionAggregate, dict[str, str]]:
    """:func:`receive_solution` for a round of ``(client_id, solution)`` pairs; rejected messages are left out.

    Rejections do not raise: each rejected message is skipped and its reason reported, and the round goes on.

    Args:
      aggregate: the current aggregate (unchanged; a new one is returned).
      uploads: iterable of ``(client_id, solution)`` pairs, each a single client's :func:`federated.local_solution`.

    Returns:
      The new aggregate and ``{client_id: reason}`` for every rejected message.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(40, 3)), rng.integers(0, 3, 40)
      >>> messages = [(k, federated.local_solution(federated.client_statistics(x[p], y[p], 3), 0.1, [0, 1, 2]))
      ...             for k, p in enumerate(federated.dirichlet_partition(y, 4, 0.5))]
      >>> aggregate, rejected = receive_solutions(init_solution_aggregate(3, [0, 1, 2], 0.1), messages)
      >>> len(aggregate.received), rejected
      (4, {})
      >>> head = federated.remove_regularization(aggregate.solution)  # the pooled least-squares head
      >>> central = analytic.accumulate(analytic.init_statistics(3), x, y)
      >>> np.allclose(head.weights, analytic.solve(central, 0.0).weights)
      True
    """
    partials = aggregate.partials
    clients, senders = dict(aggregate.received.clients), dict(aggregate.received.senders)
    rejected = {}
    for client_id, solution in uploads:
        try:
            check_solution(aggregate, solution)
            digest = _solution_fingerprint(solution)
            _admit(clients, senders, client_id, digest, empty=not digest)
        except UploadRejected as error:
            rejected[client_id] = str(error)
            continue
        partials = push_solution(partials, solution)
    received = ClientRegistry(MappingProxyType(clients), MappingProxyType(senders))
    return dataclasses.replace(aggregate, partials=partials, received=received), rejected


def receive_solution(aggregate: SolutionAggregate, client_id: str, solution: LocalSolution) -> SolutionAggregate:
    r"""Validate one client's (W_k, C_k) and add :math:`C_k` and :math:`C_k W_k` to the aggregate's sums.

    The folded absolute-aggregation law (REFERENCE.md §3, AFL): :math:`\sum_k C_k \mathrel{+}= C_k`,
    :math:`\sum_k C_k W_k \mathrel{+}= C_k W_k` (:func:`federated.push_solution`).

    Args:
      aggregate: the current aggregate (unchanged; a new one is returned).
      client_id: the sender's id, unique within the aggregate.
      solution: the client's :func:`federated.local_solution` message.

    Returns:
      The :class:`SolutionAggregate` with the message added and the client registered.

    Raises:
      UploadRejected: the reason (wrong shapes, not a single client's message, another ridge or other class ids,
        NaN/Inf, a regularized Gram that is not symmetric or not positive definite, a duplicate client id or a
        replayed message); ``aggregate`` is unchanged.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(20, 3)), rng.integers(0, 2, 20)
      >>> stats = federated.client_statistics(x, y, 3)
      >>> aggregate = receive_solution(init_solution_aggregate(3, [0, 1], 0.1), "alice",
      ...                              federated.local_solution(stats, 0.1, [0, 1]))
      >>> len(aggregate.received)
      1
      >>> try:
      ...     receive_solution(aggregate, "bob", federated.local_solution(stats, 0.5, [0, 1]))
      ... except federated.UploadRejected as error:
      ...     print(error)
      a client message must be one client's solution with the agreed ridge 0.1, got 1 clients with ridge 0.5
    """
    aggregate, rejected = receive_solutions(aggregate, [(client_id, solution)])
    if rejected:
        raise UploadRejected(rejected[client_id])
    return aggregate
