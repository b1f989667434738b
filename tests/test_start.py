"""Start functions that call imports: what the host function sees, and what its errors,
terminations and yields do to instantiation and to reset."""

from __future__ import annotations

import pytest

from pylucet import InstantiationError, Terminate, Terminated, Trap
from pylucet.runtime import Linker, MmapRegion, State

from .conftest import load_wat

WAT = """(module
  (import "env" "init" (func $init (param i32) (result i32)))
  (memory 1)
  (global $g (export "gv") (mut i32) (i32.const 0))
  (func $start
    (i32.store (i32.const 0) (i32.const 0x01020304))
    (global.set $g (call $init (i32.const 0))))
  (start $start)
  (func (export "div") (param i32) (result i32) (i32.div_u (i32.const 10) (local.get 0)))
  (func (export "g") (result i32) (global.get $g)))"""


@pytest.fixture(scope="module")
def module():
    return load_wat(WAT)


def _linker(fn):
    linker = Linker()
    linker.define_func("env", "init", fn, type="(i32) -> i32", access_vmctx=True)
    return linker


def test_start_calls_an_import_that_sees_memory_and_ctx(module):
    seen = []

    def init(vmctx, ptr):
        seen.append((vmctx.read(ptr, 4), vmctx.ctx))
        vmctx.write(8, b"ok")
        return 77
    embed = object()
    with MmapRegion(1) as region:
        with region.new_instance(module, linker=_linker(init), ctx=embed) as inst:
            assert seen == [(bytes([4, 3, 2, 1]), embed)]
            assert inst.run("g") == 77 and bytes(inst.heap[8:10]) == b"ok"
            inst.heap[8] = 0
            inst.globals["gv"] = 1
            inst.reset()                              # runs the start function again
            assert len(seen) == 2
            assert inst.run("g") == 77 and bytes(inst.heap[8:10]) == b"ok"


@pytest.mark.parametrize("kind", ["raise", "terminate", "yield", "wrong result"])
def test_a_failing_start_import_fails_instantiation_and_frees_the_slot(module, kind):
    def init(vmctx, ptr):
        if kind == "raise":
            raise OSError("no config")
        if kind == "terminate":
            raise Terminate("exit 3")
        if kind == "wrong result":
            return "seventy-seven"
        return (yield "paused")
    want = InstantiationError if kind == "yield" else Terminated
    with MmapRegion(1) as region:
        with pytest.raises(want) as info:
            region.new_instance(module, linker=_linker(init))
        if kind == "raise":
            assert isinstance(info.value.__cause__, OSError)
        if kind == "terminate":
            assert info.value.details == "exit 3"
        assert region.free_slots == 1
        # the slot is clean for the next tenant
        with region.new_instance(module, linker=_linker(lambda v, p: 5)) as inst:
            assert inst.run("g") == 5


def test_a_start_failure_on_reset_closes_the_instance(module):
    fail = []

    def init(vmctx, ptr):
        if fail:
            raise ValueError("now it fails")
        return 1
    with MmapRegion(1) as region:
        inst = region.new_instance(module, linker=_linker(init))
        with pytest.raises(Trap):
            inst.run("div", 0)
        fail.append(1)
        with pytest.raises(Terminated):
            inst.reset()
        assert inst.state == State.CLOSED
        assert region.free_slots == 1
        with pytest.raises(ValueError, match="closed"):
            inst.run("g")
