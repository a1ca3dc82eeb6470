"""Running the Flower app (:mod:`federated.flower_app`) on Flower's runtimes through its CLI, ``flwr run``.

A run is a Flower app directory (:func:`write_app`: a ``pyproject.toml`` naming the app's components, with the
run's settings as its ``[tool.flwr.app.config]``) submitted with ``flwr run <app> <connection> --stream`` to a
SuperLink. Two local SuperLinks are provided, each its own process group on a free loopback port with its own
Flower home directory, stopped when the ``with`` block ends:

* :func:`local_simulation` — a SuperLink with the simulation runtime: the virtual SuperNodes live in one Ray
  process pool (``--federation-config num-supernodes=N``).
* :func:`local_deployment` — a SuperLink and ``n_nodes`` ``flower-supernode`` processes, each holding one
  partition (``node_config`` ``partition-id``), talking over the network stack like remote machines would.

:func:`run_flower_simulation` and :func:`run_flower_deployment` do one run from start to end and return the
server's ``result.json``. For a real deployment, write the app with :func:`write_app` and submit it to your own
SuperLink with ``flwr run``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from analytic.errors import InputError

BIN = Path(sys.executable).parent  # flwr, flower-superlink and flower-supernode of this environment
APP_NAME = "analytic-federation"
CONNECTION = "local"
PATH_SETTINGS = ("federation", "output")  # made absolute: Flower runs the apps in directories of its own
# Seconds between two SuperExec polls for a submitted run. Flower's default, 1 s, adds 0.5 s on average before a
# run starts; each poll costs the idle SuperLink and SuperExec about 5 ms of CPU (2 % of a core at 0.25 s).
TASK_POLL_INTERVAL = 0.25

_APP_TOML = f"""[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "{APP_NAME}"
version = "1.0.0"
description = "Analytic federated learning (AFL) and FedAvg on frozen features"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "analytic"

[tool.flwr.app.components]
serverapp = "federated.flower_app:server_app"
clientapp = "federated.flower_app:client_app"

[tool.flwr.app.config]
"""


class FlowerRunError(RuntimeError):
    """A Flower process failed or a run produced no result; the message carries the relevant log."""


@dataclass(frozen=True)
class LocalSuperLink:
    """A running local SuperLink: its Flower home (holding the CLI connection ``local``), address and log."""

    home: Path
    address: str
    log: Path


def _absolute(settings: dict) -> dict:
    return {key: str(Path(value).resolve()) if key in PATH_SETTINGS else value for key, value in settings.items()}


def _require_paths(settings: dict) -> None:
    for key in PATH_SETTINGS:
        if key not in settings:
            raise InputError(f"a Flower run needs the setting {key!r} (the directories of the federation and results)")


def write_app(directory, settings: dict) -> Path:
    """A Flower app directory whose run configuration is ``settings`` (keys of :data:`federated.flower_app.DEFAULTS`
    and ``federation``, ``output``, ``num-clients``; relative paths are resolved here); returns the directory."""
    _require_paths(settings)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f"{key} = {json.dumps(value)}" for key, value in _absolute(settings).items()]
    (directory / "pyproject.toml").write_text(_APP_TOML + "\n".join(lines) + "\n")
    return directory


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _environment(home: Path) -> dict[str, str]:
    """The Flower processes' environment: this Flower home, this environment's executables, no update check, and
    a SuperExec that looks for a submitted run every :data:`TASK_POLL_INTERVAL` seconds."""
    return {**os.environ, "FLWR_HOME": str(home), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "FLWR_DISABLE_UPDATE_CHECK": "1", "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": str(TASK_POLL_INTERVAL)}


def _log_tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"


def _stop(process: subprocess.Popen) -> None:
    """Stop ``process`` and every process it started — Flower's SuperExec and simulation runtime, and Ray's
    workers, which start sessions of their own and would outlive a signal to the process group — with SIGTERM, then
    SIGKILL what lingers after 15 s."""
    import psutil

    try:
        root = psutil.Process(process.pid)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.terminate()
    _, lingering = psutil.wait_procs(family, timeout=15)
    for member in lingering:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    psutil.wait_procs(lingering, timeout=5)
    process.wait(timeout=5)


def _wait_until_listening(port: int, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise FlowerRunError(f"the SuperLink exited with code {process.returncode}:\n{_log_tail(log)}")
        if time.monotonic() > deadline:
            raise FlowerRunError(f"the SuperLink did not listen within {timeout:.0f} s:\n{_log_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.05)


@contextlib.contextmanager
def _processes() -> Iterator[list[subprocess.Popen]]:
    processes: list[subprocess.Popen] = []
    try:
        yield processes
    finally:
        for process in reversed(processes):
            _stop(process)


def flower_command(name: str) -> str:
    """The path of one of Flower's command-line tools in this environment; raises ImportError naming the extra to
    install when Flower is missing."""
    path = BIN / name
    if not path.exists():
        raise ImportError(f"{name} is not installed beside this Python: pip install 'analytic-learning[flower]'")
    return str(path)


def _start(processes: list, home: Path, log: Path, *command: str) -> subprocess.Popen:
    with open(log, "w") as output:
        process = subprocess.Popen([flower_command(command[0]), *command[1:]], stdout=output, stderr=subprocess.STDOUT,
                                   env=_environment(home), cwd=home, start_new_session=True)
    processes.append(process)
    return process


def _superlink(processes: list, home: Path, *, simulation: bool, timeout: float) -> LocalSuperLink:
    home.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    address = f"127.0.0.1:{port}"
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\naddress = "{address}"\ninsecure = true\n'
    )
    log = home / "superlink.log"
    runtime = ["--simulation"] if simulation else []
    process = _start(processes, home, log, "flower-superlink", "--insecure", *runtime, "--host", "127.0.0.1",
                     "--port", str(port), "--disable-runtime-dependency-installation")
    _wait_until_listening(port, process, log, timeout)
    return LocalSuperLink(home, address, log)


@contextlib.contextmanager
def local_simulation(home, *, timeout: float = 120.0) -> Iterator[LocalSuperLink]:
    """A SuperLink with Flower's simulation runtime on a free loopback port, stopped when the block ends."""
    with _processes() as processes:
        yield _superlink(processes, Path(home), simulation=True, timeout=timeout)


@contextlib.contextmanager
def local_deployment(home, n_nodes: int, *, timeout: float = 120.0) -> Iterator[LocalSuperLink]:
    """A SuperLink and ``n_nodes`` SuperNode processes (node ``k`` holds partition ``k``), stopped when the block
    ends."""
    with _processes() as processes:
        link = _superlink(processes, Path(home), simulation=False, timeout=timeout)
        for k in range(int(n_nodes)):
            _start(processes, link.home, link.home / f"supernode-{k}.log", "flower-supernode", "--insecure",
                   "--superlink", link.address, "--host", "127.0.0.1", "--port", str(_free_port()),
                   "--node-config", f"partition-id={k} num-partitions={int(n_nodes)}")
        yield link


def _check_federation(settings: dict) -> None:
    """Refuse a run whose settings name no written federation, before any Flower process starts."""
    _require_paths(settings)
    if not (Path(settings["federation"]) / "features.npy").exists():
        raise FileNotFoundError(f"no federation in {settings['federation']}: write it with write_federation first")


def flwr_run(link: LocalSuperLink, app, settings: dict, *, federation_config: str | None = None,
             timeout: float = 600.0, show_logs: bool = False) -> dict:
    """Write the app with ``settings`` (:func:`write_app`) into ``app``, run ``flwr run <app> local --stream`` on
    ``link`` and return the server's ``result.json`` (written to ``settings["output"]``).

    Raises:
      FlowerRunError: the submission failed, or the run ended without writing its result.
    """
    _check_federation(settings)
    app = write_app(app, settings)
    result = Path(settings["output"]).resolve() / "result.json"
    result.unlink(missing_ok=True)
    command = [flower_command("flwr"), "run", str(app), CONNECTION, "--stream"]
    if federation_config:
        command += ["--federation-config", federation_config]
    try:
        submitted = subprocess.run(command, env=_environment(link.home), cwd=link.home, timeout=timeout,
                                   capture_output=not show_logs, text=True)
    except subprocess.TimeoutExpired as error:
        raise FlowerRunError(f"the Flower run took longer than {timeout:.0f} s:\n{_log_tail(link.log)}") from error
    if submitted.returncode != 0 or not result.exists():
        raise FlowerRunError(
            f"the Flower run ended with code {submitted.returncode} and no result:\n"
            f"{submitted.stdout or ''}{submitted.stderr or ''}\n{_log_tail(link.log)}"
        )
    return json.loads(result.read_text())


def run_flower_simulation(settings: dict, n_clients: int, *, num_cpus: int = 2, timeout: float = 1800.0,
                          show_logs: bool = False) -> dict:
    """One run on Flower's simulation runtime with ``n_clients`` virtual SuperNodes sharing ``num_cpus`` cores."""
    _check_federation(settings)
    with tempfile.TemporaryDirectory() as scratch, local_simulation(Path(scratch) / "flwr-home") as link:
        federation = f"num-supernodes={int(n_clients)} init-args-num-cpus={int(num_cpus)} client-resources-num-cpus=1"
        return flwr_run(link, Path(scratch) / "app", {**settings, "num-clients": int(n_clients)},
                        federation_config=federation, timeout=timeout, show_logs=show_logs)


def run_flower_deployment(settings: dict, n_nodes: int, *, timeout: float = 600.0, show_logs: bool = False) -> dict:
    """One run on Flower's deployment runtime: a SuperLink and ``n_nodes`` SuperNode processes on this machine."""
    _check_federation(settings)
    with tempfile.TemporaryDirectory() as scratch, local_deployment(Path(scratch) / "flwr-home", n_nodes) as link:
        return flwr_run(link, Path(scratch) / "app", {**settings, "num-clients": int(n_nodes)}, timeout=timeout,
                        show_logs=show_logs)
