r"""A tree of edge aggregators: each sums its subtree's uploads, validated, and sends one upload to its parent.

A federation of phones does not send 10⁶ uploads to one server. Clients are grouped under edge aggregators (a
cell tower, a hospital's gateway), edges under regional aggregators, and so on up to the root. Because the
statistics are additive (REFERENCE.md §1),

.. math::
    G = \sum_{e \in \text{edges}} \Big(\sum_{k \in e} G_k\Big), \qquad B = \sum_{e} \Big(\sum_{k \in e} B_k\Big),

the root's aggregate is the flat server's, and on the fixed-point grid (``precision="fixed"``) it is bit-identical
whatever the tree: integer addition is associative. Every node is an ordinary server
(:func:`federated.receive_many`): it validates each child's upload and refuses replays, then sends its running sum
— a payload of the same layout and size as a client's — to its parent. A node therefore holds one running sum
(:func:`federated.statistics_nbytes`) and one fingerprint per child, whatever its subtree's size.

:func:`aggregator_levels` lays out the tree, :func:`tree_round` runs one round through it (streaming: at any time
only one open node per level holds a sum) and reports each level's time and bytes, and :func:`tree_plan` gives the
same accounting on paper for federations too large to simulate. With :class:`SecureEdges`, each edge runs secure
aggregation (SecAgg / SecAgg+, :mod:`federated.secure`) among its children: it sees only their masked inputs and
their sum, and can validate only that sum (:func:`tree_round` says what it learns and what it gives up).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Iterable, Iterator

import numpy as np

from analytic.errors import IntegrityError
from analytic.validation import InputError
from federated.payload import payload_nbytes, statistics_nbytes
from federated.server import StatisticsAggregate, init_aggregate, receive_many

__all__ = ["LevelReport", "SecureEdges", "aggregator_levels", "tree_plan", "tree_round"]

FINGERPRINT_BYTES = 32  # one sha256 digest per accepted child (federated.payload.upload_fingerprint)


@dataclasses.dataclass(frozen=True)
class LevelReport:
    """What one level of the tree received, held and sent.

    Attributes:
      level: 1 for the edge aggregators that receive the clients' uploads, up to the root's level.
      nodes: aggregators at this level.
      children: uploads this level received in all (clients at level 1, aggregators of the level below above).
      bytes_received: total bytes of those uploads; at a secure level (:class:`SecureEdges`), every protocol
        message its children sent (keys, encrypted shares, masked inputs, revealed shares).
      bytes_held: what one aggregator of this level holds: its running sum and one fingerprint per child (at a
        secure level, its children's public keys instead of fingerprints).
      seconds: wall time this level spent validating and adding, its secure rounds included (measured in
        :func:`tree_round`; NaN on paper).
      rejected: ``{child_id: reason}`` of the uploads this level refused, or lost with an aborted secure round.
      bytes_sent: what this level sent down to its children: at a secure level, the protocol messages (the
        neighbours' keys, the routed shares, the unmasking requests); 0 in a plain round.
      secure_seconds: wall time of this level's secure rounds, every party's steps (simulated in one process);
        NaN where the level ran none.
      dropped: the children that dropped after sharing their keys, whose pair masks the secure rounds removed.

    Example:
      >>> edges = tree_plan(10_000, 100, 64, 10)[0]
      >>> edges.level, edges.nodes, edges.children, edges.bytes_received // 10_000  # one 22 KB upload per client
      (1, 100, 10000, 22440)
    """

    level: int
    nodes: int
    children: int
    bytes_received: int
    bytes_held: int
    seconds: float = float("nan")
    rejected: dict = dataclasses.field(default_factory=dict)
    bytes_sent: int = 0
    secure_seconds: float = float("nan")
    dropped: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class SecureEdges:
    r"""Secure aggregation inside each edge (``tree_round(..., secure=SecureEdges(...))``): every edge runs one
    SecAgg or SecAgg+ round (:mod:`federated.secure`, simulated in one process) among its children.

    An edge of n children masks each upload with k neighbours and rebuilds a secret from t shares
    (:meth:`edge_round`):

    .. math::
        k = \begin{cases} n - 1 & \text{(SecAgg, dropout None)} \\
        \mathrm{neighbour\_degree}(n, \delta) & \text{(SecAgg+)} \end{cases}, \qquad t = \lfloor k/2 \rfloor + 1

    Attributes:
      dropout: δ, the share of dropping clients each edge's neighbour graph is sized for
        (:func:`federated.secure.neighbour_degree`, at probability ``failure``); ``None`` (default): the complete
        graph.
      failure: the acceptable probability that an edge cannot rebuild some secret when a share δ of its children
        drop.
      dropped: ids of the clients that drop after sharing their keys (they send no masked input).

    Raises:
      analytic.InputError: δ outside [0, 1/2), ``failure`` outside (0, 1), or ``dropped`` not a collection of ids.

    Example:
      >>> SecureEdges(dropout=0.1, dropped=["c3"])
      SecureEdges(dropout=0.1, failure=1e-06, dropped=frozenset({'c3'}))
    """

    dropout: float | None = None
    failure: float = 1e-6
    dropped: frozenset = frozenset()

    def __post_init__(self):
        if isinstance(self.dropped, (str, bytes)) or not isinstance(self.dropped, Iterable):
            raise InputError(f"dropped is a collection of client ids (str), got {self.dropped!r}")
        ids = frozenset(self.dropped)
        if not all(isinstance(client_id, str) for client_id in ids):
            raise InputError(f"dropped is a collection of client ids (str), got {sorted(map(repr, ids))}")
        object.__setattr__(self, "dropped", ids)
        if self.dropout is not None:
            from federated.secure import neighbour_degree  # the secure extra

            neighbour_degree(2, self.dropout, failure=self.failure)  # its checks of δ and the failure probability

    def edge_round(self, clients, dim: int, class_ids):
        """The round an edge announces to its children: :func:`federated.secure.init_round` over ``clients`` (ids)
        with the degree k above and the threshold t.

        Args:
          clients: the edge's children (ids).
          dim: feature dimension d.
          class_ids: the agreed class ids.

        Returns:
          The :class:`federated.secure.RoundConfig` (a fresh round id and graph seed).

        Example:
          >>> config = SecureEdges(dropout=0.1).edge_round([f"c{k}" for k in range(100)], 64, range(10))
          >>> config.degree, config.threshold
          (34, 18)
        """
        from federated.secure import init_round, neighbour_degree  # the secure extra

        clients = tuple(clients)
        degree = None if self.dropout is None else neighbour_degree(len(clients), self.dropout, failure=self.failure)
        return init_round(clients, dim, class_ids, degree=degree)


def aggregator_levels(n_clients: int, fanout: int) -> list[int]:
    r"""The number of aggregators at each level of a tree with ``fanout`` children per node.

    Level 1 has :math:`\lceil K / f \rceil` edges for K clients, each level above :math:`\lceil \cdot / f \rceil`
    of the one below, up to a single root: :math:`\lceil \log_f K \rceil` levels.

    Args:
      n_clients: clients K at the leaves (≥ 1).
      fanout: children per aggregator f (≥ 2).

    Returns:
      Aggregators per level, from the edges (level 1) to the root (last entry, 1).

    Raises:
      analytic.InputError: ``n_clients`` < 1 or ``fanout`` < 2.

    Example:
      >>> aggregator_levels(100_000, 100)
      [1000, 10, 1]
      >>> aggregator_levels(5, 10)
      [1]
    """
    if isinstance(n_clients, bool) or not isinstance(n_clients, (int, np.integer)) or n_clients < 1:
        raise InputError(f"a tree needs at least one client, got n_clients={n_clients!r}")
    if isinstance(fanout, bool) or not isinstance(fanout, (int, np.integer)) or fanout < 2:
        raise InputError(f"an aggregator has at least 2 children, got fanout={fanout!r}")
    levels, nodes = [], int(n_clients)
    while True:
        nodes = math.ceil(nodes / fanout)
        levels.append(nodes)
        if nodes == 1:
            return levels


def tree_plan(n_clients: int, fanout: int, dim: int, n_classes: int) -> list[LevelReport]:
    r"""The tree's traffic and memory on paper: every upload is one payload of
    :func:`federated.statistics_nbytes` bytes, a client's and an aggregator's alike.

    Level :math:`\ell` receives :math:`N_{\ell-1}` uploads (:math:`N_0 = K` clients) of
    :math:`8\,(d(d+1)/2 + dm + d + 1 + 2m)` bytes and each of its aggregators holds one running sum plus a 32-byte
    fingerprint per child.

    Args:
      n_clients: clients K.
      fanout: children per aggregator.
      dim: feature dimension d.
      n_classes: agreed classes m.

    Returns:
      One :class:`LevelReport` per level (``seconds`` NaN, nothing rejected).

    Raises:
      analytic.InputError: see :func:`aggregator_levels`.

    Example:
      >>> plan = tree_plan(1_000_000, 1000, 1280, 10)
      >>> [(r.level, r.nodes, r.children) for r in plan]
      [(1, 1000, 1000000), (2, 1, 1000)]
      >>> round(plan[0].bytes_received / 1e12, 2), round(plan[0].bytes_held / 1e6, 2)  # TB into the edges, MB each
      (6.67, 6.7)
    """
    upload = statistics_nbytes(dim, n_classes)
    below, reports = int(n_clients), []
    for level, nodes in enumerate(aggregator_levels(n_clients, fanout), start=1):
        per_node = min(fanout, below)
        reports.append(LevelReport(level, nodes, below, below * upload, upload + per_node * FINGERPRINT_BYTES))
        below = nodes
    return reports


def _grouped(uploads: Iterable[tuple[str, dict]], fanout: int) -> Iterator[list[tuple[str, dict]]]:
    group: list[tuple[str, dict]] = []
    for upload in uploads:
        group.append(upload)
        if len(group) == fanout:
            yield group
            group = []
    if group:
        yield group


class _Ledger:
    """One level's fingerprints across its aggregators: client id → aggregator, fingerprint → client id."""

    def __init__(self):
        self.owners: dict[str, str] = {}
        self.senders: dict[str, str] = {}

    def owned(self, client_id: str) -> str | None:
        if client_id in self.owners:
            return f"duplicate submission: client {client_id!r} has already been aggregated by {self.owners[client_id]}"
        return None

    def clash(self, client_id: str, digest: str) -> str | None:
        reason = self.owned(client_id)
        if reason is None and digest in self.senders:
            reason = f"duplicate submission: client {client_id!r} replays the upload of client {self.senders[digest]!r}"
        return reason

    def admit(self, node: str, clients, senders=()) -> None:
        self.owners.update(dict.fromkeys(clients, node))
        self.senders.update(senders)  # the empty upload, the same for every client without samples, is not


def _edge(group, ledger: _Ledger, node: str, empty, record: dict) -> tuple[StatisticsAggregate, dict[str, str]]:
    """One aggregator's sum over its children, refusing what its level's ledger has seen in another subtree."""
    aggregate, rejected = receive_many(empty(), group)
    clashes = {client_id: reason for client_id, digest in aggregate.received.clients.items()
               if (reason := ledger.clash(client_id, digest))}
    if clashes:  # rare: sum again without them, so that nothing is subtracted
        kept = [(client_id, payload) for client_id, payload in group if client_id not in clashes | rejected]
        aggregate, _ = receive_many(empty(), kept)
        rejected = {**rejected, **clashes}
    ledger.admit(node, aggregate.received.clients, aggregate.received.senders)
    record["bytes"] += sum(payload_nbytes(payload) for _, payload in group)
    record["held"] = max(record["held"], payload_nbytes(dict(aggregate.total))
                         + len(aggregate.received) * FINGERPRINT_BYTES)
    return aggregate, rejected


def _secure_edge(group, ledger: _Ledger, node: str, empty, record: dict,
                 settings: SecureEdges) -> tuple[StatisticsAggregate | None, dict[str, str]]:
    """One edge's secure round among its children: it sees their masked inputs only, and validates their sum as
    one upload. The aggregate is None where the round aborted or the sum was refused (the subtree is lost)."""
    from federated.secure import ProtocolCost, message_nbytes, simulate_keys, simulate_unmask  # the secure extra

    cohort, rejected = {}, {}
    for client_id, payload in group:  # ids are all an edge can check before the round
        reason = ledger.owned(client_id) or (
            f"duplicate submission: client {client_id!r} has already been aggregated" if client_id in cohort else None)
        if reason:
            rejected[client_id] = reason
        else:
            cohort[client_id] = payload
    if len(cohort) < 3:  # t = ⌊k/2⌋ + 1 ≥ 2 from 3 children on: a survivor's sum never holds its upload alone
        return None, rejected | {u: f"{node} aborted: a secure round needs at least 3 children, it has "
                                    f"{len(cohort)}" for u in cohort}
    dropped = settings.dropped.intersection(cohort)
    record["dropped"] += sorted(dropped)
    template = empty()
    config = settings.edge_round(cohort, template.dim, template.class_ids)
    cost = ProtocolCost.of(config.clients)
    tick = time.perf_counter()
    try:
        states, server, routed = simulate_keys(config, cost)
        total, survivors, refused = simulate_unmask(config, cohort, states, server, routed, cost, dropped=dropped)
    except IntegrityError as error:
        total, refused = None, {u: f"{node} aborted its secure round: {error}" for u in cohort if u not in dropped}
    record["secure_seconds"] += time.perf_counter() - tick
    record["bytes"] += sum(cost.up.values())
    record["sent"] += sum(cost.down.values())
    rejected |= refused
    if total is None:
        return None, rejected
    aggregate, refused_sum = receive_many(template, [(node, total)])
    if refused_sum:
        return None, rejected | {u: f"{node} refused its subtree's sum: {refused_sum[node]}" for u in survivors}
    ledger.admit(node, survivors)
    record["held"] = max(record["held"], payload_nbytes(dict(aggregate.total)) + message_nbytes(server.advertisements))
    return aggregate, rejected


def tree_round(
    uploads: Iterable[tuple[str, dict]],
    dim: int,
    class_ids,
    *,
    fanout: int,
    precision: str = "fixed",
    frac_bits: int = 12,
    secure: SecureEdges | None = None,
) -> tuple[StatisticsAggregate, list[LevelReport]]:
    r"""One round through a tree of aggregators, each an ordinary validating server over ``fanout`` children.

    Uploads are consumed in order: clients ``fanout·i … fanout·(i+1) − 1`` belong to edge i, edges likewise to
    the level above. An edge closes when its last child arrived and sends :math:`\sum_{k \in e}` (its aggregate's
    payload) up as ``"edge-<level>-<i>"``; at any time each level holds one open aggregate. The root's aggregate
    equals the flat server's (bit-identical on the fixed-point grid), except that a refused upload is left out
    where it was refused.

    Secure edges (``secure``, :class:`SecureEdges`). Each edge runs a SecAgg(+) round among its children instead of
    receiving their uploads, and then receives one upload, the unmasked sum of the children that sent a masked
    input (:math:`U_3`),

    .. math::
        \sum_{k \in U_3(e)} x_k \;=\; \sum_{k \in U_3(e)} y_k - \text{(masks rebuilt from the shares)}
        \pmod{2^{64}},

    bit for bit the plain sum of those children's uploads; the levels above are plain, as without ``secure``. What
    an edge learns: its subtree's sum, which children took part and which dropped, and their public keys. What it
    does not: any one child's upload — each masked input is uniform noise to it, and a dropped child's late upload
    stays hidden behind its self-mask — as long as it colludes with fewer than t of a child's share holders
    (:mod:`federated.secure`'s threat model). The price is validation: an edge checks only what it sees, the
    subtree's sum, as one upload (layout, counts, Cauchy–Schwarz, positive semidefiniteness), and refuses the whole
    subtree if that fails. A child's malformed or out-of-range upload is refused by the child's own check
    (:func:`federated.secure.mask_input`: it sends nothing, as if dropped, and is reported in ``rejected``), but a
    replay of another client's upload, or hostile statistics whose sum still passes, go undetected inside a
    subtree; only a client id seen twice is refused, before the round. Clients in ``secure.dropped`` drop after
    sharing their keys and are recovered as the protocol does. An edge with fewer than 3 children (below 3, t = 1
    would let one survivor's upload be its sum), or with fewer survivors than its threshold t, aborts its round:
    nothing is revealed, its children are reported in ``rejected``, nothing of that subtree goes up, and the round
    goes on. Fixed point only: the protocol masks the integer words modulo :math:`2^{64}`.

    Args:
      uploads: ``(client_id, payload)`` pairs (:func:`federated.encode_statistics`, aligned to ``class_ids``).
      dim: feature dimension d.
      class_ids: the agreed class ids.
      fanout: children per aggregator (≥ 2).
      precision: ``"fixed"`` (default: bit-exact whatever the tree) or ``"float64"``.
      frac_bits: the fixed-point grid of the uploads.
      secure: a :class:`SecureEdges` to run secure aggregation within each edge (needs the ``secure`` extra), or
        ``None`` (default): every edge receives its children's uploads.

    Returns:
      The root's :class:`federated.StatisticsAggregate` (its ``received`` registry lists the root's children; empty
      if every subtree aborted) and one :class:`LevelReport` per level, edges first, with measured ``seconds`` (and
      at the edges, with ``secure``, the protocol's seconds, bytes up and down, and dropped clients).

    Raises:
      analytic.InputError: ``fanout`` < 2, no upload at all, ``secure`` not a :class:`SecureEdges`, or ``secure``
        with ``precision="float64"``; nothing is consumed.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(60, 3)), rng.integers(0, 2, 60)
      >>> parts = federated.iid_partition(60, 12)
      >>> uploads = [(f"c{k}", federated.encode_statistics(federated.client_statistics(x[p], y[p], 3,
      ...             precision="fixed"), [0, 1])) for k, p in enumerate(parts)]
      >>> root, levels = tree_round(uploads, 3, [0, 1], fanout=4)
      >>> [(r.level, r.nodes, r.children) for r in levels]
      [(1, 3, 12), (2, 1, 3)]
      >>> flat, _ = federated.receive_many(federated.init_aggregate(3, [0, 1], precision="fixed"), uploads)
      >>> all(np.array_equal(root.total[k], flat.total[k]) for k in flat.total)
      True
      >>> hidden, levels = tree_round(uploads, 3, [0, 1], fanout=4, secure=SecureEdges(dropped={"c5"}))
      >>> levels[0].dropped, levels[0].bytes_sent > 0
      (('c5',), True)
      >>> survivors, _ = federated.receive_many(federated.init_aggregate(3, [0, 1], precision="fixed"),
      ...                                       [u for u in uploads if u[0] != "c5"])
      >>> all(np.array_equal(hidden.total[k], survivors.total[k]) for k in survivors.total)
      True
    """
    if isinstance(fanout, bool) or not isinstance(fanout, (int, np.integer)) or fanout < 2:
        raise InputError(f"an aggregator has at least 2 children, got fanout={fanout!r}")
    if secure is not None and not isinstance(secure, SecureEdges):
        raise InputError(f"secure is a SecureEdges or None, got {type(secure).__name__}")
    if secure is not None and precision != "fixed":
        raise InputError(f"secure aggregation masks fixed-point words: precision must be 'fixed', got {precision!r}")
    class_ids = np.asarray(class_ids, np.int64)
    stats: list[dict] = []

    def empty() -> StatisticsAggregate:
        return init_aggregate(dim, class_ids, precision=precision, frac_bits=frac_bits)

    def level_up(children: Iterable[tuple[str, dict]], level: int) -> Iterator[tuple[str, dict]]:
        masked = level == 1 and secure is not None
        record = {"nodes": 0, "children": 0, "bytes": 0, "held": 0, "seconds": 0.0, "rejected": {}, "sent": 0,
                  "secure_seconds": 0.0 if masked else float("nan"), "dropped": []}
        stats.append(record)
        ledger = _Ledger()
        for index, group in enumerate(_grouped(children, fanout)):
            node, tick = f"edge-{level}-{index}", time.perf_counter()
            if masked:
                aggregate, rejected = _secure_edge(group, ledger, node, empty, record, secure)
            else:
                aggregate, rejected = _edge(group, ledger, node, empty, record)
            record["seconds"] += time.perf_counter() - tick
            record["nodes"] += 1
            record["children"] += len(group)
            record["rejected"].update(rejected)
            if aggregate is not None:
                yield node, (dict(aggregate.total), aggregate)

    def payloads(stream):
        for name, (payload, _) in stream:
            yield name, payload

    stream, level = level_up(uploads, 1), 1
    while True:  # a level with two or more nodes needs a level above it; one node is the root
        head = list(itertools.islice(stream, 2))
        if not head and not stats[0]["children"]:
            raise InputError("tree_round needs at least one upload")
        if len(head) < 2:  # none: every subtree aborted
            root = head[0][1][1] if head else empty()
            break
        level += 1
        stream = level_up(payloads(itertools.chain(head, stream)), level)
    reports = [LevelReport(level, r["nodes"], r["children"], r["bytes"], r["held"], r["seconds"], r["rejected"],
                           r["sent"], r["secure_seconds"], tuple(r["dropped"]))
               for level, r in enumerate(stats, start=1)]
    return root, reports
