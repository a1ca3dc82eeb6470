"""Demo section: a 100-client non-IID federation reaches the centralized ridge head in one round.

Called from ``benchmarks.demo`` with the frozen features it already extracted; runs alone as
``python -m benchmarks.demo_federated [--quick]``.
"""

from __future__ import annotations

import time

import numpy as np

import analytic
import federated
from .common import FrozenFeatures, frozen_features, parser, print_table
from federated.baselines import run_federated_gradient
from federated.simulation import simulate_afl


def demo_section(
    data: FrozenFeatures,
    *,
    n_clients: int = 100,
    alpha: float = 0.1,
    ridge: float = 1.0,
    gradient_rounds: int = 20,
    progress: bool = True,
) -> dict:
    """Split the training features over ``n_clients`` clients by Dirichlet(α) label skew, run one AFL round, and
    compare with centralized ridge on the pooled data (and ``gradient_rounds`` of FedAvg; 0 skips it).

    Returns the figures it prints (accuracy, relative weight error, bytes, seconds).
    """
    features, labels = data.train_features, data.train_labels
    parts = federated.dirichlet_partition(labels, n_clients, alpha, seed=0)
    started = time.perf_counter()
    pooled = analytic.accumulate(analytic.init_statistics(features.shape[1]), features, labels)
    centralized = analytic.solve(pooled, ridge)
    centralized_seconds = time.perf_counter() - started
    centralized_accuracy = float(np.mean(analytic.predict_labels(centralized, data.test_features) == data.test_labels))
    _, head, report = simulate_afl(features, labels, parts, ridge=ridge, test_features=data.test_features,
                                   test_labels=data.test_labels, progress=progress,
                                   description=f"AFL, {n_clients} clients, Dirichlet α={alpha}")
    error = float(np.linalg.norm(head.weights - centralized.weights) / np.linalg.norm(centralized.weights))
    rows = [
        {"method": "centralized ridge (pooled data)", "rounds": 1, "accuracy": centralized_accuracy,
         "MB sent": 0.0, "seconds": centralized_seconds},
        {"method": f"AFL, {n_clients} clients", "rounds": 1, "accuracy": report.accuracy,
         "MB sent": (report.bytes_up + report.bytes_down) / 1e6, "seconds": report.seconds},
    ]
    result = {"clients": n_clients, "alpha": alpha, "ridge": ridge, "centralized_accuracy": centralized_accuracy,
              "afl_accuracy": report.accuracy, "relative_error": error, "bytes_per_client": report.bytes_per_client,
              "afl_seconds": report.seconds, "empty_clients": int(sum(p.size == 0 for p in parts)),
              "largest_share_of_one_class": float(np.median([
                  np.bincount(labels[p]).max() / p.size for p in parts if p.size]))}
    if gradient_rounds:
        record = run_federated_gradient(features, labels, parts, data.test_features, data.test_labels,
                                        method="fedavg", rounds=gradient_rounds, progress=progress)
        rows.append({"method": f"FedAvg, {n_clients} clients, 10%/round", "rounds": gradient_rounds,
                     "accuracy": record.accuracy[-1], "MB sent": (record.bytes_up[-1] + record.bytes_down[-1]) / 1e6,
                     "seconds": record.seconds[-1]})
        result["fedavg_accuracy_per_round"] = record.accuracy
    print_table(f"Federated: {n_clients} clients, Dirichlet α = {alpha} (median client: "
                f"{result['largest_share_of_one_class']:.0%} one class, {result['empty_clients']} empty clients)",
                rows, ["method", "rounds", "accuracy", "MB sent", "seconds"])
    print(f"AFL vs centralized ridge: relative weight error {error:.1e}; each client sends "
          f"{report.bytes_per_client / 1e6:.1f} MB once (packed Gram + cross-moments), whatever its number of samples")
    return result


def main():
    args = parser(__doc__.splitlines()[0]).parse_args()
    data = frozen_features(subset=6_000 if args.quick else None)
    demo_section(data, gradient_rounds=5 if args.quick else 20)


if __name__ == "__main__":
    main()
