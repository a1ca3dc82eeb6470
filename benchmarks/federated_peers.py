"""The cheap federated peers against AFL: accuracy against bytes per client, one round against many.

    python -m benchmarks.federated_peers [--quick] [--out results]

Fashion-MNIST (or the digits fallback) through an ImageNet-pretrained MobileNetV2, the data and Dirichlet(α)
partitions of ``benchmarks.federated`` (α = 0.1 and 1; 100 clients in --quick, on a 2,000-sample subset and the
first 256 feature dimensions; 100 and 1,000 clients on all the data otherwise). Methods:

* AFL: the exact one-round ridge (``federated.simulation.simulate_afl``), ridge γ = 1.
* FedCOF: class means and counts; ridge on the Gram estimated from the spread of the client means, with the
  reference code's shrinkage γ_s = 1 per class, i.e. ridge (N − C)·γ_s; the Gram's own decomposition (``FedCOF``)
  and the paper's within-class variant (``FedCOF within``).
* Fed3R: the summed ridge statistics of random Fourier features (a shared seed; σ by the median heuristic on 500
  training features, agreed before the round), ridge γ = 1, at a few widths.
* FedNCM: the nearest pooled class mean.
* FedAvg / FedProx / SCAFFOLD (``federated.baselines``): 10% of the clients per round, one local epoch of SGD,
  learning rate 0.05, batch 32 (FedProx μ = 0.01): 20 rounds in --quick, 200 with 100 clients and 50 with 1,000
  (100 clients train in each of those rounds) otherwise.

Bytes per client count what one client sends up and receives down. The one-round methods: the upload once and the
float64 head back. The gradient methods: the float32 softmax head down and up in every round, twice that for
SCAFFOLD's control variates, i.e. rounds × 2 × parameters × 4 bytes (× 2) for a client that takes part in every
round; their totals count the clients actually sampled. Clients without samples send nothing.

Writes ``<out>/federated_peers.json`` and plots ``federated_peers.png`` (accuracy against bytes per client).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import analytic
from analytic.plotting import pyplot
import federated
from .common import frozen_features, parser, print_table, write_json
from federated.baselines import run_federated_gradient
from federated.simulation import simulate_afl

RIDGE = 1.0
SHRINKAGE = 1.0  # FedCOF's per-class covariance shrinkage γ_s (the reference code's default)
ALPHAS = (0.1, 1.0)
GRADIENT_METHODS = ("fedavg", "fedprox", "scaffold")


def accuracy(head: analytic.Head, features, labels) -> float:
    return float(np.mean(analytic.predict_labels(head, features) == labels))


def kernel_width(features, samples: int = 500, seed: int = 0) -> float:
    """σ of the Gaussian kernel by the median heuristic: the median distance between ``samples`` training rows."""
    rows = features[np.random.default_rng(seed).choice(len(features), samples, replace=False)].astype(np.float64)
    squared = (rows**2).sum(axis=1)
    distances = squared[:, None] + squared[None, :] - 2 * rows @ rows.T
    return float(np.sqrt(np.median(distances[np.triu_indices(samples, 1)])))


def one_round(method: str, head, bytes_up: int, populated: int, seconds: float, data, test_features) -> dict:
    """A one-round method's row: every client that holds samples sends ``bytes_up`` and receives the head."""
    bytes_down = head.weights.nbytes + (0 if head.bias is None else head.bias.nbytes)
    return {"method": method, "rounds": 1, "accuracy": accuracy(head, test_features, data.test_labels),
            "bytes_up_per_client": bytes_up, "bytes_down_per_client": bytes_down,
            "bytes_per_client": bytes_up + bytes_down, "bytes_total": populated * (bytes_up + bytes_down),
            "seconds": seconds}


def afl(data, parts) -> dict:
    _, head, report = simulate_afl(data.train_features, data.train_labels, parts, ridge=RIDGE, progress=False)
    populated = sum(p.size > 0 for p in parts)
    return one_round("AFL", head, report.bytes_per_client, populated, report.seconds, data, data.test_features)


def class_mean_peers(data, parts, class_ids) -> list[dict]:
    """FedNCM and FedCOF (both variants) from the same uploads of class means and counts."""
    started = time.perf_counter()
    uploads = [federated.client_class_means(data.train_features[p], data.train_labels[p], class_ids)
               for p in parts if p.size]
    upload_seconds = time.perf_counter() - started
    bytes_up = federated.class_means_nbytes(data.train_features.shape[1], class_ids.size)
    shrinkage_ridge = (len(data.train_labels) - class_ids.size) * SHRINKAGE  # Σ_c (n_c − 1) γ_s
    rows = []
    for method, solve in (("FedNCM", lambda: federated.fedncm_head(uploads)),
                          ("FedCOF", lambda: federated.fedcof_head(uploads, shrinkage_ridge)),
                          ("FedCOF within", lambda: federated.fedcof_head(uploads, shrinkage_ridge,
                                                                          between_class=False))):
        started = time.perf_counter()
        head = solve()
        seconds = upload_seconds + time.perf_counter() - started
        rows.append(one_round(method, head, bytes_up, len(uploads), seconds, data, data.test_features))
    return rows


def fed3r(data, parts, class_ids, width: int, sigma: float) -> dict:
    """Fed3R at one random-feature width: the clients' statistics folded into the sum as they arrive."""
    layer = analytic.init_random_fourier(data.train_features.shape[1], width, sigma=sigma, seed=0)
    started = time.perf_counter()
    uploads = (federated.random_feature_statistics(layer, data.train_features[p], data.train_labels[p], class_ids)
               for p in parts if p.size)
    head = analytic.solve(federated.aggregate_statistics(uploads), RIDGE)
    seconds = time.perf_counter() - started
    row = one_round(f"Fed3R {width}", head, federated.statistics_nbytes(width, class_ids.size),
                    sum(p.size > 0 for p in parts), seconds, data, analytic.expand(layer, data.test_features))
    return {**row, "width": width, "sigma": sigma}


def gradient(data, parts, method: str, rounds: int) -> dict:
    record = run_federated_gradient(
        data.train_features, data.train_labels, parts, data.test_features, data.test_labels, method=method,
        rounds=rounds, local_epochs=1, client_fraction=0.1, learning_rate=0.05, batch_size=32, mu=0.01,
        progress=False,
    )
    parameters = data.train_features.shape[1] * len(np.unique(data.train_labels)) + len(np.unique(data.train_labels))
    per_round = 2 * parameters * 4 * (2 if method == "scaffold" else 1)  # float32 head down and up (+ controls)
    name = {"fedavg": "FedAvg", "fedprox": "FedProx", "scaffold": "SCAFFOLD"}[method]
    return {"method": name, "rounds": len(record.accuracy), "accuracy": record.accuracy[-1],
            "best_accuracy": max(record.accuracy), "bytes_up_per_client": per_round // 2 * len(record.accuracy),
            "bytes_down_per_client": per_round // 2 * len(record.accuracy),
            "bytes_per_client": per_round * len(record.accuracy),
            "bytes_total": record.bytes_up[-1] + record.bytes_down[-1], "seconds": record.seconds[-1],
            "accuracy_per_round": record.accuracy,
            "bytes_per_client_per_round": [per_round * (r + 1) for r in range(len(record.accuracy))]}


def comparison(data, n_clients: int, alpha: float, widths, sigma: float, rounds: int) -> list[dict]:
    parts = federated.make_partition("dirichlet", data.train_labels, n_clients, alpha=alpha, seed=0, min_size=0)
    class_ids = np.unique(data.train_labels)
    rows = [afl(data, parts), *class_mean_peers(data, parts, class_ids)]
    rows += [fed3r(data, parts, class_ids, width, sigma) for width in widths]
    rows += [gradient(data, parts, method, rounds) for method in GRADIENT_METHODS]
    setting = {"clients": n_clients, "alpha": alpha, "empty_clients": int(sum(p.size == 0 for p in parts))}
    return [{**setting, **row} for row in rows]


MARKERS = {"AFL": "*", "FedCOF": "o", "FedCOF within": "P", "FedNCM": "s", "FedAvg": "v", "FedProx": "^",
           "SCAFFOLD": "D", "Fed3R": "X"}


def family(method: str) -> str:
    """The method's name without the random-feature width (``Fed3R 512`` → ``Fed3R``)."""
    return "Fed3R" if method.startswith("Fed3R") else method


def plot(out: Path, rows: list[dict], centralized_accuracy: float) -> str:
    """Accuracy against bytes per client (log scale), one panel per (clients, α), one marker per method; the
    gradient methods' per-round trajectory as a thin line up to their marker."""
    plt = pyplot()
    settings = list(dict.fromkeys((r["clients"], r["alpha"]) for r in rows))
    figure, axes = plt.subplots(1, len(settings), figsize=(4.2 * len(settings), 3.8), sharey=True, squeeze=False)
    colors = {name: f"C{i}" for i, name in enumerate(MARKERS)}
    for axis, (clients, alpha) in zip(axes[0], settings):
        panel = [r for r in rows if (r["clients"], r["alpha"]) == (clients, alpha)]
        for name in MARKERS:
            group = [r for r in panel if family(r["method"]) == name]
            if not group:
                continue
            if "accuracy_per_round" in group[0]:
                axis.plot(group[0]["bytes_per_client_per_round"], group[0]["accuracy_per_round"], color=colors[name],
                          linewidth=0.8, alpha=0.6)
            axis.plot([r["bytes_per_client"] for r in group], [r["accuracy"] for r in group], marker=MARKERS[name],
                      color=colors[name], linestyle="-" if len(group) > 1 else "none", markersize=8,
                      label=name if name != "Fed3R" else "Fed3R (widths " + ", ".join(str(r["width"]) for r in group)
                      + ")")
        axis.axhline(centralized_accuracy, color="black", linestyle="--", linewidth=0.8, label="centralized ridge")
        axis.set(xscale="log", xlabel="bytes per client (up + down)",
                 title=f"{clients} clients, Dirichlet α = {alpha:g}")
        axis.grid(True, which="major", alpha=0.3)
    axes[0][0].set_ylabel("test accuracy")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    figure.tight_layout()
    path = out / "federated_peers.png"
    figure.savefig(path, dpi=150)
    return str(path)


def main():
    options = parser(__doc__.splitlines()[0])
    options.add_argument("--clients", type=int, nargs="+", default=None,
                         help="client counts (default: 100 in --quick, 100 and 1,000 otherwise)")
    args = options.parse_args()
    quick = args.quick
    data = frozen_features(subset=2_000 if quick else None)
    if quick:  # the first 256 feature dimensions, as benchmarks.federated --quick
        data = data._replace(train_features=data.train_features[:, :256], test_features=data.test_features[:, :256])
    dim = data.train_features.shape[1]
    sigma = kernel_width(data.train_features)
    print(f"\n{data.dataset}: {len(data.train_labels):,} train / {len(data.test_labels):,} test, {dim}-d features "
          f"from {data.backbone}; ridge γ = {RIDGE}; Fed3R kernel width σ = {sigma:.3g}")
    centralized = analytic.solve(analytic.accumulate(analytic.init_statistics(dim), data.train_features,
                                                     data.train_labels), RIDGE)
    centralized_accuracy = accuracy(centralized, data.test_features, data.test_labels)

    client_counts = args.clients or ((100,) if quick else (100, 1000))
    widths = (128, 512) if quick else (512, 2048)
    rows = []
    for n_clients in client_counts:
        rounds = 20 if quick else (200 if n_clients <= 100 else 50)  # 10% of 1,000 clients train in every round
        for alpha in ALPHAS:
            setting = comparison(data, n_clients, alpha, widths, sigma, rounds)
            print_table(f"{n_clients} clients, Dirichlet α = {alpha:g}: accuracy against bytes per client "
                        f"(centralized ridge {centralized_accuracy:.4f}; gradient methods: a client in every round)",
                        setting, ["method", "rounds", "accuracy", "bytes_per_client", "bytes_total", "seconds"])
            rows += setting
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot_path = plot(out, rows, centralized_accuracy)
    write_json(args.out, "federated_peers", {
        "mode": "quick" if quick else "full", "dataset": data.dataset, "backbone": data.backbone,
        "train_samples": len(data.train_labels), "test_samples": len(data.test_labels), "dim": dim, "ridge": RIDGE,
        "fedcof_shrinkage": SHRINKAGE, "fed3r_sigma": sigma, "fed3r_widths": list(widths),
        "centralized_accuracy": centralized_accuracy, "results": rows, "plots": [plot_path],
    })


if __name__ == "__main__":
    main()
