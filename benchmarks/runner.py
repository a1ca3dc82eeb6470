"""One runner for the continual, federated and unlearning experiments, driven by TOML configurations.

    analytic-learning run CONFIG [--set key=value ...] [--quick] [--dry-run] [--out DIR]
    analytic-learning run --list
    analytic-learning show RUN_DIR

Each run writes one folder, ``<out>/<name>`` (``<out>/<name>-quick`` with ``--quick``, so a quick run never
overwrites a full one): ``config.toml`` (the resolved configuration), the logs as CSV (``phases.csv``,
``rounds.csv`` or ``requests.csv``), ``summary.json`` (the tables, the chosen ridges, the library version, git
commit, JAX / NumPy versions, machine, command line and time), the plots, and with ``tensorboard = true`` a
``tensorboard/`` folder. The experiments are the benchmarks' own functions (:mod:`benchmarks.continual`,
:mod:`benchmarks.federated`, :mod:`benchmarks.unlearning`) on the public APIs.
"""

from __future__ import annotations

import csv
import json
import socket
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

import analytic
from analytic import InputError
from .common import feature_extractor, machine, print_table, provenance, ridge_choice
from .config import nearest, resolve, shipped
from continual.datasets import SOURCES, thirty_class_dataset

CONTINUAL_METHODS = ("ACIL", "DS-AL", "GKEAL", "AIR", "AIR (packed32)", "AEF-OCL", "RanPAC", "FT (SGD)",
                     "Joint (SGD)", "Joint (ridge)", "NCM", "SLDA")
FEDERATED_METHODS = ("AFL", "centralized", "fedavg", "fedprox", "scaffold")
LOGS = {"continual": "phases.csv", "federated": "rounds.csv", "unlearning": "requests.csv"}
PATH_DATASETS = ("cifar10", "cifar100", "imagenet_r", "imagenet_a", "cub", "omnibenchmark", "vtab")
THIRTY_CLASS = "thirty_class"  # continual.datasets.thirty_class_dataset over its SOURCES
BASE_TRAINED = "resnet32"  # continual.train_base on each seed's base classes (ACIL / DS-AL / GKEAL)


class RunData(NamedTuple):
    """The features a run learns from, and where they came from."""

    description: str
    train_features: np.ndarray
    train_labels: np.ndarray
    test_features: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]


class MissingRequirement(InputError):
    """Something a run needs is not on this machine; the message says what and how to provide it."""


# ---------------------------------------------------------------------------------------------------------------------
# What a run needs
# ---------------------------------------------------------------------------------------------------------------------


def unlearning_methods() -> tuple[str, ...]:
    from unlearning import methods

    return ("exact", *methods.GRADIENT_METHODS[1:])


def known_methods(kind: str) -> tuple[str, ...]:
    return {"continual": CONTINUAL_METHODS, "federated": FEDERATED_METHODS}.get(kind) or unlearning_methods()


def chosen_methods(config: dict) -> list[str]:
    """The configuration's methods, each checked (an unknown one names the nearest); all of them when empty."""
    known = known_methods(config["kind"])
    for method in config["methods"]:
        if method not in known:
            raise InputError(f"unknown method {method!r} for a {config['kind']} run{nearest(str(method), known)}; "
                             f"known: {', '.join(known)}")
    return list(config["methods"]) or list(known[:1] if config["kind"] != "continual" else known)


def _backbone_architecture(config: dict) -> str:
    return config["backbone_type"].split(".")[0]


def weights_source(config: dict) -> str:
    """The configured weights; ``timm`` (timm's weights of ``backbone_type``) when none are set."""
    return config["weights"] or "timm"


def requirements(config: dict) -> list[tuple[str, str, str | None]]:
    """What the run needs: ``(what, where it comes from, None)`` when present, ``(what, "", why not)`` otherwise."""
    from analytic import data
    from analytic.backbones import list_backbones

    needs = []
    sources = SOURCES if config["dataset"] == THIRTY_CLASS else (config["dataset"],)
    for source in sources:
        try:
            found = data.check_dataset(source, config["data_root"] or None)
            needs.append((f"dataset {source}", found, None))
        except (data.DatasetNotFoundError, ValueError) as error:
            hint = ""
            if source in PATH_DATASETS:
                hint = "\n  - or run with --set data_root=DIR"
            elif isinstance(error, ValueError) and not isinstance(error, data.DatasetNotFoundError):
                hint = f"{nearest(source, (*data.DATASET_NAMES, THIRTY_CLASS))}; or {THIRTY_CLASS}"
            needs.append((f"dataset {source}", "", f"{error}{hint}"))
    if config["backbone_type"] == BASE_TRAINED:
        needs.append(_base_training_need(config))
    elif config["backbone_type"] != "pixels":
        architecture = _backbone_architecture(config)
        if architecture not in list_backbones():
            needs.append((f"backbone {config['backbone_type']}", "", (
                f"{architecture!r} is not a backbone of analytic.backbones ({', '.join(list_backbones())}); "
                f"--set backbone_type=NAME picks one of them (or pixels, the flattened images)")))
        else:
            weights = weights_source(config)
            if weights in ("pretrained", "timm"):
                where = ("shipped in a pip package" if weights == "pretrained" else
                         f"downloaded from the Hugging Face hub as timm's {config['backbone_type']!r} when the run "
                         f"starts (offline: --set weights=FILE, a .safetensors or .pth state dict)")
                needs.append((f"weights of {config['backbone_type']}", where, None))
            elif Path(weights).is_file():
                needs.append((f"weights of {config['backbone_type']}", weights, None))
            else:
                needs.append((f"weights of {config['backbone_type']}", "", (
                    f"no weights file {weights!r}: --set weights=FILE (a .safetensors or .pth state dict)")))
    return needs


def _base_training_need(config: dict) -> tuple[str, str, str | None]:
    what = f"backbone {BASE_TRAINED}"
    if config["kind"] != "continual" or config["scenario"] != "class-incremental":
        return what, "", (f"{BASE_TRAINED} is trained on the base classes of a class-incremental run; this run needs a "
                          f"pretrained backbone: --set backbone_type=NAME")
    return what, (f"trained here on the {config['init_cls'] or config['increment']} base classes of each seed "
                  f"(continual.train_base: {config['base_epochs']} epochs, η {config['base_learning_rate']}, batch "
                  f"{config['base_batch_size']})"), None


def dry_run(config: dict) -> str:
    """What a run of ``config`` would do and whether everything it needs is here, as text.

    Args:
        config: a resolved configuration (:func:`benchmarks.config.resolve`).

    Returns:
        The lines to print: the setting, the methods, and every requirement (``ok`` or ``MISSING`` with how to
        provide it).
    """
    lines = [f"{config['name']} ({config['kind']}, {config['mode']}): {config['description']}",
             f"  methods: {', '.join(chosen_methods(config))}",
             f"  dataset {config['dataset']}, backbone {config['backbone_type']}, ridge {config['ridge']}, "
             f"seeds {config['seeds']}"]
    for what, where, missing in requirements(config):
        lines.append(f"  ok       {what}: {where}" if missing is None else f"  MISSING  {what}: {missing}")
    return "\n".join(lines)


def check_requirements(config: dict) -> None:
    """Raise :class:`MissingRequirement` listing every missing requirement of ``config``."""
    missing = [f"{what}: {why}" for what, _, why in requirements(config) if why is not None]
    if missing:
        raise MissingRequirement(f"{config['name']} cannot run here:\n" + "\n".join(missing))


# ---------------------------------------------------------------------------------------------------------------------
# Data and features
# ---------------------------------------------------------------------------------------------------------------------


def pixels(images: np.ndarray, side: int) -> np.ndarray:
    """The stand-in for a backbone: images (NHWC) sampled to at most ``side`` x ``side`` (nearest), flattened, uint8
    scaled to [0, 1]; feature rows are kept as they are."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[1] > side:
        rows, columns = (np.arange(side) * images.shape[1]) // side, (np.arange(side) * images.shape[2]) // side
        images = images[:, rows][:, :, columns]
    flat = images.reshape(len(images), -1).astype(np.float32)
    return flat / 255.0 if images.dtype == np.uint8 else flat


def _extractor(config: dict):
    if config["backbone_type"] == "pixels":
        return lambda images: pixels(images, config["image_size"])
    if config["backbone_type"] == BASE_TRAINED:
        return np.asarray  # the images: run_continual trains the network on each seed's base classes
    weights = weights_source(config)
    if weights == "timm":
        weights = _timm_state_dict(config["backbone_type"])
    extract, _ = feature_extractor(_backbone_architecture(config), weights=weights, image_side=config["image_size"])
    return extract


def _timm_state_dict(name: str) -> dict:
    from analytic.backbones import import_timm

    timm = import_timm()
    _require_hub(name)
    try:
        return timm.create_model(name, pretrained=True, num_classes=0).state_dict()
    except Exception as error:  # timm raises hub, network and name errors of many types
        raise MissingRequirement(f"the weights of {name!r} could not be had from the Hugging Face hub ({error}); "
                                 f"offline, pass --set weights=FILE (a .safetensors or .pth state dict)") from error


def _require_hub(name: str, timeout: float = 5.0) -> None:
    """Refuse at once when the Hugging Face hub cannot be reached (its client would retry for about a minute), unless
    ``HF_HUB_OFFLINE`` asks for the weights already in the local cache or a proxy carries the traffic (the direct
    probe would say nothing about it)."""
    from urllib.parse import urlparse
    from urllib.request import getproxies

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or {"https", "all"} & set(getproxies()):
        return
    host = urlparse(constants.ENDPOINT).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as error:
        raise MissingRequirement(
            f"the weights of {name!r} come from the Hugging Face hub, which cannot be reached ({host}: {error}); "
            f"offline, pass --set weights=FILE (a .safetensors or .pth state dict), or set HF_HUB_OFFLINE=1 to use "
            f"weights already in the local Hugging Face cache") from error


def _capped(labels: np.ndarray, cap: int) -> np.ndarray:
    """Rows keeping at most ``cap`` per class (seeded, sorted); all rows when ``cap`` is 0."""
    if not cap:
        return np.arange(labels.size)
    rng = np.random.default_rng(0)
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:cap] for c in np.unique(labels)]))


def _backbone_description(config: dict) -> str:
    if config["backbone_type"] == "pixels":
        return "pixels"
    if config["backbone_type"] == BASE_TRAINED:
        return f"{BASE_TRAINED} (trained on each seed's base classes)"
    return f"{config['backbone_type']} ({weights_source(config)}, {config['image_size']} px)"


def load_run_data(config: dict) -> RunData:
    """The features of the configuration's dataset under its backbone (cached on disk by the feature extractor).

    Raises:
        MissingRequirement: the dataset or the backbone's weights are not here.
    """
    check_requirements(config)
    from analytic import data

    extract = _extractor(config)
    where = _backbone_description(config)
    if config["dataset"] == THIRTY_CLASS:
        stream = thirty_class_dataset(per_class=config["per_class"] or None,
                                      test_per_class=config["test_per_class"] or None, features=extract)
        return RunData(f"{stream.name} under {where}", stream.train_images, stream.train_labels, stream.test_images,
                       stream.test_labels, stream.class_names)
    options = {}
    if config["dataset"] in PATH_DATASETS and config["data_root"]:
        options["path"] = config["data_root"]
    if config["dataset"] in data.IMAGE_FOLDERS:
        options["size"] = config["image_size"]
    dataset = data.load_dataset(config["dataset"], **options)
    train = _capped(dataset.train_labels, config["per_class"])
    test = _capped(dataset.test_labels, config["test_per_class"])
    return RunData(f"{dataset.name} under {where}", extract(dataset.train_images[train]),
                   dataset.train_labels[train], extract(dataset.test_images[test]), dataset.test_labels[test],
                   dataset.class_names)


def choose_ridge(config: dict, features, labels) -> tuple[float, dict | None]:
    """The ridge of the run: the configured number, or ``analytic.select_ridge``'s choice on ``features``."""
    if config["ridge"] != "auto":
        return float(config["ridge"]), None
    choice = ridge_choice(features, labels, config["ridge_candidates"] or None, config["ridge_criterion"])
    return choice.ridge, {"ridge": choice.ridge, "criterion": choice.criterion, "candidates": int(choice.ridges.size)}


# ---------------------------------------------------------------------------------------------------------------------
# The three kinds
# ---------------------------------------------------------------------------------------------------------------------


def run_continual(config: dict, data: RunData, log) -> dict:
    """Every method on every seed's scenario; rows of ``phases.csv`` through ``log``."""
    import continual
    from .continual import kernel_width, make_learners
    from analytic.plotting import accuracy_per_phase

    classes = np.unique(np.concatenate([data.train_labels, data.test_labels]))
    width = config["buffer_size"]
    kind = "strict" if config["scenario"] == "class-incremental" else "blurry"
    runs, ridges, base_networks = [], [], []
    for seed in config["seeds"]:
        if kind == "strict":
            scenario = continual.class_incremental(data.train_labels, base=config["init_cls"],
                                                   increment=config["increment"], seed=seed)
        else:
            scenario = continual.si_blurry(data.train_labels, n_phases=config["n_phases"], seed=seed)
        train_x, test_x = data.train_features, data.test_features
        if config["backbone_type"] == BASE_TRAINED:
            train_x, test_x, facts = base_trained_features(config, data, scenario.phases[0], seed)
            base_networks.append(facts)
        in_dim, sigma = train_x.shape[1], kernel_width(train_x)
        ridge, choice = config_ridge_on_first_phase(config, train_x, data.train_labels, scenario, width, seed)
        ridges.append({"seed": seed, "ridge": ridge, **({"choice": choice} if choice else {})})
        for learner in make_learners(chosen_methods(config), kind, classes, in_dim, width, sigma, seed, ridge,
                                     config["ds_al_ratio"]):
            result = continual.run(learner, scenario, train_x, data.train_labels, test_x, data.test_labels,
                                   progress=True)
            runs.append((seed, result))
            for t, accuracy in enumerate(result.seen_accuracy):
                log({"method": result.learner, "seed": seed, "scenario": result.scenario, "phase": t + 1,
                     "seen_accuracy": float(accuracy), "phase_seconds": float(result.phase_seconds[t]),
                     "state_bytes": int(result.state_bytes[t])})
    table = []
    for name in dict.fromkeys(r.learner for _, r in runs):
        summaries = [r.summary() for _, r in runs if r.learner == name]
        values = lambda key: [s[key] for s in summaries]  # noqa: E731
        table.append({"method": name, "seeds": len(summaries),
                      "average": float(np.mean(values("average_incremental_accuracy"))),
                      "average_std": float(np.std(values("average_incremental_accuracy"))),
                      "last": float(np.mean(values("last_accuracy"))),
                      "last_std": float(np.std(values("last_accuracy"))),
                      "forgetting": float(np.mean(values("forgetting"))),
                      "s_per_phase": float(np.mean(values("mean_phase_seconds")))})
    plot = lambda folder: [str(accuracy_per_phase(  # noqa: E731
        {name: [r.seen_accuracy for _, r in runs if r.learner == name] for name in dict.fromkeys(
            r.learner for _, r in runs)}, folder / "accuracy.png",
        title=f"{config['name']}: {runs[0][1].scenario}, seeds {', '.join(map(str, config['seeds']))}"))]
    return {"table": table, "columns": ["method", "seeds", "average", "average_std", "last", "last_std",
                                        "forgetting", "s_per_phase"], "ridges": ridges, "plot": plot,
            **({"base_networks": base_networks} if base_networks else {})}


def base_trained_features(config: dict, data: RunData, base_rows: np.ndarray, seed: int):
    """The features of a ResNet trained on the base phase's images (``continual.train_base``) and frozen; returns
    (train features, test features, facts about its training)."""
    import continual

    network = continual.train_base(data.train_features[base_rows], data.train_labels[base_rows],
                                   depth=int(BASE_TRAINED.removeprefix("resnet")), epochs=config["base_epochs"],
                                   learning_rate=config["base_learning_rate"], batch_size=config["base_batch_size"],
                                   seed=seed, progress=True)
    print(f"seed {seed}: {BASE_TRAINED} trained on {network.base_classes.size} base classes in "
          f"{network.seconds:.0f} s, {network.train_accuracy:.1f} % on its training images")
    return (network.features(data.train_features), network.features(data.test_features),
            {"seed": seed, "base_classes": network.base_classes.tolist(), "train_accuracy": network.train_accuracy,
             "seconds": network.seconds})


def config_ridge_on_first_phase(config: dict, features, labels, scenario, width: int, seed: int):
    """The continual ridge: the configured one, or chosen on the first phase's rows through the buffer layer."""
    from .continual import buffer_layers

    if config["ridge"] != "auto":
        return float(config["ridge"]), None
    relu, _ = buffer_layers(features.shape[1], width, seed)
    rows = scenario.phases[0]
    return choose_ridge(config, np.asarray(analytic.expand(relu, features[rows])), labels[rows])


def run_federated(config: dict, data: RunData, log) -> dict:
    """AFL (and the chosen baselines) for every seed, client count and α; rows of ``rounds.csv``."""
    import federated
    from federated.baselines import run_federated_gradient
    from federated.simulation import simulate_afl
    from .federated import GRADIENT_SETTINGS, plot, relative_error

    methods = chosen_methods(config)
    ridge, choice = choose_ridge(config, data.train_features, data.train_labels)
    dim = data.train_features.shape[1]
    pooled = analytic.accumulate(analytic.init_statistics(dim), data.train_features, data.train_labels)
    centralized = analytic.solve(pooled, ridge)
    centralized_accuracy = float(np.mean(analytic.predict_labels(centralized, data.test_features)
                                         == data.test_labels))
    afl_rows, runs, table = [], [], []
    if "centralized" in methods:
        table.append({"method": "centralized", "clients": 1, "alpha": "", "accuracy": centralized_accuracy})
    settings = {**GRADIENT_SETTINGS, "client_fraction": config["client_fraction"]}
    for seed in config["seeds"]:
        for n_clients in config["clients"]:
            for alpha in config["alpha"] if config["partition"] in ("dirichlet", "quantity") else [None]:
                label = f"α={alpha}" if alpha is not None else config["partition"]
                parts = federated.make_partition(config["partition"], data.train_labels, n_clients,
                                                 alpha=alpha or 1.0, seed=seed, min_size=0)
                common = {"seed": seed, "clients": n_clients, "alpha": "" if alpha is None else alpha}
                afl = None
                if "AFL" in methods:
                    _, head, report = simulate_afl(
                        data.train_features, data.train_labels, parts, ridge=ridge,
                        test_features=data.test_features, test_labels=data.test_labels, progress=True,
                        description=f"AFL {n_clients} clients, {label}")
                    afl = {"method": "AFL", **common, "accuracy": report.accuracy,
                           "relative_error": relative_error(head.weights, centralized.weights),
                           "empty_clients": int(sum(p.size == 0 for p in parts)),
                           "bytes_per_client": report.bytes_per_client, "bytes_up": report.bytes_up,
                           "seconds": report.seconds}
                    table.append(afl)
                    afl_rows.append({"clients": n_clients, "partition": label, "accuracy": report.accuracy})
                    log({"method": "AFL", **common, "round": 1, "accuracy": report.accuracy,
                         "bytes_up": report.bytes_up, "bytes_down": report.bytes_down, "seconds": report.seconds})
                for method in (m for m in methods if m in ("fedavg", "fedprox", "scaffold")):
                    record = run_federated_gradient(data.train_features, data.train_labels, parts,
                                                    data.test_features, data.test_labels, method=method,
                                                    rounds=config["rounds"], seed=seed, progress=True, **settings)
                    for r, accuracy in enumerate(record.accuracy):
                        log({"method": method, **common, "round": r + 1, "accuracy": accuracy,
                             "bytes_up": record.bytes_up[r], "bytes_down": record.bytes_down[r],
                             "seconds": record.seconds[r]})
                    table.append({"method": method, **common, "accuracy": record.accuracy[-1],
                                  "best_accuracy": max(record.accuracy), "rounds": len(record.accuracy),
                                  "bytes_up": record.bytes_up[-1], "seconds": record.seconds[-1]})
                    runs.append({"method": method, "partition": label, "accuracy_per_round": record.accuracy,
                                 "afl_accuracy": afl["accuracy"] if afl else centralized_accuracy})

    def plots(folder: Path) -> list[str]:
        return plot(folder, afl_rows, runs, centralized_accuracy) if afl_rows or runs else []

    return {"table": table, "columns": ["method", "seed", "clients", "alpha", "accuracy", "relative_error",
                                        "empty_clients", "bytes_per_client", "best_accuracy", "rounds", "seconds"],
            "ridges": [{"ridge": ridge, **({"choice": choice} if choice else {})}],
            "centralized_accuracy": centralized_accuracy, "plot": plots}


def run_unlearning(config: dict, data: RunData, log) -> dict:
    """Exact forgetting (and the chosen gradient methods) for every request; rows of ``requests.csv``."""
    from analytic import gradient
    from .unlearning import ORIGINAL_LEARNING_RATE, learn_head, plot, scenario_rows, tasks

    methods = chosen_methods(config)
    gradient_methods = [m for m in methods if m != "exact"]
    x, y = data.train_features, data.train_labels
    n_classes = len(data.class_names)
    ridge, choice = choose_ridge(config, x, y)
    per_class = config["scenario"] == "class"
    head = learn_head(x, y, ridge, per_class=per_class)
    original = (gradient.fit_softmax_head(x, y, n_classes=n_classes, epochs=config["epochs"],
                                          learning_rate=ORIGINAL_LEARNING_RATE) if gradient_methods else None)
    features = RunFeatures(x, y, data.test_features, data.test_labels)
    rows = []
    for seed in config["seeds"]:
        requests = tasks(features, n_classes, config["forget_classes"] if per_class else 0,
                         () if per_class else tuple(config["forget_share"]), seed=seed)
        for name, task in requests:
            for row in scenario_rows(name, task, head, original, ridge, config["epochs"], gradient_methods,
                                     tuple(config["learning_rates"]), None, config["mia_samples"]):
                row = {"seed": seed, **{k: v for k, v in row.items() if k not in ("grid", "receipt")}}
                rows.append(row)
                log(row)
    return {"table": rows, "columns": ["seed", "scenario", "method", "UA", "RA", "TA", "MIA", "avg_gap",
                                       "weight_error", "max_logit_diff", "argmax_agreement", "seconds"],
            "ridges": [{"ridge": ridge, **({"choice": choice} if choice else {})}],
            "plot": lambda folder: [plot_unlearning(plot, rows, folder)]}


class RunFeatures(NamedTuple):
    """The four arrays :func:`benchmarks.unlearning.tasks` reads."""

    train_features: np.ndarray
    train_labels: np.ndarray
    test_features: np.ndarray
    test_labels: np.ndarray


def plot_unlearning(plot, rows, folder: Path) -> str:
    path = folder / "unlearning.png"
    plot(rows, path)
    return str(path)


KIND_RUNS = {"continual": run_continual, "federated": run_federated, "unlearning": run_unlearning}


# ---------------------------------------------------------------------------------------------------------------------
# The run folder
# ---------------------------------------------------------------------------------------------------------------------


def run_folder(config: dict, out: str | Path) -> Path:
    """``<out>/<name>`` for a full run, ``<out>/<name>-quick`` for a quick one."""
    return Path(out) / (config["name"] + ("-quick" if config["mode"] == "quick" else ""))


class Log:
    """The run's CSV log (the columns of its first row) and, when asked, its TensorBoard scalars."""

    def __init__(self, path: Path, tensorboard: Path | None):
        self.path, self.rows, self.writer = path, [], None
        if tensorboard is not None:
            try:
                from tensorboardX import SummaryWriter
            except ImportError as error:
                raise MissingRequirement("tensorboard = true needs tensorboardX: pip install "
                                         "'analytic-learning[tensorboard]'") from error
            self.writer = SummaryWriter(str(tensorboard))

    def __call__(self, row: dict) -> None:
        self.rows.append(row)
        if self.writer is not None:
            step = row.get("phase", row.get("round", len(self.rows)))
            tag = "/".join(str(row[k]) for k in ("method", "seed", "clients", "alpha", "scenario") if k in row)
            for key, value in row.items():
                if isinstance(value, (int, float)) and key not in ("phase", "round", "seed", "clients", "alpha"):
                    self.writer.add_scalar(f"{tag}/{key}", value, step)

    def close(self) -> None:
        columns = list(dict.fromkeys(key for row in self.rows for key in row))
        with self.path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, columns)
            writer.writeheader()
            writer.writerows(self.rows)
        if self.writer is not None:
            self.writer.close()


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def run(config: dict, out: str | Path = "runs") -> Path:
    """Run a resolved configuration and write its folder.

    Args:
        config: from :func:`benchmarks.config.resolve`.
        out: the parent folder of the run folders.

    Returns:
        The run folder (:func:`run_folder`).

    Raises:
        MissingRequirement: data or weights are not here (nothing is written).
        InputError: an unknown method.
    """
    import tomli_w

    chosen_methods(config)
    started = time.perf_counter()
    data = load_run_data(config)
    folder = run_folder(config, out)
    folder.mkdir(parents=True, exist_ok=True)
    saved = {k: v for k, v in config.items() if k != "mode"}
    header = f"# the resolved configuration of this {config['mode']} run" + (
        " (its [quick] table already applied)\n" if config["mode"] == "quick" else "\n")
    (folder / "config.toml").write_text(header + tomli_w.dumps(saved))
    log = Log(folder / LOGS[config["kind"]], folder / "tensorboard" if config["tensorboard"] else None)
    print(f"{config['name']} ({config['mode']}): {data.description}; {len(data.train_labels):,} train / "
          f"{len(data.test_labels):,} test rows, {feature_dim(config, data)}-d")
    try:
        result = KIND_RUNS[config["kind"]](config, data, log)
    finally:
        log.close()
    plots = result.pop("plot")(folder) if _has_matplotlib() else []
    summary = {"name": config["name"], "kind": config["kind"], "mode": config["mode"], "data": data.description,
               "train_rows": len(data.train_labels), "test_rows": len(data.test_labels),
               "dim": feature_dim(config, data), **result, "published": config["published"],
               "plots": plots, "seconds": time.perf_counter() - started, "provenance": provenance(),
               "machine": machine()}
    (folder / "summary.json").write_text(json.dumps(_plain(summary), indent=2, default=float))
    print(show(folder))
    return folder


def feature_dim(config: dict, data: RunData) -> int:
    """The width of the features the heads learn on."""
    import continual

    return continual.FEATURE_DIM if config["backbone_type"] == BASE_TRAINED else int(data.train_features.shape[1])


def _has_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def show(folder: str | Path) -> str:
    """The tables of a finished run, the published numbers beside the measured ones, as text.

    Args:
        folder: a run folder (with ``summary.json``).

    Returns:
        The text ``analytic-learning show`` prints.

    Raises:
        InputError: no ``summary.json`` in ``folder``.
    """
    import contextlib
    import io

    path = Path(folder) / "summary.json"
    if not path.is_file():
        raise InputError(f"{folder} is not a finished run: it has no summary.json")
    summary = json.loads(path.read_text())
    published = summary.get("published") or {}
    rows = published.get("rows", [])
    by_method = {row["method"]: row for row in rows}
    table = []
    for row in summary["table"]:
        match = by_method.get(row.get("method"), {})
        table.append({**row, **{f"published_{k}": v for k, v in match.items() if k != "method"}})
    columns = [c for c in summary["columns"] if any(c in row for row in table)]
    columns += list(dict.fromkeys(k for row in table for k in row if k.startswith("published_")))
    ridges = "; ".join(
        (f"seed {r['seed']}: " if "seed" in r else "") + f"γ = {r['ridge']:.4g}"
        + (f" ({r['choice']['criterion']}, {r['choice']['candidates']} candidates)" if "choice" in r else "")
        for r in summary["ridges"])
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        print(f"{summary['name']} ({summary['kind']}, {summary['mode']}): {summary['data']}, "
              f"{summary['train_rows']:,} train / {summary['test_rows']:,} test rows, {summary['dim']}-d; "
              f"ridge {ridges}")
        provenance_ = summary["provenance"]
        print(f"version {provenance_['version']}, commit {provenance_['git_commit']}, {provenance_['timestamp']}, "
              f"{summary['seconds']:.1f} s")
        print_table("Measured", table, columns)
        if rows:
            print_table(f"Published: {published.get('source', '')}, {published.get('setting', '')}", rows,
                        list(dict.fromkeys(k for row in rows for k in row)))
            if published.get("note"):
                print(published["note"])
    return text.getvalue()


def list_configs() -> str:
    """One line per shipped configuration: its name, kind and description."""
    return "\n".join(f"{name:<34} {config['kind']:<11} {config['description']}" for name, config in shipped().items())


def main(arguments) -> None:
    """``analytic-learning run`` with parsed ``arguments`` (config, set, quick, dry_run, out, list)."""
    if arguments.list or arguments.config is None:
        print(list_configs())
        return
    from .config import load

    config = resolve(load(arguments.config), arguments.set or [], quick=arguments.quick)
    if arguments.dry_run:
        print(dry_run(config))
        return
    run(config, arguments.out)
