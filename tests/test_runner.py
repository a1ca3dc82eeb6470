"""The experiment runner: configuration checks, dry runs, every shipped configuration on a tiny stand-in of its data,
the run folder, quick against full runs, ``show``, and the plotting style every figure shares."""

import json
import tomllib

import numpy as np
import pytest

import analytic
import continual
from analytic import InputError, data
from analytic import plotting
from benchmarks import cli, config, runner
from benchmarks.config import resolve, validate
from tests.test_loaders import write_cifar, write_image_folder

SHIPPED = config.shipped()
PATH_VARIABLES = ("CIFAR10_DIR", "CIFAR100_DIR", *(variable for _, variable in data.IMAGE_FOLDERS.values()))


@pytest.fixture
def no_data_variables(monkeypatch):
    for variable in PATH_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


def tiny(name: str, *extra: str, quick: bool = False) -> dict:
    """A shipped configuration on the flattened pixels of a few samples per class: seconds, not hours."""
    shipped = SHIPPED[name]
    overrides = ["backbone_type=pixels", "image_size=4", "per_class=3", "test_per_class=2",
                 f"seeds=[{shipped['seeds'][0]}]", f"methods={json.dumps(shipped['methods'][:2])}"]
    if shipped["kind"] == "continual":
        overrides += ["buffer_size=16"]
    elif shipped["kind"] == "federated":
        overrides += ["clients=[3]", f"alpha=[{shipped['alpha'][0]}]", "rounds=2"]
    else:
        overrides += ["mia_samples=10", "epochs=1", "learning_rates=[0.01]", "forget_share=[0.1]"]
    return resolve(SHIPPED[name], [*overrides, *extra], quick=quick)


def write_stand_in(dataset: str, root) -> str:
    """A tiny tree of ``dataset``'s layout under ``root``; the ``data_root`` override that points at it."""
    if dataset in ("cifar10", "cifar100"):
        write_cifar(root, int(dataset[5:]))
    elif dataset in data.IMAGE_FOLDERS:
        classes = {"omnibenchmark": 60, "vtab": 20}.get(dataset, 40)
        write_image_folder(root / data.IMAGE_FOLDERS[dataset][0], [f"class{i:03d}" for i in range(classes)],
                           per_class=(3, 2))
    else:
        return "data_root=''"
    return f"data_root='{root}'"


# ---------------------------------------------------------------------------------------------------- configuration


def test_a_misspelled_key_names_the_nearest_valid_one():
    with pytest.raises(InputError, match="unknown key 'incremnt' \\(did you mean 'increment'\\?\\)"):
        validate({"kind": "continual", "incremnt": 5})
    with pytest.raises(InputError, match="unknown key quick.'sedes' \\(did you mean 'seeds'\\?\\)"):
        validate({"kind": "continual", "quick": {"sedes": [1]}})
    with pytest.raises(InputError, match="unknown key published.'rowz' \\(did you mean 'rows'\\?\\)"):
        validate({"kind": "continual", "published": {"rowz": []}})
    with pytest.raises(InputError, match="did you mean 'clients'"):
        resolve(SHIPPED["fashion_mnist_afl_1000_clients"], ["client=[3]"])


def test_keys_of_another_kind_wrong_types_and_bad_values_are_refused():
    with pytest.raises(InputError, match="unknown key 'clients'"):
        validate({"kind": "continual", "clients": [3]})
    with pytest.raises(InputError, match="increment = '5' is a str: expected int"):
        validate({"kind": "continual", "increment": "5"})
    with pytest.raises(InputError, match="tensorboard = 1 is a int: expected bool"):
        validate({"kind": "continual", "tensorboard": 1})
    with pytest.raises(InputError, match="init_cls = True: expected int"):
        validate({"kind": "continual", "init_cls": True})
    with pytest.raises(InputError, match="ridge = 'automatic': a positive number or \"auto\""):
        validate({"kind": "federated", "ridge": "automatic"})
    with pytest.raises(InputError, match="ridge = -1"):
        validate({"kind": "federated", "ridge": -1})
    with pytest.raises(InputError, match="seeds = \\[\\]: a non-empty list of integers"):
        validate({"kind": "unlearning", "seeds": []})
    with pytest.raises(InputError, match="kind = 'continuel'.*did you mean 'continual'"):
        validate({"kind": "continuel"})
    with pytest.raises(InputError, match="scenario = 'classes': class or random \\(did you mean 'class'\\?\\)"):
        validate({"kind": "unlearning", "scenario": "classes"})


def test_an_exemplar_memory_is_refused_with_the_reason():
    with pytest.raises(InputError, match="memory_size = 2000: the learners here are exemplar-free"):
        resolve(SHIPPED["thirty_class_b0_inc5"], ["memory_size=2000"])


def test_unknown_methods_configurations_and_overrides_are_refused():
    with pytest.raises(InputError, match="unknown method 'ACLI' for a continual run \\(did you mean 'ACIL'\\?\\)"):
        runner.chosen_methods(resolve(SHIPPED["thirty_class_b0_inc5"], ['methods=["ACLI"]']))
    with pytest.raises(InputError, match="expected key=value"):
        resolve(SHIPPED["thirty_class_b0_inc5"], ["seeds"])
    with pytest.raises(InputError, match="did you mean 'thirty_class_b0_inc5'"):
        config.load("thirty_class_b0_inc6")


def test_overrides_are_read_as_toml_and_bare_words_as_strings():
    resolved = resolve(SHIPPED["thirty_class_b0_inc5"], ["seeds=[1, 2]", "dataset=digits", "ridge=auto",
                                                         "ridge_candidates=[0.1, 1.0]"])
    assert resolved["seeds"] == [1, 2] and resolved["dataset"] == "digits" and resolved["ridge"] == "auto"
    assert resolved["ridge_candidates"] == [0.1, 1.0] and resolved["mode"] == "full"
    assert SHIPPED["thirty_class_b0_inc5"]["seeds"] == [1993, 1994, 1995]  # the loaded configuration is unchanged
    quick = resolve(SHIPPED["thirty_class_b0_inc5"], ["per_class=7"], quick=True)
    assert quick["seeds"] == [1993] and quick["per_class"] == 7 and quick["mode"] == "quick"


def test_every_shipped_configuration_is_valid_and_the_field_settings_carry_their_published_numbers():
    assert len(SHIPPED) >= 19
    expected = {"cifar100_b0_inc5_vit_in21k": ("EASE (IN21k)", 91.51, 85.80),
                "imagenet_r_b0_inc20_vit_in21k": ("APER-Adapter", 71.90, 63.73),
                "imagenet_a_b0_inc20_vit_in21k": ("SimpleCIL (IN21k)", 60.64, 48.85),
                "cub_b0_inc10_vit_in21k": ("EASE (IN21k)", 92.22, 86.81),
                "omnibenchmark_b0_inc30_vit_in21k": ("APER-Adapter", 80.77, 74.29),
                "vtab_b0_inc10_vit_in21k": ("EASE (IN21k)", 93.61, 93.55),
                "cifar100_b50_25phases_resnet32": ("DS-AL", 71.28, 64.04)}
    for name, (method, average, last) in expected.items():
        row = next(row for row in SHIPPED[name]["published"]["rows"] if row["method"] == method)
        assert (row["average"], row["last"]) == (average, last), name
    for name, shipped in SHIPPED.items():
        assert shipped["memory_size"] == 0 if shipped["kind"] == "continual" else True
        runner.chosen_methods(shipped)
    assert runner.list_configs().count("\n") == len(SHIPPED) - 1


# ---------------------------------------------------------------------------------------------------- dry runs


FIELD = sorted(name for name, shipped in SHIPPED.items() if shipped["dataset"] in runner.PATH_DATASETS)


@pytest.mark.parametrize("name", FIELD)
def test_dry_run_of_a_field_setting_names_the_missing_data_and_how_to_provide_it(name, no_data_variables, tmp_path):
    resolved = resolve(SHIPPED[name])
    message = runner.dry_run(resolved)
    dataset = resolved["dataset"]
    assert f"MISSING  dataset {dataset}: " in message and "--set data_root=DIR" in message
    variable = "CIFAR100_DIR" if dataset == "cifar100" else "CIFAR10_DIR" if dataset == "cifar10" else \
        data.IMAGE_FOLDERS[dataset][1]
    assert f"environment variable {variable}=DIR" in message
    if resolved["backbone_type"] == runner.BASE_TRAINED:
        assert "ok       backbone resnet32: trained here on the 50 base classes of each seed (continual.train_base: " \
               "300 epochs, η 0.5, batch 256)" in message
    else:
        assert f"ok       weights of {resolved['backbone_type']}: " in message
    with pytest.raises(runner.MissingRequirement, match=f"{name} cannot run here:\ndataset {dataset}"):
        runner.run(resolved, tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_dry_run_checks_a_weights_file_and_the_cli_prints_it(tmp_path, capsys, no_data_variables):
    cli.main(["run", "cifar100_b0_inc5_vit_in21k", "--dry-run", "--set", f"weights='{tmp_path}/vit.safetensors'"])
    printed = capsys.readouterr().out
    assert f"MISSING  weights of vit_base_patch16_224.augreg_in21k: no weights file '{tmp_path}/vit.safetensors'" \
        in printed
    assert printed.startswith("cifar100_b0_inc5_vit_in21k (continual, full): CIFAR-100 B0-Inc5")


def test_a_network_trained_on_base_classes_is_refused_where_there_are_none():
    for name in ("fashion_mnist_afl_1000_clients", "fashion_mnist_class_unlearning"):
        message = runner.dry_run(resolve(SHIPPED[name], [f"backbone_type={runner.BASE_TRAINED}"]))
        assert "MISSING  backbone resnet32: resnet32 is trained on the base classes of a class-incremental run" in message
    blurry = resolve(SHIPPED["cifar100_si_blurry_vit_small"], [f"backbone_type={runner.BASE_TRAINED}"])
    assert "MISSING  backbone resnet32" in runner.dry_run(blurry)


def test_timm_weights_are_refused_at_once_when_the_hub_cannot_be_reached(monkeypatch):
    for variable in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)

    def unreachable(address, timeout):
        raise OSError("Name or service not known")

    monkeypatch.setattr(runner.socket, "create_connection", unreachable)
    with pytest.raises(runner.MissingRequirement, match="Hugging Face hub, which cannot be reached .*--set "
                                                        "weights=FILE.*HF_HUB_OFFLINE=1"):
        runner._timm_state_dict("resnet18.a1_in1k")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")  # the traffic goes through it: no direct probe
    assert runner._require_hub("resnet18.a1_in1k") is None


def test_the_cli_reports_a_refused_configuration_in_one_line(capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["run", "thirty_class_b0_inc5", "--set", "incremnt=2"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.startswith("error: unknown key 'incremnt' (did you mean 'increment'?)")
    cli.main(["run", "--list"])
    assert "fashion_mnist_afl_1000_clients" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------- runs


def test_the_acil_setting_trains_resnet32_on_each_seeds_base_classes_then_learns_the_phases_in_closed_form(tmp_path):
    name = "cifar100_b50_25phases_resnet32"
    resolved = resolve(SHIPPED[name], [write_stand_in("cifar100", tmp_path / "data"), "per_class=2", "test_per_class=1",
                                       "base_epochs=1", "base_batch_size=50", "buffer_size=32", 'methods=["ACIL"]'])
    summary = json.loads((runner.run(resolved, tmp_path / "runs") / "summary.json").read_text())
    (base,) = summary["base_networks"]
    order = continual.class_order(np.repeat(np.arange(100), 2), 1993)
    assert base["base_classes"] == sorted(order[:50].tolist()) and summary["dim"] == continual.FEATURE_DIM
    assert summary["table"][0]["method"] == "ACIL" and 0 <= summary["table"][0]["last"] <= 100



@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_configuration_runs_on_a_tiny_stand_in_of_its_data(name, tmp_path):
    resolved = tiny(name, write_stand_in(SHIPPED[name]["dataset"], tmp_path / "data"))
    folder = runner.run(resolved, tmp_path / "runs")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["kind"] == resolved["kind"] and summary["table"]
    methods = {row["method"] for row in summary["table"]}
    expected = {"continual": lambda m: m.replace("ACIL", "G-ACIL") if resolved["scenario"] == "si-blurry" else m,
                "federated": lambda m: m, "unlearning": lambda m: "exact downdate" if m == "exact" else m}
    assert {expected[resolved["kind"]](m) for m in resolved["methods"]} <= methods
    log = (folder / runner.LOGS[resolved["kind"]]).read_text().splitlines()
    assert len(log) > 1


def test_the_run_folder_holds_config_logs_summary_plots_and_tensorboard(tmp_path):
    resolved = tiny("thirty_class_b0_inc5", "dataset=digits", "ridge=auto", "tensorboard=true")
    folder = runner.run(resolved, tmp_path)
    assert folder == tmp_path / "thirty_class_b0_inc5"
    saved = tomllib.loads((folder / "config.toml").read_text())
    assert saved == {k: v for k, v in resolved.items() if k != "mode"}
    summary = json.loads((folder / "summary.json").read_text())
    provenance, machine = summary["provenance"], summary["machine"]
    assert provenance["version"] == analytic.__version__ and provenance["timestamp"] and provenance["command"]
    assert "git_commit" in provenance and machine["jax"] and machine["numpy"] == np.__version__
    assert summary["plots"] == [str(folder / "accuracy.png")] and (folder / "accuracy.png").read_bytes()[1:4] == b"PNG"
    assert any(path.name.startswith("events.out.tfevents") for path in (folder / "tensorboard").iterdir())
    header = (folder / "phases.csv").read_text().splitlines()[0]
    assert header == "method,seed,scenario,phase,seen_accuracy,phase_seconds,state_bytes"
    # ridge = "auto": analytic.select_ridge's GCV choice on the first phase's expanded rows, reported
    (chosen,) = summary["ridges"]
    digits = data.load_digits()
    keep = runner._capped(digits.train_labels, 3)
    x, y = runner.pixels(digits.train_images[keep], 4), digits.train_labels[keep]
    scenario = continual.class_incremental(y, base=0, increment=5, seed=1993)
    layer = analytic.init_buffer(x.shape[1], 16, seed=1993)
    rows = scenario.phases[0]
    stats = analytic.accumulate(analytic.init_statistics(16), analytic.expand(layer, x[rows]), y[rows])
    assert chosen["ridge"] == analytic.select_ridge(stats).ridge and chosen["choice"]["criterion"] == "gcv"


def test_a_continual_run_gives_the_numbers_of_the_learners_run_directly(tmp_path):
    """The runner's ACIL on digits equals ACIL built and run by hand on the same rows, phase by phase."""
    resolved = tiny("thirty_class_b0_inc5", "dataset=digits", "increment=2", "image_size=8", "per_class=0",
                    "test_per_class=0", "ridge=0.5", 'methods=["ACIL"]', "buffer_size=32")
    folder = runner.run(resolved, tmp_path)
    measured = [float(line.split(",")[4]) for line in (folder / "phases.csv").read_text().splitlines()[1:]]
    digits = data.load_digits()
    x, xt = digits.train_images.reshape(-1, 64), digits.test_images.reshape(-1, 64)
    scenario = continual.class_incremental(digits.train_labels, base=0, increment=2, seed=1993)
    learner = continual.acil(np.arange(10), expansion=analytic.init_buffer(64, 32, seed=1993), ridge=0.5)
    direct = continual.run(learner, scenario, x, digits.train_labels, xt, digits.test_labels)
    assert measured == direct.seen_accuracy.tolist()


def test_a_quick_run_never_overwrites_a_full_one_and_show_prints_both_with_the_published_numbers(tmp_path, capsys):
    full = runner.run(tiny("thirty_class_b0_inc5", "dataset=digits", 'methods=["ACIL"]'), tmp_path)
    before = (full / "summary.json").read_bytes()
    quick = runner.run(tiny("thirty_class_b0_inc5", "dataset=digits", 'methods=["ACIL"]', "per_class=2",
                            quick=True), tmp_path)
    assert quick == tmp_path / "thirty_class_b0_inc5-quick" and (full / "summary.json").read_bytes() == before
    assert "(its [quick] table already applied)" in (quick / "config.toml").read_text()
    capsys.readouterr()
    cli.main(["show", str(full)])
    shown = capsys.readouterr().out
    assert shown.startswith("thirty_class_b0_inc5 (continual, full): digits under pixels")
    header = next(line for line in shown.splitlines() if line.startswith("method "))
    assert header.split() == ["method", "seeds", "average", "average_std", "last", "last_std", "forgetting",
                              "s_per_phase", "published_last"]
    acil = next(line for line in shown.splitlines() if line.startswith("ACIL "))
    assert acil.split()[-1] == "85.3"  # the published figure beside the measured one
    assert "Published: README.md" in shown and "(continual, quick)" in runner.show(quick)
    with pytest.raises(InputError, match="has no summary.json"):
        runner.show(tmp_path)


# ---------------------------------------------------------------------------------------------------- plotting


def test_each_method_keeps_its_style_and_identical_curves_are_named():
    assert plotting.method_style("ACIL") == plotting.method_style("ACIL")
    styles = {tuple(plotting.method_style(name).items()) for name in plotting.KNOWN_METHODS[:12]}
    assert len(styles) == 12
    assert plotting.method_style("a new method") == plotting.method_style("a new method")
    same = plotting.identical_to({"Joint (ridge)": np.array([90.0, 80.0]), "ACIL": np.array([90.0, 80.0]),
                                  "NCM": np.array([60.0, 50.0]), "fedprox": [1.0], "fedavg": [1.0]})
    assert same == {"ACIL": "Joint (ridge)", "fedavg": "fedprox"}


def test_phase_ticks_are_integers_and_log_axes_read_as_plain_numbers(tmp_path):
    plt = plotting.pyplot()
    figure, axis = plt.subplots()
    plotting.plot_curves(axis, [1, 2, 3], {"ACIL": [90.0, 85.0, 80.0], "Joint (ridge)": [90.0, 85.0, 80.0]},
                         {"ACIL": [1.0, 1.0, 1.0]})
    plotting.integer_axis(axis, "x")
    figure.canvas.draw()
    assert all(float(tick).is_integer() for tick in axis.get_xticks())
    labels = [line.get_label() for line in axis.get_lines()]
    assert "Joint (ridge) (identical to ACIL)" in labels
    assert any(line.get_linestyle() == "--" for line in axis.get_lines())
    assert len(axis.containers) == 1  # ACIL's error bars
    figure, axis = plt.subplots()
    axis.plot([10, 100, 1000, 10000], [1, 2, 3, 4])
    plotting.plain_log_axis(axis, "x")
    figure.canvas.draw()
    shown = [label.get_text() for label in axis.get_xticklabels() if label.get_text()]
    assert {"100", "1,000", "10,000"} <= set(shown) and not any("^" in text for text in shown)
    assert plotting.plain_number(0.01) == "0.01"
    path = plotting.accuracy_per_phase({"ACIL": [np.array([1.0, 2.0])]}, tmp_path / "a.png")
    assert path.read_bytes()[1:4] == b"PNG"
