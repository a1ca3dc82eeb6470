"""Choosing the ridge from one eigendecomposition against refitting every candidate, and how good the choice is.

    python -m benchmarks.ridge [--quick] [--out results]

- ``speed``: scoring K = 100 candidate ridges with ``analytic.select_ridge`` (one ``eigh``; GCV from the statistics,
  or accuracy on a held-out 10 % by subtraction) against K Cholesky solves of the same training statistics, each
  scored on the same held-out rows, interleaved, at d = 1,280 and 4,096 (synthetic pooled-CNN-like features of
  those shapes, 10 classes);
- ``accuracy``: on every dataset available here, the test accuracy at the ridge chosen by GCV and by the held-out
  10 %, against the best ridge of the same grid in hindsight (chosen on the test set itself).
"""

from __future__ import annotations

import numpy as np

import analytic
from analytic.plotting import method_style, plain_log_axis, pyplot, save
from .common import frozen_features, has_extra, interleaved_times, parser, print_table, write_json
from .core import N_CLASSES, pooled_like_features

HELD_OUT_SHARE = 0.1


def held_out_split(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n)[: int(HELD_OUT_SHARE * n)]


def scoring_speed(n: int, d: int, repeats: int) -> dict:
    """Seconds to score the default 100 candidates: by eigendecomposition (GCV; held-out accuracy) and by one
    Cholesky solve per candidate with the same held-out scoring, interleaved."""
    features, labels = pooled_like_features(n, d)
    stats = analytic.accumulate(analytic.init_statistics(d, class_ids=np.arange(N_CLASSES)), features, labels)
    held = held_out_split(n)
    held_out = (features[held], labels[held])
    ridges = analytic.select_ridge(stats).ridges
    training = analytic.subtract(stats, analytic.accumulate(
        analytic.init_statistics(d, class_ids=np.arange(N_CLASSES)), *held_out))

    def refit_every_candidate():
        return [np.mean(analytic.predict_labels(analytic.solve(training, ridge), held_out[0]) == held_out[1])
                for ridge in ridges]

    times = interleaved_times({
        "eigh, GCV": lambda: analytic.select_ridge(stats, ridges),
        "eigh, held-out accuracy": lambda: analytic.select_ridge(stats, ridges, held_out=held_out),
        "K Cholesky solves, held-out accuracy": refit_every_candidate,
    }, repeats)
    reference = times["K Cholesky solves, held-out accuracy"]
    same = np.allclose(analytic.select_ridge(stats, ridges, held_out=held_out).scores,
                       100 * np.asarray(refit_every_candidate()))
    return {"n": n, "d": d, "candidates": ridges.size, "same_scores_as_refitting": bool(same),
            "rows": [{"d": d, "route": route, "seconds": seconds, "speedup_vs_cholesky": reference / seconds}
                     for route, seconds in times.items()]}


def datasets(quick: bool):
    """(name, train features, train labels, test features, test labels) for every dataset available here."""
    if has_extra("sklearn", "data", "digits"):
        from analytic.data import load_digits

        digits = load_digits()
        flat = [images.reshape(len(images), -1).astype(np.float64) for images in (digits.train_images,
                                                                                  digits.test_images)]
        mean, std = flat[0].mean(axis=0), flat[0].std(axis=0) + 1e-6
        yield "digits (pixels)", (flat[0] - mean) / std, digits.train_labels, (flat[1] - mean) / std, \
            digits.test_labels
    data = frozen_features(subset=6_000 if quick else None)
    if data.dataset != "digits":
        yield f"{data.dataset} ({data.backbone})", data.train_features, data.train_labels, data.test_features, \
            data.test_labels


def choice_accuracy(quick: bool) -> list[dict]:
    rows = []
    for name, x, y, test_x, test_y in datasets(quick):
        stats = analytic.accumulate(analytic.init_statistics(x.shape[1]), x, y)
        held = held_out_split(len(y))
        by_gcv = analytic.select_ridge(stats)
        by_held_out = analytic.select_ridge(stats, by_gcv.ridges, held_out=(x[held], y[held]))
        test = [100 * np.mean(analytic.predict_labels(analytic.solve(stats, ridge), test_x) == test_y)
                for ridge in by_gcv.ridges]
        best = int(np.argmax(test))
        for criterion, choice in (("GCV", by_gcv), ("held-out 10 %", by_held_out)):
            position = int(np.searchsorted(by_gcv.ridges, choice.ridge))
            rows.append({"dataset": name, "criterion": criterion, "chosen_ridge": choice.ridge,
                         "test_accuracy": test[position], "best_ridge_in_hindsight": float(by_gcv.ridges[best]),
                         "best_test_accuracy": test[best], "gap_points": test[best] - test[position]})
    return rows


def plot(speed_rows, path) -> None:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5.5, 3.8))
    routes = list(dict.fromkeys(r["route"] for r in speed_rows))
    dims = sorted({r["d"] for r in speed_rows})
    width = 0.8 / len(routes)
    for i, route in enumerate(routes):
        seconds = [next(r["seconds"] for r in speed_rows if r["d"] == d and r["route"] == route) for d in dims]
        axis.bar(np.arange(len(dims)) + (i - (len(routes) - 1) / 2) * width, seconds, width, label=route,
                 color=method_style(route)["color"])
    axis.set_xticks(np.arange(len(dims)), [f"d = {d:,}" for d in dims])
    plain_log_axis(axis, "y")
    axis.set_ylabel("seconds to score 100 ridges")
    axis.set_title("Ridge selection: one eigendecomposition vs refitting")
    axis.legend()
    save(figure, path)


def main():
    args = parser(__doc__.splitlines()[0]).parse_args()
    repeats = 1 if args.quick else 3
    sizes = ((4_000, 256), (4_000, 512)) if args.quick else ((20_000, 1_280), (20_000, 4_096))
    speed = [scoring_speed(n, d, repeats) for n, d in sizes]
    rows = [row for result in speed for row in result["rows"]]
    print_table("Scoring 100 candidate ridges (held-out 10 %), interleaved", rows,
                ["d", "route", "seconds", "speedup_vs_cholesky"])
    print(f"held-out scores equal to refitting every candidate: {all(r['same_scores_as_refitting'] for r in speed)}")
    accuracy = choice_accuracy(args.quick)
    print_table("Test accuracy at the chosen ridge vs the best ridge in hindsight", accuracy,
                ["dataset", "criterion", "chosen_ridge", "test_accuracy", "best_ridge_in_hindsight",
                 "best_test_accuracy", "gap_points"])
    write_json(args.out, "ridge", {"quick": args.quick, "speed": speed, "accuracy": accuracy})
    if has_extra("matplotlib", "plots", "the plot"):
        plot(rows, f"{args.out}/ridge.png")


if __name__ == "__main__":
    main()
