"""WASI's errno values, and the exact mapping from the host's (Linux) errno to them.

A call fails by raising :class:`WasiError` anywhere in its implementation; the host function
wrapper (``wasi.preview1``) returns its errno to the guest, and an ``OSError`` from the host is
mapped through :data:`HOST_ERRNO`.
"""

from __future__ import annotations

import enum
import errno as _host_errno
from typing import Dict


class Errno(enum.IntEnum):
    SUCCESS = 0
    TOOBIG = 1      # "2big"
    ACCES = 2
    ADDRINUSE = 3
    ADDRNOTAVAIL = 4
    AFNOSUPPORT = 5
    AGAIN = 6
    ALREADY = 7
    BADF = 8
    BADMSG = 9
    BUSY = 10
    CANCELED = 11
    CHILD = 12
    CONNABORTED = 13
    CONNREFUSED = 14
    CONNRESET = 15
    DEADLK = 16
    DESTADDRREQ = 17
    DOM = 18
    DQUOT = 19
    EXIST = 20
    FAULT = 21
    FBIG = 22
    HOSTUNREACH = 23
    IDRM = 24
    ILSEQ = 25
    INPROGRESS = 26
    INTR = 27
    INVAL = 28
    IO = 29
    ISCONN = 30
    ISDIR = 31
    LOOP = 32
    MFILE = 33
    MLINK = 34
    MSGSIZE = 35
    MULTIHOP = 36
    NAMETOOLONG = 37
    NETDOWN = 38
    NETRESET = 39
    NETUNREACH = 40
    NFILE = 41
    NOBUFS = 42
    NODEV = 43
    NOENT = 44
    NOEXEC = 45
    NOLCK = 46
    NOLINK = 47
    NOMEM = 48
    NOMSG = 49
    NOPROTOOPT = 50
    NOSPC = 51
    NOSYS = 52
    NOTCONN = 53
    NOTDIR = 54
    NOTEMPTY = 55
    NOTRECOVERABLE = 56
    NOTSOCK = 57
    NOTSUP = 58
    NOTTY = 59
    NXIO = 60
    OVERFLOW = 61
    OWNERDEAD = 62
    PERM = 63
    PIPE = 64
    PROTO = 65
    PROTONOSUPPORT = 66
    PROTOTYPE = 67
    RANGE = 68
    ROFS = 69
    SPIPE = 70
    SRCH = 71
    STALE = 72
    TIMEDOUT = 73
    TXTBSY = 74
    XDEV = 75
    NOTCAPABLE = 76


def _host_map() -> Dict[int, Errno]:
    out = {}
    for e in Errno:
        name = "E2BIG" if e is Errno.TOOBIG else "E" + e.name
        code = getattr(_host_errno, name, None)
        if code is not None:
            out[code] = e
    out[_host_errno.EOPNOTSUPP] = Errno.NOTSUP        # the same number on Linux
    out[_host_errno.EWOULDBLOCK] = Errno.AGAIN
    return out


HOST_ERRNO = _host_map()
"""Host (Linux) errno -> WASI errno, exactly; anything unmapped is EIO."""


def from_host(code: int) -> Errno:
    return HOST_ERRNO.get(code, Errno.IO)


class WasiError(Exception):
    """A call fails with ``errno``: raised inside the implementation, returned to the guest."""

    def __init__(self, errno: Errno):
        self.errno = errno
        super().__init__(errno.name)
