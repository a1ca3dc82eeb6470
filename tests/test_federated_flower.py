"""AFL on Flower: the simulation engine and the deployment engine (separate processes on loopback) give exactly
the in-process simulator's aggregate. FedAvg through Flower runs in ``benchmarks/federated.py``."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_classification

import analytic
import federated
from federated.flower_app import run_flower_simulation, write_federation
from federated.simulation import simulate_afl

D = 8
CLASSES = (0, 1, 2, 3, 4)
RIDGE = 0.5
BIN = Path(sys.executable).parent
DEADLINE = 120  # seconds any Flower run may take before the test fails


@pytest.fixture(scope="module")
def data():
    x, y = make_classification(n=900, d=D, classes=CLASSES, seed=41)
    return x[:750], y[:750], x[750:], y[750:]


def in_process(data, parts):
    x, y, test_x, test_y = data
    return simulate_afl(x, y, parts, ridge=RIDGE, precision="fixed", test_features=test_x, test_labels=test_y,
                        progress=False)


@pytest.mark.slow
def test_simulation_engine_matches_the_in_process_simulator(data, tmp_path):
    x, y, test_x, test_y = data
    parts = federated.dirichlet_partition(y, 8, 0.1, seed=3)
    write_federation(tmp_path / "federation", x, y, parts, test_x, test_y)
    settings = {"federation": str(tmp_path / "federation"), "output": str(tmp_path / "out"), "precision": "fixed",
                "ridge": RIDGE, "timeout": float(DEADLINE), "wave": 3}
    result = run_flower_simulation(settings, 8)
    aggregate, head, report = in_process(data, parts)
    assert result["n_clients"] == 8 and result["rejected"] == {} and result["failures"] == 0
    assert result["state_hash"] == analytic.state_hash(aggregate.statistics)
    np.testing.assert_array_equal(analytic.load(tmp_path / "out" / "head.npz").weights, head.weights)
    assert result["accuracy"] == report.accuracy and result["bytes_up"] == report.bytes_up


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_listening(port: int, process: subprocess.Popen, log: Path) -> None:
    """Block until ``process`` accepts connections on ``port``; fail with its log if it dies or takes too long."""
    deadline = time.monotonic() + DEADLINE
    while True:
        assert process.poll() is None, f"the SuperLink exited early:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"the SuperLink did not listen in time:\n{log.read_text()}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.2)


APP_TOML = """[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "analytic-federation"
version = "1.0.0"
description = "AFL on a local Flower deployment"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "analytic"

[tool.flwr.app.components]
serverapp = "federated.flower_app:server_app"
clientapp = "federated.flower_app:client_app"

[tool.flwr.app.config]
"""


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """One SuperLink and three SuperNodes as separate processes on 127.0.0.1, always stopped afterwards."""
    root = tmp_path_factory.mktemp("deployment")
    link = free_port()
    home = root / "flwr-home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = "127.0.0.1:{link}"\ninsecure = true\n'
    )
    env = {**os.environ, "FLWR_HOME": str(home), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    processes = []

    def start(name, *args):
        log = open(root / f"{name}.log", "w")
        processes.append(subprocess.Popen([str(BIN / args[0]), *args[1:]], stdout=log, stderr=subprocess.STDOUT,
                                          env=env, cwd=root, start_new_session=True))

    try:
        start("superlink", "flower-superlink", "--insecure", "--host", "127.0.0.1", "--port", str(link),
              "--disable-runtime-dependency-installation")
        wait_until_listening(link, processes[0], root / "superlink.log")
        for k in range(3):
            start(f"supernode-{k}", "flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{link}",
                  "--host", "127.0.0.1", "--port", str(free_port()),
                  "--node-config", f"partition-id={k} num-partitions=3")
        yield root, env
    finally:
        for process in processes:
            with_group = lambda sig: os.killpg(process.pid, sig)  # noqa: E731
            try:
                with_group(signal.SIGTERM)
                process.wait(timeout=15)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                with_group(signal.SIGKILL)
                process.wait(timeout=5)


def flwr_run(deployment, name: str, config: dict) -> dict:
    """Submit the app with ``config`` through ``flwr run`` and wait for its result.json."""
    root, env = deployment
    app = root / name
    app.mkdir()
    lines = [f"{key} = {json.dumps(value)}" for key, value in config.items()]
    (app / "pyproject.toml").write_text(APP_TOML + "\n".join(lines) + "\n")
    submitted = subprocess.run([str(BIN / "flwr"), "run", str(app), "local"], env=env, cwd=root,
                               capture_output=True, text=True, timeout=DEADLINE)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    result = Path(config["output"]) / "result.json"
    deadline = time.monotonic() + DEADLINE
    while not result.exists():
        assert time.monotonic() < deadline, "the Flower run produced no result in time"
        time.sleep(0.5)
    time.sleep(0.2)  # let the writer finish
    return json.loads(result.read_text())


@pytest.mark.slow
def test_deployment_engine_matches_the_in_process_simulator(data, deployment):
    root, _ = deployment
    x, y, test_x, test_y = data
    parts = federated.shard_partition(y, 3, seed=5)
    write_federation(root / "federation", x, y, parts, test_x, test_y)
    common = {"federation": str(root / "federation"), "num-clients": 3, "timeout": float(DEADLINE)}

    result = flwr_run(deployment, "afl", {**common, "output": str(root / "afl"), "method": "afl",
                                          "precision": "fixed", "ridge": RIDGE})
    aggregate, head, report = in_process(data, parts)
    assert result["nodes"] == 3 and result["clients"] == ["client-0", "client-1", "client-2"]
    assert result["state_hash"] == analytic.state_hash(aggregate.statistics)
    np.testing.assert_array_equal(analytic.load(root / "afl" / "head.npz").weights, head.weights)
    assert result["accuracy"] == report.accuracy
