"""Yield and resume: generator host functions suspend the guest, ``resume`` continues it."""

from __future__ import annotations

import threading
import time

import pytest

from pylucet import StateError, Terminated
from pylucet.runtime import KillOutcome, Linker, MmapRegion, State, Yielded

from .conftest import instantiate, load_wat

# go(n): calls env.step(i) for i in 0..n-1, summing what each returns, then adds env.last()
WAT = """(module
  (import "env" "step" (func $step (param i32) (result i64)))
  (import "env" "last" (func $last (result i64)))
  (global $calls (mut i32) (i32.const 0))
  (func (export "go") (param $n i32) (result i64)
    (local $i i32) (local $sum i64)
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $sum (i64.add (local.get $sum) (call $step (local.get $i))))
        (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (i64.add (local.get $sum) (call $last)))
  (func (export "calls") (result i32) (global.get $calls)))"""


@pytest.fixture(scope="module")
def region():
    with MmapRegion(3) as r:
        yield r


def _inst(region, step, last=lambda: 0):
    linker = Linker()
    linker.define_func("env", "step", step, type="(i32) -> i64", access_vmctx=True)
    linker.define_func("env", "last", last, type="() -> i64")
    return instantiate(region, WAT, linker=linker)


def test_yield_a_value_and_resume_with_the_result(region):
    def step(vmctx, i):
        got = yield ("asks", i)
        return got * 10
    with _inst(region, step) as inst:
        out = inst.run("go", 1)
        assert isinstance(out, Yielded) and out.value == ("asks", 0)
        assert inst.state == State.YIELDED
        assert inst.resume(4) == 40
        assert inst.state == State.READY
        assert inst.run("calls") == 1


def test_yield_from_vmctx_yield(region):
    def step(vmctx, i):
        got = yield from vmctx.yield_(i + 100)
        return got
    with _inst(region, step) as inst:
        assert inst.run("go", 1).value == 100
        assert inst.resume(-5) == -5


def test_several_yields_in_one_host_call(region):
    def step(vmctx, i):
        a = yield "a"
        b = yield "b"
        c = yield from vmctx.yield_("c")
        return a + b + c
    with _inst(region, step) as inst:
        assert inst.run("go", 1).value == "a"
        assert inst.resume(1).value == "b"
        assert inst.resume(20).value == "c"
        assert inst.resume(300) == 321


def test_yields_across_several_host_calls_in_one_run(region):
    def step(vmctx, i):
        return (yield i)

    def last():
        return 1000
    with _inst(region, step, last) as inst:
        out = inst.run("go", 5)
        seen = []
        while isinstance(out, Yielded):
            seen.append(out.value)
            out = inst.resume(out.value * 2)
        assert seen == [0, 1, 2, 3, 4]
        assert out == 2 * sum(range(5)) + 1000
        assert inst.run("calls") == 5


def test_a_generator_that_does_not_yield_just_returns(region):
    def step(vmctx, i):
        if False:
            yield
        return i + 1
    with _inst(region, step) as inst:
        assert inst.run("go", 3) == 6


def test_resume_on_another_thread(region):
    def step(vmctx, i):
        return (yield threading.get_ident())
    with _inst(region, step) as inst:
        out = inst.run("go", 3)
        results = []

        def worker():
            o = out
            while isinstance(o, Yielded):
                results.append(o.value)
                o = inst.resume(7)
            results.append(o)
        t = threading.Thread(target=worker)
        t.start()
        t.join()
        assert results[0] == threading.get_ident()
        assert results[1] != threading.get_ident()      # the generator ran on the worker
        assert results[-1] == 21


def test_each_resume_on_a_different_thread(region):
    def step(vmctx, i):
        return (yield i)
    with _inst(region, step) as inst:
        out = inst.run("go", 6)
        while isinstance(out, Yielded):
            box = []
            t = threading.Thread(target=lambda v=out.value: box.append(inst.resume(v + 1)))
            t.start()
            t.join()
            out = box[0]
        assert out == sum(range(1, 7))


def test_yielding_in_a_resumed_run(region):
    """A run that was itself resumed yields again from a later host call (the guest is a
    generator, in effect)."""
    def step(vmctx, i):
        got = yield f"first {i}"
        got2 = yield f"second {i}"
        return got + got2
    with _inst(region, step) as inst:
        out = inst.run("go", 2)
        seen = []
        while isinstance(out, Yielded):
            seen.append(out.value)
            out = inst.resume(1)
        assert seen == ["first 0", "second 0", "first 1", "second 1"]
        assert out == 4


def test_running_a_yielded_instance_is_a_state_error(region):
    def step(vmctx, i):
        return (yield i)
    with _inst(region, step) as inst:
        inst.run("go", 1)
        with pytest.raises(StateError, match="yielded"):
            inst.run("go", 1)
        with pytest.raises(StateError, match="yielded"):
            inst.run("calls")
        assert inst.resume(3) == 3
        with pytest.raises(StateError, match="not yielded"):
            inst.resume(3)


def test_reset_a_yielded_instance(region):
    finished = []

    def step(vmctx, i):
        try:
            return (yield i)
        finally:
            finished.append(i)
    with _inst(region, step) as inst:
        inst.run("go", 2)
        inst.reset()
        assert finished == [0]       # the suspended generator was closed, not left pending
        assert inst.state == State.READY
        with pytest.raises(StateError):
            inst.resume(1)
        assert inst.run("calls") == 0
        assert inst.run("go", 1).value == 0
        assert inst.resume(9) == 9


def test_close_of_a_yielded_instance_frees_its_slot():
    def step(vmctx, i):
        return (yield i)
    with MmapRegion(1) as r:
        inst = _inst(r, step)
        assert isinstance(inst.run("go", 1), Yielded)
        inst.close()
        with pytest.raises(ValueError, match="closed"):
            inst.resume(1)
        with _inst(r, step) as again:    # the only slot is free again
            assert isinstance(again.run("go", 1), Yielded)
            assert again.resume(2) == 2


def test_an_exception_after_resume_terminates(region):
    def step(vmctx, i):
        yield i
        raise KeyError("after resume")
    with _inst(region, step) as inst:
        inst.run("go", 1)
        with pytest.raises(Terminated) as info:
            inst.resume(None)
        assert isinstance(info.value.__cause__, KeyError)
        assert inst.state == State.TERMINATED
        inst.reset()
        assert inst.run("calls") == 0


def test_the_wrong_result_after_resume_terminates(region):
    def step(vmctx, i):
        return (yield i)
    with _inst(region, step) as inst:
        inst.run("go", 1)
        with pytest.raises(Terminated, match="env.step"):
            inst.resume("not an int")
        assert inst.state == State.TERMINATED


def test_yield_from_a_host_function_with_several_results_and_stack_arguments(region):
    params = ("i64",) * 8 + ("f64",) * 10
    wat = f"""(module
      (import "env" "f" (func $f (param {' '.join(params)}) (result i64 f64 i32)))
      (func (export "go") (param {' '.join(params)}) (result i64 f64 i32)
        (call $f {' '.join(f'(local.get {i})' for i in range(len(params)))})))"""

    def f(*args):
        scale = yield sum(args)
        return args[7] * scale, args[17] * scale, scale
    linker = Linker()
    linker.define_func("env", "f", f, type=f"({', '.join(params)}) -> (i64, f64, i32)")
    args = list(range(1, 9)) + [k * 0.5 for k in range(1, 11)]
    with instantiate(region, wat, linker=linker) as inst:
        out = inst.run("go", *args)
        assert out.value == sum(args)
        box = []
        t = threading.Thread(target=lambda: box.append(inst.resume(3)))
        t.start()
        t.join()
        assert box == [(24, 15.0, 3)]


def test_a_timeout_covers_one_run_not_the_time_spent_yielded(region):
    def step(vmctx, i):
        return (yield i)
    with _inst(region, step) as inst:
        out = inst.run("go", 2, timeout=0.05)
        time.sleep(0.15)                    # yielded for longer than the run's timeout
        out = inst.resume(1, timeout=5)
        assert isinstance(out, Yielded)
        assert inst.resume(1) == 2


def test_a_timeout_on_resume(region):
    def step(vmctx, i):
        yield i
        time.sleep(0.3)                     # the host function outlasts the resume's timeout
        return 1
    with _inst(region, step) as inst:
        inst.run("go", 1)
        with pytest.raises(Terminated, match="timeout"):
            inst.resume(None, timeout=0.05)
        assert inst.state == State.TERMINATED


def test_keyboard_interrupt_after_resume_terminates(region):
    """Ctrl-C in a resumed host function propagates as itself, as it does on the first step,
    and leaves the instance TERMINATED: its generator is dead, there is nothing to resume."""
    def step(vmctx, i):
        yield i
        raise KeyboardInterrupt
    with _inst(region, step) as inst:
        inst.run("go", 1)
        with pytest.raises(KeyboardInterrupt):
            inst.resume(None)
        assert inst.state == State.TERMINATED
        with pytest.raises(StateError):
            inst.resume(5)
        inst.reset()
        assert inst.run("calls") == 0


@pytest.mark.parametrize("how", ["reset", "close", "kill and resume"])
def test_an_abandoned_generator_may_use_the_kill_switch_in_its_finally(how):
    """Giving up a suspended host function runs its ``finally`` blocks: they are host code
    and may touch the instance's kill switch, whose lock must not be held then (it would
    deadlock)."""
    outcomes = []
    switch = []

    def step(vmctx, i):
        try:
            return (yield i)
        finally:
            outcomes.append(switch[0].terminate())
    region = MmapRegion(1)    # not closed if the test fails: closing would deadlock too
    inst = _inst(region, step)
    switch.append(inst.kill_switch())
    done = threading.Event()

    def give_up():
        if how == "kill and resume":
            assert switch[0].terminate() == KillOutcome.PENDING
            with pytest.raises(Terminated):
                inst.resume(1)
        else:
            getattr(inst, how)()
        done.set()
    inst.run("go", 1)
    t = threading.Thread(target=give_up, daemon=True)
    t.start()
    assert done.wait(30), "deadlocked"
    t.join()
    if how == "kill and resume":
        assert outcomes == [KillOutcome.NOT_TERMINABLE]
    else:
        assert outcomes == [KillOutcome.INVALID]
    inst.close()
    region.close()


def test_a_yield_passed_through_a_host_function_from_an_inner_instance(region):
    """A's host function runs B; B's host function yields; A's host function yields B's value
    outward and resumes B with what A is resumed with: one guest's yield seen through another
    (generators all the way down)."""
    def inner_step(vmctx, i):
        return (yield ("inner", i))
    inner = _inst(region, inner_step)

    def outer_step(vmctx, i):
        out = inner.run("go", 2)
        while isinstance(out, Yielded):
            got = yield out.value
            out = inner.resume(got)
        return out
    with inner, _inst(region, outer_step) as outer:
        out = outer.run("go", 1)
        seen = []
        while isinstance(out, Yielded):
            seen.append(out.value)
            assert inner.state == State.YIELDED and outer.state == State.YIELDED
            out = outer.resume(len(seen) * 10)
        assert seen == [("inner", 0), ("inner", 1)]
        assert out == 10 + 20
        assert inner.state == State.READY and outer.state == State.READY


def test_two_instances_of_one_module_with_different_linkers(region):
    def linker_for(k):
        linker = Linker()
        linker.define_func("env", "step", lambda v, i: k, type="(i32) -> i64", access_vmctx=True)
        linker.define_func("env", "last", lambda: 0, type="() -> i64")
        return linker
    module = load_wat(WAT)
    with region.new_instance(module, linker=linker_for(1)) as a, \
            region.new_instance(module, linker=linker_for(100)) as b:
        assert (a.run("go", 3), b.run("go", 3), a.run("go", 1)) == (3, 300, 1)
