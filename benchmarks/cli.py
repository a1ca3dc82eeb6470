"""The ``analytic-learning`` command: the benchmarks and the demo of an installed package.

    analytic-learning bench core --quick --out results
    analytic-learning bench --list
    analytic-learning run CONFIG [--set key=value ...] [--quick] [--dry-run] [--out DIR]
    analytic-learning run --list
    analytic-learning show RUN_DIR

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
    "secure_aggregation": "SecAgg / SecAgg+ cost per client and server, with dropouts, bit-identical sums",
    "federated_privacy": "accuracy against ε: AFL under central and distributed DP beside DP-FedAvg",
    "federated_peers": "FedCOF / Fed3R / FedNCM and the gradient methods against AFL: accuracy per byte",
    "federated_bytes": "bytes per client upload (packed Gram, triangular factor, float32) and the server's checks",
    "federated_tree": "100,000 clients through a tree of edge aggregators, 10⁶ on paper",
    "unlearning_network": "unlearning a fine-tuned network (gradient methods, LoRA, SISA) beside the exact head",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="analytic-learning", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser("bench", help="run one benchmark; arguments after its name go to it")
    bench.add_argument("name", nargs="?", choices=sorted(BENCHMARKS), help="which benchmark")
    bench.add_argument("--list", action="store_true", help="list the benchmarks and stop")
    run = commands.add_parser("run", help="run an experiment from a TOML configuration (a file or a shipped name)")
    run.add_argument("config", nargs="?", help="a .toml file or the name of a shipped configuration")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key (TOML value; repeatable)")
    run.add_argument("--quick", action="store_true", help="apply the configuration's [quick] table")
    run.add_argument("--dry-run", action="store_true", help="say what would run and what is missing, run nothing")
    run.add_argument("--out", default="runs", help="parent folder of the run folders (default: runs/)")
    run.add_argument("--list", action="store_true", help="list the shipped configurations and stop")
    show = commands.add_parser("show", help="print the tables of a finished run beside the published numbers")
    show.add_argument("folder", help="a run folder")
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
    if known.command in ("run", "show"):
        if rest:
            _parser().error(f"unrecognized arguments: {' '.join(rest)}")
        _run_or_show(known)
        return
    if known.list or known.name is None:
        for name in sorted(BENCHMARKS):
            print(f"{name:<11} {BENCHMARKS[name]}")
        return
    module = f"{__package__}.{known.name}"
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def _run_or_show(arguments) -> None:
    """``run`` and ``show``: a refused configuration or a missing requirement is one clear line, exit status 2."""
    from analytic import InputError

    from . import runner

    try:
        if arguments.command == "show":
            print(runner.show(arguments.folder))
        else:
            runner.main(arguments)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
