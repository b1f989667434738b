"""Entry points of compiled modules: arguments of every type, bad names, bad arguments, calls
through the table, exports that are imports, and the module's globals seen from the host."""

from __future__ import annotations

import math

import pytest

import pylucet
from pylucet import LinkError, Trap, TrapCode
from pylucet.runtime import Linker, MmapRegion, UnknownExport

from .conftest import instantiate

WAT = """(module
  (import "env" "host_add" (func $host_add (param i64 i64) (result i64)))
  (export "reexported" (func $host_add))
  (memory (export "memory") 1)
  (global $g_i32 (export "g_i32") (mut i32) (i32.const -5))
  (global $g_i64 (export "g_i64") (mut i64) (i64.const 0x1122334455667788))
  (global $g_f32 (export "g_f32") (mut f32) (f32.const 1.5))
  (global $g_f64 (export "g_f64") (mut f64) (f64.const -2.25))
  (global $k (export "k") i32 (i32.const 99))
  (table 3 funcref)
  (elem (i32.const 0) $sub $mulf $host_add)
  (type $ii (func (param i64 i64) (result i64)))
  (func $sub (param i64 i64) (result i64) (i64.sub (local.get 0) (local.get 1)))
  (func $mulf (param f64 f64) (result f64) (f64.mul (local.get 0) (local.get 1)))
  (func (export "i32s") (param i32 i32 i32) (result i32)
    (i32.sub (i32.mul (local.get 0) (local.get 1)) (local.get 2)))
  (func (export "i64s") (param i64 i64) (result i64) (i64.mul (local.get 0) (local.get 1)))
  (func (export "f32s") (param f32 f32) (result f32) (f32.div (local.get 0) (local.get 1)))
  (func (export "f64s") (param f64 f64) (result f64) (f64.div (local.get 0) (local.get 1)))
  (func (export "mixed") (param i32 f64 i64 f32) (result f64)
    (f64.add (f64.add (f64.convert_i32_s (local.get 0)) (local.get 1))
             (f64.add (f64.convert_i64_s (local.get 2)) (f64.promote_f32 (local.get 3)))))
  (func (export "sub") (type $ii) (i64.sub (local.get 0) (local.get 1)))
  (export "also_sub" (func 8))
  (func (export "call_ii") (param i32 i64 i64) (result i64)
    (call_indirect (type $ii) (local.get 1) (local.get 2) (local.get 0)))
  (func (export "read_globals") (result i32 i64 f32 f64)
    (global.get $g_i32) (global.get $g_i64) (global.get $g_f32) (global.get $g_f64))
  (func (export "bump") (global.set $g_i32 (i32.add (global.get $g_i32) (i32.const 1)))
    (global.set $g_f64 (f64.mul (global.get $g_f64) (f64.const 2)))))"""


@pytest.fixture(scope="module")
def inst():
    linker = Linker()
    linker.define_func("env", "host_add", lambda a, b: a + b, type="(i64, i64) -> i64")
    with MmapRegion(2) as region:
        with instantiate(region, WAT, linker=linker) as inst:
            yield inst


def test_arguments_of_every_type(inst):
    assert inst.run("i32s", 7, -6, 3) == -45
    assert inst.run("i32s", 0xFFFFFFFF, 1, 0) == -1        # unsigned form accepted
    assert inst.run("i64s", -(2**62), 2) == -(2**63)
    assert inst.run("f32s", 1.0, 3.0) == pytest.approx(1 / 3, rel=1e-7)
    assert inst.run("f64s", 1.0, 0.0) == math.inf
    assert math.isnan(inst.run("f64s", 0.0, 0.0))
    assert inst.run("mixed", -1, 0.5, 2**40, 0.25) == -1 + 0.5 + 2**40 + 0.25
    assert inst.run("f64s", 3, 2) == 1.5                   # ints are accepted for floats


@pytest.mark.parametrize("name", ["nope", "", "memory", "g_i32", "k", "I32S", "i32s "])
def test_bad_names(inst, name):
    with pytest.raises(UnknownExport) as info:
        inst.run(name)
    assert info.value.name == name
    assert "i32s" in info.value.available and "memory" not in info.value.available
    assert pylucet.UnknownExport is UnknownExport


@pytest.mark.parametrize("name", [None, 3, b"i32s", ("i32s",)])
def test_names_that_are_not_strings(inst, name):
    with pytest.raises(TypeError):
        inst.run(name)


@pytest.mark.parametrize("func, args, error", [
    ("i32s", (1, 2), TypeError),
    ("i32s", (1, 2, 3, 4), TypeError),
    ("i32s", (), TypeError),
    ("i32s", (1, 2, "3"), TypeError),
    ("i32s", (1, 2, 3.0), TypeError),
    ("i32s", (1, 2, None), TypeError),
    ("i32s", (1, 2, 2**32), OverflowError),
    ("i64s", (2**64, 0), OverflowError),
    ("f64s", (1.0, "2"), TypeError),
    ("f64s", (1.0, 1j), TypeError),
    ("mixed", (1.5, 1.0, 1, 1.0), TypeError),
])
def test_bad_arguments(inst, func, args, error):
    with pytest.raises(error, match=func):
        inst.run(func, *args)
    assert inst.run("i32s", 2, 3, 1) == 5     # nothing left behind


def test_calls_through_the_table(inst):
    assert inst.run("call_ii", 0, 10, 3) == 7
    assert inst.run("call_ii", 2, 10, 3) == 13          # a host function in the table
    with pytest.raises(Trap) as info:
        inst.run("call_ii", 1, 1, 1)                     # $mulf has another type
    assert info.value.code == TrapCode.BadSignature
    with pytest.raises(Trap) as info:
        inst.run("call_ii", 3, 1, 1)
    assert info.value.code == TrapCode.TableOutOfBounds
    assert inst.run("call_ii", 0, 1, 1) == 0


def test_an_exported_import_runs_the_host_function(inst):
    assert inst.run("reexported", 40, 2) == 42


def test_one_function_under_two_names(inst):
    assert inst.run("sub", 5, 7) == inst.run("also_sub", 5, 7) == -2


def test_run_func_index(inst):
    # index 0 is the import, 1 $sub, 2 $mulf
    assert inst.run_func_index(1, 9, 4) == 5
    assert inst.run_func_index(2, 1.5, 2.0) == 3.0
    assert inst.run_func_index(0, 1, 2) == 3
    for bad in (1.5, "1", True, None):
        with pytest.raises(TypeError):
            inst.run_func_index(bad, 1, 2)
    with pytest.raises(IndexError):
        inst.run_func_index(100)


# --- globals ----------------------------------------------------------------------------------

def test_globals_initial_values_and_guest_reads(inst):
    inst.reset()
    g = inst.globals
    assert (g["g_i32"], g["g_i64"], g["g_f32"], g["g_f64"], g["k"]) == (
        -5, 0x1122334455667788, 1.5, -2.25, 99)
    assert inst.run("read_globals") == (-5, 0x1122334455667788, 1.5, -2.25)


def test_host_writes_are_seen_by_the_guest_and_back(inst):
    inst.reset()
    g = inst.globals
    g["g_i32"] = 0x7FFFFFFF
    g["g_i64"] = -1
    g["g_f32"] = 0.1
    g["g_f64"] = 1e308
    i32, i64, f32, f64 = inst.run("read_globals")
    assert (i32, i64, f64) == (0x7FFFFFFF, -1, 1e308)
    assert f32 == pytest.approx(0.1, rel=1e-7) and f32 != 0.1   # rounded to f32
    inst.run("bump")
    assert g["g_i32"] == -2**31                                 # wrapped
    assert g["g_f64"] == math.inf
    with pytest.raises(ValueError, match="immutable"):
        g["k"] = 1
    with pytest.raises(TypeError):
        g["g_i32"] = 1.0
    with pytest.raises(KeyError):
        g["memory"]


def test_reset_restores_globals(inst):
    inst.globals["g_i32"] = 1
    inst.run("bump")
    inst.reset()
    assert inst.run("read_globals")[0] == -5


def test_globals_survive_a_trap(inst):
    inst.reset()
    inst.run("bump")
    with pytest.raises(Trap):
        inst.run("call_ii", 5, 0, 0)
    assert inst.globals["g_i32"] == -4


def test_imported_globals_are_refused_clearly():
    wat = """(module (import "env" "g" (global i32))
      (func (export "get") (result i32) (global.get 0)))"""
    with MmapRegion(1) as region:
        try:
            module_or_error = instantiate(region, wat, linker=Linker())
        except (LinkError, pylucet.Unsupported) as e:
            assert "env.g" in str(e) or "global" in str(e)
        else:
            module_or_error.close()
            pytest.fail("an imported global was linked without a definition")


def test_imports_in_tables_and_exports_through_a_real_artifact(tmp_path):
    """The same through the ELF writer and dlopen: an import's address is its trampoline
    in the artifact's text."""
    linker = Linker()
    linker.define_func("env", "host_add", lambda a, b: a + b, type="(i64, i64) -> i64")
    module = pylucet.load(pylucet.compile(WAT, str(tmp_path / "entry.so")))
    with MmapRegion(1) as region, region.new_instance(module, linker=linker) as inst:
        assert inst.run("call_ii", 2, 10, 3) == 13
        assert inst.run("reexported", 1, 2) == 3
        assert inst.run("call_ii", 0, 10, 3) == 7


def test_a_cached_index_plan_is_not_reachable_by_name(inst):
    """run_func_index caches its plan under a key that is not a str; run() must not find it
    when handed that key."""
    assert inst.run_func_index(1, 9, 4) == 5
    for key in [(1,), [1]]:
        with pytest.raises(TypeError):
            inst.run(key, 9, 4)


def test_a_trap_after_a_nested_instance_trapped():
    """Guest A's host function runs guest B, which traps (caught); then A itself traps: the
    trap is A's, with A's function name."""
    wat_b = """(module (func (export "boom") (unreachable)))"""
    wat_a = """(module (import "env" "f" (func $f (result i32)))
      (func $a_div (export "go") (result i32) (i32.div_u (i32.const 1) (call $f))))"""
    with MmapRegion(2) as region:
        b = instantiate(region, wat_b)

        def f():
            with pytest.raises(Trap) as info:
                b.run("boom")
            assert info.value.code == TrapCode.Unreachable
            return 0
        linker = Linker()
        linker.define_func("env", "f", f, type="() -> i32")
        with b, instantiate(region, wat_a, linker=linker) as a:
            with pytest.raises(Trap) as info:
                a.run("go")
            assert info.value.code == TrapCode.IntegerDivByZero
            assert info.value.func in ("a_div", "go")
