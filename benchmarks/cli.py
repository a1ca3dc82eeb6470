"""The ``analytic-learning`` command: the benchmarks and the demo of an installed package.

    analytic-learning bench core --quick --out results
    analytic-learning bench --list

In a checkout the same modules run as ``python -m benchmarks.<name>``; installed, the package is
``analytic_benchmarks`` (a name no user project will have), so ``python -m analytic_benchmarks.<name>`` works too.
"""

from __future__ import annotations

import argparse
import runpy
import sys

BENCHMARKS = {
    "demo": "the main job on the embedded default data: one table per capability",
    "core": "speed, memory and precision of the analytic core",
    "speed": "the analytic paths against their references, interleaved",
    "continual": "exemplar-free class-incremental learning against the baselines",
    "federated": "one-round exact federation against FedAvg / FedProx / SCAFFOLD",
    "unlearning": "exact forgetting against the gradient unlearning methods",
    "multihost": "the multi-controller runtime over loopback",
    "ridge": "choosing the ridge by one eigendecomposition against refitting every candidate",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="analytic-learning", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser("bench", help="run one benchmark; arguments after its name go to it")
    bench.add_argument("name", nargs="?", choices=sorted(BENCHMARKS), help="which benchmark")
    bench.add_argument("--list", action="store_true", help="list the benchmarks and stop")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``analytic-learning``.

    Args:
        argv: the arguments (``sys.argv[1:]`` when None).

    Example:
        >>> main(["bench", "--list"])  # doctest: +ELLIPSIS
        continual ...
    """
    argv = sys.argv[1:] if argv is None else argv
    known, rest = _parser().parse_known_args(argv)
    if known.list or known.name is None:
        for name in sorted(BENCHMARKS):
            print(f"{name:<11} {BENCHMARKS[name]}")
        return
    module = f"{__package__}.{known.name}"
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
