"""The README's Python examples run as written (a user's first contact must not be stale)."""

from __future__ import annotations

import re

from .conftest import ROOT


def test_readme_python_examples_run(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks, "README has no python examples"
    for shared in ("examples", "tools"):      # the paths the examples name, from the root
        (tmp_path / shared).symlink_to(ROOT / shared)
    monkeypatch.chdir(tmp_path)               # and whatever they write goes here
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "IntegerDivByZero div 0x4a" in out
    assert "hi from the guest | ctx: my app" in out
    assert "timeout" in out
