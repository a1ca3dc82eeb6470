"""The API reference: every public name documented with its arguments and a runnable example, and the site builds.

The examples themselves run as doctests (``--doctest-modules`` in the pytest configuration).
"""

import importlib
import inspect
import pkgutil

import pdoc
import pdoc.render
import pytest

PACKAGES = ("analytic", "federated", "continual", "unlearning")


def public_callables(package_name):
    package = importlib.import_module(package_name)
    for name in package.__all__:
        value = getattr(package, name)
        if inspect.isfunction(value) or (inspect.isclass(value) and not issubclass(value, BaseException)):
            yield name, value


@pytest.mark.parametrize("package_name", PACKAGES)
def test_every_public_name_is_listed_and_exists(package_name):
    package = importlib.import_module(package_name)
    assert len(package.__all__) == len(set(package.__all__))
    missing = [name for name in package.__all__ if not hasattr(package, name)]
    assert not missing, missing
    private = [name for name in package.__all__ if name.startswith("_")]
    assert not private, private


@pytest.mark.parametrize("package_name", PACKAGES)
def test_every_public_function_has_args_returns_and_an_example(package_name):
    incomplete = []
    for name, value in public_callables(package_name):
        doc = inspect.getdoc(value) or ""
        needs = [">>>"]
        if inspect.isfunction(value):
            parameters = inspect.signature(value).parameters
            if parameters:
                needs.append("Args:")
            if inspect.signature(value).return_annotation not in (None, "None", inspect.Signature.empty):
                needs.append("Returns:")
        absent = [section for section in needs if section not in doc]
        if absent:
            incomplete.append(f"{package_name}.{name}: no {', '.join(absent)}")
    assert not incomplete, "\n".join(incomplete)


def every_module():
    """The packages and every module in them, as ``make docs`` lists them (a package's page already holds the
    submodules its ``__all__`` names)."""
    packages = [importlib.import_module(name) for name in PACKAGES]
    yield from PACKAGES
    for package in packages:
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.rsplit(".", 1)[1] not in package.__all__:
                yield info.name


def test_api_reference_builds(tmp_path):
    pdoc.render.configure(docformat="google", math=True)
    modules = list(every_module())
    pdoc.pdoc(*modules, output_directory=tmp_path)
    every_page = modules + [f"continual.{name}" for name in ("acil", "ds_al", "air", "aef_ocl")]
    missing_pages = [name for name in every_page if not (tmp_path / f"{name.replace('.', '/')}.html").exists()]
    assert not missing_pages, missing_pages
    for package_name in PACKAGES:
        page = (tmp_path / f"{package_name}.html").read_text()
        undocumented = [name for name in importlib.import_module(package_name).__all__ if f'id="{name}"' not in page]
        assert not undocumented, f"{package_name}: {undocumented}"
    assert (tmp_path / "index.html").exists()
