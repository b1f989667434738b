"""What importing pylucet pulls in: a host that only loads compiled modules must not pay for the
compiler, and the package's lazy names must all resolve. Each check runs in a fresh interpreter,
since this one has imported everything already."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import pylucet

from .conftest import ROOT

COMPILE_TIME_ONLY = ("pylucet.compiler", "pylucet.wasm.wat", "pylucet.wasm.validator",
                     "pylucet.wasm.decoder", "pylucet.wasm.wast", "pylucet.wasm.opcodes",
                     "pylucet.elf.writer")


def _modules_after(statement: str) -> list:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def _compile_side(modules: list) -> list:
    return [m for m in modules if m.startswith(COMPILE_TIME_ONLY)]


@pytest.mark.parametrize("statement", [
    "import pylucet.runtime",
    "import pylucet; pylucet.MmapRegion; pylucet.load",
    "from pylucet.runtime import MmapRegion, load, Linker",
])
def test_the_runtime_imports_nothing_of_the_compiler(statement):
    modules = _modules_after(statement)
    assert "pylucet.runtime.region" in modules   # the statement did import the runtime
    assert _compile_side(modules) == []


def test_import_pylucet_imports_neither_half():
    modules = _modules_after("import pylucet")
    assert not [m for m in modules if m.startswith(("pylucet.runtime", "pylucet.compiler"))]


def test_loading_and_running_a_compiled_module_needs_no_compiler(tmp_path):
    so = tmp_path / "add.so"
    pylucet.compile('(module (func (export "add") (param i32 i32) (result i32)'
                    ' (i32.add (local.get 0) (local.get 1))))', so)
    modules = _modules_after(
        "import pylucet\n"
        f"m = pylucet.load({str(so)!r})\n"
        "with pylucet.MmapRegion(1) as r, r.new_instance(m) as i:\n"
        "    assert i.run('add', 2, 40) == 42")
    assert _compile_side(modules) == []


def test_compile_is_reached_lazily():
    modules = _modules_after("import pylucet; pylucet.compile('(module)')")
    assert "pylucet.compiler.driver" in modules
    assert not [m for m in modules if m.startswith("pylucet.runtime")]


def test_every_public_name_resolves():
    for name in pylucet.__all__:
        assert getattr(pylucet, name) is not None, name
    assert set(pylucet.__all__) <= set(dir(pylucet))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pylucet.nope  # noqa: B018
