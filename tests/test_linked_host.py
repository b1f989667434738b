"""The host boundary seen through a linked callee: yields and kill switches of host functions
and instances that another instance called into natively (see tests/test_linking.py)."""

from __future__ import annotations

import threading

import pylucet
from pylucet import Terminated
from pylucet.runtime import KillOutcome, State, Yielded

from .test_linking import APP, LIB


def _pair(region, hostinc):
    host = pylucet.Linker()
    host.define_func("env", "hostinc", hostinc, type="(i32) -> i32", access_vmctx=True)
    lib = region.new_instance(pylucet.load(pylucet.compile(LIB)), linker=host)
    linker = pylucet.Linker()
    linker.define_instance("lib", lib)
    app = region.new_instance(pylucet.load(pylucet.compile(APP)), linker=linker)
    return lib, app


def test_a_yield_inside_the_callee_suspends_the_caller():
    seen = []

    def hostinc(vmctx, x):
        seen.append(vmctx.instance)
        got = yield x
        return got + 1
    with pylucet.MmapRegion(2) as region:
        lib, app = _pair(region, hostinc)
        out = app.run("vh", 41)
        assert isinstance(out, Yielded) and out.value == 41
        assert app.state == State.YIELDED
        box = []
        t = threading.Thread(target=lambda: box.append(app.resume(99)))
        t.start()
        t.join(30)
        assert box == [100]
        assert seen == [lib]
        assert app.state == State.READY
        assert lib.run("add", 1, 2) == 3     # the callee is free again
        app.close()
        lib.close()


def test_the_callers_kill_switch_reaches_a_spinning_callee():
    with pylucet.MmapRegion(2) as region:
        lib, app = _pair(region, lambda v, x: x)
        box = {}

        def run():
            try:
                app.run("s")
            except Terminated as e:
                box["error"] = e
        t = threading.Thread(target=run)
        t.start()
        switch = app.kill_switch()
        while app.state != State.RUNNING:
            pass
        outcome = switch.terminate()
        t.join(30)
        assert not t.is_alive()
        assert outcome == KillOutcome.SIGNALLED and "error" in box
        app.reset()
        assert app.run("f", 1) == 11
        assert lib.run("add", 2, 2) == 4
        app.close()
        lib.close()


def test_the_callees_own_kill_switch_while_a_caller_is_inside_it():
    """lib spins inside app's call; lib's own switch is flipped: the code running in lib
    stops (SIGNALLED), ending app's call (app's timeout only bounds the test), and neither
    instance is left with a termination for later."""
    with pylucet.MmapRegion(2) as region:
        lib, app = _pair(region, lambda v, x: x)
        box = {}

        def run():
            try:
                app.run("s", timeout=2)
            except Terminated as e:
                box["error"] = e
        t = threading.Thread(target=run)
        t.start()
        while app.state != State.RUNNING:
            pass
        outcome = lib.kill_switch().terminate()
        t.join(30)
        assert not t.is_alive()
        # SIGNALLED once app's call is inside lib; CANCELLED if it had not got there yet (it
        # stops as it enters lib then): either way the call ends
        assert outcome in (KillOutcome.SIGNALLED, KillOutcome.CANCELLED)
        assert "kill switch" in str(box.get("error")), box
        assert app.state == State.TERMINATED
        app.reset()
        assert app.run("f", 1) == 11 and lib.run("add", 1, 1) == 2
        app.close()
        lib.close()
