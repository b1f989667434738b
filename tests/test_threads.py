"""Threads: many lifecycles at once in one region, faults that stay on their own thread, and
guests that really run in parallel (ctypes releases the GIL while guest code runs)."""

from __future__ import annotations

import threading

import pytest

from pylucet import StateError, Terminated, Trap, TrapCode
from pylucet.runtime import KillOutcome, Linker, MmapRegion, State, Yielded

from .conftest import load_wat

WAT = """(module
  (import "env" "mix" (func $mix (param i32 i64) (result i64)))
  (import "env" "tick" (func $tick (param i32)))
  (memory 1)
  (func (export "work") (param $k i32) (param $x i64) (result i64)
    (i64.store (i32.const 8) (local.get $x))
    (i64.add (call $mix (local.get $k) (i64.load (i32.const 8))) (i64.const 1)))
  (func (export "div") (param i32 i32) (result i32) (i32.div_s (local.get 0) (local.get 1)))
  (func (export "oob") (param i32) (result i32) (i32.load (local.get 0)))
  (func (export "spin") (param $who i32) (local $i i32)
    (loop $l
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (if (i32.eqz (i32.and (local.get $i) (i32.const 0xfff)))
        (then (call $tick (local.get $who))))
      (br $l)))
  (func $rec (export "rec") (call $rec))
  (func (export "count")
    (loop $l
      (i64.store (i32.const 0) (i64.add (i64.load (i32.const 0)) (i64.const 1)))
      (br $l))))"""


def _linker(tick=lambda who: None):
    linker = Linker()
    linker.define_func("env", "mix", lambda k, x: x * 3 + k, type="(i32, i64) -> i64")
    linker.define_func("env", "tick", tick, type="(i32) -> ()")
    return linker


@pytest.fixture(scope="module")
def module():
    return load_wat(WAT)


def _threads(n, target):
    errors = []

    def wrapped(k):
        try:
            target(k)
        except BaseException as e:  # reported below, with the thread that raised it
            errors.append((k, e))
    threads = [threading.Thread(target=wrapped, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors


def test_eight_threads_two_hundred_lifecycles_each(module):
    linker = _linker()
    results = {}
    with MmapRegion(8) as region:
        def lifecycles(k):
            got = []
            for n in range(200):
                with region.new_instance(module, linker=linker) as inst:
                    x = k * 1_000_000 + n
                    got.append(inst.run("work", k, x))
                    with pytest.raises(Trap) as info:
                        inst.run("div", n, 0)
                    assert info.value.code == TrapCode.IntegerDivByZero
                    assert inst.run("div", x, 2) == x // 2
                    assert inst.heap[8:16].tobytes() == x.to_bytes(8, "little")
            results[k] = got
        _threads(8, lifecycles)
        assert len(region._free) == 8     # every slot back
    for k in range(8):
        assert results[k] == [(k * 1_000_000 + n) * 3 + k + 1 for n in range(200)]


class _Stop(Exception):
    pass


def test_a_fault_on_one_thread_leaves_the_others_alone(module):
    """One guest spins on a thread while another traps 400 times on this one; the spinner
    keeps going and ends only when told to."""
    stop, spinning = threading.Event(), threading.Event()
    ticks = []

    def tick(who):
        ticks.append(who)
        spinning.set()
        if stop.is_set():
            raise _Stop()
    with MmapRegion(2) as region:
        spinner = region.new_instance(module, linker=_linker(tick))
        worker = region.new_instance(module, linker=_linker())
        outcome = {}

        def spin():
            try:
                spinner.run("spin", 7)
            except Exception as e:   # the _Stop, as Terminated
                outcome["spin"] = e
        t = threading.Thread(target=spin)
        t.start()
        assert spinning.wait(30)
        for n in range(200):
            with pytest.raises(Trap) as info:
                worker.run("oob", 70000 + n)
            assert info.value.code == TrapCode.HeapOutOfBounds
            with pytest.raises(Trap) as info:
                worker.run("div", 1, 0)
            assert info.value.code == TrapCode.IntegerDivByZero
        assert worker.run("work", 1, 2) == 8
        assert spinner.state == State.RUNNING and t.is_alive()
        stop.set()
        t.join(60)
        assert not t.is_alive()
        assert isinstance(outcome["spin"].__cause__, _Stop)
        assert set(ticks) == {7}
        assert worker.state == State.READY
        spinner.close()
        worker.close()


def test_two_guests_run_in_parallel(module):
    """Guest A counts in its memory in a loop that never calls out; guest B spins calling a
    host function that reads A's counter, until it has seen the counter move on while A is
    still RUNNING. If guest code held the GIL, B could not run while A spins at all (A's own
    timeout would end the test, failing it); so both making progress shows them running at
    once. No timing is measured (the machine may be shared: how fast A moves is not asked)."""
    goal = 40
    seen = []
    with MmapRegion(2) as region:
        a = region.new_instance(module, linker=_linker())
        switch = a.kill_switch()
        view = [a.heap]     # dropped before closing, so the slot is not held back

        def count():
            return int.from_bytes(view[0][0:8], "little")

        def tick(who):
            assert a.state == State.RUNNING
            seen.append(count())
            if len(seen) >= goal and seen[-1] > seen[0]:
                switch.terminate("enough")
                raise _Stop()
        b = region.new_instance(module, linker=_linker(tick))
        outcome = [None, None]

        def run(k):
            try:
                if k == 0:
                    a.run("count", timeout=120)   # ends the test if B can never run
                else:
                    while count() == 0:
                        pass                       # until A is counting
                    b.run("spin", 1)
            except Exception as e:
                outcome[k] = e
        _threads(2, run)
        assert "enough" in str(outcome[0])
        assert isinstance(outcome[1].__cause__, _Stop)
        assert len(seen) >= goal and seen[-1] > seen[0] > 0
        view.clear()
        a.close()
        b.close()


def test_closing_the_region_while_a_guest_runs_on_another_thread_is_refused(module):
    spinning = threading.Event()

    def tick(who):
        spinning.set()
    region = MmapRegion(1)
    inst = region.new_instance(module, linker=_linker(tick))
    switch = inst.kill_switch()
    box = {}

    def spin():
        try:
            inst.run("spin", 0)
        except Exception as e:     # the kill below
            box["error"] = e
    t = threading.Thread(target=spin)
    t.start()
    assert spinning.wait(30)
    with pytest.raises(StateError, match="running"):
        region.close()
    assert not region.closed and inst.state == State.RUNNING
    switch.terminate()
    t.join(30)
    assert "kill switch" in str(box["error"])
    region.close()
    assert region.closed and inst.state == State.CLOSED


def test_stack_overflows_on_many_threads_at_once(module):
    """Each thread needs its own signal stack: the handler runs on it when the guest stack is
    the thing that overflowed."""
    with MmapRegion(6) as region:
        def overflow(k):
            with region.new_instance(module, linker=_linker()) as inst:
                for _ in range(30):
                    with pytest.raises(Trap) as info:
                        inst.run("rec")
                    assert info.value.code == TrapCode.StackOverflow
                    assert inst.run("work", k, 1) == 3 + k + 1
        _threads(6, overflow)


def test_racing_resumes_and_kills(module):
    """Eight threads race to resume the same yielded guest: one wins each time, the others get
    StateError. Then eight threads race to kill a running guest: exactly one SIGNALLED."""
    spinning = threading.Event()

    def tick(who):
        spinning.set()

    def mix(k, x):
        yield "paused"
        return x
    linker = Linker()
    linker.define_func("env", "mix", mix, type="(i32, i64) -> i64")
    linker.define_func("env", "tick", tick, type="(i32) -> ()")
    with MmapRegion(1) as region, region.new_instance(module, linker=linker) as inst:
        for n in range(20):
            assert isinstance(inst.run("work", 0, n), Yielded)
            results = []
            barrier = threading.Barrier(8)

            def resume(k):
                barrier.wait()
                try:
                    results.append(inst.resume(None))
                except StateError:
                    results.append("refused")
            _threads(8, resume)
            assert sorted(map(str, results)) == sorted([str(n + 1)] + ["refused"] * 7)
        spinning.clear()
        box = {}

        def spin():
            try:
                inst.run("spin", 0)
            except Terminated as e:
                box["error"] = e
        t = threading.Thread(target=spin)
        t.start()
        assert spinning.wait(30)
        outcomes = []
        barrier = threading.Barrier(8)
        switch = inst.kill_switch()

        def kill(k):
            barrier.wait()
            outcomes.append(switch.terminate())
        _threads(8, kill)
        t.join(30)
        assert sorted(o.value for o in outcomes) == sorted(
            [KillOutcome.SIGNALLED.value] + [KillOutcome.NOT_TERMINABLE.value] * 7)
        assert "error" in box
