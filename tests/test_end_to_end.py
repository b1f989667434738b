"""The whole path: WAT in, ELF shared object out, dlopen'd, run in a region slot, faults as traps."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import pytest

import pylucet
from pylucet import TrapCode
from pylucet.cli._common import ExitStatus

from .conftest import ROOT

SOURCE = r"""
(module $e2e
  (type $i2i (func (param i32) (result i32)))
  (type $v2i (func (result i32)))
  (memory 1)
  (table 4 funcref)
  (elem (i32.const 0) $fib $seven)
  (func $fib (export "fib") (type $i2i)
    (if (result i32) (i32.lt_u (local.get 0) (i32.const 2))
      (then (local.get 0))
      (else (i32.add (call $fib (i32.sub (local.get 0) (i32.const 1)))
                     (call $fib (i32.sub (local.get 0) (i32.const 2)))))))
  (func $seven (type $v2i) (i32.const 7))
  (func (export "add64") (param i64 i64) (result i64) (i64.add (local.get 0) (local.get 1)))
  (func (export "sum_squares") (param $n i32) (result i64)
    (local $i i32) (local $s i64)
    (loop $fill
      (i64.store (i32.shl (local.get $i) (i32.const 3))
                 (i64.mul (i64.extend_i32_u (local.get $i)) (i64.extend_i32_u (local.get $i))))
      (br_if $fill (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 1))) (local.get $n))))
    (local.set $i (i32.const 0))
    (loop $add
      (local.set $s (i64.add (local.get $s) (i64.load (i32.shl (local.get $i) (i32.const 3)))))
      (br_if $add (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 1))) (local.get $n))))
    (local.get $s))
  (func $div (export "div") (param i32 i32) (result i32) (i32.div_s (local.get 0) (local.get 1)))
  (func (export "rem") (param i32 i32) (result i32) (i32.rem_s (local.get 0) (local.get 1)))
  (func $boom (export "boom") (unreachable))
  (func (export "load") (param i32) (result i32) (i32.load (local.get 0)))
  (func (export "load_far") (param i32) (result i32) (i32.load offset=0xFFFFFFF0 (local.get 0)))
  (func $forever (export "forever") (param i32) (result i32)
    (call $forever (i32.add (local.get 0) (i32.const 1))))
  (func (export "call_slot") (param i32) (result i32)
    (call_indirect (type $v2i) (local.get 0)))
  (func (export "call_slot_as_i2i") (param i32) (result i32)
    (call_indirect (type $i2i) (i32.const 5) (local.get 0)))
)
"""


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    path = tmp_path_factory.mktemp("e2e") / "e2e.so"
    pylucet.compile(SOURCE, path)
    return path


@pytest.fixture(scope="module")
def instance(artifact):
    module = pylucet.load(artifact)
    region = pylucet.MmapRegion(2)
    inst = region.new_instance(module)
    yield inst
    inst.close()
    region.close()


def fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def test_results(instance):
    assert [instance.run("fib", n) for n in range(15)] == [fib(n) for n in range(15)]
    assert instance.run("fib", 20) == 6765
    assert instance.run("add64", 2**62, 2**62 - 1) == 2**63 - 1
    assert instance.run("add64", -5, 3) == -2
    assert instance.run("add64", 2**63 - 1, 1) == -2**63          # wraps like wasm
    assert instance.run("sum_squares", 1000) == sum(i * i for i in range(1000))
    assert instance.run("call_slot", 0 + 1) == 7
    assert instance.run("rem", -2**31, -1) == 0                    # x86 idiv would fault here


@pytest.mark.parametrize("func,args,code", [
    ("div", (1, 0), TrapCode.IntegerDivByZero),
    ("div", (-2**31, -1), TrapCode.IntegerOverflow),
    ("rem", (1, 0), TrapCode.IntegerDivByZero),
    ("boom", (), TrapCode.Unreachable),
    ("load", (0xFFFFFFFF,), TrapCode.HeapOutOfBounds),
    ("load", (65536 - 3,), TrapCode.HeapOutOfBounds),
    ("load_far", (0x100,), TrapCode.HeapOutOfBounds),
    ("forever", (0,), TrapCode.StackOverflow),
    ("call_slot_as_i2i", (1,), TrapCode.BadSignature),
    ("call_slot", (3,), TrapCode.IndirectCallToNull),
    ("call_slot", (4,), TrapCode.TableOutOfBounds),
])
def test_traps_and_recovery(instance, func, args, code):
    with pytest.raises(pylucet.Trap) as info:
        instance.run(func, *args)
    trap = info.value
    assert trap.code == code
    assert trap.func is not None and trap.wasm_offset is not None
    # the same instance carries on after the trap
    assert instance.run("fib", 10) == 55
    assert instance.run("div", 7, 2) == 3


def test_trap_names_the_wasm_function(instance):
    with pytest.raises(pylucet.Trap) as info:
        instance.run("div", 1, 0)
    assert info.value.func == "div"
    # the offset is the i32.div_s opcode inside the module binary
    binary = pylucet.compiler.driver.read_source(SOURCE)
    assert binary[info.value.wasm_offset] == 0x6D


def test_host_fault_reaches_faulthandler_after_guest_ran(artifact):
    """A real crash outside guest code must still be reported by Python's faulthandler, even
    though our handler now owns SIGSEGV."""
    script = textwrap.dedent(f"""
        import ctypes, faulthandler, sys
        faulthandler.enable()
        import pylucet
        region = pylucet.MmapRegion(1)
        inst = region.new_instance(pylucet.load({str(artifact)!r}))
        try:
            inst.run("boom")
        except pylucet.Trap:
            print("trapped", flush=True)
        ctypes.string_at(0)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert "trapped" in proc.stdout
    assert proc.returncode != 0
    assert "Fatal Python error: Segmentation fault" in proc.stderr


def _mapped_lines() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def _open_fds() -> int:
    import os
    return len(os.listdir("/proc/self/fd"))


def test_lifecycle_does_not_leak(artifact):
    module = pylucet.load(artifact)
    with pylucet.MmapRegion(2) as region:
        for _ in range(20):   # warm up caches, allocator arenas, ctypes
            with region.new_instance(module) as inst:
                inst.run("sum_squares", 100)
        maps, fds = _mapped_lines(), _open_fds()
        for i in range(1000):
            with region.new_instance(module) as inst:
                assert inst.run("sum_squares", 10) == 285
                if i % 100 == 0:
                    with pytest.raises(pylucet.Trap):
                        inst.run("boom")
        assert _mapped_lines() <= maps + 2
        assert _open_fds() == fds


def test_reused_slot_sees_no_old_data(artifact):
    module = pylucet.load(artifact)
    with pylucet.MmapRegion(1) as region:
        with region.new_instance(module) as inst:
            inst.run("sum_squares", 100)
            assert any(inst.heap[:800])
        with region.new_instance(module) as inst:
            assert not any(inst.heap[:65536])


@pytest.mark.skipif(not (shutil.which("readelf") and shutil.which("objdump")),
                    reason="binutils (readelf, objdump) not installed")
def test_binutils_read_the_artifact(artifact):
    r = subprocess.run(["readelf", "-a", "-W", str(artifact)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "" and "Warning" not in r.stdout
    assert "guest_func_fib" in r.stdout and "pylucet_module" in r.stdout
    d = subprocess.run(["objdump", "-d", str(artifact)], capture_output=True, text=True)
    assert d.returncode == 0 and d.stderr == ""
    for name in ("fib", "seven", "div", "boom", "forever"):
        assert f"<guest_func_{name}>:" in d.stdout


def test_cli_runs_bundled_example():
    proc = subprocess.run([sys.executable, "-m", "pylucet.cli.run", "run",
                           str(ROOT / "examples" / "fib.wat"), "fib", "20"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "6765"


def test_cli_reports_trap(tmp_path):
    src = tmp_path / "t.wat"
    src.write_text('(module (func (export "f") (param i32) (result i32) '
                   '(i32.div_u (i32.const 1) (local.get 0))))')
    so = tmp_path / "t.so"
    c = subprocess.run([sys.executable, "-m", "pylucet.cli.pylucetc", str(src), "-o", str(so)],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert c.returncode == 0, c.stderr
    proc = subprocess.run([sys.executable, "-m", "pylucet.cli.run", "run", str(so), "f", "0"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == ExitStatus.TRAP
    assert "IntegerDivByZero" in proc.stderr


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(pylucet.MalformedModule):
        pylucet.compile(b"\0asm\x01\0\0\0\x01\xff")
    with pytest.raises(pylucet.InvalidModule) as info:
        pylucet.compile('(module (func $f (result i32) (i64.const 1)))')
    assert "type mismatch" in str(info.value)


def test_unresolved_imports_refuse_to_instantiate():
    module = pylucet.load(pylucet.compile(
        '(module (import "env" "log" (func (param i32))) (func (export "f") (result i32) '
        '(i32.const 1)))'))
    with pylucet.MmapRegion(1) as region:
        with pytest.raises(pylucet.LinkError, match=r"env\.log \[i32\] -> \[\] is not defined"):
            region.new_instance(module)
        assert region.free_slots == 1   # nothing was taken


def test_module_without_functions():
    module = pylucet.load(pylucet.compile("(module (memory 1) (data (i32.const 8) \"hi\"))"))
    with pylucet.MmapRegion(1) as region, region.new_instance(module) as inst:
        assert bytes(inst.heap[8:10]) == b"hi"
