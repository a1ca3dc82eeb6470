"""Package metadata agrees with itself: CITATION.cff parses and carries the one version string; every benchmark
module imports."""

import importlib
import pkgutil
import re
from pathlib import Path

import analytic
import benchmarks

CITATION = Path(__file__).parent.parent / "CITATION.cff"


def test_citation_file_parses_and_matches_the_version():
    text = CITATION.read_text(encoding="utf-8")
    try:
        import yaml
    except ImportError:  # no YAML parser installed: check the top-level lines instead
        fields = dict(re.findall(r"^([a-z-]+): *(\S.*)$", text, flags=re.M))
        assert fields["cff-version"] == "1.2.0" and fields["license"] == "Apache-2.0"
        assert fields["version"] == analytic.__version__
        return
    citation = yaml.safe_load(text)
    assert citation["cff-version"] == "1.2.0" and citation["title"] == "analytic-learning"
    assert citation["license"] == "Apache-2.0"
    assert str(citation["version"]) == analytic.__version__
    assert citation["authors"] and citation["message"]
    for reference in citation["references"]:
        assert reference["title"] and reference["authors"] and reference["type"] and reference["year"]


def test_every_benchmark_module_imports():
    names = [module.name for module in pkgutil.iter_modules(benchmarks.__path__)]
    assert "unlearning_network" in names and "demo" in names
    for name in names:
        importlib.import_module(f"benchmarks.{name}")
