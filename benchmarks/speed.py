"""How close the library runs to the limit of this machine, each contender interleaved with its reference.

    python -m benchmarks.speed [--quick] [--out results] [--sections gram,forget,paper,flower]

Sections (each a table, all in ``speed.json`` and ``speed.png``):

- ``gram``: host ``accumulate`` (one call) and ``fit`` (streamed in batches of 8,192) against NumPy's ``X.T @ X`` of
  the same dtype, in float64, float32 and fixed point, at d = 512, 2,048 and 8,192 (ratio ≥ 1: at least as fast);
- ``forget``: forgetting a class as a user does it (``forget_class`` from per-class statistics with its receipt,
  then ``unlearning.solve``) against the closed-form retrain on the retained features, n = 60,000, d = 1,280, and k
  samples through the kept factor's low-rank correction against subtracting and refactoring;
- ``paper``: AFL's paper-form aggregation of 100 clients' local solutions against the summed-statistics form,
  d = 1,280;
- ``flower``: one AFL round on Flower's simulation engine with 1,000 virtual clients at d = 64, per client, against
  the in-process simulation.

The timings depend on the features' shapes, not their values: the sections use synthetic pooled-CNN-like features
(non-negative, offset, badly scaled, 10 classes) of the stated sizes.
"""

from __future__ import annotations

import numpy as np

import analytic
from analytic.plotting import method_style, plain_log_axis, pyplot, save
import unlearning
from .common import add_sections, interleaved_times, parser, print_table, write_json
from .core import N_CLASSES, batches, pooled_like_features
from .unlearning import sample_forgetting_speed
from unlearning import methods

SECTIONS = ("gram", "forget", "paper", "flower")
STREAM_BATCH = 8192
GRAM_SIZES = {False: ((512, 200_000), (2_048, 50_000), (8_192, 12_288)), True: ((512, 20_000), (2_048, 8_192))}
PRECISIONS = (("float64", np.float64), ("float32", np.float32), ("fixed", np.float64))


def gram_ratios(sizes, repeats: int) -> list[dict]:
    """Seconds of NumPy's ``X.T @ X``, one ``accumulate`` call and a streamed ``fit``, interleaved, for every
    precision and (d, n); ratio = NumPy's time / the route's time."""
    rows = []
    for d, n in sizes:
        for precision, dtype in PRECISIONS:
            features, labels = pooled_like_features(n, d, dtype=dtype)
            empty = analytic.init_statistics(d, precision=precision)
            times = interleaved_times({
                "numpy": lambda: features.T @ features,
                "one call": lambda: analytic.accumulate(empty, features, labels),
                "streamed": lambda: analytic.fit(empty, batches(features, labels, STREAM_BATCH)),
            }, repeats)
            rows.append({"d": d, "n": n, "precision": precision, "numpy_seconds": times["numpy"],
                         "one_call_seconds": times["one call"], "streamed_seconds": times["streamed"],
                         "one_call_ratio": times["numpy"] / times["one call"],
                         "streamed_ratio": times["numpy"] / times["streamed"]})
            print(f"  gram d={d} {precision}: one call {rows[-1]['one_call_ratio']:.3f}x, "
                  f"streamed {rows[-1]['streamed_ratio']:.3f}x NumPy", flush=True)
    return rows


def learned_head(features, labels, ridge: float, per_class: bool):
    head = unlearning.init_unlearning_head(features.shape[1], ridge, per_class=per_class)
    for start in range(0, len(labels), STREAM_BATCH):
        head = unlearning.learn(head, features[start : start + STREAM_BATCH], labels[start : start + STREAM_BATCH])
    return unlearning.factorize(head)


def forget_speed(n: int, d: int, repeats: int, ridge: float = 1.0) -> dict:
    """A class forgotten from per-class statistics with its receipt and solved (as a user does it), without the
    receipt, and the closed-form retrain on the retained features (``ClosedFormRetrain``), interleaved; then k
    samples forgotten through the kept factor's low-rank correction against subtracting and refactoring."""
    features, labels = pooled_like_features(n, d, dtype=np.float32)
    forgotten = 3
    class_head = learned_head(features, labels, ridge, per_class=True)
    task = methods.UnlearningTask(features, labels, labels == forgotten, features[:0], labels[:0], (forgotten,),
                                  N_CLASSES)
    times = interleaved_times({
        "forget_class + receipt + solve": lambda: unlearning.solve(
            unlearning.forget_class(class_head, forgotten)[0]),
        "forget_class + solve (no receipt)": lambda: unlearning.solve(
            unlearning.forget_class(class_head, forgotten, receipt=False)[0]),
        "closed-form retrain": lambda: methods.ClosedFormRetrain(ridge).unlearn(task),
    }, repeats)
    retrain = times["closed-form retrain"]
    rows = [{"route": route, "seconds": seconds, "speedup_vs_retrain": retrain / seconds}
            for route, seconds in times.items()]
    head = learned_head(features, labels, ridge, per_class=False)
    samples = sample_forgetting_speed(head, features, labels, ridge, repeats)
    return {"n": n, "d": d, "rows": rows, "samples": samples}


def paper_form_speed(n: int, d: int, n_clients: int, repeats: int, ridge: float = 1.0) -> dict:
    """AFL's two server laws on the same clients (Dirichlet α = 0.1): the paper form (local solutions combined by
    absolute aggregation, then the regularization intermediary) against the summed form (sum the statistics, one
    solve), interleaved; the clients' own work (statistics; the paper form's local solves) timed once."""
    import time

    import federated

    features, labels = pooled_like_features(n, d)
    class_ids = np.arange(N_CLASSES)
    parts = federated.dirichlet_partition(labels, n_clients, 0.1, seed=0)
    started = time.perf_counter()
    uploads = [federated.client_statistics(features[p], labels[p], d) for p in parts]
    statistics_seconds = time.perf_counter() - started
    started = time.perf_counter()
    solutions = [federated.local_solution(s, ridge, class_ids) for s in uploads]
    local_solve_seconds = time.perf_counter() - started

    def summed():
        return analytic.solve(analytic.with_classes(federated.aggregate_statistics(uploads), class_ids), ridge)

    def paper():
        return federated.remove_regularization(federated.aggregate_solutions(solutions), ridge)

    times = interleaved_times({"summed form (server)": summed, "paper form (server)": paper}, repeats)
    reference = summed().weights
    difference = float(np.linalg.norm(paper().weights - reference) / np.linalg.norm(reference))
    rows = [{"route": route, "seconds": seconds, "ratio_to_summed": seconds / times["summed form (server)"]}
            for route, seconds in times.items()]
    summed_round = statistics_seconds + times["summed form (server)"]
    paper_round = statistics_seconds + local_solve_seconds + times["paper form (server)"]
    rows += [{"route": "summed form, whole round", "seconds": summed_round, "ratio_to_summed": 1.0},
             {"route": "paper form, whole round (+ local solves)", "seconds": paper_round,
              "ratio_to_summed": paper_round / summed_round}]
    return {"n": n, "d": d, "clients": n_clients, "relative_difference": difference,
            "client_statistics_seconds": statistics_seconds, "client_local_solve_seconds": local_solve_seconds,
            "rows": rows}


def flower_speed(n_clients: int, dim: int) -> dict:
    """One AFL round on Flower's simulation engine (``benchmarks.federated.flower_afl``: Dirichlet α = 0.1, fixed
    precision, checked against the in-process simulation by state hash), split into start-up, the round itself and
    the rest, per client."""
    from .common import FrozenFeatures
    from .federated import flower_afl

    features, labels = pooled_like_features(70_000, dim, dtype=np.float32)
    data = FrozenFeatures("synthetic", "none", "none", features[:60_000], labels[:60_000], features[60_000:],
                          labels[60_000:], tuple(str(c) for c in range(N_CLASSES)))
    run = flower_afl(data, n_clients, dim, show_logs=False)
    round_seconds = run["seconds_server"] - run["seconds_to_first_upload"]
    rows = [{"part": "whole flwr run (start-up and shutdown included)", "seconds": run["seconds_total"]},
            {"part": "server: start to first upload", "seconds": run["seconds_to_first_upload"]},
            {"part": "the round: first upload to solved head", "seconds": round_seconds},
            {"part": "in-process simulation of the same round", "seconds": run["in_process_seconds"]}]
    for row in rows:
        row["ms_per_client"] = 1000 * row["seconds"] / n_clients
    return {"clients": n_clients, "d": dim, "matches_in_process": run["matches_in_process"],
            "failures": run["failures"], "rows": rows}


def plot(gram_rows, path) -> None:
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for axis, route in zip(axes, ("one_call", "streamed")):
        for precision, _ in PRECISIONS:
            mine = [r for r in gram_rows if r["precision"] == precision]
            axis.plot([r["d"] for r in mine], [r[f"{route}_ratio"] for r in mine], label=precision,
                      **method_style(precision))
        axis.axhline(1.0, color="black", linewidth=0.8, label="NumPy X.T @ X")
        plain_log_axis(axis, "x", base=2)
        axis.set_xlabel("feature dimension d")
        axis.set_title(f"accumulate, {route.replace('_', ' ')}" + (f" (batches of {STREAM_BATCH:,})"
                                                                  if route == "streamed" else ""))
    axes[0].set_ylabel("throughput / NumPy X.T @ X (same dtype)")
    axes[0].legend()
    save(figure, path)


def main():
    args = parser(__doc__.splitlines()[0])
    add_sections(args, SECTIONS)
    args = args.parse_args()
    sections = args.sections
    repeats = 1 if args.quick else 3
    payload = {"quick": args.quick}
    if "gram" in sections:
        payload["gram"] = gram_ratios(GRAM_SIZES[args.quick], repeats)
        print_table("Gram accumulation vs NumPy X.T @ X, same dtype, interleaved", payload["gram"],
                    ["d", "n", "precision", "numpy_seconds", "one_call_ratio", "streamed_ratio"])
    if "forget" in sections:
        forget = payload["forget"] = forget_speed(6_000 if args.quick else 60_000, 256 if args.quick else 1_280,
                                                  repeats)
        print_table(f"Forgetting a class, n = {forget['n']:,}, d = {forget['d']:,}", forget["rows"],
                    ["route", "seconds", "speedup_vs_retrain"])
        print_table("Forgetting k samples: low-rank correction of the kept factor vs subtract and refactor",
                    forget["samples"], ["k", "route", "downdate_seconds", "refactor_seconds", "speedup"])
    if "paper" in sections:
        payload["paper"] = paper_form_speed(6_000 if args.quick else 60_000, 128 if args.quick else 1_280,
                                            20 if args.quick else 100, repeats)
        paper = payload["paper"]
        print_table(f"AFL server laws, {paper['clients']} clients, d = {paper['d']:,} (paper form vs summed: relative "
                    f"difference {paper['relative_difference']:.1e})", paper["rows"],
                    ["route", "seconds", "ratio_to_summed"])
    if "flower" in sections:
        payload["flower"] = flower_speed(100 if args.quick else 1_000, 64)
        flower = payload["flower"]
        print_table(f"AFL on Flower's simulation engine, {flower['clients']:,} clients, d = {flower['d']} (same state "
                    f"hash as in-process: {flower['matches_in_process']})", flower["rows"],
                    ["part", "seconds", "ms_per_client"])
    write_json(args.out, "speed", payload)
    if "gram" in payload:
        plot(payload["gram"], f"{args.out}/speed.png")


if __name__ == "__main__":
    main()
