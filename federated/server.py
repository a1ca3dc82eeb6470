r"""The AFL server: validated receipt of client uploads, aggregation, and client-level unlearning.

Every receipt is a pure function from an aggregate to a new aggregate. An upload that is malformed (wrong shape,
non-symmetric Gram, negative Gram diagonal, NaN/Inf) or a duplicate (the same client id again, or the same
non-empty upload replayed under another id) raises :class:`~federated.payload.UploadRejected` naming the reason,
and the aggregate passed in is unchanged.

Client-level unlearning (README: the math in brief): :math:`G \mathrel{-}= G_k`, :math:`B \mathrel{-}= B_k` with
:func:`analytic.subtract`; the server keeps a fingerprint of each accepted upload (O(d·m), not the d² Gram) and
accepts a removal only for the upload it received.
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
from federated.aggregation import LocalSolution, PartialSums, combine_partials, push_solution
from federated.payload import (
    UploadRejected,
    add_payloads,
    check_payload,
    decode_statistics,
    init_payload,
    upload_fingerprint,
)


def _admit(clients: dict, senders: dict, client_id: str, digest: str) -> None:
    if client_id in clients:
        raise UploadRejected(f"duplicate submission: client {client_id!r} has already been aggregated")
    if digest and digest in senders:
        raise UploadRejected(f"duplicate submission: client {client_id!r} replays the upload of client {senders[digest]!r}")
    clients[client_id] = digest
    if digest:
        senders[digest] = client_id


@dataclasses.dataclass(frozen=True)
class ClientRegistry:
    """Which clients were aggregated: client id → upload fingerprint, and fingerprint → client id (read-only).

    Empty uploads have the fingerprint ``""`` and are not checked for replay (they add nothing).
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

    Attributes:
      total: :math:`\\sum_k` of the accepted payloads (:func:`federated.payload.encode_statistics` layout).
      received: the :class:`ClientRegistry` of accepted clients.
      dim: feature dimension d.
      precision: ``"float64"`` or ``"fixed"``.
      frac_bits: the fixed-point grid (fixed precision).
    """

    total: Mapping[str, np.ndarray]
    received: ClientRegistry
    dim: int
    precision: str = "float64"
    frac_bits: int = 12

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
        return decode_statistics(dict(self.total), self.dim, precision=self.precision, frac_bits=self.frac_bits)


def init_aggregate(dim: int, class_ids, *, precision: str = "float64", frac_bits: int = 12) -> StatisticsAggregate:
    """An empty summed-statistics aggregate for clients that agreed on ``class_ids``."""
    total = init_payload(dim, class_ids, precision=precision)
    return StatisticsAggregate(MappingProxyType(total), ClientRegistry(), int(dim), precision, frac_bits)


def _checked_fingerprint(aggregate: StatisticsAggregate, payload: dict) -> str:
    """The upload's fingerprint, or ``""`` for an empty upload (which adds nothing and may repeat)."""
    check_payload(payload, aggregate.dim, precision=aggregate.precision, class_ids=aggregate.class_ids)
    return upload_fingerprint(payload, aggregate.dim) if int(payload["count"]) > 0 else ""


def receive(aggregate: StatisticsAggregate, client_id: str, payload: dict) -> StatisticsAggregate:
    """Validate one client's payload (:func:`federated.payload.encode_statistics`) and add it to the aggregate.

    Raises:
      UploadRejected: the reason; ``aggregate`` is unchanged.
    """
    aggregate, rejected = receive_many(aggregate, [(client_id, payload)])
    if rejected:
        raise UploadRejected(rejected[client_id])
    return aggregate


def receive_many(aggregate: StatisticsAggregate, uploads) -> tuple[StatisticsAggregate, dict[str, str]]:
    """:func:`receive` for a round of ``(client_id, payload)`` pairs; rejected uploads are left out.

    Returns:
      The new aggregate and ``{client_id: reason}`` for every rejected upload.
    """
    total = dict(aggregate.total)
    clients, senders = dict(aggregate.received.clients), dict(aggregate.received.senders)
    rejected = {}
    for client_id, payload in uploads:
        try:
            digest = _checked_fingerprint(aggregate, payload)
            new_total = add_payloads(total, payload)  # may refuse an overflow: before the client is admitted
            _admit(clients, senders, client_id, digest)
        except UploadRejected as error:
            rejected[client_id] = str(error)
            continue
        total = new_total
    received = ClientRegistry(MappingProxyType(clients), MappingProxyType(senders))
    return dataclasses.replace(aggregate, total=MappingProxyType(total), received=received), rejected


def remove_client(aggregate: StatisticsAggregate, client_id: str, payload: dict) -> StatisticsAggregate:
    """Client-level unlearning: subtract the upload client ``client_id`` contributed (README: the math in brief).

    The result equals the aggregate of the remaining clients (bit-identical in fixed precision). A class that no
    remaining client holds keeps a zero column: :func:`solve` drops it.

    Raises:
      UploadRejected: the client was never aggregated, or ``payload`` is not the upload it sent.
    """
    received = aggregate.received.release(client_id, _checked_fingerprint(aggregate, payload))
    total = add_payloads(aggregate.total, payload, sign=-1)
    check_payload(total, aggregate.dim, precision=aggregate.precision)  # counts and Gram diagonal stay valid
    return dataclasses.replace(aggregate, total=MappingProxyType(total), received=received)


def solve(aggregate: StatisticsAggregate, ridge: float, *, intercept: bool = False) -> analytic.Head:
    r"""The federated ridge head :math:`(G + \gamma I)^{-1} B`, over the classes some accepted client holds; with
    ``intercept=True`` also an unregularized bias, :math:`W = (G_c + \gamma I)^{-1} B_c`, :math:`b = \bar y - W^\top
    \mu` (:func:`analytic.solve`), from the summed counts and sums: equal to the pooled data's intercept solve.

    Raises:
      analytic.InputError: ``intercept`` is not a bool, or no samples were aggregated and ``intercept=True``.
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

    Attributes:
      partials: the sums over the accepted clients (:func:`federated.aggregation.push_solution`), ``None`` before
        the first.
      received: the :class:`ClientRegistry` of accepted clients.
      dim, class_ids, ridge: what every client message must match.
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
    """An empty paper-form aggregate for clients that agreed on ``class_ids`` and the ridge γ."""
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

    Returns:
      The new aggregate and ``{client_id: reason}`` for every rejected message.
    """
    partials = aggregate.partials
    clients, senders = dict(aggregate.received.clients), dict(aggregate.received.senders)
    rejected = {}
    for client_id, solution in uploads:
        try:
            check_solution(aggregate, solution)
            _admit(clients, senders, client_id, _solution_fingerprint(solution))
        except UploadRejected as error:
            rejected[client_id] = str(error)
            continue
        partials = push_solution(partials, solution)
    received = ClientRegistry(MappingProxyType(clients), MappingProxyType(senders))
    return dataclasses.replace(aggregate, partials=partials, received=received), rejected


def receive_solution(aggregate: SolutionAggregate, client_id: str, solution: LocalSolution) -> SolutionAggregate:
    """Validate one client's (W_k, C_k) and add :math:`C_k` and :math:`C_k W_k` to the aggregate's sums.

    Raises:
      UploadRejected: the reason; ``aggregate`` is unchanged.
    """
    aggregate, rejected = receive_solutions(aggregate, [(client_id, solution)])
    if rejected:
        raise UploadRejected(rejected[client_id])
    return aggregate
