"""Run configurations: TOML files read with ``tomllib``, every key checked against the schema of its kind.

A configuration names its ``kind`` (``continual``, ``federated`` or ``unlearning``) and sets keys of that kind
(:data:`SCHEMA`); missing keys take their defaults. A ``[quick]`` table holds the keys ``--quick`` replaces, and a
``[published]`` table the published numbers the run is compared against (``source``, ``setting`` and ``rows``, one
table per method with the metrics the paper reports). ``--set key=value`` overrides a key, the value read as TOML
(``--set seeds=[1993]``, ``--set ridge=\"auto\"``); a bare word is taken as a string (``--set dataset=digits``).

An unknown or misspelled key is an :class:`analytic.InputError` naming it and the nearest valid key (``difflib``);
so is a value of the wrong type, and an exemplar memory (``memory_size`` other than 0).
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path
from typing import Any, NamedTuple

from analytic import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CONFIG_DIR = Path(__file__).parent / "configs"
KINDS = ("continual", "federated", "unlearning")


class Key(NamedTuple):
    """One configuration key: the types it accepts, its default and what it means."""

    types: tuple[type, ...]
    default: Any
    doc: str


NUMBER = (int, float)
COMMON = {
    "kind": Key((str,), None, "continual, federated or unlearning"),
    "name": Key((str,), "", "the run's name (its folder); the file's stem by default"),
    "description": Key((str,), "", "one line on what the run measures"),
    "dataset": Key((str,), "fashion_mnist", "a dataset of analytic.data, or thirty_class (Fashion-MNIST + MNIST-5k + "
                   "Animal-MNIST)"),
    "data_root": Key((str,), "", "directory of a dataset that is read from a local path (CIFAR, image folders)"),
    "backbone_type": Key((str,), "mobilenetv2_100", "a backbone of analytic.backbones (a timm name; the part after "
                         "the dot names the weights), or pixels (the images sampled to image_size and flattened: no "
                         "backbone)"),
    "weights": Key((str,), "", "pretrained (shipped in a pip package), timm (timm's weights of backbone_type, "
                   "downloaded; the default), or a .pth/.safetensors file"),
    "image_size": Key((int,), 64, "side the images are resized to before the backbone"),
    "per_class": Key((int,), 0, "at most this many training samples per class (0: all)"),
    "test_per_class": Key((int,), 0, "at most this many test samples per class (0: all)"),
    "ridge": Key((int, float, str), 1.0, "the ridge γ, or \"auto\" for analytic.select_ridge"),
    "ridge_criterion": Key((str,), "gcv", "how \"auto\" chooses: gcv or held-out (a seeded 10 % held out)"),
    "ridge_candidates": Key((list,), [], "the ridges \"auto\" chooses among ([]: the library's 100-value grid)"),
    "methods": Key((list,), [], "the methods to run"),
    "seeds": Key((list,), [1993], "seeds; each one a full run"),
    "tensorboard": Key((bool,), False, "also log to TensorBoard (needs tensorboardX)"),
}
KIND_KEYS = {
    "continual": {
        "init_cls": Key((int,), 0, "classes of the first phase (B0: as many as increment)"),
        "increment": Key((int,), 10, "new classes per later phase"),
        "scenario": Key((str,), "class-incremental", "class-incremental or si-blurry"),
        "n_phases": Key((int,), 5, "phases of a si-blurry stream"),
        "memory_size": Key((int,), 0, "exemplars kept for rehearsal: 0 (every learner here is exemplar-free)"),
        "buffer_size": Key((int,), 1024, "width of the random buffer layer (ACIL, DS-AL, AIR, RanPAC, AEF-OCL) and of "
                           "GKEAL's kernel layer"),
        "ds_al_ratio": Key(NUMBER, 0.6, "DS-AL's compensation ratio"),
        "base_epochs": Key((int,), 300, "epochs of the base training (backbone_type resnet32: a CIFAR ResNet-32 trained "
                           "on each seed's base classes at the images' own size, then frozen)"),
        "base_learning_rate": Key(NUMBER, 0.5, "peak learning rate of the base training (cosine schedule)"),
        "base_batch_size": Key((int,), 256, "images per step of the base training"),
    },
    "federated": {
        "clients": Key((list,), [100], "client counts; each one a federation"),
        "partition": Key((str,), "dirichlet", "iid, dirichlet, shards or quantity"),
        "alpha": Key((list,), [0.1], "Dirichlet concentrations α; each one a federation"),
        "rounds": Key((int,), 50, "rounds of the gradient methods"),
        "client_fraction": Key(NUMBER, 0.1, "share of clients sampled per gradient round"),
    },
    "unlearning": {
        "scenario": Key((str,), "class", "class (forget whole classes, one at a time) or random (a share of samples)"),
        "forget_classes": Key((int,), 1, "classes forgotten, one request each (scenario class)"),
        "forget_share": Key((list,), [0.1], "shares of the training set forgotten, one request each (scenario random)"),
        "learning_rates": Key((list,), [0.01], "the grid of each gradient method; the best Avg. Gap is kept"),
        "epochs": Key((int,), 20, "epochs of the SGD head and of its retrain"),
        "mia_samples": Key((int,), 2000, "members and non-members of the membership-inference attack"),
    },
}
TABLES = ("quick", "published")
PUBLISHED_KEYS = ("source", "setting", "note", "rows")


def schema(kind: str) -> dict[str, Key]:
    """The keys a configuration of ``kind`` may set."""
    return {**COMMON, **KIND_KEYS[kind]}


def nearest(word: str, choices) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_value(key: str, value, spec: Key, where: str) -> None:
    if isinstance(value, bool) and bool not in spec.types:
        raise InputError(f"{where}{key} = {value!r}: expected {' or '.join(t.__name__ for t in spec.types)}")
    if not isinstance(value, spec.types):
        raise InputError(f"{where}{key} = {value!r} is a {type(value).__name__}: expected "
                         f"{' or '.join(t.__name__ for t in spec.types)} ({spec.doc})")


def _check_keys(table: dict, keys: dict[str, Key], where: str) -> None:
    for key, value in table.items():
        if key not in keys:
            raise InputError(f"unknown key {where}{key!r}{nearest(key, keys)}; valid keys: {', '.join(sorted(keys))}")
        _check_value(key, value, keys[key], where)


def _check_meaning(config: dict) -> None:
    """The checks beyond types: the values a kind accepts."""
    ridge = config["ridge"]
    if isinstance(ridge, str) and ridge != "auto" or not isinstance(ridge, str) and not ridge > 0:
        raise InputError(f"ridge = {ridge!r}: a positive number or \"auto\"")
    if config["ridge_criterion"] not in ("gcv", "held-out"):
        raise InputError(f"ridge_criterion = {config['ridge_criterion']!r}: gcv or held-out"
                         f"{nearest(config['ridge_criterion'], ('gcv', 'held-out'))}")
    if not all(isinstance(seed, int) and not isinstance(seed, bool) for seed in config["seeds"]) or not config["seeds"]:
        raise InputError(f"seeds = {config['seeds']!r}: a non-empty list of integers")
    if config["kind"] == "continual" and config["memory_size"] != 0:
        raise InputError(f"memory_size = {config['memory_size']}: the learners here are exemplar-free (they keep "
                         "statistics, never samples), so there is no rehearsal memory to fill; set memory_size = 0")
    if config["kind"] == "continual" and config["scenario"] not in ("class-incremental", "si-blurry"):
        raise InputError(f"scenario = {config['scenario']!r}: class-incremental or si-blurry"
                         f"{nearest(config['scenario'], ('class-incremental', 'si-blurry'))}")
    if config["kind"] == "unlearning" and config["scenario"] not in ("class", "random"):
        raise InputError(f"scenario = {config['scenario']!r}: class or random"
                         f"{nearest(config['scenario'], ('class', 'random'))}")


def validate(raw: dict, *, name: str = "") -> dict:
    """A complete configuration from the keys of a TOML file: every key checked, the defaults filled in.

    Args:
        raw: the parsed TOML (``kind``, the kind's keys, optionally ``[quick]`` and ``[published]``).
        name: the default of the ``name`` key (the file's stem).

    Returns:
        The configuration: every key of the kind's schema, the ``quick`` and ``published`` tables.

    Raises:
        InputError: a missing or unknown kind, an unknown key (with the nearest valid one), a value of the wrong
            type or meaning.
    """
    kind = raw.get("kind")
    if kind not in KINDS:
        raise InputError(f"kind = {kind!r}: one of {', '.join(KINDS)}{nearest(str(kind), KINDS)}")
    keys = schema(kind)
    plain = {key: value for key, value in raw.items() if key not in TABLES}
    _check_keys(plain, keys, "")
    quick = raw.get("quick", {})
    if not isinstance(quick, dict):
        raise InputError("quick must be a table of keys that --quick replaces")
    _check_keys(quick, keys, "quick.")
    published = raw.get("published", {})
    unknown = [key for key in published if key not in PUBLISHED_KEYS]
    if unknown:
        raise InputError(f"unknown key published.{unknown[0]!r}{nearest(unknown[0], PUBLISHED_KEYS)}; valid keys: "
                         f"{', '.join(PUBLISHED_KEYS)}")
    config = {key: spec.default for key, spec in keys.items()}
    config.update(plain, name=plain.get("name") or name)
    _check_meaning(config)
    return {**config, "quick": quick, "published": published}


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` from the command line: the value read as TOML, a bare word as a string.

    Raises:
        InputError: no ``=`` in ``text``.
    """
    key, separator, value = text.partition("=")
    if not separator or not key.strip():
        raise InputError(f"--set {text!r}: expected key=value")
    try:
        parsed = tomllib.loads(f"value = {value.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return key.strip(), parsed


def resolve(config: dict, overrides=(), *, quick: bool = False) -> dict:
    """The configuration a run uses: ``--quick``'s table applied (with ``quick``), then the ``--set`` overrides.

    Args:
        config: a configuration from :func:`validate`.
        overrides: ``key=value`` strings.
        quick: apply the ``[quick]`` table.

    Returns:
        A new configuration, validated again; ``quick`` records whether the quick table was applied.

    Raises:
        InputError: an override of an unknown key (with the nearest valid one) or of a bad value.
    """
    values = {key: value for key, value in config.items() if key not in TABLES}
    if quick:
        values.update(config["quick"])
    for text in overrides:
        key, value = parse_override(text)
        values[key] = value
    if isinstance(values.get("ridge"), str) and values["ridge"] != "auto":
        try:  # "--set ridge=0.1" reads as a number already; a quoted number is still one
            values["ridge"] = float(values["ridge"])
        except ValueError:
            pass
    resolved = validate({**values, "quick": config["quick"], "published": config["published"]}, name=config["name"])
    resolved["mode"] = "quick" if quick else "full"
    return resolved


def load(path) -> dict:
    """Read and validate a configuration file; a bare name is looked up among the shipped configurations.

    Args:
        path: a ``.toml`` file, or the name of a shipped configuration (``analytic-learning run --list``).

    Returns:
        The configuration (:func:`validate`).

    Raises:
        InputError: no such file or shipped configuration (with the nearest name), a TOML syntax error, or a bad
            key or value.
    """
    candidate = Path(path)
    if not candidate.is_file():
        shipped = {file.stem: file for file in CONFIG_DIR.glob("*.toml")}
        if str(path) not in shipped:
            raise InputError(f"no configuration file {str(path)!r} and no shipped configuration of that name"
                             f"{nearest(str(path), shipped)}; see: analytic-learning run --list")
        candidate = shipped[str(path)]
    try:
        raw = tomllib.loads(candidate.read_text())
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"{candidate}: not valid TOML ({error})") from error
    return validate(raw, name=candidate.stem)


def shipped() -> dict[str, dict]:
    """The shipped configurations by name (package data under ``benchmarks/configs``)."""
    return {file.stem: load(file) for file in sorted(CONFIG_DIR.glob("*.toml"))}
