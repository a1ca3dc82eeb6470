"""Exemplar-free continual learning: analytic learners against their baselines on frozen pretrained features.

    python -m benchmarks.continual [--quick] [--out results]

The 30-class stream (Fashion-MNIST + MNIST-5k + Animal-MNIST) through an ImageNet-pretrained MobileNetV2 (64 px):

* B0-Inc5 and B10-Inc2 over three seeds (1993, 1994, 1995), every learner and baseline;
* Si-Blurry (generalized CIL), long-tailed B0-Inc5 (ρ = 0.01) and an online B0-Inc5 stream, seed 1993;
* the speed of the statistics form against a float64 batched-Woodbury recursive inverse (batch 4,096, as the
  reference implementations) on the same expanded features, with the accuracy of both;
* a 500-phase stress run (synthetic, one new class per phase) with time per phase and the distance to joint ridge.

Writes ``<out>/continual.json`` (``continual_quick.json`` with ``--quick``), a CSV of every phase and accuracy-vs-phase
plots. Exactness is relative to the head: the backbone is frozen and never saw the stream.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import analytic
from analytic.plotting import accuracy_per_phase
import continual
from .common import feature_extractor, parser, print_table, write_json
from continual.datasets import thirty_class_dataset

RIDGE = 1.0
JOINT_COUNTERPARTS = ("ACIL", "G-ACIL", "AIR", "G-AIR", "AIR (packed32)", "G-AIR (packed32)", "DS-AL", "GKEAL",
                      "AEF-OCL")
WOODBURY_BATCH = 4096
DS_AL_RATIO = 0.6  # the paper's compensation ratio on CIFAR-100


def load_features(quick: bool):
    """Frozen MobileNetV2 features of the 30-class stream, cached in :func:`feature_cache_dir`."""
    extract, _ = feature_extractor("mobilenetv2_100", image_side=64)
    per_class, test_per_class = (40, 20) if quick else (600, 150)
    return thirty_class_dataset(per_class=per_class, test_per_class=test_per_class, features=extract)


def kernel_width(features: np.ndarray, seed: int = 0) -> float:
    """GKEAL's σ set to the median distance between 500 random feature rows (the paper's σ ≈ 10 is for its scale)."""
    rows = features[np.random.default_rng(seed).choice(features.shape[0], min(500, features.shape[0]), replace=False)]
    distances = np.sqrt(np.maximum(((rows[:, None, :] - rows[None]) ** 2).sum(axis=2), 0.0))
    return float(np.median(distances[np.triu_indices(rows.shape[0], 1)]))


def buffer_layers(in_dim: int, width: int, seed: int):
    """The shared random projection with ReLU (ACIL, DS-AL's main stream) and tanh (DS-AL's compensation stream)."""
    return (analytic.init_buffer(in_dim, width, seed=seed),
            analytic.init_buffer(in_dim, width, seed=seed, activation="tanh"))


LEARNERS = {
    "strict": ["ACIL", "DS-AL", "GKEAL", "AIR", "AIR (packed32)", "AEF-OCL", "RanPAC", "FT (SGD)", "Joint (SGD)",
               "Joint (ridge)", "NCM", "SLDA"],
    "blurry": ["ACIL", "DS-AL", "AIR (packed32)", "AEF-OCL", "RanPAC", "FT (SGD)", "Joint (SGD)", "NCM", "SLDA"],
    "long_tailed": ["ACIL", "AIR", "AIR (packed32)", "AEF-OCL", "DS-AL", "FT (SGD)", "Joint (SGD)", "NCM", "SLDA"],
    "online": ["ACIL", "AIR (packed32)", "AEF-OCL", "FT (SGD)", "NCM", "SLDA"],
}


def make_learners(names, kind: str, classes, in_dim: int, width: int, sigma: float, seed: int, ridge: float = RIDGE,
                  ds_al_ratio: float = DS_AL_RATIO):
    """The learners ``names`` (of :data:`LEARNERS`) of one setting: ``kind`` is "strict", "blurry", "long_tailed"
    or "online"; generalized settings (blurry, online) build G-ACIL / G-AIR under the names ACIL / AIR."""
    relu, tanh = buffer_layers(in_dim, width, seed)
    generalized = kind in ("blurry", "online")
    sgd = {"epochs": 1} if kind == "online" else {}  # online: one pass; otherwise the baselines' defaults
    chosen = {
        "ACIL": lambda: continual.acil(classes, expansion=relu, ridge=ridge, strict=not generalized,
                                       name="G-ACIL" if generalized else "ACIL"),
        "DS-AL": lambda: continual.ds_al(classes, main_expansion=relu, compensation_expansion=tanh, ridge=ridge,
                                         compensation_ridge=ridge, compensation_ratio=ds_al_ratio,
                                         strict=not generalized),
        "GKEAL": lambda: continual.gkeal(classes, width=width, sigma=sigma, seed=seed, ridge=ridge),
        "AIR": lambda: (continual.g_air if generalized else continual.air)(classes, expansion=relu, ridge=ridge),
        "AIR (packed32)": lambda: (continual.g_air if generalized else continual.air)(
            classes, expansion=relu, ridge=ridge, storage="packed32"),
        "AEF-OCL": lambda: continual.aef_ocl(classes, expansion=relu, ridge=ridge, seed=seed, pseudo_cap=400),
        "RanPAC": lambda: continual.ranpac(classes, expansion=relu, seed=seed),
        "FT (SGD)": lambda: continual.fine_tuning(classes, seed=seed, **sgd),
        "Joint (SGD)": lambda: continual.joint_sgd(classes, seed=seed, **sgd),
        "Joint (ridge)": lambda: continual.joint_ridge(classes, expansion=relu, ridge=ridge),
        "NCM": lambda: continual.ncm(classes),
        "SLDA": lambda: continual.slda(classes),
    }
    return [chosen[name]() for name in names]


def learners(kind: str, classes, in_dim: int, width: int, sigma: float, quick: bool, seed: int):
    """The learners of one setting (:data:`LEARNERS`); ``quick`` keeps ACIL, AIR (packed32), NCM and, on strict
    streams, SGD fine-tuning."""
    names = LEARNERS[kind]
    if quick:
        names = [n for n in names if n in ("ACIL", "AIR (packed32)", "NCM") or (kind == "strict" and n == "FT (SGD)")]
    return make_learners(names, kind, classes, in_dim, width, sigma, seed)


def joint_counterpart_accuracy(learner, data, scenario) -> float:
    """The learner trained on all of the scenario's rows in one phase: its test accuracy (the joint counterpart)."""
    rows = np.concatenate(scenario.phases)
    state = learner.learn(learner.init(), data.train_images[rows], data.train_labels[rows])
    return 100.0 * float(np.mean(learner.predict(state, data.test_images) == data.test_labels))


def gkeal_joint_accuracy(data, scenario, width: int, sigma: float, seed: int) -> float:
    """GKEAL's joint counterpart: ridge on the *same* kernel layer — centres drawn from phase 0's rows, as the
    incremental learner draws them — fitted on all rows at once. (Training GKEAL on everything in one phase would
    draw its centres from every class and change the expansion, not just the order of learning.)"""
    layer = analytic.init_gaussian_kernel(data.train_images[scenario.phases[0]], width, sigma=sigma, seed=seed)
    rows = np.concatenate(scenario.phases)
    stats = analytic.accumulate(analytic.init_statistics(width), analytic.expand(layer, data.train_images[rows]),
                                data.train_labels[rows])
    predicted = analytic.predict_labels(analytic.solve(stats, RIDGE), analytic.expand(layer, data.test_images))
    return 100.0 * float(np.mean(predicted == data.test_labels))


def ds_al_joint_accuracy(data, scenario, classes, width: int, seed: int, ratio: float) -> float:
    """DS-AL's joint counterpart as its paper states the equivalence: both streams are ridge solutions over every row
    seen — the main stream on the labels (= ACIL), the compensation stream on the residual targets each phase
    assigned (main weights after that phase, previous labels cleansed). Here every main solution is solved afresh
    from the pooled rows of its prefix of phases, not from the learner's running statistics. (DS-AL given every row
    in one phase is another model: one residual, and no previous labels to cleanse.)"""
    declared = np.unique(np.asarray(classes, np.int64))
    main_layer, compensation_layer = buffer_layers(data.train_images.shape[1], width, seed)
    x_main = analytic.expand(main_layer, data.train_images)
    x_compensation = analytic.expand(compensation_layer, data.train_images)
    compensation = analytic.init_statistics(width, n_targets=declared.size)
    labels, seen = data.train_labels, np.zeros(0, np.int64)
    for t, rows in enumerate(scenario.phases):
        prefix = np.concatenate(scenario.phases[: t + 1])
        main = analytic.solve(analytic.accumulate(analytic.init_statistics(width), x_main[prefix], labels[prefix]),
                              RIDGE)
        residual = np.zeros((rows.size, declared.size))
        residual[np.arange(rows.size), np.searchsorted(declared, labels[rows])] = 1.0
        residual[:, np.searchsorted(declared, main.class_ids)] -= analytic.predict(main, x_main[rows])
        residual[:, np.searchsorted(declared, seen)] = 0.0
        compensation = analytic.accumulate(compensation, x_compensation[rows], residual)
        seen = np.union1d(seen, labels[rows])
    compensation_weights = analytic.solve(compensation, RIDGE).weights[:, np.searchsorted(declared, main.class_ids)]
    scores = (analytic.predict(main, analytic.expand(main_layer, data.test_images))
              + ratio * analytic.expand(compensation_layer, data.test_images) @ compensation_weights)
    return 100.0 * float(np.mean(main.class_ids[np.argmax(scores, axis=1)] == data.test_labels))


def speed_comparison(data, scenario, width: int, seed: int) -> dict:
    """Statistics form (accumulate + Cholesky solve) vs float64 batched Woodbury (batch 4,096), same features."""
    relu = analytic.init_buffer(data.train_images.shape[1], width, seed=seed)
    train = analytic.expand(relu, data.train_images)
    test = analytic.expand(relu, data.test_images)
    learner = continual.acil(scenario.classes, ridge=RIDGE)
    state, recursive = learner.init(), analytic.init_recursive(width, RIDGE)
    statistics_seconds, woodbury_seconds = [], []
    for rows in scenario.phases:
        start = time.perf_counter()
        state = learner.learn(state, train[rows], data.train_labels[rows])
        statistics_seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
        for first in range(0, rows.size, WOODBURY_BATCH):
            batch = rows[first : first + WOODBURY_BATCH]
            recursive = analytic.recursive_learn(recursive, train[batch], data.train_labels[batch])
        woodbury_seconds.append(time.perf_counter() - start)
    weights = state.model.head.weights
    accuracy_statistics = 100 * np.mean(learner.predict(state, test) == data.test_labels)
    predicted = analytic.predict_labels(analytic.recursive_solve(recursive), test)
    accuracy_woodbury = 100 * np.mean(predicted == data.test_labels)
    return {
        "scenario": scenario.name,
        "width": width,
        "phases": scenario.n_phases,
        "statistics_seconds_per_phase": float(np.mean(statistics_seconds)),
        "woodbury_seconds_per_phase": float(np.mean(woodbury_seconds)),
        "speedup": float(np.sum(woodbury_seconds) / np.sum(statistics_seconds)),
        "accuracy_statistics": float(accuracy_statistics),
        "accuracy_woodbury": float(accuracy_woodbury),
        "relative_weight_difference": float(np.linalg.norm(weights - recursive.weights) / np.linalg.norm(weights)),
    }


def stress(n_phases: int, dim: int, per_phase: int, seed: int = 0) -> dict:
    """``n_phases`` strict CIL phases of one new synthetic class each; time per phase and error vs joint ridge."""
    rng = np.random.default_rng(seed)
    centres = 2.0 * rng.normal(size=(n_phases, dim))
    learner = continual.acil(np.arange(n_phases), ridge=RIDGE)
    state, seconds, errors = learner.init(), [], {}
    features, labels = [], []
    for t in range(n_phases):
        x = 1.0 + centres[t] + rng.normal(size=(per_phase, dim))
        y = np.full(per_phase, t)
        features.append(x)
        labels.append(y)
        start = time.perf_counter()
        state = learner.learn(state, x, y)
        seconds.append(time.perf_counter() - start)
        if t + 1 in (1, n_phases // 10, n_phases // 2, n_phases):
            pooled = np.concatenate(features)
            targets = (np.concatenate(labels)[:, None] == np.arange(t + 1)[None]).astype(np.float64)
            oracle = np.linalg.solve(pooled.T @ pooled + RIDGE * np.eye(dim), pooled.T @ targets)
            errors[t + 1] = float(np.linalg.norm(state.model.head.weights - oracle) / np.linalg.norm(oracle))
    return {
        "phases": n_phases,
        "dim": dim,
        "samples_per_phase": per_phase,
        "mean_seconds_per_phase": float(np.mean(seconds)),
        "max_seconds_per_phase": float(np.max(seconds)),
        "relative_weight_error_vs_joint": {str(k): v for k, v in errors.items()},
    }


def main():
    args = parser(__doc__.splitlines()[0]).parse_args()
    out = Path(args.out)
    quick = args.quick
    started = time.perf_counter()
    data = load_features(quick)
    in_dim = data.train_images.shape[1]
    classes = np.arange(30)
    width = 128 if quick else 1024
    sigma = kernel_width(data.train_images)
    print(f"30-class stream: {data.train_images.shape[0]} train / {data.test_images.shape[0]} test rows, "
          f"{in_dim}-d MobileNetV2 features, buffer width {width}, γ = {RIDGE}, GKEAL σ = {sigma:.3g}")

    seeds = continual.SEEDS[:1] if quick else continual.SEEDS
    settings = [("B0-Inc5", "strict", seed, lambda s: continual.class_incremental(data.train_labels, base=0,
                                                                                   increment=5, seed=s))
                for seed in seeds]
    if not quick:
        settings += [("B10-Inc2", "strict", seed,
                      lambda s: continual.class_incremental(data.train_labels, base=10, increment=2, seed=s))
                     for seed in seeds]
    first = continual.SEEDS[0]
    settings += [
        ("Si-Blurry", "blurry", first, lambda s: continual.si_blurry(data.train_labels, n_phases=5, seed=s)),
        ("B0-Inc5-LT0.01", "long_tailed", first, lambda s: continual.long_tailed(
            data.train_labels, continual.class_incremental(data.train_labels, base=0, increment=5, seed=s),
            imbalance_ratio=0.01, seed=s)),
        ("B0-Inc5-online", "online", first, lambda s: continual.online(
            continual.class_incremental(data.train_labels, base=0, increment=5, seed=s),
            batch_size=100 if quick else 256)),
    ]

    runs, joint_rows = [], []
    for setting, kind, seed, make in settings:
        scenario = make(seed)
        for learner in learners(kind, classes, in_dim, width, sigma, quick, seed):
            result = continual.run(learner, scenario, data.train_images, data.train_labels, data.test_images,
                                   data.test_labels)
            runs.append((setting, seed, result))
            print(f"  {setting:16s} seed {seed}  {learner.name:15s} last {result.seen_accuracy[-1]:6.2f}  "
                  f"{np.mean(result.phase_seconds):.3f} s/phase", flush=True)
            if learner.name in JOINT_COUNTERPARTS:
                last = float(result.seen_accuracy[-1])
                counterparts = {"one phase": lambda: joint_counterpart_accuracy(learner, data, scenario)}
                if learner.name == "GKEAL":
                    counterparts = {"same kernel, all rows": lambda: gkeal_joint_accuracy(data, scenario, width,
                                                                                           sigma, seed)}
                if learner.name == "DS-AL":
                    counterparts = {"streams solved jointly": lambda: ds_al_joint_accuracy(
                        data, scenario, classes, width, seed, DS_AL_RATIO), **counterparts}
                for counterpart, accuracy in counterparts.items():
                    joint = accuracy()
                    joint_rows.append({"setting": setting, "seed": seed, "learner": learner.name,
                                       "counterpart": counterpart, "last_acc": last, "joint_acc": joint,
                                       "gap_points": last - joint})

    summaries = [{"setting": s, "seed": seed, **r.summary()} for s, seed, r in runs]
    table = []
    for setting in dict.fromkeys(s for s, _, _ in runs):
        for name in dict.fromkeys(r.learner for s, _, r in runs if s == setting):
            group = [x for x in summaries if x["setting"] == setting and x["learner"] == name]
            mean = lambda key: float(np.mean([g[key] for g in group]))  # noqa: E731
            table.append({
                "setting": setting, "learner": name, "seeds": len(group),
                "avg_inc_acc": mean("average_incremental_accuracy"),
                "avg_inc_std": float(np.std([g["average_incremental_accuracy"] for g in group])),
                "last_acc": mean("last_accuracy"), "last_std": float(np.std([g["last_accuracy"] for g in group])),
                "forgetting": mean("forgetting"), "bwt": mean("backward_transfer"),
                "online_acc": group[0]["online_accuracy"] if group[0]["online_accuracy"] is not None else "",
                "s_per_phase": mean("mean_phase_seconds"), "state_MB": mean("final_state_bytes") / 2**20,
            })
    print_table("Continual learning on the 30-class stream (accuracy %, mean over seeds)", table,
                ["setting", "learner", "seeds", "avg_inc_acc", "avg_inc_std", "last_acc", "last_std", "forgetting",
                 "bwt", "online_acc", "s_per_phase", "state_MB"])

    print_table("Last accuracy against each learner's joint counterpart", joint_rows,
                ["setting", "seed", "learner", "counterpart", "last_acc", "joint_acc", "gap_points"])

    speed = speed_comparison(data, continual.class_incremental(data.train_labels, base=0, increment=5, seed=first),
                             width=width, seed=first)
    print_table("Time per phase: statistics + Cholesky vs float64 batched Woodbury (batch 4,096)", [speed],
                list(speed))
    stress_result = stress(500, 64 if quick else 256, 16 if quick else 40)
    print_table("500-phase stress run (synthetic, one new class per phase)", [
        {**{k: v for k, v in stress_result.items() if k != "relative_weight_error_vs_joint"},
         **{f"err@{k}": v for k, v in stress_result["relative_weight_error_vs_joint"].items()}}],
        ["phases", "dim", "samples_per_phase", "mean_seconds_per_phase", "max_seconds_per_phase"]
        + [f"err@{k}" for k in stress_result["relative_weight_error_vs_joint"]])

    name = "continual_quick" if quick else "continual"
    continual.write_csv([r for _, _, r in runs], out / f"{name}.csv")
    for setting in dict.fromkeys(s for s, _, _ in runs):
        chosen = [(seed, r) for s, seed, r in runs if s == setting]
        seeds_of = sorted({seed for seed, _ in chosen})
        accuracy_per_phase({learner: [r.seen_accuracy for _, r in chosen if r.learner == learner]
                            for learner in dict.fromkeys(r.learner for _, r in chosen)},
                           out / f"{name}_{setting}.png",
                           title=f"{setting}, seed{'s' if len(seeds_of) > 1 else ''} "
                                 f"{', '.join(map(str, seeds_of))}" + (" (mean ± std)" if len(seeds_of) > 1 else ""))
    write_json(args.out, name, {
        "data": {"stream": data.name, "train_rows": int(data.train_images.shape[0]),
                 "test_rows": int(data.test_images.shape[0]), "features": f"mobilenetv2_100 ImageNet 64px, {in_dim}-d",
                 "buffer_width": width, "ridge": RIDGE, "gkeal_sigma": sigma, "seeds": list(seeds)},
        "table": table, "runs": summaries, "joint_counterpart": joint_rows, "speed": speed,
        "stress": stress_result, "seconds": time.perf_counter() - started,
    })


if __name__ == "__main__":
    main()
