"""Kill switches and timeouts: Lucet's race cases, one test per domain transition.

A spinning guest reports each lap through a host function, so a test knows the guest is really
in guest code (between two laps) before it flips the switch, without sleeping on a guess.
"""

from __future__ import annotations

import threading
import time

import pytest

from pylucet import FatalFault, Terminated, Trap
from pylucet.runtime import KillOutcome, Linker, MmapRegion, State, Yielded, killswitch
from pylucet.runtime.killswitch import Watchdog
from pylucet.runtime.testing import MockFunction, mock_module

from .conftest import load_wat

WAT = """(module
  (import "env" "lap" (func $lap (param i64)))
  (import "env" "host" (func $host (result i32)))
  (func (export "spin_reporting") (local $i i64)
    (loop $l
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (if (i64.eqz (i64.and (local.get $i) (i64.const 0xffff))) (then (call $lap (local.get $i))))
      (br $l)))
  (func (export "spin") (loop $l (br $l)))
  (func (export "host") (result i32) (call $host))
  (func (export "boom") (unreachable))
  (func (export "one") (result i32) (i32.const 1)))"""


@pytest.fixture(scope="module")
def modules():
    return {"checked": load_wat(WAT), "unchecked": load_wat(WAT, interrupt_checks=False)}


@pytest.fixture(scope="module")
def region():
    with MmapRegion(4) as r:
        yield r


class Host:
    """The host functions: ``lap`` sets an event once the guest has lapped; ``host`` runs
    whatever the test put in ``during``."""

    def __init__(self):
        self.lapped = threading.Event()
        self.laps = 0
        self.during = lambda: 0
        self.linker = Linker()
        self.linker.define_func("env", "lap", self.lap, type="(i64) -> ()")
        self.linker.define_func("env", "host", lambda: self.during(), type="() -> i32")

    def lap(self, i):
        self.laps += 1
        self.lapped.set()


def _new(region, modules, kind="checked"):
    host = Host()
    return region.new_instance(modules[kind], linker=host.linker), host


def _run_in_thread(inst, *args, **kw):
    box = {}

    def target():
        try:
            box["result"] = inst.run(*args, **kw)
        except BaseException as e:    # handed to the test
            box["error"] = e
    t = threading.Thread(target=target)
    t.start()
    return t, box


def test_before_start_cancels_and_the_next_run_terminates(region, modules):
    inst, host = _new(region, modules)
    with inst:
        switch = inst.kill_switch()
        assert switch.terminate() == KillOutcome.CANCELLED
        with pytest.raises(Terminated, match="kill switch"):
            inst.run("one")
        assert inst.state == State.TERMINATED
        assert switch.terminate() == KillOutcome.NOT_TERMINABLE
        inst.reset()
        assert inst.run("one") == 1


def test_while_running_guest_code_signals(region, modules):
    inst, host = _new(region, modules)
    with inst:
        t, box = _run_in_thread(inst, "spin_reporting")
        assert host.lapped.wait(30)
        assert inst.kill_switch().terminate("stop now") == KillOutcome.SIGNALLED
        t.join(30)
        assert not t.is_alive()
        assert isinstance(box.get("error"), Terminated)
        assert "stop now" in str(box["error"])
        assert inst.state == State.TERMINATED
        inst.reset()
        assert inst.run("one") == 1


def test_in_a_hostcall_is_pending_until_it_returns(region, modules):
    inst, host = _new(region, modules)
    outcomes = []
    after = []

    def during():
        outcomes.append(inst.kill_switch().terminate())
        after.append(inst.state)         # the host function carries on to its end
        return 5
    host.during = during
    with inst:
        with pytest.raises(Terminated):
            inst.run("host")
        assert outcomes == [KillOutcome.PENDING]
        assert after == [State.RUNNING]
        assert inst.state == State.TERMINATED


def test_in_a_hostcall_from_another_thread(region, modules):
    inst, host = _new(region, modules)
    entered, release = threading.Event(), threading.Event()

    def during():
        entered.set()
        release.wait(30)
        return 0
    host.during = during
    with inst:
        t, box = _run_in_thread(inst, "host")
        assert entered.wait(30)
        assert inst.kill_switch().terminate() == KillOutcome.PENDING
        release.set()
        t.join(30)
        assert isinstance(box.get("error"), Terminated)


def test_while_yielded_is_pending_and_resume_terminates(region, modules):
    host = Host()

    def during():
        yield "paused"
        return 3
    linker = Linker()
    linker.define_func("env", "lap", host.lap, type="(i64) -> ()")
    linker.define_func("env", "host", during, type="() -> i32")
    with region.new_instance(modules["checked"], linker=linker) as inst:
        assert isinstance(inst.run("host"), Yielded)
        assert inst.kill_switch().terminate() == KillOutcome.PENDING
        with pytest.raises(Terminated):
            inst.resume()
        assert inst.state == State.TERMINATED


def test_after_a_trap_the_run_is_over(region, modules):
    """A trap ended the call: the instance is READY, so a switch cancels the next run."""
    inst, host = _new(region, modules)
    with inst:
        switch = inst.kill_switch()
        with pytest.raises(Trap):
            inst.run("boom")
        assert inst.state == State.READY
        assert switch.terminate() == KillOutcome.CANCELLED
        with pytest.raises(Terminated):
            inst.run("one")


def test_a_switch_during_a_fault_does_not_leak_into_the_next_run(region, modules):
    """Switch flipped in a host call, and the guest traps right after it returns: the
    termination wins (it was asked for while the call ran)."""
    wat = """(module (import "env" "host" (func $host (result i32)))
      (func (export "go") (result i32) (i32.div_u (i32.const 1) (call $host)))
      (func (export "one") (result i32) (i32.const 1)))"""
    module = load_wat(wat)
    linker = Linker()
    holder = []
    linker.define_func("env", "host", lambda: (holder[0].kill_switch().terminate(), 0)[1],
                       type="() -> i32")
    with region.new_instance(module, linker=linker) as inst:
        holder.append(inst)
        with pytest.raises(Terminated):
            inst.run("go")
        inst.reset()
        assert inst.run("one") == 1


def test_twice(region, modules):
    inst, host = _new(region, modules)
    with inst:
        t, box = _run_in_thread(inst, "spin_reporting")
        assert host.lapped.wait(30)
        switch = inst.kill_switch()
        assert switch.terminate() == KillOutcome.SIGNALLED
        assert switch.terminate() == KillOutcome.NOT_TERMINABLE
        assert inst.kill_switch().terminate() == KillOutcome.NOT_TERMINABLE
        t.join(30)
        assert isinstance(box.get("error"), Terminated)
        assert switch.terminate() == KillOutcome.NOT_TERMINABLE


def test_after_reset_is_invalid(region, modules):
    inst, host = _new(region, modules)
    with inst:
        switch = inst.kill_switch()
        inst.reset()
        assert switch.terminate() == KillOutcome.INVALID
        assert inst.run("one") == 1         # untouched
        assert inst.kill_switch().terminate() == KillOutcome.CANCELLED


def test_after_close_is_invalid(region, modules):
    inst, host = _new(region, modules)
    switch = inst.kill_switch()
    inst.close()
    assert switch.terminate() == KillOutcome.INVALID
    with pytest.raises(ValueError):
        inst.kill_switch()


def test_a_switch_outliving_its_instance_leaves_the_next_tenant_alone(modules):
    with MmapRegion(1) as r:
        inst, host = _new(r, modules)
        switch = inst.kill_switch()
        slot = inst.slot_index
        inst.close()
        del inst
        tenant, host2 = _new(r, modules)
        with tenant:
            assert tenant.slot_index == slot
            assert switch.terminate() == KillOutcome.INVALID
            assert tenant.run("one") == 1
            assert tenant.state == State.READY


def test_timeout_stops_a_call_free_loop(region, modules):
    inst, host = _new(region, modules)
    with inst:
        start = time.monotonic()
        with pytest.raises(Terminated, match="timeout"):
            inst.run("spin", timeout=0.2)
        elapsed = time.monotonic() - start
        assert elapsed < 5     # generous: only shows it stopped, the figure lives in tools/
        inst.reset()
        assert inst.run("one", timeout=5) == 1
        assert inst.run("one") == 1    # the cancelled timeout does not fire later


def test_a_late_timeout_never_ends_the_next_call(region, modules, monkeypatch):
    """The watchdog fires after the call has returned but before its deadline is cancelled
    (forced here by a slow cancel): the call is over, so the next one must not be ended."""
    cancel = killswitch.WATCHDOG.cancel
    fired = threading.Event()
    monkeypatch.setattr(killswitch.WATCHDOG, "cancel",
                        lambda token: (fired.wait(0.5), cancel(token)))
    inst, host = _new(region, modules)
    with inst:
        switch_terminate = inst._kill

        def watched_kill(*a):
            try:
                return switch_terminate(*a)
            finally:
                fired.set()
        monkeypatch.setattr(inst, "_kill", watched_kill)
        assert inst.run("one", timeout=0.01) == 1
        monkeypatch.undo()
        assert inst.run("one") == 1
        assert inst.state == State.READY


def test_timeout_validation(region, modules):
    inst, host = _new(region, modules)
    with inst:
        for bad in (-1, "1", True):
            with pytest.raises(ValueError):
                inst.run("one", timeout=bad)
        assert inst.run("one") == 1


def test_without_interrupt_checks_only_a_hostcall_stops_the_guest(region, modules):
    """Code compiled with ``interrupt_checks=False`` never reads the interrupt word: a kill in
    a host call still works (PENDING), and one in guest code (SIGNALLED) takes effect only
    when the guest next calls out, after at least one more lap."""
    inst, host = _new(region, modules, "unchecked")
    outcomes = []
    host.during = lambda: (outcomes.append(inst.kill_switch().terminate()), 0)[1]
    with inst:
        with pytest.raises(Terminated):
            inst.run("host")
        assert outcomes == [KillOutcome.PENDING]
        inst.reset()
        t, box = _run_in_thread(inst, "spin_reporting")
        assert host.lapped.wait(30)
        laps = host.laps
        assert inst.kill_switch().terminate() == KillOutcome.SIGNALLED
        t.join(30)
        assert isinstance(box.get("error"), Terminated)
        assert host.laps > laps


def test_after_a_fatal_fault_not_terminable_until_reset():
    """A fault no trap table explains poisons the instance: a switch cannot terminate it
    (NOT_TERMINABLE); after reset the old switch is INVALID and a new one works."""
    module = mock_module([MockFunction("unexplained", "ud2"), MockFunction("nop", "ret")])
    with MmapRegion(1) as r, r.new_instance(module) as inst:
        switch = inst.kill_switch()
        with pytest.raises(FatalFault):
            inst.run("unexplained")
        assert switch.terminate() == KillOutcome.NOT_TERMINABLE
        inst.reset()
        assert switch.terminate() == KillOutcome.INVALID
        assert inst.run("nop") is None
        assert inst.kill_switch().terminate() == KillOutcome.CANCELLED


def test_a_timeout_during_a_slow_hostcall_takes_effect_when_it_returns(region, modules):
    inst, host = _new(region, modules)
    returned = []

    def during():
        time.sleep(0.3)
        returned.append(True)
        return 0
    host.during = during
    with inst:
        with pytest.raises(Terminated, match="timeout"):
            inst.run("host", timeout=0.05)
        assert returned == [True]           # the host function was not cut short


def test_terminating_another_instance_from_a_host_function(region, modules):
    """A host function of B kills A, spinning on another thread."""
    a, a_host = _new(region, modules)
    b_linker = Linker()
    switch = a.kill_switch()
    b_linker.define_func("env", "lap", lambda i: None, type="(i64) -> ()")
    b_linker.define_func("env", "host", lambda: int(switch.terminate() == KillOutcome.SIGNALLED),
                         type="() -> i32")
    with a, region.new_instance(modules["checked"], linker=b_linker) as b:
        t, box = _run_in_thread(a, "spin_reporting")
        assert a_host.lapped.wait(30)
        assert b.run("host") == 1
        t.join(30)
        assert isinstance(box.get("error"), Terminated)
        assert b.state == State.READY


def test_cancelled_deadlines_do_not_pile_up_behind_a_long_one():
    """One long call's deadline at the top of the watchdog's heap must not keep every later,
    cancelled deadline (and its callback) until it is due: fast timed calls on other threads
    would grow the heap for as long as the long timeout."""
    dog = Watchdog()
    fired = []
    long_one = dog.schedule(3000, lambda: fired.append("long"))
    for _ in range(10000):
        dog.cancel(dog.schedule(3600, lambda: fired.append("short")))
    assert len(dog._heap) + len(dog._cancelled) < 1000
    dog.cancel(long_one)
    assert fired == []


def test_timeout_stops_a_loop_free_guest_at_a_function_entry(region):
    """No loops at all, only calls: 2^40 of them in a binary recursion. The check at every
    function entry is what stops it."""
    module = load_wat("""(module
      (func $tree (export "tree") (param i32)
        (if (local.get 0) (then
          (call $tree (i32.sub (local.get 0) (i32.const 1)))
          (call $tree (i32.sub (local.get 0) (i32.const 1)))))))""")
    with region.new_instance(module) as inst:
        with pytest.raises(Terminated, match="timeout"):
            inst.run("tree", 40, timeout=0.2)
        inst.reset()
        assert inst.run("tree", 3) is None


def test_a_signal_the_guest_never_saw_does_not_reach_the_next_run(region):
    """Unchecked code signalled in guest code that then returns without calling out: the call
    returns its result (nothing could stop it), and the stale request dies with that call."""
    module = load_wat("""(module (memory 1)
      (func (export "wait_flag") (result i32)
        (i32.store (i32.const 4) (i32.const 1))
        (loop $l (br_if $l (i32.eqz (i32.load (i32.const 0)))))
        (i32.const 7))
      (func (export "one") (result i32) (i32.const 1)))""", interrupt_checks=False)
    with region.new_instance(module) as inst:
        view = inst.heap
        t, box = _run_in_thread(inst, "wait_flag")
        while view[4] == 0:
            pass                                      # until the guest is in its loop
        assert inst.kill_switch().terminate() == KillOutcome.SIGNALLED
        view[0] = 1
        t.join(30)
        assert box == {"result": 7}
        assert inst.run("one") == 1
        assert inst.kill_switch().terminate() == KillOutcome.CANCELLED
        del view
