"""Secure aggregation of the exact fixed-point statistics: what SecAgg / SecAgg+ cost a client and the server.

    python -m benchmarks.secure_aggregation [--quick] [--out results] [--dim D]

Cohorts of 100 clients (SecAgg: the complete graph) and 1,000 clients (SecAgg+: a Harary graph whose degree
:func:`federated.secure.neighbour_degree` sizes for 30 % dropouts at failure probability 1e-6, honest-majority
threshold), each client holding 40 samples of 10 classes in d dimensions (d = 16 with ``--quick``, 128 by default:
statistics uploads of 2.7 kB and 78 kB in the clear). Rounds 0 and 1 (keys, encrypted Shamir shares) run once per
cohort; then 0 %, 10 % and 30 % of the clients, drawn at random, drop after sharing their keys — the case the
protocol must recover from — and rounds 2 and 3 (masked inputs, unmasking) run for each.

Per row: a client's mean and largest wall time over all four rounds (its own computation; transport not counted),
the bytes it sends and receives (the protocol's byte strings and arrays, without framing), the server's wall time
over its four steps, the plain upload's bytes, and whether the unmasked sum equals the plain sum of the survivors'
uploads (every field array-equal and the same state hash). Writes ``<out>/secure_aggregation.json`` and plots
``secure_aggregation.png``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from rich.progress import track

import analytic
from analytic.plotting import pyplot
import federated
from federated import secure
from .common import parser, print_table, write_json

CLASSES = tuple(range(10))
SAMPLES_PER_CLIENT = 40
DROPOUTS = (0.0, 0.1, 0.3)
PLANNED_DROPOUT = 0.3  # the SecAgg+ graph is sized for the worst row


def client_payloads(n_clients: int, dim: int, seed: int) -> dict[str, dict]:
    """Fixed-point statistics uploads of ``n_clients`` clients, Gaussian class clusters (the cost does not depend
    on the values)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(len(CLASSES), dim))
    payloads = {}
    for k in track(range(n_clients), description=f"{n_clients} clients' statistics", transient=True):
        labels = rng.integers(0, len(CLASSES), SAMPLES_PER_CLIENT)
        features = means[labels] + rng.normal(size=(SAMPLES_PER_CLIENT, dim))
        stats = federated.client_statistics(features, labels, dim, precision="fixed")
        payloads[f"client-{k:04d}"] = federated.encode_statistics(stats, CLASSES)
    return payloads


def bit_identical(total, payloads, survivors, dim) -> bool:
    plain, rejected = federated.receive_many(federated.init_aggregate(dim, CLASSES, precision="fixed"),
                                             [(u, payloads[u]) for u in survivors])
    secure_sum = federated.receive(federated.init_aggregate(dim, CLASSES, precision="fixed"), "sum", total)
    same_fields = all(np.array_equal(total[name], plain.total[name]) for name in
                      ("gram", "cross", "feature_sum", "count", "class_counts"))
    return (not rejected and same_fields
            and analytic.state_hash(secure_sum.statistics) == analytic.state_hash(plain.statistics))


def cohort_rows(n_clients: int, dim: int, seed: int) -> list[dict]:
    payloads = client_payloads(n_clients, dim, seed)
    degree = secure.neighbour_degree(n_clients, PLANNED_DROPOUT)
    config = secure.init_round(payloads, dim, CLASSES, degree=degree, round_id=f"bench-{n_clients}",
                               graph_seed=seed)
    protocol = "SecAgg" if degree == n_clients - 1 else "SecAgg+"
    print(f"\n{n_clients} clients, {protocol}: degree {degree}, threshold {config.threshold}, "
          f"{config.words:,} words per upload", flush=True)
    shared = secure.ProtocolCost.of(config.clients)
    states, server, routed = secure.simulate_keys(config, shared)
    rows = []
    rng = np.random.default_rng(seed + 1)
    for dropout in DROPOUTS:
        dropped = set(rng.choice(config.clients, int(round(dropout * n_clients)), replace=False))
        cost = shared.copy()
        total, survivors, _ = secure.simulate_unmask(config, payloads, states, server, routed, cost, dropped=dropped)
        seconds = np.array([cost.seconds[u] for u in survivors])
        rows.append({
            "clients": n_clients, "protocol": protocol, "degree": degree, "threshold": config.threshold,
            "dropout": dropout, "dropped": len(dropped), "client_seconds_mean": float(seconds.mean()),
            "client_seconds_max": float(seconds.max()),
            "client_bytes_up": float(np.mean([cost.up[u] for u in survivors])),
            "client_bytes_down": float(np.mean([cost.down[u] for u in survivors])),
            "plain_upload_bytes": federated.payload_nbytes(payloads[config.clients[0]]),
            "server_seconds": cost.server_seconds, "bit_identical": bit_identical(total, payloads, survivors, dim),
        })
        print_table("", rows[-1:], list(rows[-1]))
    return rows


def plot(rows, path):
    plt = pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for n_clients, marker in ((100, "o"), (1000, "s")):
        group = [r for r in rows if r["clients"] == n_clients]
        if not group:
            continue
        label = f"{n_clients:,} clients ({group[0]['protocol']}, k = {group[0]['degree']})"
        x = [100 * r["dropout"] for r in group]
        axes[0].plot(x, [r["client_seconds_mean"] for r in group], marker=marker, label=label)
        axes[1].plot(x, [r["server_seconds"] for r in group], marker=marker, label=label)
        axes[2].plot(x, [r["client_bytes_up"] / r["plain_upload_bytes"] for r in group], marker=marker, label=label)
    for axis, title in zip(axes, ("seconds per client (all rounds)", "server seconds (all rounds)",
                                  "bytes up per client / plain upload")):
        axis.set_xlabel("clients dropped after sharing keys (%)")
        axis.set_title(title, fontsize=10)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(f"Secure aggregation of exact fixed-point statistics (d = {rows[0]['dim']}); every sum "
                    "bit-identical to the plain sum", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=200)
    print(f"wrote {path}")


def main():
    args = parser(__doc__.split("\n\n")[0])
    args.add_argument("--dim", type=int, default=None, help="feature dimension d (default 128; 16 with --quick)")
    options = args.parse_args()
    dim = options.dim or (16 if options.quick else 128)
    started = time.perf_counter()
    rows = []
    for n_clients, seed in ((100, 0), (1000, 1)):
        rows += [dict(row, dim=dim) for row in cohort_rows(n_clients, dim, seed)]
    columns = ["clients", "protocol", "degree", "threshold", "dropout", "client_seconds_mean", "client_seconds_max",
               "client_bytes_up", "client_bytes_down", "plain_upload_bytes", "server_seconds", "bit_identical"]
    print_table(f"Secure aggregation, d = {dim}, {SAMPLES_PER_CLIENT} samples and {len(CLASSES)} classes per client",
                rows, columns)
    if not all(row["bit_identical"] for row in rows):
        raise SystemExit("an unmasked sum differs from the plain sum")
    write_json(options.out, "secure_aggregation", {"dim": dim, "quick": options.quick, "rows": rows,
                                                   "seconds": time.perf_counter() - started})
    plot(rows, Path(options.out) / "secure_aggregation.png")


if __name__ == "__main__":
    main()
