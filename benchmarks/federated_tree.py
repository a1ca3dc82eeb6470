"""A federation past one server: 100,000 clients through a tree of edge aggregators, secure aggregation within
each edge, and 10⁶ clients on paper.

    python -m benchmarks.federated_tree [--quick] [--out results]

1. Simulated: K = 100,000 clients (10,000 with --quick), each with a few samples (1 + Poisson(4)) of a synthetic
   10-class Gaussian mixture at d = 64. Clients compute their fixed-point statistics in JAX, a group at a time
   (``jax.vmap``), and upload them; edges of 100 clients validate and sum, and send one upload each to the
   level above, up to the root. Measured per level: aggregators, uploads received, bytes, what one aggregator
   holds and seconds; the root's statistics are checked bit for bit against the pooled data's.
2. Secure edges: K = 5,000 clients (2,000 with --quick) of the same kind through the same tree, each edge running
   SecAgg+ among its 100 children (:class:`federated.SecureEdges`: the degree
   :func:`federated.secure.neighbour_degree` gives for 10 % dropouts at failure probability 1e-6), with 10 % of
   the clients, drawn at random, dropping after sharing their keys. Every party's steps run in this process.
   Measured per level: bytes received and sent (every protocol message), the secure rounds' seconds among the
   level's, dropped and refused clients; per client the protocol's bytes up and down. The root's statistics are
   checked bit for bit against the pooled data of the survivors.
3. On paper: 10⁶ clients at d = 1,280 and 8,192 (10 and 100 classes), fanout 1,000: what a phone sends and what
   each aggregator receives and holds; and what SecAgg+ in the edges costs a phone that completes the round, up
   and down, at the degree :func:`federated.secure.neighbour_degree` gives for 1,000 children and 10 % dropouts —
   one such edge simulated at d = 1, none dropping, its masked inputs then grown by the upload's growth to d
   (:func:`federated.statistics_nbytes`: the only protocol message whose size depends on d is the masked input).

Writes ``<out>/federated_tree.json`` and plots ``federated_tree.png`` (bytes received per level, and held per
aggregator, for the simulated tree and the paper ones).
"""

from __future__ import annotations

import time

import numpy as np

from analytic.plotting import pyplot
import federated
from federated.hierarchy import tree_plan, tree_round
from federated.simulation import vmapped_client_statistics
from .common import has_extra, parser, print_table, write_json

DIM, CLASSES, FANOUT = 64, 10, 100
DROPOUT = 0.1  # the share of clients that drop after sharing their keys, and what the SecAgg+ graphs are sized for
PAPER_CLIENTS, PAPER_FANOUT = 1_000_000, 1_000


def synthetic_federation(n_clients: int, seed: int = 0, dim: int = DIM, classes: int = CLASSES):
    """float32 features, labels and client bounds: client k holds rows ``bounds[k]:bounds[k+1]`` (1 + Poisson(4) rows)."""
    rng = np.random.default_rng(seed)
    sizes = 1 + rng.poisson(4, n_clients)
    labels = rng.integers(0, classes, int(sizes.sum()))
    centres = rng.normal(size=(classes, dim))
    features = (centres[labels] + rng.normal(size=(labels.size, dim))).astype(np.float32)  # as a phone has them
    return features, labels, np.concatenate([[0], np.cumsum(sizes)])


def client_uploads(features, labels, bounds, class_ids, clock: dict):
    """Every client's ``(client_id, payload)``, computed as the tree asks for it; ``clock["seconds"]`` gathers the
    time spent encoding."""
    states = vmapped_client_statistics(features, labels, bounds, class_ids, precision="fixed")
    for k in range(len(bounds) - 1):
        tick = time.perf_counter()
        payload = federated.encode_statistics(next(states), class_ids)
        clock["seconds"] += time.perf_counter() - tick
        yield f"client-{k}", payload


def pooled_payload(features, labels, bounds, class_ids, clients) -> dict:
    """The fixed-point statistics of the pooled samples of ``clients`` (indices), as one upload."""
    rows = np.concatenate([np.arange(bounds[k], bounds[k + 1]) for k in clients])
    return federated.encode_statistics(federated.client_statistics(features[rows], labels[rows], features.shape[1],
                                                                   precision="fixed"), class_ids)


def simulated_tree(n_clients: int) -> dict:
    """One round of ``n_clients`` through edges of FANOUT clients; per-level report and the bit-identity check."""
    features, labels, bounds = synthetic_federation(n_clients)
    class_ids, clock = np.arange(CLASSES), {"seconds": 0.0}
    started = time.perf_counter()
    root, levels = tree_round(client_uploads(features, labels, bounds, class_ids, clock), DIM, class_ids,
                              fanout=FANOUT, precision="fixed")
    seconds, client_seconds = time.perf_counter() - started, clock["seconds"]
    pooled = pooled_payload(features, labels, bounds, class_ids, range(n_clients))
    identical = all(np.array_equal(root.total[name], pooled[name]) for name in pooled)
    rows = [{"level": r.level, "aggregators": r.nodes, "uploads_received": r.children,
             "MB_received": r.bytes_received / 1e6, "KB_held_each": r.bytes_held / 1e3, "seconds": r.seconds,
             "rejected": len(r.rejected)} for r in levels]
    return {"clients": n_clients, "samples": int(labels.size), "dim": DIM, "classes": CLASSES, "fanout": FANOUT,
            "bytes_per_client": federated.statistics_nbytes(DIM, CLASSES), "round_seconds": seconds,
            "client_seconds_total": client_seconds, "bit_identical_to_pooled": identical, "levels": rows}


def secure_round(n_clients: int, dim: int, classes: int, fanout: int, seed: int, dropping: float) -> dict:
    """One round of ``n_clients`` through edges of ``fanout`` running SecAgg+ (sized for DROPOUT), a share
    ``dropping`` of the clients dropping after sharing their keys; the levels, the survivors and the bit-identity
    check against the pooled data of the survivors."""
    features, labels, bounds = synthetic_federation(n_clients, seed, dim, classes)
    class_ids = np.arange(classes)
    drawn = np.random.default_rng(seed + 1).choice(n_clients, round(dropping * n_clients), replace=False)
    settings = federated.SecureEdges(dropout=DROPOUT, dropped={f"client-{k}" for k in drawn})
    started = time.perf_counter()
    root, levels = tree_round(client_uploads(features, labels, bounds, class_ids, {"seconds": 0.0}), dim, class_ids,
                              fanout=fanout, secure=settings)
    seconds = time.perf_counter() - started
    lost = settings.dropped | set(levels[0].rejected)
    survivors = [k for k in range(n_clients) if f"client-{k}" not in lost]
    pooled = pooled_payload(features, labels, bounds, class_ids, survivors)
    first_edge = settings.edge_round([f"client-{k}" for k in range(min(fanout, n_clients))], dim, class_ids)
    return {"clients": n_clients, "samples": int(labels.size), "dim": dim, "classes": classes, "fanout": fanout,
            "degree": first_edge.degree, "threshold": first_edge.threshold,
            "survivors": len(survivors), "round_seconds": seconds, "levels": levels,
            "bit_identical_to_survivors": all(np.array_equal(root.total[name], pooled[name]) for name in pooled)}


def secure_tree(n_clients: int) -> dict:
    """The simulated tree with SecAgg+ in every edge: per-level and per-client time and bytes."""
    run = secure_round(n_clients, DIM, CLASSES, FANOUT, seed=1, dropping=DROPOUT)
    edges = run["levels"][0]
    rows = [{"level": r.level, "aggregators": r.nodes, "uploads_received": r.children,
             "MB_received": r.bytes_received / 1e6, "MB_sent": r.bytes_sent / 1e6, "KB_held_each": r.bytes_held / 1e3,
             "seconds": r.seconds, "secure_seconds": r.secure_seconds, "dropped": len(r.dropped),
             "rejected": len(r.rejected)} for r in run.pop("levels")]
    return dict(run, plain_bytes_per_client=federated.statistics_nbytes(DIM, CLASSES),
                bytes_up_per_client=edges.bytes_received / edges.children,
                bytes_down_per_client=edges.bytes_sent / edges.children,
                secure_seconds_per_client=edges.secure_seconds / edges.children, levels=rows)


def paper_secure_costs() -> list[dict]:
    """What SecAgg+ in the paper trees' edges costs a phone that completes the round, up and down: one edge of
    PAPER_FANOUT clients (its graph sized for DROPOUT, none dropping) simulated at d = 1, every masked input then
    grown by ``statistics_nbytes(d, m) - statistics_nbytes(1, m)``. Beyond the plain upload, a phone sends its keys,
    its encrypted shares and the revealed shares, less the m class ids, which the round agrees and nobody masks."""
    rows = []
    for classes in (10, 100):
        run = secure_round(PAPER_FANOUT, 1, classes, PAPER_FANOUT, seed=classes, dropping=0.0)
        edge = run["levels"][0]
        for dim in (1_280, 8_192):
            plain = federated.statistics_nbytes(dim, classes)
            up = edge.bytes_received / edge.children + plain - federated.statistics_nbytes(1, classes)
            rows.append({"d": dim, "classes": classes, "edge_clients": PAPER_FANOUT, "degree": run["degree"],
                         "threshold": run["threshold"], "phone_sends_MB": plain / 1e6, "secagg_up_MB": up / 1e6,
                         "up_over_plain_KB": (up - plain) / 1e3,
                         "secagg_down_KB": edge.bytes_sent / edge.children / 1e3,
                         "edge_simulated_bit_identical": run["bit_identical_to_survivors"]})
    return rows


def paper_trees() -> list[dict]:
    """10⁶ clients at d = 1,280 and 8,192 with 10 and 100 classes, fanout 1,000."""
    rows = []
    for dim in (1_280, 8_192):
        for classes in (10, 100):
            for r in tree_plan(PAPER_CLIENTS, PAPER_FANOUT, dim, classes):
                rows.append({"d": dim, "classes": classes, "phone_sends_MB": federated.statistics_nbytes(dim, classes) / 1e6,
                             "level": r.level, "aggregators": r.nodes, "uploads_received": r.children,
                             "TB_received": r.bytes_received / 1e12, "MB_held_each": r.bytes_held / 1e6})
    return rows


def plot(simulated: dict, paper: list[dict], path: str) -> None:
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    levels = [row["level"] for row in simulated["levels"]]
    left.bar([l - 0.2 for l in levels], [row["MB_received"] for row in simulated["levels"]], width=0.4,
             label="received by the level (MB)")
    left.bar([l + 0.2 for l in levels], [row["KB_held_each"] / 1e3 for row in simulated["levels"]], width=0.4,
             label="held by one aggregator (MB)")
    left.set(yscale="log", xticks=levels, xlabel="level (1 = edges)", ylabel="MB",
             title=f"{simulated['clients']:,} clients, d = {DIM}, fanout {FANOUT}")
    left.legend(frameon=False, fontsize=8)
    for (dim, classes), marker in zip(((1_280, 10), (1_280, 100), (8_192, 10), (8_192, 100)), "osD^"):
        rows = [r for r in paper if r["d"] == dim and r["classes"] == classes]
        right.plot([r["level"] for r in rows], [r["TB_received"] * 1e6 for r in rows], marker=marker,
                   label=f"d = {dim:,}, {classes} classes")
    right.set(yscale="log", xticks=[1, 2], xlabel="level (1 = edges)", ylabel="MB received by the level",
              title="10⁶ clients, fanout 1,000 (on paper)")
    right.legend(frameon=False, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    print(f"wrote {path}")


def main():
    args = parser(__doc__.splitlines()[0]).parse_args()
    simulated = simulated_tree(10_000 if args.quick else 100_000)
    print_table(f"{simulated['clients']:,} clients ({simulated['samples']:,} samples), d = {DIM}, fanout {FANOUT}: "
                f"{simulated['bytes_per_client'] / 1e3:.1f} KB per client, round {simulated['round_seconds']:.1f} s "
                f"(clients {simulated['client_seconds_total']:.1f} s)",
                simulated["levels"], ["level", "aggregators", "uploads_received", "MB_received", "KB_held_each",
                                      "seconds", "rejected"])
    print(f"root statistics bit-identical to the pooled data's: {simulated['bit_identical_to_pooled']}")
    secured = secure_tree(2_000 if args.quick else 5_000)
    print_table(f"{secured['clients']:,} clients, d = {DIM}, fanout {FANOUT}, SecAgg+ in every edge (degree "
                f"{secured['degree']}, threshold {secured['threshold']}), {DROPOUT:.0%} dropping after sharing keys: "
                f"per client (the dropped included) {secured['bytes_up_per_client'] / 1e3:.1f} KB up, "
                f"{secured['bytes_down_per_client'] / 1e3:.1f} KB down (plain upload "
                f"{secured['plain_bytes_per_client'] / 1e3:.1f} KB), "
                f"{secured['secure_seconds_per_client'] * 1e3:.1f} ms of protocol; round "
                f"{secured['round_seconds']:.1f} s", secured["levels"],
                ["level", "aggregators", "uploads_received", "MB_received", "MB_sent", "KB_held_each", "seconds",
                 "secure_seconds", "dropped", "rejected"])
    print(f"root statistics bit-identical to the pooled data of the {secured['survivors']:,} survivors: "
          f"{secured['bit_identical_to_survivors']}")
    paper = paper_trees()
    print_table("10⁶ clients on paper, fanout 1,000", paper,
                ["d", "classes", "phone_sends_MB", "level", "aggregators", "uploads_received", "TB_received",
                 "MB_held_each"])
    paper_secure = paper_secure_costs()
    print_table(f"SecAgg+ in the edges of the paper trees, graphs sized for {DROPOUT:.0%} dropouts: per phone (one "
                f"edge of {PAPER_FANOUT:,} simulated at d = 1)", paper_secure,
                ["d", "classes", "edge_clients", "degree", "threshold", "phone_sends_MB", "secagg_up_MB",
                 "up_over_plain_KB", "secagg_down_KB", "edge_simulated_bit_identical"])
    write_json(args.out, "federated_tree", {"quick": args.quick, "simulated": simulated, "secure": secured,
                                            "paper": paper, "paper_secure": paper_secure})
    if not (simulated["bit_identical_to_pooled"] and secured["bit_identical_to_survivors"]
            and all(row["edge_simulated_bit_identical"] for row in paper_secure)):
        raise SystemExit("a root differs from the pooled statistics")
    if has_extra("matplotlib", "plots", "the plot"):
        plot(simulated, paper, f"{args.out}/federated_tree.png")


if __name__ == "__main__":
    main()
