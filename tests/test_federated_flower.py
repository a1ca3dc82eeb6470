"""AFL on Flower: the simulation runtime and the deployment runtime (separate processes on loopback), both driven
by ``flwr run``, give exactly the in-process simulator's aggregate. FedAvg through Flower runs in
``benchmarks/federated.py``."""

import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import make_classification

import analytic
import federated
from federated.flower_app import _stream_replies, write_federation
from federated.flower_runtime import _stop, run_flower_deployment, run_flower_simulation
from federated.simulation import simulate_afl

D = 8
CLASSES = (0, 1, 2, 3, 4)
RIDGE = 0.5
DEADLINE = 180.0  # seconds any Flower run may take before the test fails


@pytest.fixture(scope="module")
def data():
    x, y = make_classification(n=900, d=D, classes=CLASSES, seed=41)
    return x[:750], y[:750], x[750:], y[750:]


def in_process(data, parts):
    x, y, test_x, test_y = data
    return simulate_afl(x, y, parts, ridge=RIDGE, precision="fixed", test_features=test_x, test_labels=test_y,
                        progress=False)


def check_matches_in_process(result, output, data, parts, n_clients):
    aggregate, head, report = in_process(data, parts)
    assert result["nodes"] == n_clients and result["failures"] == 0 and result["rejected"] == {}
    assert result["clients"] == sorted(f"client-{k}" for k in range(n_clients))
    assert result["state_hash"] == analytic.state_hash(aggregate.statistics)
    np.testing.assert_array_equal(analytic.load(output / "head.npz").weights, head.weights)
    assert result["accuracy"] == report.accuracy and result["bytes_up"] == report.bytes_up


@pytest.mark.slow
def test_simulation_runtime_matches_the_in_process_simulator(data, tmp_path):
    x, y, test_x, test_y = data
    parts = federated.dirichlet_partition(y, 8, 0.1, seed=3)
    write_federation(tmp_path / "federation", x, y, parts, test_x, test_y)
    settings = {"federation": str(tmp_path / "federation"), "output": str(tmp_path / "out"), "precision": "fixed",
                "ridge": RIDGE, "timeout": DEADLINE, "wave": 3}
    result = run_flower_simulation(settings, 8, timeout=DEADLINE)
    check_matches_in_process(result, tmp_path / "out", data, parts, 8)


@pytest.mark.slow
def test_deployment_runtime_matches_the_in_process_simulator(data, tmp_path):
    x, y, test_x, test_y = data
    parts = federated.shard_partition(y, 3, seed=5)
    write_federation(tmp_path / "federation", x, y, parts, test_x, test_y)
    settings = {"federation": str(tmp_path / "federation"), "output": str(tmp_path / "out"), "method": "afl",
                "precision": "fixed", "ridge": RIDGE, "timeout": DEADLINE}
    result = run_flower_deployment(settings, 3, timeout=DEADLINE)
    check_matches_in_process(result, tmp_path / "out", data, parts, 3)


def test_a_run_without_a_written_federation_is_refused(tmp_path):
    with pytest.raises(ValueError, match="needs the setting 'federation'"):
        run_flower_simulation({"output": str(tmp_path / "out")}, 2)
    with pytest.raises(FileNotFoundError, match="write it with write_federation first"):
        run_flower_deployment({"federation": str(tmp_path / "nowhere"), "output": str(tmp_path / "out")}, 2)


class AnsweringGrid:
    """The push and pull of a grid whose clients answer every pushed message by the next pull (never if
    ``silent``); it records the size of each push and the most messages ever unanswered."""

    def __init__(self, silent: bool = False):
        self.silent, self.pushes, self.unanswered, self.most_unanswered = silent, [], [], 0

    def push_messages(self, messages):
        ids = [f"message-{len(self.pushes)}-{k}" for k in range(len(messages))]
        self.pushes.append(len(ids))
        self.unanswered += ids
        self.most_unanswered = max(self.most_unanswered, len(self.unanswered))
        return ids

    def pull_messages(self, message_ids):
        if self.silent:
            return []
        replies = [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i)) for i in self.unanswered]
        assert set(self.unanswered) <= set(message_ids)
        self.unanswered = []
        return replies


def test_queries_go_out_one_first_then_in_a_sliding_window():
    grid = AnsweringGrid()
    batches = list(_stream_replies(grid, iter(range(25)), window=10, interval=0.0, timeout=60.0))
    assert grid.pushes[0] == 1 and grid.most_unanswered == 10 and sum(grid.pushes) == 25
    assert sum(len(batch) for batch in batches) == 25


def test_streaming_replies_ends_at_the_timeout():
    grid = AnsweringGrid(silent=True)
    started = time.monotonic()
    assert list(_stream_replies(grid, iter(range(5)), window=2, interval=0.01, timeout=0.05)) == []
    assert grid.pushes == [1] and time.monotonic() - started < 5.0


def test_missing_flower_names_the_extra_to_install(monkeypatch):
    import importlib
    import sys

    from federated import flower_runtime

    monkeypatch.setitem(sys.modules, "flwr.app", None)  # as if Flower were not installed
    monkeypatch.delitem(sys.modules, "federated.flower_app")
    with pytest.raises(ImportError, match=r"analytic-learning\[flower\]"):
        importlib.import_module("federated.flower_app")
    monkeypatch.setattr(flower_runtime, "BIN", flower_runtime.BIN / "absent")
    with pytest.raises(ImportError, match=r"analytic-learning\[flower\]"):
        flower_runtime.flower_command("flwr")


def test_stopping_a_runtime_process_stops_what_it_started_in_sessions_of_its_own():
    import psutil

    spawner = ("import subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', 'import time; "
               "time.sleep(120)'], start_new_session=True); print(child.pid, flush=True); time.sleep(120)")
    parent = subprocess.Popen([sys.executable, "-c", spawner], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    child = psutil.Process(int(parent.stdout.readline()))
    assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE
    _stop(parent)
    parent.stdout.close()
    assert parent.returncode is not None
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
