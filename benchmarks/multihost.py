"""Accumulate one data set split over N processes with JAX's multi-controller runtime, solve once, check the hash.

    python -m benchmarks.multihost [--processes 2] [--out results]

The launcher starts N worker processes on this machine (``jax.distributed.initialize`` with a coordinator on a free
127.0.0.1 port, the gloo CPU collectives). Worker p holds only its own rows of scikit-learn's digits (an uneven
split), accumulates them in fixed precision on its own device, and the states are summed across processes
(``analytic.distributed.sum_over_processes``); every process then solves the same head. A second route lays equal
shares out as one global array and runs ``jax.jit(analytic.accumulate)`` over it. The launcher compares both
processes' state hashes with the one-process hash of all rows, prints a table and writes JSON.

On a cluster, run the worker part (``--worker P --processes N --coordinator HOST:PORT``) once per host instead.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np

RIDGE = 0.1


def digits(rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as float32 features in [0, 1] and int32 labels (the same rows in every process)."""
    from analytic.data import load_digits

    data = load_digits()
    features = np.concatenate([data.train_images, data.test_images]).reshape(-1, 64).astype(np.float32) / 16
    labels = np.concatenate([data.train_labels, data.test_labels]).astype(np.int32)
    return features[:rows], labels[:rows]


def process_rows(n: int, processes: int, process: int) -> slice:
    """An uneven contiguous split: process p gets a share proportional to p + 1."""
    bounds = np.concatenate([[0], np.cumsum(np.arange(1, processes + 1))]) * n // (processes * (processes + 1) // 2)
    return slice(int(bounds[process]), int(bounds[process + 1]))


def worker(process: int, processes: int, coordinator: str) -> dict:
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # this program's own setting, not the library's
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=processes, process_id=process)
    import analytic
    from analytic import distributed

    features, labels = digits()
    classes = np.unique(labels)
    empty = analytic.init_statistics(features.shape[1], precision="fixed", class_ids=classes)
    start = time.perf_counter()
    rows = process_rows(len(labels), processes, process)
    local = jax.jit(analytic.accumulate)(empty, features[rows], labels[rows])
    total = distributed.sum_over_processes(local)
    head = analytic.solve(total, RIDGE)
    seconds = time.perf_counter() - start

    mesh = distributed.row_mesh()
    share = len(labels) // processes // len(jax.local_devices()) * len(jax.local_devices())
    mine = slice(process * share, (process + 1) * share)
    accumulate = jax.jit(analytic.accumulate, out_shardings=distributed.replicated(mesh))
    global_state = accumulate(jax.device_put(empty, distributed.replicated(mesh)),
                              distributed.global_rows(features[mine], mesh), distributed.global_rows(labels[mine], mesh))
    global_state = jax.tree.map(lambda leaf: np.asarray(leaf.addressable_data(0)), global_state)
    jax.distributed.shutdown()
    return {
        "process": process, "rows": int(local.count), "seconds": seconds,
        "hash": analytic.state_hash(total), "global_array_hash": analytic.state_hash(global_state),
        "global_array_rows": int(global_state.count), "accuracy": float(np.mean(analytic.predict_labels(head, features) == labels)),
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(processes: int, timeout: float = 300) -> list[dict]:
    """Run ``processes`` workers on 127.0.0.1 and return their reports (raises if any fails)."""
    coordinator = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    commands = [[sys.executable, "-m", f"{__package__}.multihost", "--worker", str(p), "--processes", str(processes),
                 "--coordinator", coordinator] for p in range(processes)]
    workers = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for c in commands]
    reports = []
    for process, handle in enumerate(workers):
        try:
            out, err = handle.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for other in workers:
                other.kill()
            raise RuntimeError(f"worker {process} did not finish in {timeout} s")
        if handle.returncode:
            raise RuntimeError(f"worker {process} failed:\n{err[-3000:]}")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


def one_process_hash(rows: int | None = None) -> str:
    import analytic

    features, labels = digits(rows)
    state = analytic.init_statistics(features.shape[1], precision="fixed", class_ids=np.unique(labels))
    return analytic.state_hash(analytic.accumulate(state, features, labels))


def main() -> None:
    from .common import parser, print_table, write_json

    arguments = parser(__doc__)
    arguments.add_argument("--processes", type=int, default=2)
    arguments.add_argument("--worker", type=int, default=None, help="run as worker P (set by the launcher)")
    arguments.add_argument("--coordinator", default=None, help="HOST:PORT of process 0's coordinator")
    args = arguments.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.processes, args.coordinator)))
        return
    reports = launch(args.processes)
    features, _ = digits()
    reference = one_process_hash()
    share = len(features) // args.processes * args.processes
    rows = [{**r, "same_hash_as_one_process": r["hash"] == reference,
             "global_array_same_hash": r["global_array_hash"] == one_process_hash(share)} for r in reports]
    print_table(f"{args.processes} processes over loopback, fixed precision, digits", rows, ["process", "rows", "seconds", "same_hash_as_one_process", "global_array_rows",
                       "global_array_same_hash", "accuracy"])
    write_json(args.out, "multihost", {"processes": args.processes, "reference_hash": reference, "workers": rows})


if __name__ == "__main__":
    main()
