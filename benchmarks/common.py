"""Small shared pieces of the benchmarks: timing, tables, JSON output and the plotting backend."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np


def parser(description: str) -> argparse.ArgumentParser:
    """Argument parser with the options every benchmark shares: ``--quick`` and ``--out``."""
    args = argparse.ArgumentParser(description=description)
    args.add_argument("--quick", action="store_true", help="small sizes, finishes in under a minute")
    args.add_argument("--out", default="results", help="folder for the JSON and plots (default: results/)")
    return args


def add_sections(args: argparse.ArgumentParser, choices: tuple[str, ...], default: str | None = "all") -> None:
    """``--sections``: a comma-separated subset of ``choices``, parsed to a set (``default`` ``"all"``: every
    section; ``None``: left to the benchmark); an unknown name is refused, naming the choices."""
    def subset(value: str) -> set[str]:
        chosen = set(value.split(","))
        if not chosen <= set(choices):
            raise argparse.ArgumentTypeError(f"unknown sections {sorted(chosen - set(choices))}: choose among "
                                             f"{', '.join(choices)}")
        return chosen

    args.add_argument("--sections", type=subset, default=",".join(choices) if default == "all" else default,
                      help=f"comma-separated subset of {', '.join(choices)}"
                           + (" (default: all)" if default == "all" else ""))


def has_extra(module: str, extra: str, what: str) -> bool:
    """Whether ``module`` imports; if not, say which part is skipped and which extra brings it back."""
    import importlib.util

    if importlib.util.find_spec(module) is not None:
        return True
    print(f"\nskipped {what}: needs {module} (pip install 'analytic-learning[{extra}]')")
    return False


def best_time(function: Callable[[], object], repeats: int = 3) -> tuple[float, object]:
    """Minimum wall time of ``repeats`` calls, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def interleaved_times(functions: dict[str, Callable[[], object]], repeats: int = 3) -> dict[str, float]:
    """Minimum wall time of each function over ``repeats`` rounds that call them in turn (A, B, A, B, …), so that
    a shared machine's drift hits every contender alike. Call each once beforehand to leave compilation out."""
    best = {name: float("inf") for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


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
    import jax

    return {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
            "numpy": np.__version__, "jax": jax.__version__, "jax_devices": [str(d) for d in jax.devices()]}


def provenance() -> dict:
    """What made the figures: the library version, its git commit when there is one, the command and the time."""
    import analytic

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).parent).stdout.strip() or None
    except OSError:
        commit = None
    return {"version": analytic.__version__, "git_commit": commit, "command": " ".join([sys.executable, *sys.argv]),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def ridge_choice(features, labels, ridges=None, criterion: str = "held-out"):
    """``analytic.select_ridge`` on the statistics of ``features``: by the accuracy on a seeded 10 % held out
    (subtracted, no refit; ``criterion="held-out"``) or by GCV (``"gcv"``); ``ridges`` None is the library's grid.
    Returns the :class:`analytic.RidgeChoice`."""
    import analytic

    stats = analytic.accumulate(analytic.init_statistics(features.shape[1]), features, labels)
    if criterion == "gcv":
        return analytic.select_ridge(stats, ridges)
    held_out = np.random.default_rng(0).permutation(len(labels))[: len(labels) // 10]
    return analytic.select_ridge(stats, ridges, held_out=(features[held_out], labels[held_out]))


def write_json(out_dir: str, name: str, payload: dict) -> Path:
    """Write ``payload`` (plus the machine and provenance) to ``out_dir/name.json`` and return the path."""
    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    target = path / f"{name}.json"
    target.write_text(json.dumps({"machine": machine(), "provenance": provenance(), **payload}, indent=2,
                                 default=float))
    print(f"\nwrote {target}")
    return target


class FrozenFeatures(NamedTuple):
    """Features of a dataset under a frozen pretrained backbone, and where they came from."""

    dataset: str
    backbone: str
    path: str
    train_features: np.ndarray
    train_labels: np.ndarray
    test_features: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]


def load_images(*, subset: int | None = None, seed: int = 0, dataset: str = "fashion_mnist", path=None):
    """Fashion-MNIST when it can be had (Debian package, $FASHION_MNIST_DIR or the official download), otherwise
    scikit-learn's digits, saying so; or another dataset of :func:`analytic.data.load_dataset` from ``path`` (CIFAR-10
    and CIFAR-100 from their python pickles; a missing one raises its ``DatasetNotFoundError``). ``subset`` keeps a
    seeded, class-stratified share of the training set."""
    from analytic.data import DatasetNotFoundError, load_dataset, load_digits, load_fashion_mnist, stratified_split

    if dataset != "fashion_mnist":
        data = load_dataset(dataset, **({} if path is None else {"path": path}))
    else:
        try:
            data = load_fashion_mnist(download=True)
        except (DatasetNotFoundError, OSError) as error:
            print(f"Fashion-MNIST is not available ({type(error).__name__}); falling back to scikit-learn digits.")
            data = load_digits()
    if subset is not None and subset < len(data.train_labels):
        _, keep = stratified_split(data.train_labels, subset / len(data.train_labels), seed)
        _, test_keep = stratified_split(data.test_labels, min(subset / 6 / len(data.test_labels), 0.5), seed)
        keep, test_keep = np.sort(keep), np.sort(test_keep)
        data = data._replace(train_images=data.train_images[keep], train_labels=data.train_labels[keep],
                             test_images=data.test_images[test_keep], test_labels=data.test_labels[test_keep])
    return data


def feature_cache_dir() -> Path:
    """Where extracted features are cached: ``features`` in the user cache directory
    (:func:`analytic.data.default_cache_dir`, ``$XDG_CACHE_HOME/analytic``, ``~/.cache/analytic`` by default), whatever
    the working directory. Set ``XDG_CACHE_HOME`` to move it."""
    from analytic.data import default_cache_dir

    return default_cache_dir() / "features"


def feature_extractor(backbone: str = "mobilenetv2_100", *, weights="pretrained", image_side: int = 64,
                      cache_dir: str | None = None, progress: bool = False):
    """A function from images to the pooled features of a frozen backbone, cached on disk (``cache_dir``, by
    default :func:`feature_cache_dir`), and the execution path it uses.

    The path is :func:`analytic.features.default_path` (flax on an accelerator; on a CPU torch when installed,
    flax otherwise).
    """
    from analytic.backbones import create_backbone
    from analytic.features import Preprocess, default_path, extract_features

    model = create_backbone(backbone, weights=weights)
    path = default_path()
    preprocess = Preprocess.for_backbone(model, size=image_side)

    def extract(images):
        return extract_features(model, images, path=path, preprocess=preprocess,
                                cache_dir=cache_dir or feature_cache_dir(), batch_size=256, progress=progress)

    return extract, path


def frozen_features(*, subset: int | None = None, backbone: str = "mobilenetv2_100", image_side: int = 64,
                    cache_dir: str | None = None) -> FrozenFeatures:
    """Pooled features of the default data under an ImageNet-pretrained backbone (:func:`feature_extractor`); the
    execution path is reported."""
    data = load_images(subset=subset)
    extract, path = feature_extractor(backbone, image_side=image_side, cache_dir=cache_dir, progress=True)
    return FrozenFeatures(
        dataset=data.name, backbone=f"{backbone} (ImageNet, {image_side}px)", path=path,
        train_features=extract(data.train_images), train_labels=data.train_labels,
        test_features=extract(data.test_images), test_labels=data.test_labels, class_names=data.class_names,
    )
