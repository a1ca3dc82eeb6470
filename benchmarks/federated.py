"""Analytic federated learning (AFL) against centralized ridge and FedAvg / FedProx / SCAFFOLD, on frozen features.

    python -m benchmarks.federated [--quick] [--out results] [--flower-clients N] [--flower-dim D]

Fashion-MNIST (or the digits fallback) through an ImageNet-pretrained MobileNetV2 (1,280-d pooled features):

0. What one client sends at d = 256 … 8,192: AFL's statistics once against FedAvg's head per round.
1. AFL in the in-process simulator for 10, 100, 1,000 and 10,000 clients under IID, Dirichlet α = 1, 0.1, 0.01 and
   pathological shards: accuracy, relative weight error against centralized ridge on the pooled data, bytes per
   client and in total, wall time; the paper form (absolute aggregation folded to sums) against the summed form,
   both servers timed; the fixed-point state hash across partitions.
2. FedAvg / FedProx (and SCAFFOLD in the full mode) on the same features, 100 clients, 10% sampled per round, up to
   200 rounds: the accuracy-per-round curve, and the rounds, bytes and wall time each needs to reach AFL's accuracy
   (or its best), with the ratios to AFL's one round.
3. The same AFL round (and FedAvg) on Flower's simulation runtime (``flwr run``) with many virtual clients, checked
   against the in-process simulator (identical fixed-point state hash).

Writes ``<out>/federated.json`` and plots ``federated_afl_flat.png`` (AFL accuracy against clients and α) and
``federated_curves.png`` (gradient accuracy per round against AFL's one round).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

import analytic
import federated
from analytic import gradient
from analytic.plotting import integer_axis, plain_log_axis, plot_curves, pyplot, save
from .common import frozen_features, interleaved_times, parser, print_table, write_json
from federated.baselines import run_federated_gradient
from federated.simulation import simulate_afl

RIDGE = 1.0
GRADIENT_SETTINGS = {"local_epochs": 1, "client_fraction": 0.1, "learning_rate": 0.05, "batch_size": 32, "mu": 0.01}
PARTITIONS = {"iid": ("iid", 1.0), "α=1": ("dirichlet", 1.0), "α=0.1": ("dirichlet", 0.1),
              "α=0.01": ("dirichlet", 0.01), "shards": ("shards", 1.0)}


def relative_error(actual, expected) -> float:
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def split(name: str, labels, n_clients: int, seed: int = 0):
    kind, alpha = PARTITIONS[name]
    return federated.make_partition(kind, labels, n_clients, alpha=alpha, seed=seed, min_size=0)


def afl_grid(data, client_counts, partitions, centralized, progress: bool) -> list[dict]:
    """AFL for every (clients, partition): accuracy, exactness against centralized ridge, bytes, time."""
    rows = []
    for n_clients in client_counts:
        for name in partitions:
            parts = split(name, data.train_labels, n_clients)
            _, head, report = simulate_afl(
                data.train_features, data.train_labels, parts, ridge=RIDGE, test_features=data.test_features,
                test_labels=data.test_labels, progress=progress, description=f"AFL {n_clients} clients, {name}",
            )
            rows.append({
                "clients": n_clients, "partition": name, "accuracy": report.accuracy,
                "relative_error": relative_error(head.weights, centralized.weights),
                "empty_clients": int(sum(p.size == 0 for p in parts)),
                "clients_below_d": int(sum(0 < p.size < data.train_features.shape[1] for p in parts)),
                "bytes_per_client": report.bytes_per_client, "bytes_up": report.bytes_up,
                "bytes_down": report.bytes_down, "seconds": report.seconds,
            })
    return rows


def paper_form_check(data, n_clients: int, dim: int, repeats: int = 3) -> dict:
    """The paper form (local solutions, absolute aggregation folded to sums, regularization intermediary) against
    the summed form on the first ``dim`` features: both servers timed interleaved from the same clients' statistics;
    the clients' local solves (one d×d factorization each, the paper form's extra client work) timed once."""
    class_ids = np.unique(data.train_labels)
    parts = split("α=0.1", data.train_labels, n_clients)
    features = data.train_features[:, :dim]
    stats = [federated.client_statistics(features[p], data.train_labels[p], dim) for p in parts]
    started = time.perf_counter()
    messages = [federated.local_solution(s, RIDGE, class_ids) for s in stats]
    client_seconds = time.perf_counter() - started

    def paper():
        return federated.remove_regularization(federated.aggregate_solutions(messages), RIDGE)

    def summed():
        return analytic.solve(analytic.with_classes(federated.aggregate_statistics(stats), class_ids), RIDGE)

    seconds = interleaved_times({"paper": paper, "summed": summed}, repeats)
    return {"clients": n_clients, "partition": "α=0.1", "dim": dim,
            "relative_difference": relative_error(paper().weights, summed().weights),
            "paper_seconds": seconds["paper"], "summed_seconds": seconds["summed"],
            "ratio": seconds["paper"] / seconds["summed"], "client_solve_seconds": client_seconds}


def fixed_hashes(data, n_clients: int, partitions, progress: bool) -> dict:
    """Fixed-point (bit-exact) aggregates of every partition, and whether their hashes are all equal."""
    hashes = {}
    for name in partitions:
        aggregate, _, _ = simulate_afl(data.train_features, data.train_labels, split(name, data.train_labels,
                                       n_clients), ridge=RIDGE, precision="fixed", progress=progress,
                                       description=f"fixed-point {name}")
        hashes[name] = analytic.state_hash(aggregate.statistics)
    centralized = analytic.accumulate(analytic.init_statistics(data.train_features.shape[1], precision="fixed"),
                                      data.train_features, data.train_labels)
    return {"clients": n_clients, "hashes": hashes, "centralized": analytic.state_hash(centralized),
            "identical": len(set(hashes.values()) | {analytic.state_hash(centralized)}) == 1}


def gradient_runs(data, afl_rows, n_clients: int, partitions, methods, rounds: int, progress: bool) -> list[dict]:
    """Each gradient method on each partition; rounds, bytes and time to AFL's accuracy (ratios to AFL)."""
    runs = []
    for name in partitions:
        afl = next(r for r in afl_rows if r["clients"] == n_clients and r["partition"] == name)
        parts = split(name, data.train_labels, n_clients)
        for method in methods:
            record = run_federated_gradient(
                data.train_features, data.train_labels, parts, data.test_features, data.test_labels, method=method,
                rounds=rounds, progress=progress, **GRADIENT_SETTINGS,
            )
            reached = record.first_round_reaching(afl["accuracy"])
            at = (reached or int(np.argmax(record.accuracy)) + 1) - 1  # index of the reported round
            runs.append({
                "method": method, "partition": name, "clients": n_clients, "afl_accuracy": afl["accuracy"],
                "best_accuracy": max(record.accuracy), "final_accuracy": record.accuracy[-1],
                "rounds_run": len(record.accuracy), "reached_afl": reached is not None,
                "rounds_to_afl_or_best": at + 1, "bytes_to_afl_or_best": record.bytes_up[at] + record.bytes_down[at],
                "seconds_to_afl_or_best": record.seconds[at],
                "rounds_ratio": (at + 1) / 1, "bytes_ratio": (record.bytes_up[at] + record.bytes_down[at])
                / (afl["bytes_up"] + afl["bytes_down"]), "time_ratio": record.seconds[at] / afl["seconds"],
                "accuracy_per_round": record.accuracy,
            })
    return runs


def payload_sizes(n_classes: int, dims=(256, 512, 1280, 2048, 4096, 8192)) -> list[dict]:
    """What one client sends at each feature dimension d: AFL's statistics once, against the float32 softmax head
    one sampled client exchanges (down and up) in every FedAvg round, and how many such rounds equal one AFL upload."""
    rows = []
    for dim in dims:
        afl = federated.statistics_nbytes(dim, n_classes)
        model = sum(leaf.nbytes for layer in gradient.init_head(dim, n_classes) for leaf in layer.values())
        rows.append({"dim": dim, "classes": n_classes, "afl_bytes_once": afl, "fedavg_bytes_per_round": 2 * model,
                     "fedavg_rounds_per_afl_upload": afl / (2 * model)})
    return rows


def flower_runs(data, n_clients: int, dim: int, fedavg_clients: int, fedavg_rounds: int, show_logs: bool) -> dict:
    """AFL on Flower's simulation runtime with ``n_clients`` virtual clients (first ``dim`` features), checked against
    the in-process simulator; FedAvg through Flower for comparison (``fedavg_rounds`` = 0 skips it)."""
    return {"dim": dim, "afl": flower_afl(data, n_clients, dim, show_logs),
            "fedavg": flower_fedavg(data, fedavg_clients, dim, fedavg_rounds, show_logs) if fedavg_rounds else None}


def flower_simulation(data, parts, dim: int, settings: dict, show_logs: bool) -> tuple[dict, float]:
    """One run on Flower's simulation runtime (``flwr run``), one virtual client per part, on the first ``dim``
    features; returns the server's result and the wall time of the whole run."""
    from federated.flower_app import write_federation
    from federated.flower_runtime import run_flower_simulation

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        write_federation(root / "federation", data.train_features[:, :dim], data.train_labels, parts,
                         data.test_features[:, :dim], data.test_labels)
        started = time.perf_counter()
        result = run_flower_simulation({**settings, "federation": str(root / "federation"), "output": str(root / "out"),
                                        "timeout": 1800.0}, len(parts), show_logs=show_logs)
        return result, time.perf_counter() - started


def flower_afl(data, n_clients: int, dim: int, show_logs: bool) -> dict:
    """One AFL round on Flower's simulation runtime, checked against the in-process simulator (fixed-point hash).

    ``seconds_total`` is the whole ``flwr run`` (SuperLink, Ray and ClientApp start-up and shutdown included),
    ``seconds_server`` the server's part from its start, ``seconds_to_first_upload`` the start-up within it."""
    parts = split("α=0.1", data.train_labels, n_clients)
    afl, seconds = flower_simulation(data, parts, dim, {"precision": "fixed", "ridge": RIDGE, "wave": 100}, show_logs)
    aggregate, _, report = simulate_afl(data.train_features[:, :dim], data.train_labels, parts, ridge=RIDGE,
                                        precision="fixed", test_features=data.test_features[:, :dim],
                                        test_labels=data.test_labels, progress=False)
    return {"clients": n_clients, "accuracy": afl["accuracy"], "bytes_up": afl["bytes_up"],
            "seconds_total": seconds, "seconds_server": afl["seconds"],
            "seconds_to_first_upload": afl["seconds_to_first_upload"], "failures": afl["failures"],
            "rejected": len(afl["rejected"]),
            "matches_in_process": afl["state_hash"] == analytic.state_hash(aggregate.statistics),
            "in_process_accuracy": report.accuracy, "in_process_seconds": report.seconds}


def flower_fedavg(data, n_clients: int, dim: int, rounds: int, show_logs: bool) -> dict:
    """FedAvg through Flower's own strategy, 10% of the clients per round."""
    parts = split("α=0.1", data.train_labels, n_clients)
    result, seconds = flower_simulation(data, parts, dim, {"method": "fedavg", "rounds": rounds, "fraction": 0.1},
                                        show_logs)
    return {"clients": n_clients, "rounds": rounds, "accuracy_per_round": result["accuracy_per_round"],
            "seconds_total": seconds}


def plot(out: Path, afl_rows, runs, centralized_accuracy) -> list[str]:
    plt = pyplot()
    written = []
    figure, axis = plt.subplots(figsize=(6, 4))
    clients = sorted({r["clients"] for r in afl_rows})
    plot_curves(axis, clients, {f"AFL {name}": [next(r["accuracy"] for r in afl_rows if r["partition"] == name
                                                     and r["clients"] == n) for n in clients]
                                for name in dict.fromkeys(r["partition"] for r in afl_rows)})
    axis.axhline(centralized_accuracy, color="black", linestyle=":", label="centralized ridge")
    plain_log_axis(axis, "x")
    axis.set(xlabel="clients", ylabel="test accuracy", title="AFL accuracy does not move with the split")
    axis.legend()
    written.append(str(save(figure, out / "federated_afl_flat.png")))
    if runs:
        figure, axis = plt.subplots(figsize=(6, 4))
        curves = {f"{run['method']} {run['partition']}": run["accuracy_per_round"] for run in runs}
        plot_curves(axis, np.arange(1, len(runs[0]["accuracy_per_round"]) + 1), curves)
        for name in sorted({r["partition"] for r in runs}):
            afl = next(r["afl_accuracy"] for r in runs if r["partition"] == name)
            axis.axhline(afl, linestyle=":", color="gray")
        integer_axis(axis, "x")
        axis.set(xlabel="round", ylabel="test accuracy", title="gradient FL per round (dotted: AFL, one round)")
        axis.legend()
        written.append(str(save(figure, out / "federated_curves.png")))
    return written


def main():
    options = parser(__doc__.splitlines()[0])
    options.add_argument("--flower-clients", type=int, default=None, help="virtual clients in the Flower run")
    options.add_argument("--flower-dim", type=int, default=None,
                         help="feature dimensions sent through Flower (default: all; 256 in --quick)")
    args = options.parse_args()
    quick = args.quick
    data = frozen_features(subset=2_000 if quick else None)
    if quick:  # small n and d: the first 256 feature dimensions
        data = data._replace(train_features=data.train_features[:, :256], test_features=data.test_features[:, :256])
    dim = data.train_features.shape[1]
    print(f"\n{data.dataset}: {len(data.train_labels):,} train / {len(data.test_labels):,} test, {dim}-d features "
          f"from {data.backbone}; ridge γ = {RIDGE}")
    started = time.perf_counter()
    centralized_stats = analytic.accumulate(analytic.init_statistics(dim), data.train_features, data.train_labels)
    centralized = analytic.solve(centralized_stats, RIDGE)
    centralized_accuracy = float(np.mean(analytic.predict_labels(centralized, data.test_features) == data.test_labels))
    centralized_seconds = time.perf_counter() - started

    client_counts = (20, 100) if quick else (10, 100, 1000, 10_000)
    partitions = ("iid", "α=0.1", "shards") if quick else tuple(PARTITIONS)
    afl_rows = afl_grid(data, client_counts, partitions, centralized, progress=not quick)
    paper = paper_form_check(data, 20 if quick else 100, 128 if quick else dim)
    hashes = fixed_hashes(data, 20 if quick else 100, ("iid", "α=0.01") if quick else ("iid", "α=0.01", "shards"),
                          progress=not quick)
    gradient_clients = 20 if quick else 100
    gradient_partitions = ("iid", "α=0.1") if quick else ("iid", "α=0.1", "shards")
    runs = gradient_runs(data, afl_rows, gradient_clients, gradient_partitions, ("fedavg", "fedprox"),
                         rounds=8 if quick else 200, progress=not quick)
    if not quick:
        runs += gradient_runs(data, afl_rows, gradient_clients, ("α=0.1",), ("scaffold",), rounds=200, progress=True)
    flower = flower_runs(data, args.flower_clients or (40 if quick else 1000), min(args.flower_dim or dim, dim),
                         fedavg_clients=100, fedavg_rounds=0 if quick else 10, show_logs=not quick)

    sizes = payload_sizes(len(np.unique(data.train_labels)))
    print_table("What one client sends (8-byte statistics once; float32 head down and up per FedAvg round)", sizes,
                ["dim", "classes", "afl_bytes_once", "fedavg_bytes_per_round", "fedavg_rounds_per_afl_upload"])
    print_table(f"Centralized ridge: accuracy {centralized_accuracy:.4f} in {centralized_seconds:.2f} s; AFL, one round",
                afl_rows, ["clients", "partition", "accuracy", "relative_error", "empty_clients", "clients_below_d",
                           "bytes_per_client", "bytes_up", "seconds"])
    print(f"\npaper form (absolute aggregation folded to sums + intermediary) vs summed form, {paper['clients']} "
          f"clients, d = {paper['dim']}: relative difference {paper['relative_difference']:.2e}; server "
          f"{paper['paper_seconds']:.2f} s against {paper['summed_seconds']:.2f} s (x{paper['ratio']:.2f}, "
          f"interleaved); the clients' local solves {paper['client_solve_seconds']:.1f} s")
    print(f"fixed-point state hash identical across partitions and centralized ({hashes['clients']} clients): "
          f"{hashes['identical']}")
    print_table(f"Gradient FL, {runs[0]['clients']} clients, 10% per round (to AFL's accuracy, or their best)", runs,
                ["method", "partition", "afl_accuracy", "best_accuracy", "reached_afl", "rounds_to_afl_or_best",
                 "rounds_ratio", "bytes_ratio", "time_ratio"])
    print(f"\nFlower simulation runtime, {flower['afl']['clients']} virtual clients (d = {flower['dim']}): "
          f"AFL accuracy {flower['afl']['accuracy']:.4f} in {flower['afl']['seconds_total']:.1f} s (in-process "
          f"{flower['afl']['in_process_seconds']:.1f} s), identical to the in-process aggregate: "
          f"{flower['afl']['matches_in_process']}")
    if flower["fedavg"]:
        print(f"FedAvg on Flower, {flower['fedavg']['clients']} clients, after {flower['fedavg']['rounds']} rounds: "
              f"{flower['fedavg']['accuracy_per_round'][-1]:.4f} ({flower['fedavg']['seconds_total']:.1f} s)")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plots = plot(out, afl_rows, runs, centralized_accuracy)
    write_json(args.out, "federated", {
        "mode": "quick" if quick else "full", "dataset": data.dataset, "backbone": data.backbone,
        "train_samples": len(data.train_labels), "test_samples": len(data.test_labels), "dim": dim, "ridge": RIDGE,
        "centralized": {"accuracy": centralized_accuracy, "seconds": centralized_seconds},
        "payload_sizes": sizes, "afl": afl_rows, "paper_form": paper, "fixed_point": hashes, "gradient": runs,
        "flower": flower, "plots": plots,
    })


if __name__ == "__main__":
    main()
