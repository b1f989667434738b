"""``poll_oneoff``: waiting on clocks and descriptor readiness at once."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import termios
import time
from typing import Any, Dict, List, Tuple

from ..errno import Errno, WasiError
from ..fdtable import Descriptor
from ..memory import M32, check, put
from ..types import (EVENT, EVENT_FD_READWRITE_HANGUP, SUBCLOCK_ABSTIME, SUBSCRIPTION, U32,
                     Eventtype, Filetype, Rights)
from . import Calls, wasi
from .env import CLOCKS


def _file_bytes(d: Descriptor, tag: int) -> int:
    """What an always-ready descriptor has to read: the bytes after the file position."""
    if d.fd < 0 or tag != Eventtype.FD_READ or d.filetype != Filetype.REGULAR_FILE:
        return 0
    return max(0, os.fstat(d.fd).st_size - os.lseek(d.fd, 0, os.SEEK_CUR))


def _fd_event(fd: int, revents: int, user: int, tag: int) -> Any:
    """The event of one subscriber to a polled fd, or None if its direction is not ready."""
    hangup = revents & (select.POLLHUP | select.POLLERR)
    if revents & select.POLLNVAL:
        return (user, Errno.BADF, tag, 0, 0)
    if tag == Eventtype.FD_READ:
        if not revents & (select.POLLIN | select.POLLHUP | select.POLLERR):
            return None
        try:
            nbytes = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
        except OSError:
            nbytes = 1
        return (user, 0, tag, nbytes, EVENT_FD_READWRITE_HANGUP if hangup else 0)
    if not revents & (select.POLLOUT | select.POLLHUP | select.POLLERR):
        return None
    return (user, 0, tag, 0, EVENT_FD_READWRITE_HANGUP if hangup else 0)


class PollCalls(Calls):
    """``poll_oneoff``."""

    @wasi("(i32, i32, i32, i32) -> i32")
    def poll_oneoff(self, mem: memoryview, subs: int, events: int, count: int,
                    nevents: int) -> int:
        """Waits until a clock fires or a descriptor is ready. Regular files and Python
        streams are always ready; pipes, terminals and sockets are polled (``poll(2)``, so
        any fd number works). A clock fires only if its time has come when the wait ends, so
        an fd ready early does not also report the timeout."""
        count &= M32
        if count == 0:
            return Errno.INVAL
        subs = check(mem, subs, SUBSCRIPTION.size * count)
        events = check(mem, events, EVENT.size * count)
        check(mem, nevents, 4)
        out: List[Tuple[int, int, int, int, int]] = []
        waiting: Dict[int, List[Tuple[int, int]]] = {}    # host fd -> [(userdata, tag)]
        clocks: List[Tuple[float, int]] = []              # (seconds from now, userdata)
        for k in range(count):
            user, tag, ident, deadline, _precision, flags = SUBSCRIPTION.unpack_from(
                mem, subs + SUBSCRIPTION.size * k)
            if tag == Eventtype.CLOCK:
                clock = ident & M32
                if clock not in CLOCKS:
                    out.append((user, Errno.INVAL, tag, 0, 0))
                    continue
                if flags & SUBCLOCK_ABSTIME:
                    deadline -= time.clock_gettime_ns(CLOCKS[clock])
                clocks.append((max(0, deadline) / 1e9, user))
            elif tag in (Eventtype.FD_READ, Eventtype.FD_WRITE):
                try:
                    d = self.fds.get(ident & M32, Rights.POLL_FD_READWRITE)
                except WasiError as e:
                    out.append((user, e.errno, tag, 0, 0))
                    continue
                if d.fd < 0 or d.filetype in (Filetype.REGULAR_FILE, Filetype.DIRECTORY):
                    out.append((user, 0, tag, _file_bytes(d, tag), 0))
                else:
                    waiting.setdefault(d.fd, []).append((user, tag))
            else:
                out.append((user, Errno.INVAL, tag, 0, 0))
        timeout = 0.0 if out else min((w for w, _ in clocks), default=None)
        start = time.monotonic()
        if waiting:
            poller = select.poll()
            for fd, subscribers in waiting.items():
                mask = 0
                for _, tag in subscribers:
                    mask |= select.POLLIN if tag == Eventtype.FD_READ else select.POLLOUT
                poller.register(fd, mask)
            ready = poller.poll(None if timeout is None else max(0, int(timeout * 1000 + 0.999)))
            for fd, revents in ready:
                out.extend(_fd_event(fd, revents, user, tag) for user, tag in waiting[fd])
            elapsed = time.monotonic() - start if ready else timeout or 0.0
        else:
            if timeout:
                time.sleep(timeout)
            elapsed = timeout or 0.0
        out = [e for e in out if e is not None]
        out.extend((u, 0, Eventtype.CLOCK, 0, 0) for w, u in clocks if w <= elapsed)
        for k, event in enumerate(out[:count]):
            EVENT.pack_into(mem, events + EVENT.size * k, *event)
        put(mem, U32, nevents, min(len(out), count))
        return 0
