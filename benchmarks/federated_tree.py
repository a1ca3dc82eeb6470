"""A federation past one server: 100,000 clients through a tree of edge aggregators, and 10⁶ clients on paper.

    python -m benchmarks.federated_tree [--quick] [--out results]

1. Simulated: K = 100,000 clients (10,000 with --quick), each with a few samples (1 + Poisson(4)) of a synthetic
   10-class Gaussian mixture at d = 64. Clients compute their fixed-point statistics in JAX, a group at a time
   (``jax.vmap``), and upload them; edges of 100 clients validate and sum, and send one upload each to the
   level above, up to the root. Measured per level: aggregators, uploads received, bytes, what one aggregator
   holds and seconds; the root's statistics are checked bit for bit against the pooled data's.
2. On paper: 10⁶ clients at d = 1,280 and 8,192 (10 and 100 classes), fanout 1,000: what a phone sends and what
   each aggregator receives and holds.

Writes ``<out>/federated_tree.json`` and plots ``federated_tree.png`` (bytes received per level, and held per
aggregator, for the simulated tree and the paper ones).
"""

from __future__ import annotations

import time

import numpy as np

import federated
from federated.hierarchy import tree_plan, tree_round
from federated.simulation import vmapped_client_statistics
from analytic.plotting import pyplot
from .common import has_extra, parser, print_table, write_json

DIM, CLASSES, FANOUT = 64, 10, 100


def synthetic_federation(n_clients: int, seed: int = 0):
    """float32 features, labels and client bounds: client k holds rows ``bounds[k]:bounds[k+1]`` (1 + Poisson(4) rows)."""
    rng = np.random.default_rng(seed)
    sizes = 1 + rng.poisson(4, n_clients)
    labels = rng.integers(0, CLASSES, int(sizes.sum()))
    centres = rng.normal(size=(CLASSES, DIM))
    features = (centres[labels] + rng.normal(size=(labels.size, DIM))).astype(np.float32)  # as a phone has them
    return features, labels, np.concatenate([[0], np.cumsum(sizes)])


def simulated_tree(n_clients: int) -> dict:
    """One round of ``n_clients`` through edges of FANOUT clients; per-level report and the bit-identity check."""
    features, labels, bounds = synthetic_federation(n_clients)
    class_ids = np.arange(CLASSES)
    client_seconds = 0.0

    def uploads():
        nonlocal client_seconds
        states = vmapped_client_statistics(features, labels, bounds, class_ids, precision="fixed")
        for k in range(n_clients):
            tick = time.perf_counter()
            payload = federated.encode_statistics(next(states), class_ids)
            client_seconds += time.perf_counter() - tick
            yield f"client-{k}", payload

    started = time.perf_counter()
    root, levels = tree_round(uploads(), DIM, class_ids, fanout=FANOUT, precision="fixed")
    seconds = time.perf_counter() - started
    pooled = federated.encode_statistics(
        federated.client_statistics(features, labels, DIM, precision="fixed"), class_ids)
    identical = all(np.array_equal(root.total[name], pooled[name]) for name in pooled)
    rows = [{"level": r.level, "aggregators": r.nodes, "uploads_received": r.children,
             "MB_received": r.bytes_received / 1e6, "KB_held_each": r.bytes_held / 1e3, "seconds": r.seconds,
             "rejected": len(r.rejected)} for r in levels]
    return {"clients": n_clients, "samples": int(labels.size), "dim": DIM, "classes": CLASSES, "fanout": FANOUT,
            "bytes_per_client": federated.statistics_nbytes(DIM, CLASSES), "round_seconds": seconds,
            "client_seconds_total": client_seconds, "bit_identical_to_pooled": identical, "levels": rows}


def paper_trees() -> list[dict]:
    """10⁶ clients at d = 1,280 and 8,192 with 10 and 100 classes, fanout 1,000."""
    rows = []
    for dim in (1_280, 8_192):
        for classes in (10, 100):
            for r in tree_plan(1_000_000, 1_000, dim, classes):
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
    paper = paper_trees()
    print_table("10⁶ clients on paper, fanout 1,000", paper,
                ["d", "classes", "phone_sends_MB", "level", "aggregators", "uploads_received", "TB_received",
                 "MB_held_each"])
    write_json(args.out, "federated_tree", {"quick": args.quick, "simulated": simulated, "paper": paper})
    if has_extra("matplotlib", "plots", "the plot"):
        plot(simulated, paper, f"{args.out}/federated_tree.png")


if __name__ == "__main__":
    main()
