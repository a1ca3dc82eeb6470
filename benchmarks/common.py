"""Small shared pieces of the benchmarks: timing, tables, JSON output and the plotting backend."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np


def parser(description: str) -> argparse.ArgumentParser:
    """Argument parser with the options every benchmark shares: ``--quick`` and ``--out``."""
    args = argparse.ArgumentParser(description=description)
    args.add_argument("--quick", action="store_true", help="small sizes, finishes in under a minute")
    args.add_argument("--out", default="results", help="folder for the JSON and plots (default: results/)")
    return args


def best_time(function: Callable[[], object], repeats: int = 3) -> tuple[float, object]:
    """Minimum wall time of ``repeats`` calls, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def print_table(title: str, rows: list[dict], columns: list[str]) -> None:
    """A plain aligned text table of ``rows`` (dicts) restricted to ``columns``."""

    def cell(value):
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1e4 else f"{value:,.0f}"
        return str(value)

    cells = [[cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


def machine() -> dict:
    """What the figures were measured on."""
    return {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
            "numpy": np.__version__}


def write_json(out_dir: str, name: str, payload: dict) -> Path:
    """Write ``payload`` (plus the machine description) to ``out_dir/name.json`` and return the path."""
    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    target = path / f"{name}.json"
    target.write_text(json.dumps({"machine": machine(), **payload}, indent=2, default=float))
    print(f"\nwrote {target}")
    return target


def pyplot():
    """matplotlib's pyplot with a file-only backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
