"""Unlearning against the network: gradient methods on a fine-tuned backbone, residual feature alignment, SISA,
beside the exact analytic head.

    python -m benchmarks.unlearning_network [--quick] [--out results] [--networks NAME ...] [--seeds N]
        [--dataset fashion_mnist|cifar10|cifar100] [--data-root DIR]

The original model is a network trained end to end by SGD (momentum 0.9, weight decay 5e-4; batch 128, 64 in
--quick) on Fashion-MNIST, or CIFAR-10/100 from their python pickles (a seeded, class-stratified subset):

* ``mobilenetv2`` / ``efficientnet_lite0``: the ImageNet-pretrained backbone at 32 px; the stem and every block but
  the last ``--trainable-blocks`` stay frozen (their activations are computed once and cached), the last blocks, the
  1x1 head convolution and a new classifier are fine-tuned (BatchNorm keeps its ImageNet running statistics);
* ``small_resnet``: a small residual CNN (width 8, two stages) trained from scratch on the images average-pooled to
  half their side (14 px for Fashion-MNIST, 16 for CIFAR) and standardized per channel with the dataset's usual
  constants, every layer trained (the field's "ResNet-18 on CIFAR-10" stand-in, sized for a 2-core CPU).

The gold standard is the same network retrained by the same recipe without the forget set. Methods (each with the
learning rate of the grid {0.1, 1} x the training learning rate (1x in --quick) that gives the smallest Avg. Gap to
the retrained network; a rate whose run diverges never wins): FT, GA, NegGrad+, RL,
ℓ1-sparse, SalUn, SCRUB, Boundary Shrink over every trainable weight; residual feature alignment (LoRA adapters,
only they train); SISA (shards retrained from their last clean checkpoint: exact for the ensemble); and the analytic
ridge head, exact, (a) on the frozen pretrained backbone's features — exact with respect to full retraining, since
the backbone never saw these images — and (b) on the original network's features — exact for the head only.
Scenarios: forgetting one seeded class, and a seeded random 10% of the training set.

Writes ``<out>/unlearning_network.json`` and ``<out>/unlearning_network.png``.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from tqdm.auto import tqdm

import unlearning
from analytic.backbones import create_backbone
from analytic.features import Preprocess, preprocess_jax
from analytic.plotting import pyplot
from unlearning import methods, metrics

from .common import load_images, parser, print_table, ridge_choice, write_json
from .unlearning import RIDGES

NETWORKS = ("mobilenetv2", "efficientnet_lite0", "small_resnet")
DATASETS = ("fashion_mnist", "cifar10", "cifar100")
# Per-channel pixel mean and std of the full training sets (the usual normalization constants); another dataset is
# standardized with its own training images' statistics.
PIXEL_STATISTICS = {"fashion_mnist": (0.2860, 0.3530),
                    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
                    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))}
BACKBONES = {"mobilenetv2": "mobilenetv2_100", "efficientnet_lite0": "efficientnet_lite0"}
GRADIENT = ("FT", "GA", "NegGrad+", "RL", "l1-sparse", "SalUn", "SCRUB", "BoundaryShrink")
ALIGNMENT = "LoRA alignment"
IMAGE_SIDE = 32
SETTINGS = {
    "quick": {"subset": 1_000, "networks": ("mobilenetv2",), "seeds": 1, "epochs": 3, "method_epochs": 2,
              "methods": ("FT", "NegGrad+"), "grid": (1.0,), "scenarios": ("random 10%",), "mia_samples": 200,
              "shards": 3, "slices": 2, "width": 8, "batch": 64,
              "learning_rate": {"mobilenetv2": 1e-3, "efficientnet_lite0": 1e-3, "small_resnet": 0.02}},
    "full": {"subset": 1_500, "networks": NETWORKS, "seeds": 3, "epochs": 10, "method_epochs": None,
             "methods": (*GRADIENT, ALIGNMENT), "grid": (0.1, 1.0), "scenarios": ("class", "random 10%"),
             "mia_samples": 1_000, "shards": 5, "slices": 2, "width": 8, "batch": 128,
             "learning_rate": {"mobilenetv2": 2e-3, "efficientnet_lite0": 2e-3, "small_resnet": 0.02}},
}
FAMILY_EXACT = "exact"


def half_resolution(images: np.ndarray) -> np.ndarray:
    """2x2 average pooling of (n, h, w[, c]) uint8 images to float32 (n, h/2, w/2, c) in [0, 1] (28 px → 14,
    32 → 16)."""
    n, height, width, channels = *images.shape[:3], (images.shape[3] if images.ndim == 4 else 1)
    return images.reshape(n, height // 2, 2, width // 2, 2, channels).astype(np.float32).mean(axis=(2, 4)) / 255.0


def cached_inputs(name, data, trainable_blocks, width):
    """The network and its inputs: the cached activations of the frozen prefix (pretrained backbones, with their
    pooled pretrained features for the analytic head (a)) or normalized images (the small ResNet)."""
    if name == "small_resnet":
        pooled_train = half_resolution(data.train_images)
        own = pooled_train.mean(axis=(0, 1, 2)), pooled_train.std(axis=(0, 1, 2))
        mean, std = (np.asarray(value, np.float32) for value in PIXEL_STATISTICS.get(data.name, own))

        def scale(images):
            return (half_resolution(images) - mean) / std

        network = unlearning.small_resnet(len(data.class_names), input_shape=pooled_train.shape[1:], width=width)
        return network, scale(data.train_images), scale(data.test_images), None
    backbone = create_backbone(BACKBONES[name], weights="pretrained")
    prefix, network = unlearning.split_backbone(backbone, len(data.class_names), trainable_blocks=trainable_blocks,
                                                image_size=IMAGE_SIDE)
    preprocess = Preprocess.for_backbone(backbone, size=IMAGE_SIDE)

    def activations(images):
        return np.concatenate([np.asarray(prefix(preprocess_jax(preprocess, images[i : i + 256])))
                               for i in tqdm(range(0, len(images), 256), desc=f"{name} frozen blocks", leave=False)])

    train, test = activations(data.train_images), activations(data.test_images)
    pretrained = network.initial(0)  # the classifier differs between seeds, the features do not
    features = jax.jit(network.features)
    pooled = lambda x: np.concatenate([np.asarray(features(pretrained, x[i : i + 512]))  # noqa: E731
                                       for i in range(0, len(x), 512)])
    return network, train, test, (pooled(train), pooled(test))


def make_tasks(inputs, labels, test_inputs, test_labels, n_classes, scenarios, seed):
    """The seeded forgetting requests: one class, and/or a random 10% of the training set."""
    rng = np.random.default_rng(seed)
    tasks = []
    for scenario in scenarios:
        if scenario == "class":
            c = int(rng.integers(n_classes))
            tasks.append((f"class {c}", methods.UnlearningTask(inputs, labels, labels == c, test_inputs, test_labels,
                                                               (c,), n_classes)))
        else:
            mask = np.zeros(len(labels), bool)
            mask[rng.choice(len(labels), len(labels) // 10, replace=False)] = True
            tasks.append(("random 10%", methods.UnlearningTask(inputs, labels, mask, test_inputs, test_labels, (),
                                                               n_classes)))
    return tasks


def head_task(task, features):
    """The same request over features instead of network inputs."""
    return methods.UnlearningTask(features[0], task.train_labels, task.forget_mask, features[1], task.test_labels,
                                  task.forgotten_classes, task.n_classes)


def analytic_rows(task, features, label, reference_scores, mia_samples):
    """The exact ridge head downdated on ``features``, its closed-form retrain, their gaps to each and to the
    retrained network."""
    on_features = head_task(task, features)
    x, y = on_features.train_features, on_features.train_labels
    ridge = ridge_choice(x, y, RIDGES).ridge
    head = unlearning.init_unlearning_head(x.shape[1], ridge, per_class=bool(task.forgotten_classes))
    for i in range(0, len(y), 8192):
        head = unlearning.learn(head, x[i : i + 8192], y[i : i + 8192])
    head = unlearning.factorize(head)
    exact = methods.ExactUnlearner(head, receipt=False, name=f"analytic head, {label}").unlearn(on_features)
    closed_form = methods.ClosedFormRetrain(ridge).unlearn(on_features)
    exact_scores = methods.evaluate(exact, on_features, mia_samples=mia_samples)
    own = methods.compare_outputs(exact, closed_form, on_features)
    return [{"method": exact.name, "family": FAMILY_EXACT, "learning_rate": None, "ridge": ridge, **exact_scores,
             "avg_gap": metrics.avg_gap(exact_scores, methods.evaluate(closed_form, on_features,
                                                                        mia_samples=mia_samples)),
             "avg_gap_vs_network_retrain": metrics.avg_gap(exact_scores, reference_scores),
             "seconds": exact.seconds, "weight_error_vs_own_retrain": own["weight_error"],
             "argmax_agreement_vs_own_retrain": own["argmax_agreement"]}]


def scenario_rows(name, network, original, sisa, task, features, setting, learning_rate):
    """Every method on one request, scored against the network retrained without the forget set."""
    mia, epochs, batch = setting["mia_samples"], setting["method_epochs"], setting["batch"]
    evaluate = lambda model: methods.evaluate(model, task, mia_samples=mia)  # noqa: E731
    retrained = unlearning.NetworkUnlearner("retrain", network, original, learning_rate, epochs=setting["epochs"],
                                            batch_size=batch).unlearn(task)
    reference = evaluate(retrained)
    test_x, _ = task.evaluation_test
    reference_logits = retrained.logits(test_x)

    def row(model, scores, family, trials=None):
        logits = model.logits(test_x)
        entry = {"method": model.name, "family": family, "learning_rate": model.learning_rate, **scores,
                 "avg_gap": metrics.avg_gap(scores, reference), "seconds": model.seconds,
                 "mean_kl": metrics.mean_kl(logits, reference_logits),
                 "argmax_agreement": metrics.argmax_agreement(model.predict(test_x), retrained.predict(test_x))}
        entry["avg_gap_vs_network_retrain"] = entry["avg_gap"]
        if trials is not None:
            entry["grid"] = [{k: t[k] for k in ("learning_rate", "avg_gap", *metrics.GAP_METRICS)} for t in trials]
        return entry

    rows = [row(retrained, reference, "gold standard")]
    candidates = [(m, lambda lr, m=m: unlearning.NetworkUnlearner(m, network, original, lr, epochs=epochs,
                                                                  batch_size=batch))
                  for m in setting["methods"] if m != ALIGNMENT]
    if ALIGNMENT in setting["methods"]:
        candidates.append((ALIGNMENT, lambda lr: unlearning.ResidualAlignment(
            network, original, lr, batch_size=batch, **({} if epochs is None else {"epochs": epochs}))))
    grid = [factor * learning_rate for factor in setting["grid"]]
    for method, make in tqdm(candidates, desc=name, leave=False):
        model, scores, trials = methods.best_of_grid(make, grid, task, reference, mia_samples=mia)
        steady = make(model.learning_rate).unlearn(task)  # compiled by the grid: its time is the steady state
        rows.append({**row(model, scores, "approximate", trials), "seconds": steady.seconds,
                     "first_call_seconds": model.seconds})
    sisa_model = unlearning.SisaUnlearner(sisa).unlearn(task)
    rows.append({**row(sisa_model, evaluate(sisa_model), FAMILY_EXACT), "speedup_vs_retrain":
                 retrained.seconds / sisa_model.seconds,
                 "shards_retrained": int(np.unique(sisa.shard_of[task.forget_mask]).size)})
    if features[0] is not None:
        rows += analytic_rows(task, features[0], "frozen pretrained backbone (exact)", reference, mia)
    rows += analytic_rows(task, features[1], "original network's features (exact for the head only)", reference, mia)
    for entry in rows:
        entry["scenario"] = name
    return rows


def network_features(network, params, inputs):
    """The network's penultimate features of ``inputs``, in batches."""
    features = jax.jit(network.features)
    return np.concatenate([np.asarray(features(params, inputs[i : i + 512])) for i in range(0, len(inputs), 512)])


def run_network(name, data, setting, trainable_blocks):
    """Every seed and scenario on one network; returns (rows, facts about the network and its training)."""
    start = time.perf_counter()
    network, train_x, test_x, pretrained = cached_inputs(name, data, trainable_blocks, setting["width"])
    prefix_seconds = time.perf_counter() - start
    y, test_y, n_classes = data.train_labels, data.test_labels, len(data.class_names)
    learning_rate, batch, rows, seeds = setting["learning_rate"][name], setting["batch"], [], []
    for seed in range(setting["seeds"]):
        start = time.perf_counter()
        original = unlearning.train_network(network, network.initial(seed), train_x, y, epochs=setting["epochs"],
                                            learning_rate=learning_rate, batch_size=batch, seed=seed)
        original_seconds = time.perf_counter() - start
        start = time.perf_counter()
        sisa = unlearning.train_sisa(network, train_x, y, shards=setting["shards"], slices=setting["slices"],
                                     epochs_per_slice=max(1, setting["epochs"] // setting["slices"]),
                                     learning_rate=learning_rate, batch_size=batch, seed=seed)
        sisa_seconds = time.perf_counter() - start
        original_accuracy = 100 * np.mean(np.argmax(np.asarray(network.logits(original, test_x)), 1) == test_y)
        sisa_accuracy = 100 * np.mean(np.argmax(sisa.logits(test_x), 1) == test_y)
        features = (pretrained, (network_features(network, original, train_x), network_features(network, original,
                                                                                                 test_x)))
        seeds.append({"seed": seed, "original_seconds": original_seconds,
                      "seconds_per_epoch": original_seconds / setting["epochs"], "sisa_train_seconds": sisa_seconds,
                      "original_test_accuracy": original_accuracy, "sisa_test_accuracy": sisa_accuracy})
        tasks = make_tasks(train_x, y, test_x, test_y, n_classes, setting["scenarios"], seed)
        for scenario, task in tasks:
            print(f"{name}, seed {seed}, {scenario}: forgetting {int(task.forget_mask.sum()):,} samples", flush=True)
            for entry in scenario_rows(scenario, network, original, sisa, task, features, setting, learning_rate):
                rows.append({"network": name, "seed": seed, **entry})
    return rows, {"network": name, "description": network.name, "trainable": network.description,
                  "parameters": int(sum(np.size(leaf) for leaf in jax.tree.leaves(network.initial(0)))),
                  "input_shape": list(train_x.shape[1:]), "frozen_prefix_seconds": prefix_seconds,
                  "learning_rate": learning_rate, "seeds": seeds}


def summarize(rows):
    """Mean and standard deviation over seeds of each (network, scenario kind, method)."""
    keys = ("UA", "RA", "TA", "MIA", "avg_gap", "avg_gap_vs_network_retrain", "seconds", "mean_kl",
            "argmax_agreement")
    groups = {}
    for r in rows:
        kind = "class" if r["scenario"].startswith("class") else r["scenario"]
        groups.setdefault((r["network"], kind, r["method"]), []).append(r)
    summary = []
    for (network, kind, method), group in groups.items():
        entry = {"network": network, "scenario": kind, "method": method, "family": group[0]["family"],
                 "seeds": len(group)}
        for key in keys:
            values = np.array([g.get(key, np.nan) for g in group], float)
            entry[key], entry[f"{key}_std"] = float(np.nanmean(values)) if np.isfinite(values).any() else np.nan, \
                float(np.nanstd(values)) if np.isfinite(values).any() else np.nan
        if "speedup_vs_retrain" in group[0]:
            entry["speedup_vs_retrain"] = float(np.mean([g["speedup_vs_retrain"] for g in group]))
        summary.append(entry)
    return summary


def plot(summary, path):
    """RTE (log) against Avg. Gap to the retrained network, one marker per method, error bars over seeds; one
    panel per network and scenario; exact methods drawn as stars."""
    plt = pyplot()
    panels = list(dict.fromkeys((s["network"], s["scenario"]) for s in summary))
    figure, axes = plt.subplots(1, len(panels), figsize=(max(8.0, 4.6 * len(panels)), 4.6), squeeze=False)
    names = list(dict.fromkeys(s["method"] for s in summary))
    colors = plt.get_cmap("tab20").colors
    handles = {}
    for axis, (network, scenario) in zip(axes[0], panels):
        for s in (s for s in summary if (s["network"], s["scenario"]) == (network, scenario)):
            exact = s["family"] == FAMILY_EXACT
            handles[s["method"]] = axis.errorbar(
                s["seconds"], s["avg_gap"], xerr=s["seconds_std"], yerr=s["avg_gap_std"], marker="*" if exact else "o",
                markersize=12 if exact else 6, color=colors[names.index(s["method"]) % len(colors)], capsize=2,
                linestyle="none")
        axis.set_xscale("log")
        axis.set_xlabel("RTE: wall time of the unlearning call (s)")
        axis.set_title(f"{network}, {scenario} forgetting", fontsize=10)
        axis.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("Avg. Gap to the retrained model (points)")
    figure.legend(list(handles.values()), list(handles), loc="lower center", bbox_to_anchor=(0.5, 0.055), ncol=2,
                  fontsize=7, frameon=False)
    figure.text(0.5, 0.005, "stars: exact methods (analytic heads: gap to their retrained head, 0 by construction);\n"
                "SISA and dots: gap to the network retrained without the forget set; bars: std over seeds",
                ha="center", fontsize=7)
    figure.tight_layout(rect=(0, 0.08 + 0.04 * ((len(handles) + 1) // 2), 1, 1))
    figure.savefig(path, dpi=150)
    print(f"wrote {path}")


def main():
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--networks", nargs="+", choices=NETWORKS, default=None, help="networks to run")
    args.add_argument("--seeds", type=int, default=None, help="seeds (default: 1 quick, 3 full)")
    args.add_argument("--trainable-blocks", type=int, default=3, help="fine-tuned blocks of pretrained backbones")
    args.add_argument("--dataset", choices=DATASETS, default="fashion_mnist",
                      help="the images (CIFAR from their python pickles under --data-root or $CIFAR10_DIR / "
                           "$CIFAR100_DIR)")
    args.add_argument("--data-root", default=None, help="the CIFAR directory (or its parent)")
    args = args.parse_args()
    setting = dict(SETTINGS["quick" if args.quick else "full"])
    if args.networks:
        setting["networks"] = tuple(args.networks)
    if args.seeds:
        setting["seeds"] = args.seeds
    start = time.perf_counter()
    data = load_images(subset=setting["subset"], dataset=args.dataset, path=args.data_root)
    print(f"\n{data.name}: {len(data.train_labels):,} train / {len(data.test_labels):,} test images")
    rows, networks = [], []
    for name in setting["networks"]:
        network_rows, facts = run_network(name, data, setting, args.trainable_blocks)
        rows += network_rows
        networks.append(facts)
        print_table(f"{name}: {facts['description']} — trainable: {facts['trainable']}", facts["seeds"],
                    ["seed", "original_test_accuracy", "sisa_test_accuracy", "seconds_per_epoch",
                     "original_seconds", "sisa_train_seconds"])
        summary = summarize(rows)
        write_json(args.out, "unlearning_network", {  # after every network: a later failure keeps what was measured
            "mode": "quick" if args.quick else "full", "dataset": data.name, "n_train": len(data.train_labels),
            "n_test": len(data.test_labels), "image_side": IMAGE_SIDE,
            "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in setting.items()},
            "trainable_blocks": args.trainable_blocks, "networks": networks,
            "note": "SISA is exact with respect to retraining the ensemble; the analytic head on the frozen pretrained "
                    "backbone is exact with respect to full retraining (the backbone never saw these images); on the "
                    "original network's features it is exact for the head only",
            "seconds": time.perf_counter() - start, "load_average_at_end": os.getloadavg(), "summary": summary,
            "rows": rows})
    columns = ["method", "family", "UA", "RA", "TA", "MIA", "avg_gap", "avg_gap_std", "avg_gap_vs_network_retrain",
               "seconds", "seconds_std", "mean_kl", "argmax_agreement", "speedup_vs_retrain"]
    for network, scenario in dict.fromkeys((s["network"], s["scenario"]) for s in summary):
        print_table(f"{network}, {scenario} forgetting (mean over seeds; Avg. Gap, KL and agreement against the "
                    "network retrained without the forget set)",
                    [s for s in summary if (s["network"], s["scenario"]) == (network, scenario)], columns)
    print(f"\n{len(networks)} networks in {(time.perf_counter() - start) / 60:.1f} min")
    plot(summary, f"{args.out}/unlearning_network.png")


if __name__ == "__main__":
    main()
