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
same accounting on paper for federations too large to simulate.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Iterable, Iterator

import numpy as np

from analytic.validation import InputError
from federated.payload import payload_nbytes, statistics_nbytes
from federated.server import StatisticsAggregate, init_aggregate, receive_many

__all__ = ["LevelReport", "aggregator_levels", "tree_plan", "tree_round"]

FINGERPRINT_BYTES = 32  # one sha256 digest per accepted child (federated.payload.upload_fingerprint)


@dataclasses.dataclass(frozen=True)
class LevelReport:
    """What one level of the tree received, held and sent.

    Attributes:
      level: 1 for the edge aggregators that receive the clients' uploads, up to the root's level.
      nodes: aggregators at this level.
      children: uploads this level received in all (clients at level 1, aggregators of the level below above).
      bytes_received: total bytes of those uploads.
      bytes_held: what one aggregator of this level holds: its running sum and one fingerprint per child.
      seconds: wall time this level spent validating and adding (measured in :func:`tree_round`; NaN on paper).
      rejected: ``{child_id: reason}`` of the uploads this level refused.

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

    def clash(self, client_id: str, digest: str) -> str | None:
        if client_id in self.owners:
            return f"duplicate submission: client {client_id!r} has already been aggregated by {self.owners[client_id]}"
        if digest in self.senders:
            return f"duplicate submission: client {client_id!r} replays the upload of client {self.senders[digest]!r}"
        return None

    def admit(self, registry, node: str) -> None:
        self.owners.update(dict.fromkeys(registry.clients, node))
        self.senders.update(registry.senders)  # the empty upload, the same for every client without samples, is not


def _edge(group, ledger: _Ledger, node: str, empty) -> tuple[StatisticsAggregate, dict[str, str]]:
    """One aggregator's sum over its children, refusing what its level's ledger has seen in another subtree."""
    aggregate, rejected = receive_many(empty(), group)
    clashes = {client_id: reason for client_id, digest in aggregate.received.clients.items()
               if (reason := ledger.clash(client_id, digest))}
    if clashes:  # rare: sum again without them, so that nothing is subtracted
        kept = [(client_id, payload) for client_id, payload in group if client_id not in clashes | rejected]
        aggregate, _ = receive_many(empty(), kept)
        rejected = {**rejected, **clashes}
    ledger.admit(aggregate.received, node)
    return aggregate, rejected


def tree_round(
    uploads: Iterable[tuple[str, dict]],
    dim: int,
    class_ids,
    *,
    fanout: int,
    precision: str = "fixed",
    frac_bits: int = 12,
) -> tuple[StatisticsAggregate, list[LevelReport]]:
    r"""One round through a tree of aggregators, each an ordinary validating server over ``fanout`` children.

    Uploads are consumed in order: clients ``fanout·i … fanout·(i+1) − 1`` belong to edge i, edges likewise to
    the level above. An edge closes when its last child arrived and sends :math:`\sum_{k \in e}` (its aggregate's
    payload) up as ``"edge-<level>-<i>"``; at any time each level holds one open aggregate. The root's aggregate
    equals the flat server's (bit-identical on the fixed-point grid), except that a refused upload is left out
    where it was refused.

    Args:
      uploads: ``(client_id, payload)`` pairs (:func:`federated.encode_statistics`, aligned to ``class_ids``).
      dim: feature dimension d.
      class_ids: the agreed class ids.
      fanout: children per aggregator (≥ 2).
      precision: ``"fixed"`` (default: bit-exact whatever the tree) or ``"float64"``.
      frac_bits: the fixed-point grid of the uploads.

    Returns:
      The root's :class:`federated.StatisticsAggregate` (its ``received`` registry lists the root's children)
      and one :class:`LevelReport` per level, edges first, with measured ``seconds``.

    Raises:
      analytic.InputError: ``fanout`` < 2 or no upload at all.

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
    """
    if isinstance(fanout, bool) or not isinstance(fanout, (int, np.integer)) or fanout < 2:
        raise InputError(f"an aggregator has at least 2 children, got fanout={fanout!r}")
    class_ids = np.asarray(class_ids, np.int64)
    stats: list[dict] = []

    def level_up(children: Iterable[tuple[str, dict]], level: int) -> Iterator[tuple[str, dict]]:
        record = {"nodes": 0, "children": 0, "bytes": 0, "held": 0, "seconds": 0.0, "rejected": {}}
        stats.append(record)
        ledger = _Ledger()
        for index, group in enumerate(_grouped(children, fanout)):
            tick = time.perf_counter()
            aggregate, rejected = _edge(group, ledger, f"edge-{level}-{index}",
                                        lambda: init_aggregate(dim, class_ids, precision=precision, frac_bits=frac_bits))
            record["seconds"] += time.perf_counter() - tick
            record["nodes"] += 1
            record["children"] += len(group)
            record["bytes"] += sum(payload_nbytes(payload) for _, payload in group)
            record["held"] = max(record["held"], payload_nbytes(dict(aggregate.total))
                                 + len(aggregate.received) * FINGERPRINT_BYTES)
            record["rejected"].update(rejected)
            yield f"edge-{level}-{index}", (dict(aggregate.total), aggregate)

    def payloads(stream):
        for name, (payload, _) in stream:
            yield name, payload

    stream, level = level_up(uploads, 1), 1
    while True:  # a level with two or more nodes needs a level above it; one node is the root
        head = list(itertools.islice(stream, 2))
        if not head:
            raise InputError("tree_round needs at least one upload")
        if len(head) == 1:
            root = head[0][1][1]
            break
        level += 1
        stream = level_up(payloads(itertools.chain(head, stream)), level)
    reports = [LevelReport(level, r["nodes"], r["children"], r["bytes"], r["held"], r["seconds"], r["rejected"])
               for level, r in enumerate(stats, start=1)]
    return root, reports
