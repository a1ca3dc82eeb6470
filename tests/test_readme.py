"""The README's API example runs as written."""

import re
from pathlib import Path


def test_readme_api_example_runs(tmp_path, monkeypatch):
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "the README has no python example"
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert (tmp_path / "head.npz").exists()
    assert namespace["refit"].weights.shape == (64, 3)
    assert set(namespace["predicted"]) <= {3, 7, 42}
