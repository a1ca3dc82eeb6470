"""Speed, memory and precision of the analytic core.

    python -m benchmarks.core [--quick] [--out results]

Measures, side by side in one run:
- Gram accumulation throughput of a streamed fit against NumPy's ``X.T @ X`` of the same dtype (ratio ≥ 1 means
  at least as fast), for float64, float32 and the bit-exact fixed-point mode;
- factorize + solve time of the ridge head at several d;
- feature-extraction images/s for each backbone through the flax and the torch paths;
- peak memory of a streamed fit at n and 10·n (it must not grow with n);
- the relative weight error of every precision mode against a float64 direct solve.
"""

from __future__ import annotations

import time
import tracemalloc

import numpy as np

import analytic
from benchmarks.common import best_time, parser, print_table, pyplot, write_json

RIDGE = 0.1
N_CLASSES = 10


def pooled_like_features(n: int, d: int, seed: int = 0, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative, offset, badly scaled features with class structure, like pooled CNN features."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, N_CLASSES, n)
    class_means = rng.normal(size=(N_CLASSES, d))
    scales = np.geomspace(0.02, 2.0, d)
    features = np.maximum(class_means[labels] + rng.normal(size=(n, d)), 0.0) * scales + 0.5
    return features.astype(dtype), labels


def batches(features, labels, size):
    return ((features[i : i + size], labels[i : i + size]) for i in range(0, len(labels), size))


def gram_throughput(n: int, d: int, batch: int, repeats: int) -> list[dict]:
    """Seconds for the Gram (and cross-moments) of n samples: one ``accumulate`` call on the whole array, as NumPy's
    ``X.T @ X`` does, and a streamed ``fit`` over batches, which holds one batch at a time."""
    rows = []
    for precision, dtype in (("float64", np.float64), ("float32", np.float32), ("fixed", np.float64)):
        features, labels = pooled_like_features(n, d, dtype=dtype)
        numpy_time, _ = best_time(lambda: features.T @ features, repeats)
        init = analytic.init_statistics(d, precision=precision)
        one_call, _ = best_time(lambda: analytic.accumulate(init, features, labels), repeats)
        streamed, _ = best_time(lambda: analytic.fit(batches(features, labels, batch), init), repeats)
        for route, seconds in (("accumulate, one call", one_call), (f"fit, batches of {batch}", streamed)):
            rows.append({
                "precision": precision, "route": route, "n": n, "d": d, "numpy_seconds": numpy_time,
                "analytic_seconds": seconds, "ratio_to_numpy": numpy_time / seconds,
                "analytic_gflops": n * d * d / seconds / 1e9,
            })
    return rows


def solve_times(dims: list[int], repeats: int) -> list[dict]:
    rows = []
    for d in dims:
        features, labels = pooled_like_features(512, d, seed=1)
        stats = analytic.accumulate(analytic.init_statistics(d), features, labels)
        factor_time, factorization = best_time(lambda: analytic.factorize(stats, RIDGE), repeats)
        solve_time, _ = best_time(lambda: analytic.solve(stats, RIDGE, factorization), repeats)
        rows.append({"d": d, "factorize_seconds": factor_time, "solve_all_columns_seconds": solve_time,
                     "total_seconds": factor_time + solve_time, "columns": stats.n_outputs})
    return rows


def streamed_peak_memory(sizes: list[int], d: int, batch: int) -> list[dict]:
    rows = []
    for n in sizes:
        def stream():
            rng = np.random.default_rng(2)
            for _ in range(n // batch):
                yield rng.normal(size=(batch, d)), rng.integers(0, N_CLASSES, batch)

        tracemalloc.start()
        start = time.perf_counter()
        analytic.fit(stream(), analytic.init_statistics(d))
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rows.append({"n": n, "d": d, "batch": batch, "peak_mib": peak / 2**20, "seconds": seconds,
                     "state_mib": d * d * 8 / 2**20})
    return rows


def precision_errors(n: int, d: int) -> list[dict]:
    """Relative Frobenius error of each mode's weights against a float64 direct solve on the same features."""
    features, labels = pooled_like_features(n, d, seed=3)
    f32 = features.astype(np.float32)
    targets = np.eye(N_CLASSES)[labels]

    def oracle(x):
        x = x.astype(np.float64)
        return np.linalg.solve(x.T @ x + RIDGE * np.eye(d), x.T @ targets)

    def error(weights, reference):
        return float(np.linalg.norm(weights - reference) / np.linalg.norm(reference))

    exact64, exact32 = oracle(features), oracle(f32)
    quantized = np.ldexp(analytic.quantize(features, 12), -12)
    batch = 1024
    fixed = analytic.fit(batches(features, labels, batch), analytic.init_statistics(d, precision="fixed"))
    rows = []
    for name, stats, reference in (
        ("float64", analytic.fit(batches(features, labels, batch), analytic.init_statistics(d)), exact64),
        ("float32 (shift + Kahan)", analytic.fit(batches(f32, labels, batch), analytic.init_statistics(
            d, precision="float32")), exact32),
        ("float32 without shift", analytic.fit(batches(f32, labels, batch), analytic.init_statistics(
            d, precision="float32", shift=np.zeros(d))), exact32),
        ("fixed, frac_bits=12 (vs its grid)", fixed, oracle(quantized)),
        ("fixed, frac_bits=12 (vs raw features)", fixed, exact64),
    ):
        rows.append({"mode": name, "relative_error": error(analytic.solve(stats, RIDGE).weights, reference)})
    recursive = analytic.init_recursive(d, RIDGE)
    for x, y in batches(features, labels, batch):
        recursive = analytic.recursive_learn(recursive, x, y)
    rows.append({"mode": f"recursive float64 (batch {batch})", "relative_error": error(recursive.weights, exact64)})
    condition = np.linalg.cond(features.T @ features + RIDGE * np.eye(d))
    for row in rows:
        row.update(n=n, d=d, condition_number=float(condition))
    return rows


def extraction_speed(image_side: int, n_images: int, names: list[str]) -> list[dict]:
    """Images/s of the flax and torch paths with random weights (speed does not depend on the weights)."""
    from analytic.backbones import create_backbone
    from analytic.features import Preprocess, extract_features

    images = np.random.default_rng(4).integers(0, 256, size=(n_images, 28, 28, 1), dtype=np.uint8)
    rows = []
    for name in names:
        backbone = create_backbone(name)
        side = image_side if not name.startswith("vit") else 224
        for path in ("flax", "torch"):
            preprocess = Preprocess.for_backbone(backbone, size=side)
            run = lambda: extract_features(  # noqa: E731
                backbone, images, path=path, preprocess=preprocess, batch_size=32, progress=False
            )
            run()  # compile / warm up
            seconds, _ = best_time(run, 1)
            rows.append({"backbone": name, "path": path, "image_side": side, "images": n_images,
                         "images_per_second": n_images / seconds})
    return rows


def plot(throughput, solves, out_dir):
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    names = [f"{r['precision']}\n{r['route'].split(',')[0]}" for r in throughput]
    left.bar(names, [r["ratio_to_numpy"] for r in throughput], color="tab:blue")
    left.tick_params(axis="x", labelsize=7)
    left.axhline(0.9, color="tab:red", linestyle="--", label="target 0.9")
    left.set_ylabel("throughput / NumPy X.T @ X")
    left.set_title(f"Gram accumulation, n={throughput[0]['n']:,}, d={throughput[0]['d']:,}")
    left.legend()
    right.plot([r["d"] for r in solves], [r["total_seconds"] for r in solves], "o-")
    right.set_xscale("log", base=2)
    right.set_yscale("log")
    right.set_xlabel("feature dimension d")
    right.set_ylabel("factorize + solve (s)")
    right.set_title("Ridge solve, float64")
    figure.tight_layout()
    figure.savefig(f"{out_dir}/core.png", dpi=120)


def main():
    args = parser(__doc__.splitlines()[0]).parse_args()
    if args.quick:
        sizes = dict(n=20_000, d=512, batch=4096, repeats=1, solve_dims=[512, 1024], memory_n=[2_000, 20_000],
                     memory_d=128, precision_n=4_000, precision_d=128, backbones=["resnet18"], images=64)
    else:
        sizes = dict(n=50_000, d=2_048, batch=8192, repeats=3, solve_dims=[1024, 2048, 4096, 8192],
                     memory_n=[20_000, 200_000], memory_d=1024, precision_n=20_000, precision_d=1024,
                     backbones=None, images=256)
    throughput = gram_throughput(sizes["n"], sizes["d"], sizes["batch"], sizes["repeats"])
    print_table("Gram accumulation (streamed fit) vs NumPy X.T @ X, same dtype", throughput,
                ["precision", "route", "n", "d", "numpy_seconds", "analytic_seconds", "ratio_to_numpy",
                 "analytic_gflops"])
    solves = solve_times(sizes["solve_dims"], sizes["repeats"])
    print_table("Ridge solve (float64 Cholesky, all columns)", solves,
                ["d", "factorize_seconds", "solve_all_columns_seconds", "total_seconds"])
    memory = streamed_peak_memory(sizes["memory_n"], sizes["memory_d"], 1000)
    print_table("Peak memory of a streamed fit (tracemalloc)", memory, ["n", "d", "batch", "peak_mib", "state_mib"])
    errors = precision_errors(sizes["precision_n"], sizes["precision_d"])
    print_table("Weight error against a float64 direct solve", errors, ["mode", "n", "d", "condition_number",
                                                                        "relative_error"])
    from analytic.backbones import list_backbones

    extraction = extraction_speed(64, sizes["images"], sizes["backbones"] or list_backbones())
    print_table("Feature extraction (random weights, 28x28 grayscale input resized)", extraction,
                ["backbone", "path", "image_side", "images_per_second"])
    write_json(args.out, "core", {"quick": args.quick, "gram_throughput": throughput, "solve": solves,
                                  "streamed_memory": memory, "precision": errors, "extraction": extraction})
    plot(throughput, solves, args.out)


if __name__ == "__main__":
    main()
