"""The socket calls (``sock_*``) on descriptors that are sockets (a host may hand a guest one);
every other descriptor is ``ENOTSOCK``."""

from __future__ import annotations

import os
import socket

from ..errno import Errno, WasiError
from ..fdtable import Descriptor
from ..memory import check, gather, put, scatter
from ..types import SDFLAGS_RD, SDFLAGS_WR, U16, U32, Fdflags, Filetype, Rights
from . import Calls, wasi


class SockCalls(Calls):
    """The ``sock_*`` functions."""

    def _socket(self, fd: int, rights: Rights) -> socket.socket:
        d = self.fds.get(fd)
        if d.filetype not in (Filetype.SOCKET_STREAM, Filetype.SOCKET_DGRAM) or d.fd < 0:
            raise WasiError(Errno.NOTSOCK)     # before rights: a file has no socket rights
        d.require(rights)
        return socket.socket(fileno=os.dup(d.fd))

    @wasi("(i32, i32, i32) -> i32")
    def sock_accept(self, mem: memoryview, fd: int, flags: int, out: int) -> int:
        check(mem, out, 4)
        s = self._socket(fd, Rights.SOCK_ACCEPT)
        try:
            conn, _ = s.accept()
        finally:
            s.close()
        if flags & Fdflags.NONBLOCK:
            conn.setblocking(False)
        host = conn.detach()
        put(mem, U32, out, self.fds.insert(Descriptor.for_host_fd(host)))
        return 0

    @wasi("(i32, i32, i32, i32, i32, i32) -> i32")
    def sock_recv(self, mem: memoryview, fd: int, iovs: int, count: int, flags: int,
                  n_out: int, flags_out: int) -> int:
        s = self._socket(fd, Rights.FD_READ)
        try:
            peek = socket.MSG_PEEK if flags & 1 else 0
            waitall = socket.MSG_WAITALL if flags & 2 else 0
            total = scatter(mem, iovs, count, lambda n: s.recv(n, peek | waitall))
        finally:
            s.close()
        put(mem, U32, n_out, total)
        put(mem, U16, flags_out, 0)
        return 0

    @wasi("(i32, i32, i32, i32, i32) -> i32")
    def sock_send(self, mem: memoryview, fd: int, iovs: int, count: int, flags: int,
                  n_out: int) -> int:
        s = self._socket(fd, Rights.FD_WRITE)
        try:
            sent = s.send(gather(mem, iovs, count))
        finally:
            s.close()
        put(mem, U32, n_out, sent)
        return 0

    @wasi("(i32, i32) -> i32")
    def sock_shutdown(self, mem: memoryview, fd: int, how: int) -> int:
        if how & ~(SDFLAGS_RD | SDFLAGS_WR) or not how:
            return Errno.INVAL
        s = self._socket(fd, Rights.SOCK_SHUTDOWN)
        try:
            s.shutdown({SDFLAGS_RD: socket.SHUT_RD, SDFLAGS_WR: socket.SHUT_WR}.get(
                how, socket.SHUT_RDWR))
        finally:
            s.close()
        return 0
