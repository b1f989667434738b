"""The command-line tools as a user runs them: each in a subprocess, over a table of bad
invocations (one line on stderr, the right exit status, never a traceback), and the fixes for
what a new user hit (issue 6)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pylucet.cli._common import ExitStatus, ProgressLine, progress_for, size
from pylucet.cli.run import parse_arg
from pylucet.wasm.types import ValType

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
STUB = Path(__file__).resolve().parent / "cli" / "run_wasi_with_stub.py"

TOOLS = {
    "pylucet": [sys.executable, "-m", "pylucet.cli.run"],
    "pylucetc": [sys.executable, "-m", "pylucet.cli.pylucetc"],
    "pylucet-objdump": [sys.executable, "-m", "pylucet.cli.objdump"],
    "pylucet-wasi": [sys.executable, str(STUB)],
}

T_WAT = """(module
  (memory 1)
  (func (export "fadd") (param f64 f64) (result f64) (f64.add (local.get 0) (local.get 1)))
  (func (export "id32") (param i32) (result i32) (local.get 0))
  (func (export "id64") (param i64) (result i64) (local.get 0))
  (func $inner (param i32 i32) (result i32) (i32.div_s (local.get 0) (local.get 1)))
  (func (export "div") (param i32 i32) (result i32) (call $inner (local.get 0) (local.get 1)))
  (func (export "_start") (result i32) (i32.const 7))
  (func (export "crash") (result i32) (call $inner (i32.const 1) (i32.const 0))))"""
IMPORTS_WAT = """(module (import "env" "f" (func $f)) (func (export "_start") (call $f))
  (func (export "g")))"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "t.wat").write_text(T_WAT)
    (d / "imports.wat").write_text(IMPORTS_WAT)
    (d / "big.wat").write_text('(module (memory 4) (func (export "_start")))')
    (d / "bad.wasm").write_bytes(b"\0asm\1\0\0\0\1\5")
    (d / "invalid.wat").write_text("(module (func (result i32) (i64.const 1)))")
    (d / "notes.txt").write_text("not an artifact\n")
    subprocess.run([*TOOLS["pylucetc"], str(EXAMPLES / "fib.wat"), "-o", str(d / "fib.so")],
                   check=True, env=_env(d))
    return d


def _env(d: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYLUCET_CACHE=str(d / "cache"))
    env.pop("PYLUCET_TRACEBACK", None)
    return env


def run_tool(files: Path, tool: str, *args: str, **kw) -> subprocess.CompletedProcess:
    argv = [a.replace("{d}", str(files)).replace("{ex}", str(EXAMPLES)) for a in args]
    return subprocess.run([*TOOLS[tool], *argv], capture_output=True, text=True,
                          env=kw.pop("env", _env(files)), timeout=120, **kw)


BAD = [
    # tool, args, exit status, a word the message must contain
    ("pylucet", [], ExitStatus.USAGE, "required"),
    ("pylucet", ["--bogus"], ExitStatus.USAGE, "required"),
    ("pylucet", ["frobnicate"], ExitStatus.USAGE, "frobnicate"),
    ("pylucet", ["run", "{ex}/fib.wat", "fib", "4294967296"], ExitStatus.USAGE, "does not fit"),
    ("pylucet", ["run", "{d}/t.wat", "id64", "18446744073709551616"], ExitStatus.USAGE, "i64"),
    ("pylucet", ["run", "{d}/t.wat", "fadd", "one", "2"], ExitStatus.USAGE, "not a float"),
    ("pylucet", ["run", "{d}/t.wat", "id32", "1.5"], ExitStatus.USAGE, "not an integer"),
    ("pylucet", ["run", "{d}/missing.wat", "f"], ExitStatus.NO_INPUT, "missing.wat"),
    ("pylucet", ["run", "{d}", "f"], ExitStatus.NO_INPUT, "directory"),
    ("pylucet", ["run", "{d}/bad.wasm", "f"], ExitStatus.BAD_MODULE, "offset 0x9"),
    ("pylucet", ["run", "{d}/invalid.wat", "f"], ExitStatus.BAD_MODULE, "invalid"),
    ("pylucet", ["run", "{d}/t.wat", "nope"], ExitStatus.USAGE, "nope"),
    ("pylucet", ["run", "{d}/t.wat", "fadd", "1"], ExitStatus.USAGE, "2 arguments"),
    ("pylucet", ["run", "{d}/t.wat", "div", "1", "0"], ExitStatus.TRAP, "IntegerDivByZero"),
    ("pylucet", ["run", "{d}/imports.wat", "g"], ExitStatus.LINK_ERROR, "env.f"),
    ("pylucet", ["run", "{d}/notes.so", "f"], ExitStatus.NO_INPUT, "notes.so"),
    ("pylucetc", [], ExitStatus.USAGE, "input"),
    ("pylucetc", ["{d}/missing.wat"], ExitStatus.NO_INPUT, "missing.wat"),
    ("pylucetc", ["{d}/bad.wasm", "-o", "{d}/x.so"], ExitStatus.BAD_MODULE, "offset 0x9"),
    ("pylucetc", ["{d}/invalid.wat", "-o", "{d}/x.so"], ExitStatus.BAD_MODULE, "offset"),
    ("pylucetc", ["{ex}/fib.wat", "-o", "/nonexistent/x.so"], ExitStatus.CANT_CREATE,
     "/nonexistent/x.so"),
    ("pylucetc", ["{ex}/fib.wat", "-o", "{d}/x.so", "--max-heap", "lots"], ExitStatus.USAGE,
     "size"),
    ("pylucetc", ["{ex}/fib.wat", "-o", "{d}/x.so", "--max-heap", "1000"], ExitStatus.USAGE,
     "multiple"),
    ("pylucetc", ["{ex}/fib.wat", "-o", "{d}/x.so", "--max-heap", "0"], ExitStatus.LIMITS,
     "maximum heap"),
    ("pylucetc", ["{ex}/fib.wat", "-o", "{d}/x.so", "--reserved-size", "1G"], ExitStatus.USAGE,
     "bounds checks"),
    ("pylucet-objdump", [], ExitStatus.USAGE, "artifact"),
    ("pylucet-objdump", ["{d}/missing.so"], ExitStatus.NO_INPUT, "missing.so"),
    ("pylucet-objdump", ["{d}/notes.txt"], ExitStatus.BAD_MODULE, "notes.txt"),
    ("pylucet-objdump", ["{d}/fib.so", "-d", "nope"], ExitStatus.USAGE, "nope"),
    ("pylucet-wasi", [], ExitStatus.USAGE, "program"),
    ("pylucet-wasi", ["{d}/missing.wasm"], ExitStatus.NO_INPUT, "missing.wasm"),
    ("pylucet-wasi", ["{d}/bad.wasm"], ExitStatus.BAD_MODULE, "malformed"),
    ("pylucet-wasi", ["{d}/imports.wat"], ExitStatus.LINK_ERROR, "env.f"),
    ("pylucet-wasi", ["--env", "NOVALUE", "{d}/t.wat"], ExitStatus.USAGE, "KEY=VALUE"),
    ("pylucet-wasi", ["--dir", "{d}/nodir", "{d}/t.wat"], ExitStatus.NO_INPUT, "nodir"),
    ("pylucet-wasi", ["--dir", "{d}::", "{d}/t.wat"], ExitStatus.USAGE, "HOST::GUEST"),
    ("pylucet-wasi", ["--timeout", "-1", "{d}/t.wat"], ExitStatus.USAGE, "seconds"),
    ("pylucet-wasi", ["--timeout", "nan", "{d}/t.wat"], ExitStatus.USAGE, "seconds"),
    ("pylucet-wasi", ["--max-heap-size", "1000", "{d}/t.wat"], ExitStatus.USAGE, "wasm page"),
    ("pylucet-wasi", ["--stack-size", "1x", "{d}/t.wat"], ExitStatus.USAGE, "size"),
    ("pylucet-wasi", ["--max-heap-size", "64K", "{d}/big.wat"], ExitStatus.LIMITS,
     "initial heap"),
]


@pytest.mark.parametrize("tool,args,status,word", BAD,
                         ids=[f"{t} {' '.join(a)}" for t, a, _, _ in BAD])
def test_bad_invocation_is_one_line_with_its_status(files, tool, args, status, word):
    done = run_tool(files, tool, *args)
    assert done.returncode == status, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"{tool}: "), lines[0]
    assert word in lines[0], lines[0]


def test_exit_statuses_are_distinct():
    assert len({int(s) for s in ExitStatus}) == len(ExitStatus)


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_version_and_plain_help(files, tool):
    done = run_tool(files, tool, "--version")
    assert done.returncode == 0 and "pylucet" in done.stdout and "format version" in done.stdout
    done = run_tool(files, tool, "--help")
    assert done.returncode == 0 and "usage:" in done.stdout
    assert "``" not in done.stdout and ":func:" not in done.stdout


def test_run_help_is_plain(files):
    done = run_tool(files, "pylucet", "run", "--help")
    assert done.returncode == 0 and "``" not in done.stdout and "0x1p3" in done.stdout


@pytest.mark.parametrize("func,args,out", [
    ("fadd", ["-1e5", "0"], "-100000.0"),
    ("fadd", ["-inf", "0"], "-inf"),
    ("fadd", ["0x1p3", "-0x10"], "-8.0"),
    ("fadd", ["nan", "1"], "nan"),
    ("id32", ["-0x10"], "-16"),
    ("id32", ["0xffffffff"], "-1"),          # the i32 bits, printed signed
    ("id32", ["-2147483648"], "-2147483648"),
    ("id64", ["-1"], "-1"),
])
def test_run_takes_negative_and_hex_arguments(files, func, args, out):
    done = run_tool(files, "pylucet", "run", "{d}/t.wat", func, *args)
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, out, "")


def test_run_fib_from_the_readme(files):
    done = run_tool(files, "pylucet", "run", "{ex}/fib.wat", "fib", "20")
    assert (done.returncode, done.stdout) == (0, "6765\n")


@pytest.mark.parametrize("text,valtype,value", [
    ("4294967295", ValType.I32, -1), ("-2147483648", ValType.I32, -2**31),
    ("0x7fffffff", ValType.I32, 2**31 - 1), ("18446744073709551615", ValType.I64, -1),
    ("0x1.8p1", ValType.F64, 3.0), ("-0x10", ValType.F32, -16.0), ("1e5", ValType.F64, 1e5),
])
def test_parse_arg(text, valtype, value):
    assert parse_arg(text, valtype) == value


@pytest.mark.parametrize("text,valtype", [
    ("4294967296", ValType.I32), ("-2147483649", ValType.I32), ("2**3", ValType.I64),
    ("0x1p", ValType.F64), ("", ValType.F64),
])
def test_parse_arg_refuses(text, valtype):
    with pytest.raises(ValueError):
        parse_arg(text, valtype)


@pytest.mark.parametrize("text,value", [("65536", 65536), ("0x10000", 65536), ("64K", 65536),
                                        ("64KiB", 65536), ("4GiB", 4 << 30), ("1m", 1 << 20)])
def test_size(text, value):
    assert size(text) == value


def test_compile_error_to_unwritable_output_names_the_output_not_a_temp_file(files):
    done = run_tool(files, "pylucetc", "{ex}/fib.wat", "-o", "/nonexistent/x.so")
    assert ".tmp" not in done.stderr


def test_objdump_into_a_closed_pipe_is_quiet(files):
    so = files / "hello.so"
    subprocess.run([*TOOLS["pylucetc"], str(EXAMPLES / "hello.wasm"), "-o", str(so)],
                   check=True, env=_env(files))
    # the disassembly is far larger than a pipe's buffer, so the writer does meet the closed end
    proc = subprocess.Popen([*TOOLS["pylucet-objdump"], str(so), "-d"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_env(files))
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert first.startswith(b"module ") and err == ""


def test_objdump_shows_module_data_and_options(files, tmp_path):
    so = tmp_path / "opts.so"
    done = run_tool(files, "pylucetc", "{ex}/fib.wat", "-o", str(so), "--no-interrupt-checks",
                    "--max-heap", "128K", "--reserved-size", "2G", "--guard-size", "6G")
    assert done.returncode == 0, done.stderr
    out = run_tool(files, "pylucet-objdump", str(so)).stdout
    assert "interrupt checks: no" in out
    assert "max 0x20000 bytes, reserved 0x80000000, guard 0x180000000" in out
    for section in ("signatures (", "globals (", "tables (", "imports (", "exports (",
                    "functions (", "sparse data pages: 0", "trap sites ("):
        assert section in out
    done = run_tool(files, "pylucet-objdump", str(so), "--disassemble", "fib")
    assert done.returncode == 0, done.stderr
    assert "<guest_func_fib>:" in done.stdout and "<guest_func_sum>:" not in done.stdout
    done = run_tool(files, "pylucet-objdump", "-d", str(so))     # the file, not a FUNC
    assert done.returncode == 0, done.stderr
    assert "<guest_func_fib>:" in done.stdout and "<guest_func_sum>:" in done.stdout


def test_stats_report_compile_time_apart_from_start_up(files, tmp_path):
    done = run_tool(files, "pylucetc", "{ex}/hello.wasm", "-o", str(tmp_path / "h.so"),
                    "--stats")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "start-up:" in out and "compiler import:" in out
    assert "decode" in out and "validate" in out and "codegen" in out
    assert "instructions/s through decode, validate and codegen" in out


# --- progress -------------------------------------------------------------------------------------

class FakeTerminal:
    def __init__(self, tty: bool):
        self.tty = tty
        self.text = ""

    def isatty(self) -> bool:
        return self.tty

    def write(self, s: str) -> None:
        self.text += s

    def flush(self) -> None:
        pass


def test_progress_only_on_a_terminal():
    assert progress_for("x", FakeTerminal(False)) is None
    assert isinstance(progress_for("x", FakeTerminal(True)), ProgressLine)


def test_progress_line_shows_done_total_rate_and_eta():
    term = FakeTerminal(True)
    line = ProgressLine(term, "big.wasm")
    line(10, 100)                       # too early: nothing drawn for short compiles
    assert term.text == ""
    line.started -= 2.0                 # as if two seconds had passed
    line(50, 100)
    assert "big.wasm: 50/100 functions (50%)" in term.text
    assert "functions/s" in term.text and "ETA 2s" in term.text
    line.clear()
    assert term.text.endswith("\r\x1b[K")


def test_compile_reports_progress_per_function():
    from pylucet.compiler.driver import compile_module
    seen = []
    compile_module(T_WAT, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 7) for i in range(1, 8)]


def test_pylucetc_prints_no_progress_when_stderr_is_not_a_terminal(files, tmp_path):
    done = run_tool(files, "pylucetc", "{ex}/hello.wasm", "-o", str(tmp_path / "h.so"))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
