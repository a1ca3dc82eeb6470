"""Differentially private AFL (the Gaussian mechanism on the summed statistics) against DP-FedAvg, accuracy vs ε.

    python -m benchmarks.federated_privacy [--quick] [--out results] [--sections central,client-level,...]

The federated benchmark's setting (:mod:`benchmarks.federated`): Fashion-MNIST (or the digits fallback) through an
ImageNet-pretrained MobileNetV2 (1,280-d pooled features; --quick: 2,000 samples and the first 256 dimensions),
Dirichlet α = 0.1 label skew over 100 and 1,000 clients, ε ∈ {0.5, 1, 2, 4, 8, ∞} at δ = 1/n.

- AFL, central DP: every feature vector clipped to C (the median norm of the test split's features, public here; not
  the private training data's), the server adds the Gaussian mechanism once to the exact aggregate
  (:func:`federated.privatize_statistics`, PLD accountant) and solves on the PSD projection
  (:func:`federated.solve_private`) with γ = max(1, the 99% bound on the noise's spectral norm). Three noise draws.
- AFL, distributed DP: the same clipped features truncated onto the 2^-12 grid, each client adds a discrete-Gaussian
  share (:func:`federated.noisy_share`, K_min = all clients, RDP accountant of the distributed discrete Gaussian).
  The securely aggregated sum equals, integer for integer, the exact fixed-point aggregate plus the sum of the
  shares (the masks cancel; tests/test_federated_privacy.py checks it through a SecAgg round of :mod:`federated.secure`),
  which is how it is formed here for 1,000 clients (pairwise masks would cost K² mask vectors).
- AFL, client-level central DP (the unit DP-FedAvg protects): every client keeps at most 64 of its samples
  (:func:`federated.cap_samples`) and the noise covers one whole client, both stds × 64
  (``calibrate_noise(..., max_samples=64)``). Three noise draws per client count.
- DP-FedAvg (client-level DP: a stronger unit than AFL's one sample): FedAvg on the same clipped features with
  Poisson client sampling q = 0.1, each update clipped to S = 1 (set once by a non-private pilot), Gaussian noise
  z·S on the sum, T rounds (50; --quick 10), z calibrated for (ε, δ) over the T rounds by dp-accounting's RDP
  accountant (:func:`federated.calibrate_noise_multiplier`).
- The effect of the positive-definiteness fix (100 clients, central, one draw): the smallest eigenvalue of
  :math:`\\tilde G + \\gamma I` and the accuracy with and without the projection, at γ = 1 and at the noise bound.

Writes ``<out>/federated_privacy.json`` and plots ``federated_privacy.png`` (accuracy vs ε, log x; ε = ∞ as lines).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

import analytic
from analytic.plotting import pyplot
import federated
from .common import add_sections, frozen_features, interleaved_times, parser, print_table, write_json
from federated.baselines import run_federated_gradient
from federated.simulation import simulate_afl

EPSILONS = (0.5, 1.0, 2.0, 4.0, 8.0, math.inf)
RIDGE = 1.0
ALPHA = 0.1
FRAC_BITS = 12
UPDATE_CLIP = 1.0
SAMPLING_RATE = 0.1
CLIENT_CAP = 64  # client-level AFL: the most samples a client contributes
SECTIONS = ("central", "client-level", "distributed", "fedavg", "fix", "timing")


def accuracy(head, data) -> float:
    return float(np.mean(analytic.predict_labels(head, data.test_features) == data.test_labels))


def private_ridge(release) -> float:
    """γ = max(1, the bound that the noise's spectral norm stays under with probability 0.99)."""
    return max(RIDGE, federated.noise_spectral_bound(release, failure_probability=0.01))


def central_rows(data, features, labels, class_ids, epsilons, delta, clip, seeds, max_samples: int = 1) -> list[dict]:
    """Central DP on the exact aggregate of ``features`` (the same for any split, so one aggregate serves every
    client count), protecting one sample (``max_samples`` 1) or one client of at most ``max_samples``."""
    stats = analytic.with_classes(analytic.accumulate(analytic.init_statistics(features.shape[1]), features, labels),
                                  class_ids)
    rows = []
    for epsilon in epsilons:
        started = time.perf_counter()
        calibration = federated.calibrate_noise(epsilon, delta, clip, max_samples=max_samples)
        calibration_seconds = time.perf_counter() - started
        scores, ridges = [], []
        for seed in seeds:
            release = federated.privatize_statistics(stats, calibration, seed=seed)
            ridges.append(private_ridge(release))
            scores.append(accuracy(federated.solve_private(release, ridges[-1]), data))
        rows.append({"epsilon": epsilon, "noise_multiplier": calibration.noise_multiplier,
                     "gram_std": calibration.gram_std, "cross_std": calibration.cross_std, "ridge": float(np.mean(ridges)),
                     "accuracy": float(np.mean(scores)), "accuracy_std": float(np.std(scores)), "draws": len(seeds),
                     "calibration_seconds": calibration_seconds, "max_samples": max_samples, "samples": len(labels)})
    return rows


def client_level_rows(data, features, parts, class_ids, epsilons, delta, clip, seeds) -> list[dict]:
    """Client-level central DP: every client keeps at most CLIENT_CAP of its samples (``federated.cap_samples``),
    and the noise covers one whole client."""
    kept = np.concatenate([part[federated.cap_samples(len(part), CLIENT_CAP, seed=k)] for k, part in enumerate(parts)])
    rows = central_rows(data, features[kept], data.train_labels[kept], class_ids, epsilons, delta, clip, seeds,
                        max_samples=CLIENT_CAP)
    return [{**row, "clients": len(parts)} for row in rows]


def distributed_rows(data, features, parts, class_ids, epsilons, delta, clip, seed: int = 0) -> list[dict]:
    """Distributed DP: the exact fixed-point aggregate plus every client's discrete-Gaussian share."""
    dim, n_clients = features.shape[1], len(parts)
    aggregate, _, _ = simulate_afl(features, data.train_labels, parts, ridge=RIDGE, precision="fixed", progress=False)
    exact = dict(aggregate.total)
    empty = analytic.init_statistics(dim, precision="fixed", frac_bits=FRAC_BITS)
    rows = []
    for epsilon in epsilons:
        calibration = federated.calibrate_distributed_noise(epsilon, delta, clip, n_clients, dim, class_ids.size,
                                                            frac_bits=FRAC_BITS)
        total, started = dict(exact), time.perf_counter()
        for k in range(n_clients):
            share = federated.noisy_share(empty, calibration, class_ids, seed=(seed, k))
            total["gram"] = total["gram"] + share["gram"]
            total["cross"] = total["cross"] + share["cross"]
        noise_seconds = (time.perf_counter() - started) / n_clients
        release = federated.release_from_sum(total, dim, calibration, n_clients)
        half = federated.distributed_epsilon(calibration, n_clients // 2, dim, class_ids.size)
        rows.append({"epsilon": epsilon, "clients": n_clients, "noise_multiplier": calibration.noise_multiplier,
                     "accuracy": accuracy(federated.solve_private(release, private_ridge(release)), data),
                     "epsilon_if_half_drop": half, "share_seconds_per_client": noise_seconds})
    return rows


def fedavg_rows(data, features, parts, epsilons, delta, rounds: int, progress: bool) -> list[dict]:
    rows = []
    for epsilon in epsilons:
        z = federated.calibrate_noise_multiplier(epsilon, delta, sampling_rate=SAMPLING_RATE, rounds=rounds)
        started = time.perf_counter()
        run = run_federated_gradient(features, data.train_labels, parts, data.test_features, data.test_labels,
                                     rounds=rounds, client_fraction=SAMPLING_RATE, learning_rate=0.05, batch_size=32,
                                     update_clip=UPDATE_CLIP, noise_multiplier=z, progress=progress)
        rows.append({"epsilon": epsilon, "clients": len(parts), "noise_multiplier": z, "rounds": rounds,
                     "accuracy": run.accuracy[-1], "best_accuracy": max(run.accuracy),
                     "seconds": time.perf_counter() - started})
    return rows


def fix_effect(data, features, class_ids, epsilons, delta, clip) -> list[dict]:
    """With and without the PSD projection, at γ = 1 and at the noise bound (one draw per ε)."""
    stats = analytic.with_classes(analytic.accumulate(analytic.init_statistics(features.shape[1]), features,
                                                      data.train_labels), class_ids)
    gram = analytic.gram_matrix(stats)
    rows = []
    for epsilon in epsilons:
        release = federated.privatize_statistics(stats, federated.calibrate_noise(epsilon, delta, clip), seed=0)
        eye = np.eye(gram.shape[0])
        noise_norm = float(np.linalg.norm(release.gram - gram, 2))
        row = {"epsilon": epsilon, "noise_norm": noise_norm, "noise_bound": federated.noise_spectral_bound(release)}
        for name, ridge in (("γ=1", RIDGE), ("γ=bound", private_ridge(release))):
            unprojected = analytic.Head(np.linalg.solve(release.gram + ridge * eye, release.cross), class_ids, ridge)
            row[f"min_eig {name}"] = float(np.linalg.eigvalsh(release.gram + ridge * eye)[0])
            row[f"projected {name}"] = accuracy(federated.solve_private(release, ridge), data)
            row[f"unprojected {name}"] = accuracy(unprojected, data)
        rows.append(row)
    return rows


def solve_times(features, labels, class_ids, delta, clip, repeats: int) -> dict:
    """Steady-state seconds: the private release and solve against the non-private Cholesky solve."""
    stats = analytic.with_classes(analytic.accumulate(analytic.init_statistics(features.shape[1]), features, labels),
                                  class_ids)
    calibration = federated.calibrate_noise(1.0, delta, clip)
    release = federated.privatize_statistics(stats, calibration, seed=0)
    contenders = {"privatize": lambda: federated.privatize_statistics(stats, calibration, seed=1),
                  "solve_private": lambda: federated.solve_private(release, RIDGE),
                  "solve (non-private)": lambda: analytic.solve(stats, RIDGE)}
    for function in contenders.values():
        function()
    return interleaved_times(contenders, repeats)


def method_series(central, client_level, distributed, fedavg, clients) -> list[tuple[str, int | None, list[dict]]]:
    """``(method, client count or None for any, its rows)`` of every method and client count; the rows are empty
    where a section did not run."""
    return [("AFL central", None, central)] + [
        (name, n_clients, [r for r in rows if r["clients"] == n_clients]) for n_clients in clients
        for name, rows in (("AFL distributed", distributed), ("AFL client-level", client_level), ("DP-FedAvg", fedavg))]


def plot(out: Path, series, clients) -> str:
    """Accuracy against ε for every series of :func:`method_series` that ran (its ε = ∞ accuracy dotted)."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    finite = [e for e in EPSILONS if e != math.inf]
    colours = {"AFL central": "C0", "AFL distributed": "C1", "AFL client-level": "C2", "DP-FedAvg": "C3"}
    markers = {"AFL central": "o", "AFL distributed": "^", "AFL client-level": "D", "DP-FedAvg": "s"}
    styles = {None: "-", clients[0]: "-", clients[1]: "--"}
    for name, n_clients, rows in series:
        if not rows:
            continue
        points = [r for r in rows if r["epsilon"] != math.inf]
        label = (f"{name}, {n_clients:,} clients" if n_clients else f"{name} DP (any client count)") + (
            " (client-level)" if name == "DP-FedAvg" else "")
        axis.errorbar([r["epsilon"] for r in points], [r["accuracy"] for r in points],
                      yerr=[r.get("accuracy_std", 0.0) for r in points], color=colours[name], marker=markers[name],
                      linestyle=styles[n_clients], capsize=3, label=label)
        axis.axhline(next(r["accuracy"] for r in rows if r["epsilon"] == math.inf), color=colours[name],
                     linestyle=":", linewidth=1)
    axis.set(xscale="log", xlabel="ε (δ = 1/n)", ylabel="test accuracy", xticks=finite,
             title="Accuracy against ε (dotted: ε = ∞)")
    axis.minorticks_off()
    axis.set_xticklabels([f"{e:g}" for e in finite])
    axis.legend(fontsize=7)
    figure.tight_layout()
    path = out / "federated_privacy.png"
    figure.savefig(path, dpi=150)
    return str(path)


def json_safe(value):
    """ε = ∞ as the string "inf" (JSON has no infinity)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return "inf" if isinstance(value, float) and math.isinf(value) else value


def accuracy_table(series) -> list[dict]:
    """One row per ε: the accuracy of every series of :func:`method_series` that ran (and the central draws' std)."""
    table = []
    for epsilon in EPSILONS:
        row = {"ε": epsilon}
        for name, n_clients, rows in series:
            for r in (r for r in rows if r["epsilon"] == epsilon):
                row[name if n_clients is None else f"{name} {n_clients}"] = r["accuracy"]
                if n_clients is None:
                    row["± (3 draws)"] = r["accuracy_std"]
        table.append(row)
    return table


def main():
    args = parser(__doc__.splitlines()[0])
    add_sections(args, SECTIONS)
    args = args.parse_args()
    sections = args.sections
    quick = args.quick
    data = frozen_features(subset=2_000 if quick else None)
    if quick:
        data = data._replace(train_features=data.train_features[:, :256], test_features=data.test_features[:, :256])
    n, dim = data.train_features.shape
    class_ids = np.unique(data.train_labels)
    delta = 1.0 / n
    clip = float(np.median(np.linalg.norm(data.test_features, axis=1)))
    features = federated.clip_features(data.train_features, clip, frac_bits=FRAC_BITS)  # on the grid for both forms
    clients, rounds = (100, 1000), 10 if quick else 50
    print(f"\n{data.dataset}: {n:,} train / {len(data.test_labels):,} test, {dim}-d features from {data.backbone}; "
          f"clip C = {clip:.2f}, δ = 1/n = {delta:.2e}, Dirichlet α = {ALPHA}")

    exact = analytic.solve(analytic.accumulate(analytic.init_statistics(dim), data.train_features, data.train_labels),
                           RIDGE)
    unclipped_accuracy = accuracy(exact, data)
    central, distributed, fedavg, client_level, effect, seconds = [], [], [], [], [], {}
    if "central" in sections:
        central = central_rows(data, features, data.train_labels, class_ids, EPSILONS, delta, clip, seeds=(0, 1, 2))
    for n_clients in clients:
        parts = federated.make_partition("dirichlet", data.train_labels, n_clients, alpha=ALPHA, seed=0, min_size=0)
        if "client-level" in sections:
            client_level += client_level_rows(data, features, parts, class_ids, EPSILONS, delta, clip,
                                              seeds=(0, 1, 2))
        if "distributed" in sections:
            distributed += distributed_rows(data, features, parts, class_ids, EPSILONS, delta, clip)
        if "fedavg" in sections:
            fedavg += fedavg_rows(data, features.astype(np.float32), parts, EPSILONS, delta, rounds,
                                  progress=not quick)
    if "fix" in sections:
        effect = fix_effect(data, features, class_ids, EPSILONS, delta, clip)
    if "timing" in sections:
        seconds = solve_times(features, data.train_labels, class_ids, delta, clip, repeats=3)

    series = method_series(central, client_level, distributed, fedavg, clients)
    table = accuracy_table(series)
    print_table(f"Test accuracy vs ε (δ = 1/n; AFL central and distributed: sample-level DP, one round; AFL "
                f"client-level: central, ≤ {CLIENT_CAP} samples per client, one round; DP-FedAvg: client-level DP, "
                f"{rounds} rounds, q = {SAMPLING_RATE}, S = {UPDATE_CLIP}); non-private unclipped AFL "
                f"{unclipped_accuracy:.4f}", table, list(dict.fromkeys(key for row in table for key in row)))
    if central:
        print_table("AFL central DP: noise and ridge", central,
                    ["epsilon", "noise_multiplier", "gram_std", "cross_std", "ridge", "accuracy", "accuracy_std"])
    if client_level:
        print_table(f"AFL client-level central DP (each client capped at {CLIENT_CAP} samples; mean of 3 draws)",
                    client_level, ["epsilon", "clients", "samples", "gram_std", "ridge", "accuracy", "accuracy_std"])
    if distributed:
        print_table("AFL distributed DP: ε that holds if half the clients drop out", distributed,
                    ["epsilon", "clients", "noise_multiplier", "accuracy", "epsilon_if_half_drop",
                     "share_seconds_per_client"])
    if fedavg:
        print_table("DP-FedAvg", fedavg, ["epsilon", "clients", "noise_multiplier", "rounds", "accuracy",
                                          "best_accuracy", "seconds"])
    if effect:
        print_table("Positive definiteness: the PSD projection against none, at γ = 1 and at the noise bound (100 "
                    "clients, central, one draw)", effect, list(effect[0]))
    if seconds:
        print("\nsteady-state seconds (interleaved, best of 3): "
              + ", ".join(f"{name} {value:.3f}" for name, value in seconds.items()))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figure = plot(out, series, clients)
    write_json(args.out, "federated_privacy", json_safe({
        "mode": "quick" if quick else "full", "sections": sorted(sections), "dataset": data.dataset,
        "backbone": data.backbone, "train_samples": n, "test_samples": len(data.test_labels), "dim": dim,
        "delta": delta, "clip_norm": clip, "dirichlet_alpha": ALPHA, "base_ridge": RIDGE, "frac_bits": FRAC_BITS,
        "update_clip": UPDATE_CLIP, "sampling_rate": SAMPLING_RATE, "fedavg_rounds": rounds,
        "unclipped_accuracy": unclipped_accuracy, "client_cap": CLIENT_CAP, "table": table, "central": central,
        "client_level": client_level, "distributed": distributed, "fedavg": fedavg, "fix_effect": effect,
        "seconds": seconds, "plots": [figure],
    }))


if __name__ == "__main__":
    main()
