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

import json
import time
import tracemalloc

import numpy as np

import analytic
from analytic.plotting import method_style, plain_log_axis, pyplot, save
from .common import best_time, has_extra, interleaved_times, parser, print_table, write_json

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
    """Seconds for the Gram (and cross-moments) of n samples, interleaved in one run: NumPy's ``X.T @ X``, the host
    path in one ``accumulate`` call and streamed over batches (one batch held at a time), XLA's own jitted
    ``X.T @ X``, and the jitted JAX path of ``accumulate`` on a device state (features already on the device;
    float64 with x64 enabled for that call, float32 and fixed without). Compile time is reported separately."""
    import jax

    rows = []
    for precision, dtype in (("float64", np.float64), ("float32", np.float32), ("fixed", np.float64)):
        features, labels = pooled_like_features(n, d, dtype=dtype)
        with jax.enable_x64(precision == "float64"):
            device_x = jax.device_put(features if precision != "fixed" else features.astype(np.float32))
            device_y = jax.device_put(labels.astype(np.int32))
            shift = features[:1024].mean(axis=0).astype(dtype) if precision == "float32" else None
            declared = analytic.init_statistics(d, precision=precision, class_ids=np.arange(N_CLASSES), shift=shift)
            device_state = jax.device_put(declared)
            jitted = jax.jit(analytic.accumulate)
            xla_gram = jax.jit(lambda x: jnp_gram(x))
            compile_start = time.perf_counter()
            jax.block_until_ready(jitted(device_state, device_x, device_y))
            compile_seconds = time.perf_counter() - compile_start
            if precision != "fixed":
                jax.block_until_ready(xla_gram(device_x))
            init = analytic.init_statistics(d, precision=precision)
            contenders = {
                "numpy X.T @ X": lambda: features.T @ features,
                "host accumulate, one call": lambda: analytic.accumulate(init, features, labels),
                f"host fit, batches of {batch}": lambda: analytic.fit(init, batches(features, labels, batch)),
                "jax jit X.T @ X": lambda: jax.block_until_ready(xla_gram(device_x)),
                "jax jit accumulate (device)": lambda: jax.block_until_ready(
                    jitted(device_state, device_x, device_y)),
            }
            if precision == "fixed":  # XLA's float32 product is no reference for an exact integer Gram
                del contenders["jax jit X.T @ X"]
            times = interleaved_times(contenders, repeats)
        numpy_time = times["numpy X.T @ X"]
        for route, seconds in times.items():
            rows.append({
                "precision": precision, "route": route, "n": n, "d": d, "seconds": seconds,
                "ratio_to_numpy": numpy_time / seconds, "gflops": n * d * d / seconds / 1e9,
                "compile_seconds": compile_seconds if route.startswith("jax jit accumulate") else None,
            })
    return rows


def jnp_gram(x):
    import jax
    import jax.numpy as jnp

    return jnp.matmul(x.T, x, precision=jax.lax.Precision.HIGHEST)


DEVICE_SCALING = """
import json, sys, time
import jax, numpy as np
import analytic
from analytic import distributed
from PACKAGE.core import N_CLASSES, pooled_like_features
from PACKAGE.common import interleaved_times

n, d, repeats = (int(a) for a in sys.argv[1:4])
features, labels = pooled_like_features(n, d)
features, labels = features.astype(np.float32), labels.astype(np.int32)
rows = []
for precision in ("fixed", "float32"):
    shift = features[:1024].mean(axis=0) if precision == "float32" else None
    empty = analytic.init_statistics(d, precision=precision, class_ids=np.arange(N_CLASSES), shift=shift)
    runs, hashes, states = {}, {}, {}
    for k in (1, 2, 4, 8):
        mesh = distributed.row_mesh(jax.devices()[:k])
        step = jax.jit(analytic.accumulate, out_shardings=distributed.replicated(mesh))
        state = jax.device_put(empty, distributed.replicated(mesh))
        x, y = distributed.shard_rows(features, mesh), distributed.shard_rows(labels, mesh)
        states[k] = jax.block_until_ready(step(state, x, y))
        runs[k] = (lambda step=step, state=state, x=x, y=y: jax.block_until_ready(step(state, x, y)))
    times = interleaved_times(runs, repeats)
    for k in runs:
        if precision == "fixed":
            same = analytic.state_hash(states[k]) == analytic.state_hash(states[1])
        else:
            reference = np.asarray(analytic.gram_matrix(jax.device_get(states[1])))
            same = float(np.abs(analytic.gram_matrix(jax.device_get(states[k])) - reference).max()
                         / np.abs(reference).max())
        rows.append({"precision": precision, "devices": k, "seconds": times[k], "same_as_one_device": same})
print(json.dumps(rows))
"""


def device_scaling(n: int, d: int, repeats: int) -> list[dict]:
    """Sharded accumulation over 1, 2, 4 and 8 simulated CPU devices (one subprocess with 8 host devices) and over
    2 processes of the multi-controller runtime: time, and whether the state equals the one-device state (the fixed
    precision hash; the float32 Gram's largest relative difference)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    script = DEVICE_SCALING.replace("PACKAGE", __package__)
    done = subprocess.run([sys.executable, "-c", script, str(n), str(d), str(repeats)], capture_output=True, text=True,
                          env=env, check=True)
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    if not has_extra("sklearn", "data", "the two-process run (it learns the digits data)"):
        return rows
    from .multihost import launch, one_process_hash

    start = time.perf_counter()
    reports = launch(2)
    rows.append({"precision": "fixed", "devices": "2 processes (digits)", "seconds": max(r["seconds"] for r in reports),
                 "wall_seconds_with_start_up": time.perf_counter() - start,
                 "same_as_one_device": all(r["hash"] == one_process_hash() for r in reports)})
    return rows


def gpu_section(repeats: int) -> list[dict]:
    """On a GPU only: Gram throughput (float32, float64 under x64, the fixed limb route), and solve time at
    d = 8,192 and 16,384. Returns no rows elsewhere: no GPU figure is ever estimated."""
    import jax

    if jax.default_backend() != "gpu":
        return []
    rows = []
    n, d = 65_536, 8_192
    for precision in ("float32", "float64", "fixed"):
        with jax.enable_x64(precision == "float64"):
            features, labels = pooled_like_features(n, d, dtype=np.float32)
            x = jax.device_put(features.astype(np.float64) if precision == "float64" else features)
            y = jax.device_put(labels.astype(np.int32))
            shift = features[:1024].mean(axis=0) if precision == "float32" else None
            state = jax.device_put(analytic.init_statistics(
                d, precision=precision, class_ids=np.arange(N_CLASSES), shift=shift))
            step = jax.jit(analytic.accumulate)
            jax.block_until_ready(step(state, x, y))
            seconds = interleaved_times({"step": lambda: jax.block_until_ready(step(state, x, y))}, repeats)["step"]
            rows.append({"what": f"accumulate {precision}", "n": n, "d": d, "seconds": seconds,
                         "tflops": n * d * d / seconds / 1e12})
    with jax.enable_x64(True):
        for d in (8_192, 16_384):
            features, labels = pooled_like_features(2 * d, d)
            state = jax.jit(analytic.accumulate)(
                jax.device_put(analytic.init_statistics(d, class_ids=np.arange(N_CLASSES))), features, labels)
            solve = jax.jit(analytic.solve)
            jax.block_until_ready(solve(state, RIDGE))
            seconds = interleaved_times({"solve": lambda: jax.block_until_ready(solve(state, RIDGE))}, repeats)["solve"]
            rows.append({"what": "factorize + solve float64", "n": 2 * d, "d": d, "seconds": seconds,
                         "tflops": d**3 / 3 / seconds / 1e12})
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
        analytic.fit(analytic.init_statistics(d), stream())
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rows.append({"n": n, "d": d, "batch": batch, "peak_mib": peak / 2**20, "seconds": seconds,
                     "state_mib": d * d * 8 / 2**20})
    return rows


def precision_errors(n: int, d: int) -> list[dict]:
    """Relative Frobenius error of each mode's weights against a float64 direct solve on the same features, on two
    feature sets: offset, badly scaled pooled-like features, and ACIL's ReLU buffer expansion of them (sparse)."""
    pooled, labels = pooled_like_features(n, d, seed=3)
    layer = analytic.init_buffer(d, d, seed=0)
    targets = np.eye(N_CLASSES)[labels]

    def oracle(x):
        x = x.astype(np.float64)
        return np.linalg.solve(x.T @ x + RIDGE * np.eye(d), x.T @ targets)

    def error(weights, reference):
        return float(np.linalg.norm(weights - reference) / np.linalg.norm(reference))

    batch = 1024
    rows = []
    for kind, features in (("pooled", pooled), ("ReLU buffer", analytic.expand(layer, pooled).astype(np.float64))):
        f32 = features.astype(np.float32)
        exact64, exact32 = oracle(features), oracle(f32)

        def float32_fit(shift):
            return analytic.fit(analytic.init_statistics(d, precision="float32", shift=shift),
                                batches(f32, labels, batch))

        fixed = analytic.fit(analytic.init_statistics(d, precision="fixed"), batches(features, labels, batch))
        modes = (
            ("float64", analytic.fit(analytic.init_statistics(d), batches(features, labels, batch)), exact64),
            ("float32, 4-bit mean shift (default)", float32_fit(None), exact32),
            ("float32, exact mean shift", float32_fit(f32[:1024].mean(axis=0)), exact32),
            ("float32 without shift", float32_fit(np.zeros(d, np.float32)), exact32),
            ("fixed, frac_bits=12 (vs its grid)", fixed, oracle(np.rint(features * 2.0**12) / 2.0**12)),
            ("fixed, frac_bits=12 (vs raw features)", fixed, exact64),
        )
        condition = float(np.linalg.cond(features.T @ features + RIDGE * np.eye(d)))
        for name, stats, reference in modes:
            rows.append({"features": kind, "mode": name, "condition_number": condition,
                         "relative_error": error(analytic.solve(stats, RIDGE).weights, reference)})
        recursive = analytic.init_recursive(d, RIDGE)
        for x, y in batches(features, labels, batch):
            recursive = analytic.recursive_learn(recursive, x, y)
        rows.append({"features": kind, "mode": f"recursive float64 (batch {batch})", "condition_number": condition,
                     "relative_error": error(recursive.weights, exact64)})
    for row in rows:
        row.update(n=n, d=d)
    return rows


def extraction_speed(image_side: int, n_images: int, names: list[str], paths: tuple[str, ...]) -> list[dict]:
    """Images/s of the flax and torch ``paths`` with random weights (speed does not depend on the weights)."""
    from analytic.backbones import create_backbone
    from analytic.features import Preprocess, extract_features

    images = np.random.default_rng(4).integers(0, 256, size=(n_images, 28, 28, 1), dtype=np.uint8)
    rows = []
    for name in names:
        backbone = create_backbone(name)
        side = image_side if not name.startswith("vit") else 224
        for path in paths:
            preprocess = Preprocess.for_backbone(backbone, size=side)
            run = lambda: extract_features(  # noqa: E731
                backbone, images, path=path, preprocess=preprocess, batch_size=32, progress=False
            )
            run()  # compile / warm up
            seconds, _ = best_time(run, 1)
            rows.append({"backbone": name, "path": path, "image_side": side, "images": n_images,
                         "images_per_second": n_images / seconds})
    return rows


def gpu_name() -> str:
    import jax

    return jax.devices()[0].device_kind


def plot(throughput, solves, out_dir):
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    precisions = list(dict.fromkeys(r["precision"] for r in throughput))
    routes = [r for r in dict.fromkeys(r["route"] for r in throughput) if not r.startswith("numpy")]
    width = 0.8 / len(routes)
    for i, route in enumerate(routes):
        ratios = [next((r["ratio_to_numpy"] for r in throughput if r["precision"] == p and r["route"] == route),
                       np.nan) for p in precisions]
        left.bar(np.arange(len(precisions)) + (i - (len(routes) - 1) / 2) * width, ratios, width, label=route,
                 color=method_style(route)["color"])
    left.set_xticks(np.arange(len(precisions)), precisions)
    left.axhline(1.0, color="black", linewidth=0.8, label="NumPy X.T @ X")
    left.set_ylabel("throughput / NumPy X.T @ X (same run)")
    left.set_title(f"Gram accumulation, n={throughput[0]['n']:,}, d={throughput[0]['d']:,}")
    left.legend()
    right.plot([r["d"] for r in solves], [r["total_seconds"] for r in solves], **method_style("solve"))
    plain_log_axis(right, "x", base=2)
    plain_log_axis(right, "y")
    right.set_xlabel("feature dimension d")
    right.set_ylabel("factorize + solve (s)")
    right.set_title("Ridge solve, float64")
    save(figure, f"{out_dir}/core.png")


def main():
    args = parser(__doc__.splitlines()[0]).parse_args()
    if args.quick:
        sizes = dict(n=20_000, d=512, batch=4096, repeats=1, solve_dims=[512, 1024], memory_n=[2_000, 20_000],
                     memory_d=128, precision_n=4_000, precision_d=128, backbones=["resnet18"], images=64,
                     scaling_n=8_192, scaling_d=256)
    else:
        sizes = dict(n=50_000, d=2_048, batch=8192, repeats=3, solve_dims=[1024, 2048, 4096, 8192],
                     memory_n=[20_000, 200_000], memory_d=1024, precision_n=20_000, precision_d=1024,
                     backbones=None, images=256, scaling_n=32_768, scaling_d=1_024)
    throughput = gram_throughput(sizes["n"], sizes["d"], sizes["batch"], sizes["repeats"])
    print_table("Gram accumulation vs NumPy X.T @ X, same dtype, interleaved", throughput,
                ["precision", "route", "n", "d", "seconds", "ratio_to_numpy", "gflops", "compile_seconds"])
    scaling = device_scaling(sizes["scaling_n"], sizes["scaling_d"], sizes["repeats"])
    print_table("Sharded accumulation: simulated CPU devices and processes", scaling,
                ["precision", "devices", "seconds", "same_as_one_device"])
    gpu = gpu_section(sizes["repeats"])
    if gpu:
        print_table(f"GPU ({gpu_name()})", gpu, ["what", "n", "d", "seconds", "tflops"])
    solves = solve_times(sizes["solve_dims"], sizes["repeats"])
    print_table("Ridge solve (float64 Cholesky, all columns)", solves,
                ["d", "factorize_seconds", "solve_all_columns_seconds", "total_seconds"])
    memory = streamed_peak_memory(sizes["memory_n"], sizes["memory_d"], 1000)
    print_table("Peak memory of a streamed fit (tracemalloc)", memory, ["n", "d", "batch", "peak_mib", "state_mib"])
    errors = precision_errors(sizes["precision_n"], sizes["precision_d"])
    print_table("Weight error against a float64 direct solve", errors, ["features", "mode", "n", "d",
                                                                        "condition_number", "relative_error"])
    from analytic.backbones import list_backbones

    paths = ("flax", "torch") if has_extra("torch", "backbones", "the torch path of feature extraction") else ("flax",)
    extraction = extraction_speed(64, sizes["images"], sizes["backbones"] or list_backbones(), paths)
    print_table("Feature extraction (random weights, 28x28 grayscale input resized)", extraction,
                ["backbone", "path", "image_side", "images_per_second"])
    write_json(args.out, "core", {"quick": args.quick, "gram_throughput": throughput, "device_scaling": scaling,
                                  "gpu": gpu, "solve": solves,
                                  "streamed_memory": memory, "precision": errors, "extraction": extraction})
    if has_extra("matplotlib", "plots", "the plot"):
        plot(throughput, solves, args.out)


if __name__ == "__main__":
    main()
