"""The README's examples run as written, in order, in one namespace."""

import re
from pathlib import Path

import numpy as np

import analytic


def test_readme_examples_run(tmp_path, monkeypatch):
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert len(blocks) == 3, "the README has an API example, a JAX-device example and a federated example"
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert (tmp_path / "head.npz").exists()
    assert namespace["refit"].weights.shape == (64, 3)
    assert set(namespace["predicted"]) <= {3, 7, 42}
    assert analytic.state_hash(namespace["on_device"]) == analytic.state_hash(namespace["on_host"])
    assert namespace["on_device"].on_device and namespace["scores"].shape == (5, 3)

    head, afl_head, report = namespace["head"], namespace["afl_head"], namespace["report"]
    assert report.n_clients == 20 and report.bytes_per_client == 18_744
    np.testing.assert_allclose(afl_head.weights, head.weights, rtol=0, atol=1e-12)
    result = namespace["result"]
    assert result["n_clients"] == 20 and result["rejected"] == {} and result["failures"] == 0
    np.testing.assert_allclose(analytic.load(tmp_path / "flower" / "head.npz").weights, head.weights, rtol=0,
                               atol=1e-12)
