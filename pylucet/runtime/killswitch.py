"""Stopping a guest from outside: kill switches and timeouts, without any process signal.

Compiled code polls its slot's poll page at every function entry and loop header (unless compiled
with ``interrupt_checks=False``): one load, which costs next to nothing while the page is
readable (``abi.VMCTX_POLL``). A kill switch revokes the page (one ``mprotect``), so the guest's
next poll faults and it leaves for the host (``ExitReason.INTERRUPTED``) at that point; this works
from any thread while the guest runs in parallel (ctypes released the GIL). What makes it safe is
one lock per instance, :attr:`KillState.lock`, held while the switch revokes the page and while
the instance changes state, wipes its slot or hands it back: a switch never touches a slot that
has been wiped or reused.

Outcomes follow Lucet's ``KillSwitch::terminate``:

================  =======================================================================
SIGNALLED         the guest was running guest code; it stops at its next check
PENDING           the guest was in a host call (or yielded): it stops when that returns (or
                  when it is resumed)
CANCELLED         the instance was not running: its next run (or resume) stops at once
NOT_TERMINABLE    already terminated or terminating, or poisoned by a fatal fault
INVALID           the instance was reset or closed since the switch was made
================  =======================================================================
"""

from __future__ import annotations

import enum
import heapq
import threading
import time
import weakref
from typing import TYPE_CHECKING, Callable, List, Optional, Tuple

if TYPE_CHECKING:  # pragma: no cover
    from .instance import Instance


class KillOutcome(enum.Enum):
    SIGNALLED = "signalled"
    PENDING = "pending"
    CANCELLED = "cancelled"
    NOT_TERMINABLE = "not terminable"
    INVALID = "invalid"


class KillState:
    """Per instance generation (from instantiation or ``reset`` to the next of them): whether a
    termination was asked for, and the lock that orders switches against the instance."""

    __slots__ = ("lock", "valid", "requested", "reason")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.valid = True
        self.requested = False
        self.reason = ""


class KillSwitch:
    """A handle that terminates one instance generation from any thread; it may outlive the
    instance (then it reports INVALID)."""

    __slots__ = ("_instance_ref", "_state")

    def __init__(self, instance: "Instance", state: KillState):
        self._instance_ref = weakref.ref(instance)
        self._state = state

    def terminate(self, reason: str = "terminated by its kill switch") -> KillOutcome:
        state = self._state
        with state.lock:
            instance = self._instance_ref()
            if not state.valid or instance is None:
                return KillOutcome.INVALID
            return instance._kill(state, reason)

    def __repr__(self) -> str:
        return f"<KillSwitch {'valid' if self._state.valid else 'invalid'}>"


class Watchdog:
    """One daemon thread that fires callbacks at deadlines (for ``run(timeout=...)``), so that
    a timeout costs a heap push, not a thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: List[Tuple[float, int, Callable[[], None]]] = []
        self._cancelled: set = set()
        self._next_id = 0
        self._thread: Optional[threading.Thread] = None

    def schedule(self, delay: float, callback: Callable[[], None]) -> int:
        with self._cond:
            self._next_id += 1
            token = self._next_id
            heapq.heappush(self._heap, (time.monotonic() + delay, token, callback))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="pylucet-watchdog",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()
        return token

    def cancel(self, token: int) -> None:
        with self._cond:
            self._cancelled.add(token)
            # Cancelled entries leave the heap when they reach its top; behind a long deadline
            # that is not cancelled they would pile up, so once they are most of it, sweep
            # them out (this also forgets tokens of deadlines that had already fired).
            if len(self._cancelled) > 64 and 2 * len(self._cancelled) > len(self._heap):
                self._heap = [e for e in self._heap if e[1] not in self._cancelled]
                heapq.heapify(self._heap)
                self._cancelled.clear()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._heap and self._heap[0][1] in self._cancelled:
                        self._cancelled.discard(heapq.heappop(self._heap)[1])
                    if self._heap:
                        wait = self._heap[0][0] - time.monotonic()
                        if wait <= 0:
                            _, token, callback = heapq.heappop(self._heap)
                            break
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
            try:
                callback()
            except Exception:  # pragma: no cover - a callback is ours and does not raise
                pass


WATCHDOG = Watchdog()
