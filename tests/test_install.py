"""A non-editable install from a copy of the checkout, used from another directory, must work:
the assembly sources in asm/ have to travel inside the package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv

import pytest

from .conftest import ROOT


def _tracked_files():
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout: cannot tell which files a copy would hold")
    return [p for p in out.stdout.decode().split("\0") if p]


def test_non_editable_install_from_a_copy(tmp_path):
    copy = tmp_path / "copy"
    for rel in _tracked_files():
        src = ROOT / rel
        if src.is_file():
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, copy / rel)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    clean_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    r = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        str(copy)], capture_output=True, text=True, env=clean_env, timeout=600)
    if r.returncode != 0 and "No matching distribution" in r.stderr + r.stdout:
        pytest.skip(f"package index unreachable: {r.stderr.strip()[-300:]}")
    assert r.returncode == 0, r.stderr
    shutil.rmtree(copy)   # the installed package must not lean on the source tree
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = (
        "import pylucet, pylucet.runtime.stubs as s\n"
        "assert 'site-packages' in pylucet.__file__, pylucet.__file__\n"
        "m = pylucet.load(pylucet.compile('(module (func (export \"f\") (param i32) (result i32)"
        " (i32.mul (local.get 0) (i32.const 3))))'))\n"
        "with pylucet.MmapRegion(1) as r, r.new_instance(m) as i:\n"
        "    print(i.run('f', 14))\n")
    r = subprocess.run([str(python), "-c", script], cwd=elsewhere, capture_output=True,
                       text=True, env=clean_env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "42"
    r = subprocess.run([str(env_dir / "bin" / "pylucet"), "run", str(ROOT / "examples" / "fib.wat"),
                        "fib", "10"], cwd=elsewhere, capture_output=True, text=True,
                       env=clean_env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "55"
