"""pylucet-wasi's own logic: what it hands the WASI layer, exit statuses, trap reports, the
compile cache and a small start-up. These run against the stand-in ``pylucet.wasi`` of
``tests/cli/wasi_stub.py``; the last tests run the examples through the real one when it is
there."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pylucet.cli import wasi as wasi_cli
from pylucet.cli._common import ExitStatus
from pylucet.module.traps import TrapCode
from pylucet.errors import Trap

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
STUB = Path(__file__).resolve().parent / "cli" / "run_wasi_with_stub.py"

PROGRAM = """(module
  (memory 1)
  (func (export "_start") (result i32) (i32.const 7))
  (func (export "other") (result i32) (i32.const 300))
  (func $inner (result i32) unreachable)
  (func $outer (export "crash") (result i32) (call $inner)))"""


@pytest.fixture
def program(tmp_path):
    path = tmp_path / "prog.wat"
    path.write_text(PROGRAM)
    return path


def run(tmp_path, *args, echo=True, extra_env=None, python_flags=()):
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYLUCET_CACHE=str(tmp_path / "cache"))
    if echo:
        env["PYLUCET_WASI_STUB_ECHO"] = "1"
    env.update(extra_env or {})
    return subprocess.run([sys.executable, *python_flags, str(STUB), *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=120)


def echoed(done):
    return json.loads(done.stderr.splitlines()[0])


def test_exit_status_is_the_guests(tmp_path, program):
    assert run(tmp_path, program, echo=False).returncode == 7
    # a POSIX status keeps the low byte, as under wasmtime run
    assert run(tmp_path, "--entrypoint", "other", program, echo=False).returncode == 300 & 0xFF


def test_what_the_guest_is_given(tmp_path, program):
    done = run(tmp_path, "--dir", tmp_path, "--dir", f"{tmp_path}::/data", "--env", "A=1",
               "--env", "B=x=y", "--timeout", "2.5", "--stack-size", "2M", program,
               "x", "-y", "--z", "--dir")
    seen = echoed(done)
    assert seen["argv"] == ["prog.wat", "x", "-y", "--z", "--dir"]   # argv[0]: the program name
    assert seen["env"] == {"A": "1", "B": "x=y"}                    # nothing inherited
    assert seen["preopens"] == [[str(tmp_path), str(tmp_path)], [str(tmp_path), "/data"]]
    assert seen["stdio"] is True and seen["timeout"] == 2.5
    assert seen["limits"] == [4 << 30, 2 << 20]


def test_inherit_env_then_env_on_top(tmp_path, program):
    seen = echoed(run(tmp_path, "--inherit-env", "--env", "HOME=/guest", program,
                      extra_env={"PYLUCET_TEST_VAR": "42"}))
    assert seen["env"]["PYLUCET_TEST_VAR"] == "42" and seen["env"]["HOME"] == "/guest"


def test_trap_prints_code_and_backtrace(tmp_path, program):
    done = run(tmp_path, "--entrypoint", "crash", program, echo=False)
    assert done.returncode == ExitStatus.TRAP
    lines = done.stderr.splitlines()
    assert lines[0].startswith("pylucet-wasi: trap: Unreachable")
    assert lines[1:] == ["wasm backtrace:", "  0: inner"]
    assert "Traceback" not in done.stderr


def test_trap_backtrace_uses_the_frames_when_the_trap_has_them():
    trap = Trap(TrapCode.Unreachable, func="inner", wasm_offset=0x25)
    trap.backtrace = ["inner", "outer", "_start"]
    out = io.StringIO()
    wasi_cli.report_trap(trap, out)
    assert out.getvalue().splitlines()[1:] == ["wasm backtrace:", "  0: inner", "  1: outer",
                                               "  2: _start"]


def test_unknown_entrypoint(tmp_path, program):
    done = run(tmp_path, "--entrypoint", "nope", program, echo=False)
    assert done.returncode == ExitStatus.USAGE and len(done.stderr.splitlines()) == 1
    assert "nope" in done.stderr


def test_second_run_hits_the_cache_without_importing_the_compiler(tmp_path, program):
    first = run(tmp_path, program, echo=False, python_flags=("-X", "importtime"))
    assert first.returncode == 7
    assert "pylucet.compiler" in first.stderr
    second = run(tmp_path, program, echo=False, python_flags=("-X", "importtime"))
    assert second.returncode == 7
    imported = {line.split("|")[-1].strip() for line in second.stderr.splitlines()
                if line.startswith("import time:")}
    assert not {m for m in imported if m.startswith(("pylucet.compiler", "pylucet.wasm.wat",
                                                     "pylucet.wasm.validator"))}
    assert len(list((tmp_path / "cache").rglob("*.so"))) == 1


def test_no_cache_leaves_the_cache_alone(tmp_path, program):
    assert run(tmp_path, "--no-cache", program, echo=False).returncode == 7
    assert not (tmp_path / "cache").exists()


def test_a_compiled_so_runs_as_it_is(tmp_path, program):
    from pylucet.compiler.driver import compile
    so = tmp_path / "prog.so"
    compile(program, so)
    assert run(tmp_path, so, echo=False).returncode == 7
    assert not (tmp_path / "cache").exists()


# --- with the real pylucet.wasi ------------------------------------------------------------------

def _real_wasi():
    try:
        import pylucet.wasi as w
    except ImportError:
        return None
    return w if hasattr(w, "WasiConfig") and hasattr(w, "run") else None


needs_wasi = pytest.mark.skipif(_real_wasi() is None, reason="pylucet.wasi is not merged yet")


def wasi(tmp_path, *args, stdin=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYLUCET_CACHE=str(tmp_path / "cache"))
    return subprocess.run([sys.executable, "-m", "pylucet.cli.wasi", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300, input=stdin)


@needs_wasi
def test_hello(tmp_path):
    done = wasi(tmp_path, EXAMPLES / "hello.wasm", "a", "b c")
    assert (done.returncode, done.stdout) == (0, "Hello, world!\nargv[1] = a\nargv[2] = b c\n")


@needs_wasi
def test_wc_and_cp(tmp_path):
    (tmp_path / "a.txt").write_text("one two\nthree\n")
    done = wasi(tmp_path, "--dir", tmp_path, EXAMPLES / "wc.wasm", tmp_path / "a.txt")
    assert (done.returncode, done.stdout) == (0, f"      2       3      14 {tmp_path}/a.txt\n")
    done = wasi(tmp_path, "--dir", tmp_path, EXAMPLES / "cp.wasm", tmp_path / "a.txt",
                tmp_path / "b.txt")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "b.txt").read_text() == "one two\nthree\n"
    done = wasi(tmp_path, EXAMPLES / "wc.wasm", stdin="x y\n")
    assert (done.returncode, done.stdout) == (0, "      1       2       4\n")


EXIT_42 = """(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (i32.const 42))))"""
SPIN = """(module (memory (export "memory") 1) (func (export "_start") (loop (br 0))))"""
TRAP = """(module (memory (export "memory") 1)
  (func $inner unreachable) (func (export "_start") (call $inner)))"""


@needs_wasi
@pytest.mark.parametrize("text,args,status,first_line", [
    (EXIT_42, [], 42, None),
    (SPIN, ["--timeout", "0.3"], ExitStatus.TIMEOUT, "pylucet-wasi: timed out after 0.3 s"),
    (TRAP, [], ExitStatus.TRAP, "pylucet-wasi: trap: Unreachable"),
    (IMPORTS := """(module (import "wasi_snapshot_preview1" "no_such_call" (func))
       (memory (export "memory") 1) (func (export "_start")))""", [], ExitStatus.LINK_ERROR,
     "pylucet-wasi: "),
])
def test_real_wasi_statuses(tmp_path, text, args, status, first_line):
    prog = tmp_path / "p.wat"
    prog.write_text(text)
    done = wasi(tmp_path, *args, prog)
    assert done.returncode == status, done.stderr
    assert "Traceback" not in done.stderr
    if first_line is None:
        assert done.stderr == ""
    else:
        assert done.stderr.splitlines()[0].startswith(first_line), done.stderr
