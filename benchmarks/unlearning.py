"""Exact unlearning by downdating, beside gradient-based unlearning, on the same frozen features.

    python -m benchmarks.unlearning [--quick] [--out results] [--hidden H]

Fashion-MNIST (falls back to scikit-learn digits, saying so) through an ImageNet-pretrained MobileNetV2. The
analytic head forgets by subtracting statistics (:mod:`unlearning.exact`); the gradient methods (FT, GA, NegGrad+,
RL, ℓ1-sparse, SalUn, SCRUB, Boundary Shrink, Forget Vector) start from a softmax head trained by SGD on the same
features, each with the learning rate of its grid that gives the smallest Avg. Gap. Scenarios: class-wise
forgetting (a seeded subset of classes, one at a time) and random forgetting of 1% and 10% of the training set.

Every method is compared to the retrained model of its own family: the exact downdate to the closed-form head
retrained on the retained features, the gradient methods to the SGD head retrained on them. Exactness is relative
to retraining the *head*: the backbone was pretrained on ImageNet and never saw these images.

Also measured: speed of class forgetting from stored statistics against closed-form and gradient retraining, and of
forgetting k samples through the low-rank correction of the kept factor against subtracting and refactoring; and a
regression head (scikit-learn's diabetes data) forgetting exactly beside gradient unlearning of the same linear head.
Writes ``<out>/unlearning.json`` and ``<out>/unlearning.png``.
"""

from __future__ import annotations

import os
import time

import numpy as np

import analytic
import unlearning
from analytic import gradient
from analytic.plotting import method_style, plain_log_axis, pyplot, save
from .common import frozen_features, interleaved_times, parser, print_table, ridge_choice, write_json
from unlearning import methods, metrics

RIDGES = (1e-2, 1e-1, 1.0, 10.0, 100.0)
ORIGINAL_LEARNING_RATE = 0.05


def learn_head(features, labels, ridge: float, *, per_class: bool = False, chunk: int = 8192):
    """The factorized unlearning head of every training row, learned in chunks; ``per_class`` keeps per-class
    statistics, so that a class is forgotten from them without its data."""
    head = unlearning.init_unlearning_head(features.shape[1], ridge, per_class=per_class)
    for i in range(0, len(labels), chunk):
        head = unlearning.learn(head, features[i : i + chunk], labels[i : i + chunk])
    return unlearning.factorize(head)


def tasks(data, n_classes, class_count, shares=(0.01, 0.10), seed=0):
    """Class-wise forgetting of ``class_count`` seeded classes (one task each), random forgetting of ``shares``."""
    rng = np.random.default_rng(seed)
    x, y, xt, yt = data.train_features, data.train_labels, data.test_features, data.test_labels
    out = []
    for c in sorted(rng.choice(n_classes, class_count, replace=False).tolist()):
        out.append((f"class {c}", methods.UnlearningTask(x, y, y == c, xt, yt, (c,), n_classes)))
    for share in shares:
        mask = np.zeros(len(y), bool)
        mask[rng.choice(len(y), int(share * len(y)), replace=False)] = True
        out.append((f"random {share:.0%}", methods.UnlearningTask(x, y, mask, xt, yt, (), n_classes)))
    return out


def scenario_rows(name, task, exact_head, original, ridge, epochs, method_names, grid, hidden, mia_samples):
    """Every method on one task: metrics, Avg. Gap and output agreement against its family's retrained model."""
    evaluate = lambda model: methods.evaluate(model, task, mia_samples=mia_samples)  # noqa: E731
    downdated = methods.ExactUnlearner(exact_head, receipt=False).unlearn(task)
    with_receipt = methods.ExactUnlearner(exact_head).unlearn(task)
    closed_form = methods.ClosedFormRetrain(ridge).unlearn(task)
    closed_form_scores = evaluate(closed_form)
    rows = []

    def row(model, scores, reference_model, reference_scores, family, trials=None):
        entry = {"scenario": name, "method": model.name, "family": family, "learning_rate": model.learning_rate,
                 **{k: scores[k] for k in metrics.GAP_METRICS},
                 "avg_gap": metrics.avg_gap(scores, reference_scores), "seconds": model.seconds,
                 "time_vs_exact": model.seconds / downdated.seconds,
                 **methods.compare_outputs(model, reference_model, task)}
        if trials is not None:
            entry["grid"] = trials
        rows.append(entry)

    row(downdated, evaluate(downdated), closed_form, closed_form_scores, "exact")
    row(closed_form, closed_form_scores, closed_form, closed_form_scores, "exact")
    if method_names:  # the gradient family, against its own SGD retrain
        sgd_retrain = methods.GradientUnlearner("retrain", original, ORIGINAL_LEARNING_RATE, epochs=epochs,
                                                hidden=hidden).unlearn(task)
        sgd_scores = evaluate(sgd_retrain)
        row(sgd_retrain, sgd_scores, sgd_retrain, sgd_scores, "gradient")
    for method in method_names:
        make = lambda lr, m=method: methods.GradientUnlearner(m, original, lr, hidden=hidden)  # noqa: E731
        model, scores, trials = methods.best_of_grid(make, grid, task, sgd_scores, mia_samples=mia_samples)
        row(model, scores, sgd_retrain, sgd_scores, "gradient", trials)
    rows[0]["seconds_with_receipt"] = with_receipt.seconds
    rows[0]["receipt"] = {"route": with_receipt.receipt.route, "removed": with_receipt.receipt.removed_count,
                          "hash_before": with_receipt.receipt.hash_before,
                          "hash_after": with_receipt.receipt.hash_after}
    return rows


def sample_forgetting_speed(head, features, labels, ridge: float, repeats: int) -> list[dict]:
    """k = 1, d/100 and d/10 samples forgotten through the kept factor's low-rank correction (``forget_samples`` +
    ``unlearning.solve``) against subtracting their statistics and refactoring, interleaved; with the weights' difference.

    ``head`` is a factorized, pooled (not per-class) unlearning head that learned ``features`` / ``labels``."""
    d = features.shape[1]
    samples = []
    for k in sorted({1, max(1, d // 100), d // 10}):
        rows, labels_k = features[-k:], labels[-k:]

        def refactor():
            removed = analytic.accumulate(analytic.init_statistics(d), rows, labels_k)
            return analytic.solve(analytic.subtract(head.statistics, removed), ridge)

        def downdate():
            return unlearning.solve(unlearning.forget_samples(head, rows, labels_k, receipt=False)[0])

        pair = interleaved_times({"downdate": downdate, "refactor": refactor}, repeats)
        samples.append({"k": k, "route": unlearning.forget_samples(head, rows, labels_k)[1].route,
                        "downdate_seconds": pair["downdate"], "refactor_seconds": pair["refactor"],
                        "speedup": pair["refactor"] / pair["downdate"],
                        "weight_error_vs_refactor": metrics.relative_weight_error(downdate().weights,
                                                                                  refactor().weights)})
    return samples


def speed(data, class_head, exact_head, ridge, epochs, hidden, repeats):
    """Class forgetting from statistics (with and without receipt) vs closed-form retraining, interleaved, and vs
    gradient retraining (timed once); k-sample downdate vs refactor."""
    x, y = data.train_features, data.train_labels
    c = int(y[0])
    task = methods.UnlearningTask(x, y, y == c, data.test_features, data.test_labels, (c,), int(y.max()) + 1)
    times = interleaved_times({
        "class": lambda: methods.ExactUnlearner(class_head, receipt=False).unlearn(task),
        "receipt": lambda: methods.ExactUnlearner(class_head).unlearn(task),
        "retrain": lambda: methods.ClosedFormRetrain(ridge).unlearn(task),
    }, repeats)
    gradient_seconds = methods.GradientUnlearner("retrain", None, ORIGINAL_LEARNING_RATE, epochs=epochs,
                                                 hidden=hidden).unlearn(task).seconds
    return {"n": len(y), "d": x.shape[1], "class_from_statistics_seconds": times["class"],
            "class_from_statistics_with_receipt_seconds": times["receipt"],
            "closed_form_retrain_seconds": times["retrain"], "gradient_retrain_seconds": gradient_seconds,
            "gradient_retrain_epochs": epochs,
            "class_speedup_vs_closed_form": times["retrain"] / times["class"],
            "class_speedup_vs_gradient": gradient_seconds / times["class"],
            "samples": sample_forgetting_speed(exact_head, x, y, ridge, repeats)}


def regression(quick: bool):
    """A ridge regression head (diabetes data, standardized, constant feature) forgets 10% exactly; the same
    linear head trained by SGD on the squared error + the same ridge forgets by fine-tuning or retraining."""
    from sklearn.datasets import load_diabetes

    features, targets = load_diabetes(return_X_y=True)
    features = np.hstack([(features - features.mean(0)) / features.std(0), np.ones((len(targets), 1))])
    targets = ((targets - targets.mean()) / targets.std())[:, None]
    ridge, d = 1.0, features.shape[1]
    forget = np.zeros(len(targets), bool)
    forget[np.random.default_rng(0).choice(len(targets), len(targets) // 10, replace=False)] = True
    head = unlearning.init_unlearning_head(d, ridge, n_targets=1)
    head = unlearning.factorize(unlearning.learn(head, features, targets))
    start = time.perf_counter()
    forgotten, receipt = unlearning.forget_samples(head, features[forget], targets[forget])
    exact_weights = unlearning.solve(forgotten).weights
    exact_seconds = time.perf_counter() - start
    start = time.perf_counter()
    retained = analytic.accumulate(analytic.init_statistics(d, n_targets=1), features[~forget], targets[~forget])
    reference = analytic.solve(retained, ridge).weights
    retrain_seconds = time.perf_counter() - start

    n_retained = int((~forget).sum())

    def ridge_loss(weights, batch, penalty):  # ½ mean squared error + γ/(2n) ‖W‖²: minimised by the ridge head
        return gradient.squared_error(batch["features"] @ weights, batch["targets"]) + penalty * (weights**2).sum()

    def linear(weights):
        return np.asarray(weights, np.float32)

    def train(params, x, y, epochs):
        start = time.perf_counter()
        optimizer = gradient.make_optimizer(0.01, weight_decay=0.0)
        out, _ = gradient.train(params, ridge_loss, {"features": x.astype(np.float32), "targets": y.astype(
            np.float32)}, optimizer=optimizer, epochs=epochs, batch_size=32, loss_args=(ridge / (2 * len(y)),))
        return np.asarray(out, np.float64), time.perf_counter() - start

    full_epochs = 50 if quick else 300
    original, _ = train(linear(np.zeros((d, 1))), features, targets, full_epochs)
    fine_tuned, ft_seconds = train(linear(original), features[~forget], targets[~forget], 10)
    retrained, gd_seconds = train(linear(np.zeros((d, 1))), features[~forget], targets[~forget], full_epochs)
    error = lambda w: metrics.relative_weight_error(w, reference)  # noqa: E731
    return {"data": "sklearn diabetes (442 x 10, standardized, + constant)", "ridge": ridge,
            "forgotten": int(forget.sum()), "retained": n_retained, "route": receipt.route, "rows": [
                {"method": "exact downdate", "weight_error_vs_closed_form_retrain": error(exact_weights),
                 "seconds": exact_seconds},
                {"method": "retrain (closed form)", "weight_error_vs_closed_form_retrain": 0.0,
                 "seconds": retrain_seconds},
                {"method": "FT (10 epochs SGD)", "weight_error_vs_closed_form_retrain": error(fine_tuned),
                 "seconds": ft_seconds},
                {"method": f"retrain (SGD, {full_epochs} epochs)",
                 "weight_error_vs_closed_form_retrain": error(retrained), "seconds": gd_seconds}]}


def plot(rows, path):
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(8, 5))
    for method in dict.fromkeys(r["method"] for r in rows):
        picked = [r for r in rows if r["method"] == method]
        axis.scatter([r["seconds"] for r in picked], [r["avg_gap"] for r in picked], label=method, s=60,
                     **method_style(method))
    plain_log_axis(axis, "x")
    axis.set_xlabel("wall time of the unlearning call (s)")
    axis.set_ylabel("Avg. Gap to its family's retrained model (points)")
    axis.set_title("Unlearning: exactness vs time (each point: one scenario)")
    axis.legend(ncol=2)
    print(f"wrote {save(figure, path)}")


def main():
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--hidden", type=int, default=None, help="hidden width of the gradient head (MLP option)")
    args = args.parse_args()
    quick = args.quick
    data = frozen_features(subset=6_000 if quick else None)
    n_classes = len(data.class_names)
    x, y = data.train_features, data.train_labels
    print(f"\n{data.dataset}: {len(y):,} train / {len(data.test_labels):,} test, {x.shape[1]}-d features from "
          f"{data.backbone}")
    ridge = ridge_choice(x, y, RIDGES).ridge
    start = time.perf_counter()
    head = learn_head(x, y, ridge)
    exact_train_seconds = time.perf_counter() - start
    class_head = learn_head(x, y, ridge, per_class=True)
    epochs = 5 if quick else 20
    start = time.perf_counter()
    original = gradient.fit_softmax_head(x, y, n_classes=n_classes, epochs=epochs,
                                         learning_rate=ORIGINAL_LEARNING_RATE, hidden=args.hidden)
    gradient_train_seconds = time.perf_counter() - start
    method_names = ("FT", "NegGrad+") if quick else methods.GRADIENT_METHODS[1:]
    grid = (1e-2,) if quick else (1e-3, 1e-2, 1e-1)
    mia_samples = 300 if quick else 2_000

    rows = []
    for name, task in tasks(data, n_classes, 1 if quick else 2, (0.10,) if quick else (0.01, 0.10)):
        print(f"scenario {name}: forgetting {int(task.forget_mask.sum()):,} samples", flush=True)
        rows += scenario_rows(name, task, class_head if task.forgotten_classes else head, original, ridge, epochs, method_names, grid, args.hidden,
                              mia_samples)
    columns = ["scenario", "method", "learning_rate", "UA", "RA", "TA", "MIA", "avg_gap", "seconds",
               "time_vs_exact", "weight_error", "max_logit_diff", "argmax_agreement", "mean_kl"]
    print_table("Unlearning on frozen features (Avg. Gap and agreement against each family's retrained model)",
                rows, columns)

    timings = speed(data, class_head, head, ridge, epochs, args.hidden, 1 if quick else 5)
    print_table(f"Class forgetting at n = {timings['n']:,}, d = {timings['d']}", [
        {"route": "exact: forget class from stored statistics", "seconds": timings["class_from_statistics_seconds"]},
        {"route": "  the same, with its receipt (3 state hashes)",
         "seconds": timings["class_from_statistics_with_receipt_seconds"]},
        {"route": "closed-form retrain from cached features", "seconds": timings["closed_form_retrain_seconds"],
         "ratio": timings["class_speedup_vs_closed_form"]},
        {"route": f"gradient retrain ({epochs} epochs)", "seconds": timings["gradient_retrain_seconds"],
         "ratio": timings["class_speedup_vs_gradient"]}], ["route", "seconds", "ratio"])
    print_table("Forgetting k samples: low-rank correction of the kept factor vs subtract and refactor", timings["samples"],
                ["k", "route", "downdate_seconds", "refactor_seconds", "speedup", "weight_error_vs_refactor"])
    regression_result = regression(quick)
    print_table(f"Regression head ({regression_result['data']}), forgetting {regression_result['forgotten']} "
                "samples", regression_result["rows"], ["method", "weight_error_vs_closed_form_retrain", "seconds"])

    payload = {"mode": "quick" if quick else "full", "dataset": data.dataset, "backbone": data.backbone,
               "n_train": len(y), "n_test": len(data.test_labels), "dim": int(x.shape[1]), "ridge": ridge,
               "exact_train_seconds": exact_train_seconds, "gradient_original_epochs": epochs,
               "gradient_original_seconds": gradient_train_seconds, "gradient_hidden": args.hidden,
               "learning_rate_grid": list(grid), "mia_samples_per_side": mia_samples,
               "note": "exactness is relative to retraining the head; the backbone never saw these images",
               "load_average_at_end": os.getloadavg(),
               "scenarios": rows, "speed": timings, "regression": regression_result}
    write_json(args.out, "unlearning", payload)
    plot(rows, f"{args.out}/unlearning.png")


if __name__ == "__main__":
    main()
