"""Secure aggregation of the exact fixed-point statistics: what SecAgg / SecAgg+ cost a client and the server,
in-process and on Flower.

    python -m benchmarks.secure_aggregation [--quick] [--out results] [--dim D] [--sections protocol,flower]

Cohorts of 100 clients (SecAgg: the complete graph) and 1,000 clients (SecAgg+: a Harary graph whose degree
:func:`federated.secure.neighbour_degree` sizes for 30 % dropouts at failure probability 1e-6, honest-majority
threshold), each client holding 40 samples of 10 classes in d dimensions. 0 %, 10 % and 30 % of the clients, drawn
at random (seeded), drop after sharing their keys — the case the protocol must recover from.

``protocol`` (d = 16 with ``--quick``, 128 by default: statistics uploads of 2.7 kB and 78 kB in the clear): the
protocol's functions in this process. Rounds 0 and 1 (keys, encrypted Shamir shares) run once per cohort, rounds 2
and 3 (masked inputs, unmasking) for each dropout level. Per row: a client's mean and largest wall time over all
four rounds (its own computation; transport not counted), the bytes it sends and receives (the protocol's byte
strings and arrays, without framing), the server's wall time over its four steps, the plain upload's bytes, and
whether the unmasked sum equals the plain sum of the survivors' uploads (every field array-equal and the same state
hash).

``flower`` (full runs only unless named; d = 16, :data:`FLOWER_DIM`; 20 clients with ``--quick``): secure AFL as a
Flower app (:mod:`federated.flower_app`, ``method = "secagg"``) on Flower's simulation runtime, 2 CPUs, one run per
cohort and dropout level, the dropped clients' partitions in ``secagg-drop``. Per row: the wall time of the whole
run, the server app's time and that of its four rounds, the bytes a client that took part in every round moved up
and down (the messages' byte strings and arrays, without framing), survivors and dropped clients, and whether the
run's state hash is that of the plain sum of the survivors' uploads computed here.

Writes ``<out>/secure_aggregation.json`` and plots ``secure_aggregation.png`` and
``secure_aggregation_flower.png``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from rich.progress import track

import analytic
from analytic.plotting import pyplot
import federated
from federated import secure
from .common import add_sections, has_extra, parser, print_table, write_json

CLASSES = tuple(range(10))
SAMPLES_PER_CLIENT = 40
DROPOUTS = (0.0, 0.1, 0.3)
PLANNED_DROPOUT = 0.3  # the SecAgg+ graph is sized for the worst row
SECTIONS = ("protocol", "flower")
FLOWER_DIM = 16  # d of the Flower runs: the virtual clients share this machine's cores
FLOWER_TIMEOUT = 1200.0  # seconds a Flower run, and each of its rounds, may take
FLOWER_COLUMNS = ["clients", "protocol", "degree", "threshold", "dropout", "survivors", "dropped", "seconds_total",
                  "seconds_server", "seconds_rounds", "client_bytes_up", "client_bytes_down", "bit_identical"]


def client_samples(n_clients: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of ``n_clients`` clients, :data:`SAMPLES_PER_CLIENT` rows each (client k holds the k-th
    block), Gaussian class clusters (the cost does not depend on the values)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(len(CLASSES), dim))
    labels = rng.integers(0, len(CLASSES), n_clients * SAMPLES_PER_CLIENT)
    return means[labels] + rng.normal(size=(labels.size, dim)), labels


def client_payloads(features: np.ndarray, labels: np.ndarray) -> dict[str, dict]:
    """Each client's fixed-point statistics upload, by client id (``client-0000`` holds the first block of
    :func:`client_samples`)."""
    n_clients, dim = labels.size // SAMPLES_PER_CLIENT, features.shape[1]
    payloads = {}
    for k in track(range(n_clients), description=f"{n_clients} clients' statistics", transient=True):
        rows = slice(k * SAMPLES_PER_CLIENT, (k + 1) * SAMPLES_PER_CLIENT)
        stats = federated.client_statistics(features[rows], labels[rows], dim, precision="fixed")
        payloads[client_id(k)] = federated.encode_statistics(stats, CLASSES)
    return payloads


def client_id(k: int) -> str:
    return f"client-{k:04d}"


def plain_sum(payloads, clients, dim):
    """The plain fixed-point sum of ``clients``' uploads and the uploads it rejected."""
    return federated.receive_many(federated.init_aggregate(dim, CLASSES, precision="fixed"),
                                  [(u, payloads[u]) for u in clients])


def bit_identical(total, payloads, survivors, dim) -> bool:
    plain, rejected = plain_sum(payloads, survivors, dim)
    secure_sum = federated.receive(federated.init_aggregate(dim, CLASSES, precision="fixed"), "sum", total)
    same_fields = all(np.array_equal(total[name], plain.total[name]) for name in
                      ("gram", "cross", "feature_sum", "count", "class_counts"))
    return (not rejected and same_fields
            and analytic.state_hash(secure_sum.statistics) == analytic.state_hash(plain.statistics))


def cohort_rows(n_clients: int, dim: int, seed: int) -> list[dict]:
    payloads = client_payloads(*client_samples(n_clients, dim, seed))
    degree = secure.neighbour_degree(n_clients, PLANNED_DROPOUT)
    config = secure.init_round(payloads, dim, CLASSES, degree=degree, round_id=f"bench-{n_clients}",
                               graph_seed=seed)
    protocol = "SecAgg" if degree == n_clients - 1 else "SecAgg+"
    print(f"\n{n_clients} clients, {protocol}: degree {degree}, threshold {config.threshold}, "
          f"{config.words:,} words per upload", flush=True)
    shared = secure.ProtocolCost.of(config.clients)
    states, server, routed = secure.simulate_keys(config, shared)
    rows = []
    for dropout, dropped in dropout_draws(config.clients, seed):
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


def per_client_bytes(rounds: dict, direction: str) -> float:
    """Bytes one client that took part in every round moved in ``direction`` (``"up"`` or ``"down"``): each
    round's bytes over its messages (sent for ``"down"``, answered for ``"up"``), summed over the rounds."""
    messages = {"down": "sent", "up": "answered"}[direction]
    return sum(r[direction] / r[messages] for r in rounds.values() if r[messages])


def flower_rows(n_clients: int, dim: int, seed: int, timeout: float) -> list[dict]:
    """Secure AFL (``method = "secagg"``) on Flower's simulation runtime, one run per dropout level of
    :func:`dropout_draws` (the dropped clients' partitions in ``secagg-drop``), checked against the plain sum of the
    survivors' uploads computed here.

    ``seconds_total`` is the whole run (SuperLink, Ray and ClientApp start-up and shutdown included),
    ``seconds_server`` the server app's part (waiting for the nodes included), ``seconds_rounds`` its four rounds."""
    from federated.flower_app import write_federation
    from federated.flower_runtime import run_flower_simulation

    features, labels = client_samples(n_clients, dim, seed)
    payloads = client_payloads(features, labels)
    degree = secure.neighbour_degree(n_clients, PLANNED_DROPOUT)
    protocol = "SecAgg" if degree == n_clients - 1 else "SecAgg+"
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        federation = write_federation(Path(scratch) / "federation", features, labels,
                                      np.split(np.arange(labels.size), n_clients))
        for dropout, dropped in dropout_draws(range(n_clients), seed):
            settings = {"federation": str(federation), "output": str(Path(scratch) / f"out-{dropout}"),
                        "method": "secagg", "secagg-degree": degree, "timeout": timeout,
                        "secagg-drop": ",".join(str(k) for k in sorted(dropped))}
            started = time.perf_counter()
            result = run_flower_simulation(settings, n_clients, timeout=timeout)
            seconds = time.perf_counter() - started
            plain, rejected = plain_sum(payloads, [client_id(k) for k in range(n_clients) if k not in dropped], dim)
            rows.append({
                "clients": n_clients, "protocol": protocol, "degree": result["degree"],
                "threshold": result["threshold"], "dropout": dropout, "survivors": len(result["survivors"]),
                "dropped": len(result["dropped"]), "seconds_total": seconds, "seconds_server": result["seconds"],
                "seconds_rounds": sum(result["round_seconds"].values()),
                "client_bytes_up": per_client_bytes(result["bytes"], "up"),
                "client_bytes_down": per_client_bytes(result["bytes"], "down"),
                "bit_identical": not rejected and result["state_hash"] == analytic.state_hash(plain.statistics),
                "round_seconds": result["round_seconds"],
            })
            print_table("", rows[-1:], FLOWER_COLUMNS)
    return rows


def dropout_draws(clients, seed):
    """``(dropout, dropped clients)`` for each of :data:`DROPOUTS`, drawn at random (seeded) from ``clients``."""
    rng = np.random.default_rng(seed + 1)
    return [(dropout, set(rng.choice(clients, int(round(dropout * len(clients))), replace=False)))
            for dropout in DROPOUTS]


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


def plot_flower(rows, path):
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(8.5, 3.6))
    for n_clients, marker in zip(sorted({r["clients"] for r in rows}), "os^"):
        group = [r for r in rows if r["clients"] == n_clients]
        label = f"{n_clients:,} clients ({group[0]['protocol']}, k = {group[0]['degree']})"
        x = [100 * r["dropout"] for r in group]
        for axis, solid, dashed in ((axes[0], "seconds_total", "seconds_rounds"),
                                    (axes[1], "client_bytes_up", "client_bytes_down")):
            axis.plot(x, [r[solid] for r in group], marker=marker, label=f"{label}: {solid}")
            axis.plot(x, [r[dashed] for r in group], marker=marker, linestyle="--", label=f"{label}: {dashed}")
    for axis, title in zip(axes, ("wall seconds: the whole run, its four rounds", "bytes per client (all rounds)")):
        axis.set_xlabel("clients dropped after sharing keys (%)")
        axis.set_title(title, fontsize=10)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle(f"Secure AFL on Flower's simulation runtime (d = {rows[0]['dim']}); every sum bit-identical to "
                    "the plain sum", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=200)
    print(f"wrote {path}")


def main():
    args = parser(__doc__.split("\n\n")[0])
    args.add_argument("--dim", type=int, default=None, help="feature dimension d (default 128; 16 with --quick)")
    add_sections(args, SECTIONS, default=None)  # default: both; protocol with --quick
    options = args.parse_args()
    sections = options.sections or ({"protocol"} if options.quick else set(SECTIONS))
    dim = options.dim or (16 if options.quick else 128)
    started = time.perf_counter()
    payload = {"dim": dim, "quick": options.quick}
    rows = []
    if "protocol" in sections:
        for n_clients, seed in ((100, 0), (1000, 1)):
            rows += [dict(row, dim=dim) for row in cohort_rows(n_clients, dim, seed)]
        columns = ["clients", "protocol", "degree", "threshold", "dropout", "client_seconds_mean",
                   "client_seconds_max", "client_bytes_up", "client_bytes_down", "plain_upload_bytes",
                   "server_seconds", "bit_identical"]
        print_table(f"Secure aggregation, d = {dim}, {SAMPLES_PER_CLIENT} samples and {len(CLASSES)} classes per "
                    "client", rows, columns)
        payload["rows"] = rows
    if "flower" in sections and has_extra("flwr", "flower", "the Flower runs"):
        flower_started = time.perf_counter()
        cohorts = ((20, 0),) if options.quick else ((100, 0), (1000, 1))
        flower = [dict(row, dim=FLOWER_DIM) for n_clients, seed in cohorts
                  for row in flower_rows(n_clients, FLOWER_DIM, seed, FLOWER_TIMEOUT)]
        print_table(f"Secure AFL on Flower's simulation runtime, d = {FLOWER_DIM}, {SAMPLES_PER_CLIENT} samples and "
                    f"{len(CLASSES)} classes per client", flower, FLOWER_COLUMNS)
        print(f"Flower section: {time.perf_counter() - flower_started:.0f} s")
        payload["flower"] = {"dim": FLOWER_DIM, "rows": flower, "seconds": time.perf_counter() - flower_started}
        rows += flower
    if not all(row["bit_identical"] for row in rows):
        raise SystemExit("an unmasked sum differs from the plain sum")
    write_json(options.out, "secure_aggregation", {**payload, "seconds": time.perf_counter() - started})
    if "rows" in payload:
        plot(payload["rows"], Path(options.out) / "secure_aggregation.png")
    if "flower" in payload:
        plot_flower(payload["flower"]["rows"], Path(options.out) / "secure_aggregation_flower.png")


if __name__ == "__main__":
    main()
