"""Beyond one device: rows sharded over 1, 2 and 8 simulated CPU devices, and 2 processes of JAX's multi-controller
runtime over loopback — the same fixed-point hash as one device, float64 within 1e-12."""

import json
import os
import subprocess
import sys

import numpy as np
from conftest import make_classification

import analytic

SHARDED = """
import json, sys
import jax, numpy as np
sys.path.insert(0, "tests")
from conftest import make_classification
import analytic
from analytic import distributed

features, labels = make_classification(n=640, d=16, classes=(0, 3, 7, 11))
report = {"devices": jax.device_count(), "fixed": {}, "float64": {}}
for k in (1, 2, 8):
    mesh = distributed.row_mesh(jax.devices()[:k])
    accumulate = jax.jit(analytic.accumulate, out_shardings=distributed.replicated(mesh))
    for precision, dtype in (("fixed", np.float32), ("float64", np.float64)):
        with jax.enable_x64(precision == "float64"):
            empty = jax.device_put(analytic.init_statistics(16, precision=precision, class_ids=(0, 3, 7, 11)),
                                   distributed.replicated(mesh))
            state = accumulate(empty, distributed.shard_rows(features.astype(dtype), mesh),
                               distributed.shard_rows(labels.astype(np.int32), mesh))
            if precision == "fixed":
                report["fixed"][k] = analytic.state_hash(state)
            else:
                report["float64"][k] = np.asarray(analytic.solve(state, 0.1).weights).tolist()
print(json.dumps(report))
"""


def test_sharded_rows_on_1_2_and_8_devices_give_the_same_statistics():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    done = subprocess.run([sys.executable, "-c", SHARDED], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["devices"] == 8
    features, labels = make_classification(n=640, d=16, classes=(0, 3, 7, 11))
    host = analytic.accumulate(analytic.init_statistics(16, precision="fixed"), features.astype(np.float32), labels)
    assert set(report["fixed"].values()) == {analytic.state_hash(host)}
    one_device = np.asarray(report["float64"]["1"])
    for k in ("2", "8"):
        difference = np.linalg.norm(np.asarray(report["float64"][k]) - one_device) / np.linalg.norm(one_device)
        assert difference <= 1e-12


def test_two_processes_over_loopback_give_the_one_process_hash():
    from benchmarks.multihost import digits, launch, one_process_hash

    reports = launch(2)
    assert [r["process"] for r in reports] == [0, 1]
    assert sum(r["rows"] for r in reports) == len(digits()[1])  # each process learned only its own rows
    reference = one_process_hash()
    assert all(r["hash"] == reference for r in reports)
    share = len(digits()[1]) // 2 * 2
    assert all(r["global_array_hash"] == one_process_hash(share) for r in reports)
