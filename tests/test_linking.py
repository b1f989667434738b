"""Instances linked to each other: an export of one defined into a Linker and imported by another
is called natively (pylucet_call_guest), and everything that can happen inside the callee -- a
hostcall, a trap, deep recursion, a kill switch, a concurrent direct call -- is handled by the
call of the instance that called it."""

from __future__ import annotations

import threading

import pytest

import pylucet

LIB = '''(module
  (import "env" "hostinc" (func $hi (param i32) (result i32)))
  (global $g (mut i32) (i32.const 0))
  (func (export "add") (param i32 i32) (result i32)
    (global.set $g (i32.add (global.get $g) (i32.const 1)))
    (i32.add (local.get 0) (local.get 1)))
  (func (export "many") (param i64 i64 i64 i64 i64 i64 i64 i64 f64 f64 f64 f64 f64 f64 f64 f64 f64)
        (result i64)
    (i64.add (i64.mul (local.get 7) (i64.const 10))
             (i64.add (local.get 6) (i64.trunc_f64_s (local.get 16)))))
  (func (export "pair") (param i32) (result i32 i64) (local.get 0) (i64.const -5))
  (func (export "viahost") (param i32) (result i32) (call $hi (local.get 0)))
  (func (export "div") (param i32 i32) (result i32) (i32.div_s (local.get 0) (local.get 1)))
  (func $rec (export "rec") (param i32) (result i32) (call $rec (local.get 0)))
  (func (export "spin") (loop $l (br $l)))
  (func (export "count") (result i32) (global.get $g)))'''

APP = '''(module
  (import "lib" "add" (func $add (param i32 i32) (result i32)))
  (import "lib" "many" (func $many (param i64 i64 i64 i64 i64 i64 i64 i64
                                          f64 f64 f64 f64 f64 f64 f64 f64 f64) (result i64)))
  (import "lib" "pair" (func $pair (param i32) (result i32 i64)))
  (import "lib" "viahost" (func $vh (param i32) (result i32)))
  (import "lib" "div" (func $div (param i32 i32) (result i32)))
  (import "lib" "rec" (func $rec (param i32) (result i32)))
  (import "lib" "spin" (func $spin))
  (func (export "f") (param i32) (result i32) (call $add (local.get 0) (i32.const 10)))
  (func (export "m") (result i64)
    (call $many (i64.const 1) (i64.const 2) (i64.const 3) (i64.const 4) (i64.const 5)
                (i64.const 6) (i64.const 700) (i64.const 8000) (f64.const 0) (f64.const 0)
                (f64.const 0) (f64.const 0) (f64.const 0) (f64.const 0) (f64.const 0)
                (f64.const 0) (f64.const 90000.5)))
  (func (export "p") (result i64) (local i32) (local i64)
    (call $pair (i32.const 9)) (local.set 1) (local.set 0)
    (i64.add (i64.extend_i32_s (local.get 0)) (local.get 1)))
  (func (export "vh") (param i32) (result i32) (call $vh (local.get 0)))
  (func (export "d") (param i32) (result i32) (call $div (i32.const 7) (local.get 0)))
  (func (export "r") (result i32) (call $rec (i32.const 1)))
  (func (export "s") (call $spin)))'''


@pytest.fixture
def pair():
    host = pylucet.Linker()
    calls = []

    def hostinc(vmctx: pylucet.Vmctx, x: pylucet.I32) -> pylucet.I32:
        calls.append(vmctx.instance)
        return x + 1

    host.define_func("env", "hostinc", hostinc)
    with pylucet.MmapRegion(3) as region:
        lib = region.new_instance(pylucet.load(pylucet.compile(LIB)), linker=host)
        linker = pylucet.Linker()
        linker.define_instance("lib", lib)
        app = region.new_instance(pylucet.load(pylucet.compile(APP)), linker=linker)
        yield region, lib, app, calls
        app.close()
        lib.close()


def test_calls_cross_instances_with_every_kind_of_argument(pair):
    _, lib, app, _ = pair
    assert app.run("f", 5) == 15
    assert app.run("m") == 80000 + 700 + 90000            # stack arguments, both classes
    assert app.run("p") == 9 - 5                           # several results (return area)
    assert lib.run("count") == 1                           # the callee's own globals changed


def test_a_hostcall_inside_the_callee_sees_the_callee(pair):
    _, lib, app, calls = pair
    assert app.run("vh", 41) == 42
    assert calls == [lib]


def test_traps_inside_the_callee_name_its_function_and_leave_both_usable(pair):
    _, lib, app, _ = pair
    with pytest.raises(pylucet.Trap) as info:
        app.run("d", 0)
    assert info.value.code == pylucet.TrapCode.IntegerDivByZero and info.value.func == "div"
    with pytest.raises(pylucet.Trap) as info:
        app.run("r")
    assert info.value.code == pylucet.TrapCode.StackOverflow
    assert app.run("d", 7) == 1 and lib.run("div", 9, 3) == 3   # both usable afterwards
    assert app.run("f", 1) == 11


def test_the_callee_is_busy_while_a_call_is_inside_it(pair):
    _, lib, app, _ = pair
    errors = []
    worker = threading.Thread(target=lambda: errors.append(
        pytest.raises(pylucet.Terminated, app.run, "s", timeout=1.0)))
    worker.start()
    try:
        deadline = __import__("time").monotonic() + 5
        while app.state != pylucet.State.RUNNING and __import__("time").monotonic() < deadline:
            pass
        caught = None
        deadline = __import__("time").monotonic() + 5
        while caught is None and __import__("time").monotonic() < deadline:
            try:                         # the spin happens inside lib: a direct call is refused
                lib.run("count")         # (until the caller has got there, it still runs)
            except pylucet.StateError as e:
                caught = e
        assert caught is not None and "in use" in str(caught)
    finally:
        worker.join()
    assert errors and "timeout" in str(errors[0].value)   # the kill switch reached inside lib
    app.reset()
    assert lib.run("count") == 0 and app.run("f", 2) == 12   # both free and usable again


def test_a_linked_instance_cannot_go_away_under_its_importer(pair):
    _, lib, app, _ = pair
    with pytest.raises(pylucet.StateError, match="import its functions"):
        lib.close()
    with pytest.raises(pylucet.StateError, match="import its functions"):
        lib.reset()
    app.close()
    lib.reset()                          # fine once the importer is gone
    assert lib.run("add", 1, 2) == 3


def test_type_mismatch_names_both_types(pair):
    _, lib, _, _ = pair
    linker = pylucet.Linker()
    linker.define_func("lib", "add", lib.exports["count"])
    bad = pylucet.load(pylucet.compile(
        '(module (import "lib" "add" (func (param i32 i32) (result i32))))'))
    with pylucet.MmapRegion(1) as region:
        with pytest.raises(pylucet.LinkError, match=r"imports it as \[i32 i32\] -> \[i32\], "
                                                    r"but it is defined as \[\] -> \[i32\]"):
            region.new_instance(bad, linker=linker)
