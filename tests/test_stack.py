"""The guest stack: recursion right up to the overflow boundary, with frames of several sizes,
and host calls made from the deepest frame that fits."""

from __future__ import annotations

import pytest

from pylucet import Trap, TrapCode
from pylucet.runtime import Linker, MmapRegion, State

from .conftest import load_wat


def _wat(nlocals: int) -> str:
    """rec(n) recurses n levels below itself (n + 1 frames), counting frames in $depth; each
    frame keeps ``nlocals`` i64 locals live across its call. At the bottom it calls env.host."""
    decl = " ".join(["i64"] * nlocals)
    keep = "".join(f"(local.set {i + 1} (i64.extend_i32_u (local.get 0)))"
                   for i in range(nlocals))
    use = "".join(f"(i64.add (local.get {i + 1}))" for i in range(nlocals))
    return f"""(module
      (import "env" "host" (func $host (param i32) (result i32)))
      (global $depth (export "depth") (mut i32) (i32.const 0))
      (func $rec (export "rec") (param i32) (result i64) {f"(local {decl})" if nlocals else ""}
        (global.set $depth (i32.add (global.get $depth) (i32.const 1)))
        {keep}
        (if (result i64) (i32.eqz (local.get 0))
          (then (i64.extend_i32_s (call $host (global.get $depth))))
          (else (i64.add (i64.const 0) (call $rec (i32.sub (local.get 0) (i32.const 1)))
                 {use}))))
      (func (export "reset_depth") (global.set $depth (i32.const 0))))"""


@pytest.fixture(scope="module")
def region():
    with MmapRegion(2) as r:
        yield r


def _boundary(inst) -> int:
    """How many frames fit: recurse without end, and count them when the overflow traps."""
    inst.run("reset_depth")
    with pytest.raises(Trap) as info:
        inst.run("rec", 0x7FFFFFFF)
    assert info.value.code == TrapCode.StackOverflow
    assert inst.state == State.READY
    return inst.globals["depth"]


@pytest.mark.parametrize("nlocals", [0, 4, 40, 400])
def test_recursion_at_the_boundary_depth(region, nlocals):
    calls = []
    linker = Linker()
    linker.define_func("env", "host", lambda d: calls.append(d) or d, type="(i32) -> i32")
    with region.new_instance(load_wat(_wat(nlocals)), linker=linker) as inst:
        frames = _boundary(inst)
        assert frames > 100
        assert _boundary(inst) == frames      # the same every time: nothing leaked
        # the deepest recursion that fits runs, and calls the host from its last frame
        inst.run("reset_depth")
        result = inst.run("rec", frames - 1)
        assert calls == [frames]
        assert result == frames + nlocals * sum(range(frames))
        # one more frame does not fit
        inst.run("reset_depth")
        with pytest.raises(Trap) as info:
            inst.run("rec", frames)
        assert info.value.code == TrapCode.StackOverflow
        assert calls == [frames]
        inst.run("reset_depth")
        assert inst.run("rec", 3) == 4 + nlocals * (3 + 2 + 1)


def test_bigger_frames_fit_fewer_times(region):
    depths = []
    linker = Linker()
    linker.define_func("env", "host", lambda d: d, type="(i32) -> i32")
    for nlocals in (0, 40, 400):
        with region.new_instance(load_wat(_wat(nlocals)), linker=linker) as inst:
            depths.append(_boundary(inst))
    assert depths[0] > depths[1] > depths[2]


def test_overflow_in_another_instance_from_a_deep_host_call(region):
    """The host function, called from the deepest frame of one guest, runs a second guest into
    its own overflow, catches the trap and returns: both stacks are separate."""
    module = load_wat(_wat(4))
    inner_linker = Linker()
    inner_linker.define_func("env", "host", lambda d: d, type="(i32) -> i32")
    inner = region.new_instance(module, linker=inner_linker)
    seen = []

    def host(d):
        with pytest.raises(Trap) as info:
            inner.run("rec", 0x7FFFFFFF)
        seen.append(info.value.code)
        return -d
    outer_linker = Linker()
    outer_linker.define_func("env", "host", host, type="(i32) -> i32")
    with inner, region.new_instance(module, linker=outer_linker) as outer:
        frames = _boundary(outer)
        outer.run("reset_depth")
        outer.run("rec", frames - 1)
        assert seen == [TrapCode.StackOverflow]
        assert inner.state == State.READY and outer.state == State.READY
