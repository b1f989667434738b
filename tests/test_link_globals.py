"""Globals across the link: the host's own (pylucet.Global) and other instances', imported
immutable (copied at instantiation) or mutable (shared by reference: a write on either side is
seen by the other), read by initialisers and data offsets, type-checked at link time."""

from __future__ import annotations

import math

import pytest

import pylucet
from pylucet import Global, GlobalType, Linker, ValType
from tests.conftest import instantiate, load_wat

SPECTEST = '''(module
  (import "spectest" "global_i32" (global $i32 i32))
  (import "spectest" "global_i64" (global $i64 i64))
  (import "spectest" "global_f32" (global $f32 f32))
  (import "spectest" "global_f64" (global $f64 f64))
  (func (export "i32") (result i32) (global.get $i32))
  (func (export "i64") (result i64) (global.get $i64))
  (func (export "f32") (result f32) (global.get $f32))
  (func (export "f64") (result f64) (global.get $f64)))'''

COUNTER = '''(module
  (global $n (export "n") (mut i64) (i64.const 10))
  (global $x (export "x") (mut f64) (f64.const 0.5))
  (global (export "k") i32 (i32.const 77))
  (func (export "bump") (result i64)
    (global.set $n (i64.add (global.get $n) (i64.const 1))) (global.get $n))
  (func (export "get_x") (result f64) (global.get $x)))'''

USER = '''(module
  (import "lib" "n" (global $n (mut i64)))
  (import "lib" "x" (global $x (mut f64)))
  (import "lib" "k" (global $k i32))
  (global $k2 (export "k2") i32 (global.get $k))
  (global $own (mut i32) (i32.const 3))
  (export "n" (global $n))
  (func (export "get") (result i64) (global.get $n))
  (func (export "set") (param i64) (global.set $n (local.get 0)))
  (func (export "set_x") (param f64) (global.set $x (local.get 0)))
  (func (export "set_const") (global.set $n (i64.const -5)))
  (func (export "get_k2") (result i32) (global.get $k2))
  (func (export "own") (result i32) (global.get $own)))'''


def spectest_linker() -> Linker:
    linker = Linker()
    linker.define_global("spectest", "global_i32", Global(ValType.I32, 666))
    linker.define_global("spectest", "global_i64", Global("i64", 666))
    linker.define("spectest", "global_f32", Global(ValType.F32, 666.6))
    linker.define("spectest", "global_f64", Global(GlobalType(ValType.F64, False), 666.6))
    return linker


def test_host_globals_are_copied_into_an_immutable_import(region):
    with instantiate(region, SPECTEST, spectest_linker()) as inst:
        assert inst.run("i32") == 666
        assert inst.run("i64") == 666
        assert inst.run("f32") == pytest.approx(666.6, rel=1e-7)
        assert inst.run("f64") == 666.6
        assert inst.globals[0] == 666 and inst.globals[3] == 666.6
        with pytest.raises(ValueError, match="immutable"):
            inst.globals[0] = 1


def test_a_host_global_shared_both_ways():
    n, x, k = Global("i64", 10, mutable=True), Global("f64", 0.0, mutable=True), Global("i32", 4)
    linker = Linker()
    for name, g in (("n", n), ("x", x), ("k", k)):
        linker.define("lib", name, g)
    with pylucet.MmapRegion(1) as region, instantiate(region, USER, linker) as inst:
        assert inst.run("get") == 10
        n.value = -(1 << 63)                       # the host writes, the guest reads
        assert inst.run("get") == -(1 << 63)
        inst.run("set", 123)                       # the guest writes, the host reads
        assert n.value == 123
        inst.run("set_const")
        assert n.value == -5
        inst.run("set_x", math.inf)
        assert x.value == math.inf
        inst.globals[0] = 99                       # the importer's own view goes to the same place
        assert n.value == 99
        assert inst.run("get_k2") == 4 and inst.run("own") == 3


def test_instances_share_a_mutable_global_and_copy_an_immutable_one():
    with pylucet.MmapRegion(3) as region:
        lib = instantiate(region, COUNTER)
        linker = Linker()
        linker.define_instance("lib", lib)
        user = instantiate(region, USER, linker)
        assert user.run("get") == 10
        assert lib.run("bump") == 11               # the exporter writes ...
        assert user.run("get") == 11               # ... the importer sees it
        user.run("set", 1000)                      # and the other way round
        assert lib.run("bump") == 1001
        assert lib.exports["n"].value == 1001 and lib.globals["n"] == 1001
        user.run("set_x", 2.25)
        assert lib.run("get_x") == 2.25
        assert user.run("get_k2") == 77                # initialised by global.get of an import

        # a re-exported import is the original: a third instance shares the exporter's storage
        assert user.exports["n"] is linker.get("lib", "n")
        again = Linker()
        again.define_instance("lib", user)
        again.define("lib", "x", lib.exports["x"])
        again.define("lib", "k", Global("i32", 1))
        third = instantiate(region, USER, again)
        third.run("set", 7)
        assert lib.run("bump") == 8 and user.run("get") == 8

        with pytest.raises(pylucet.StateError, match="import its functions, globals or memory"):
            lib.close()
        with pytest.raises(pylucet.StateError):
            lib.reset()
        third.close()
        user.close()
        exported = lib.exports["n"]
        lib.close()                                # nobody imports it any more
        with pytest.raises(ValueError, match="closed"):
            exported.value


def test_a_data_segment_at_an_imported_global_offset(region):
    wat = '''(module
      (import "env" "base" (global $base i32))
      (memory 1)
      (data (i32.const 0) "first")
      (data (global.get $base) "there")
      (func (export "load") (param i32) (result i32) (i32.load8_u (local.get 0))))'''
    linker = Linker()
    linker.define_global("env", "base", Global("i32", 1000))
    with instantiate(region, wat, linker) as inst:
        assert bytes(inst.heap[1000:1005]) == b"there"
        assert bytes(inst.heap[0:5]) == b"first"
    linker.allow_shadowing = True
    linker.define_global("env", "base", Global("i32", 65535))
    with pytest.raises(pylucet.InstantiationError, match="out of bounds memory access"):
        instantiate(region, wat, linker)


def test_every_mismatch_is_listed_in_one_link_error(region):
    wat = '''(module
      (import "env" "a" (global (mut i32)))
      (import "env" "b" (global i32))
      (import "env" "c" (global i64))
      (import "env" "d" (global f32))
      (import "env" "e" (global i32)))'''
    linker = Linker()
    linker.define("env", "a", Global("i32", 1))                  # immutable for a mutable one
    linker.define("env", "b", Global("i32", 1, mutable=True))    # mutable for an immutable one
    linker.define("env", "c", Global("i32", 1))                  # another value type
    linker.define_func("env", "d", lambda: None, "() -> ()")      # not a global at all
    with pytest.raises(pylucet.LinkError) as info:
        instantiate(region, wat, linker)
    problems = info.value.problems
    assert len(problems) == 5
    assert "env.a: the module imports it as global (mut i32), but it is defined as global i32" \
        in problems[0]
    assert "defined as global (mut i32)" in problems[1]
    assert "imports it as global i64, but it is defined as global i32" in problems[2]
    assert "defined as [] -> []" in problems[3]
    assert problems[4] == "env.e global i32 is not defined"
    # and the other way round: a global where a function is imported
    linker.define("env", "f", Global("i32", 1))
    with pytest.raises(pylucet.LinkError, match=r"imports it as \[\] -> \[\], but it is defined "
                                                r"as global i32"):
        instantiate(region, '(module (import "env" "f" (func)))', linker)


def test_host_global_values_and_types_are_checked():
    g = Global("i32", -1, mutable=True)
    assert g.value == -1 and g.type == GlobalType(ValType.I32, True)
    g.value = 0xFFFF_FFFF                          # unsigned input, read back signed
    assert g.value == -1
    with pytest.raises(OverflowError, match="out of range for i32"):
        g.value = 1 << 32
    with pytest.raises(TypeError, match="needs an int"):
        g.value = 1.5
    with pytest.raises(ValueError, match="immutable"):
        Global("f64", 1.0).value = 2.0
    with pytest.raises(ValueError, match="unknown global value type"):
        Global("i16")
    with pytest.raises(ValueError, match="contradicts"):
        Global(GlobalType(ValType.I32, False), mutable=True)
    with pytest.raises(TypeError):
        Linker().define_global("a", "b", 5)
    assert "(mut i32) = -1 of host" in repr(g)


def test_mutable_imported_globals_compile_to_an_indirect_access():
    module = load_wat(USER)
    specs = module.data.globals
    assert [s.import_from for s in specs[:3]] == [("lib", "n"), ("lib", "x"), ("lib", "k")]
    assert [s.by_reference for s in specs] == [True, True, False, False, False]
    assert specs[3].init_global == 2 and specs[4].init_global is None
