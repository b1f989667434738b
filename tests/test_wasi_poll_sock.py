"""WASI poll_oneoff and the sock_* calls against a fake guest memory, with real pipes and
sockets in the descriptor table."""

from __future__ import annotations

import io
import os
import socket
import time

import pytest

from pylucet.wasi import WasiConfig
from pylucet.wasi.fdtable import Descriptor
from pylucet.wasi.errno import Errno
from pylucet.wasi.types import (EVENT, EVENT_FD_READWRITE_HANGUP, SUBSCRIPTION, Clock, Eventtype,
                                Rights)

from .wasi_guest import MEMORY_SIZE, guest_for

SUB, EV = 4096, 8192


@pytest.fixture
def guest(tmp_path):
    (tmp_path / "f.txt").write_bytes(b"12345")
    config = WasiConfig()
    config.preopen_dir(tmp_path, ".")
    config.stdout_file = io.BytesIO()
    g = guest_for(config)
    yield g
    g.ctx.fds.close_all()


def subscribe(guest, *subs):
    """Writes subscriptions (userdata, tag, clock id or fd, timeout, flags); polls; returns
    the errno and the events as (userdata, error, type, nbytes, flags)."""
    for k, (user, tag, ident, timeout, flags) in enumerate(subs):
        SUBSCRIPTION.pack_into(guest.vm.memory, SUB + SUBSCRIPTION.size * k, user, tag, ident,
                               timeout, 0, flags)
    err = guest.poll_oneoff(SUB, EV, len(subs), 8)
    return err, [EVENT.unpack_from(guest.vm.memory, EV + EVENT.size * k)
                 for k in range(guest.u32(8))] if err == Errno.SUCCESS else []


def pipe_fd(guest):
    r, w = os.pipe()
    return guest.ctx.fds.insert(Descriptor.for_host_fd(r)), w


def test_a_relative_clock_sleeps(guest):
    start = time.monotonic()
    err, events = subscribe(guest, (7, Eventtype.CLOCK, Clock.MONOTONIC, 30_000_000, 0))
    assert err == Errno.SUCCESS and events == [(7, 0, Eventtype.CLOCK, 0, 0)]
    assert time.monotonic() - start >= 0.025


def test_an_absolute_clock_in_the_past_fires_at_once(guest):
    err, events = subscribe(guest, (1, Eventtype.CLOCK, Clock.REALTIME, 1, 1))
    assert events == [(1, 0, Eventtype.CLOCK, 0, 0)]


def test_a_ready_pipe_does_not_also_report_the_timeout(guest):
    fd, w = pipe_fd(guest)
    os.write(w, b"abc")
    err, events = subscribe(guest, (1, Eventtype.FD_READ, fd, 0, 0),
                            (2, Eventtype.CLOCK, Clock.MONOTONIC, 10_000_000_000, 0))
    assert err == Errno.SUCCESS and events == [(1, 0, Eventtype.FD_READ, 3, 0)]
    os.close(w)


def test_an_idle_pipe_times_out_and_a_closed_one_hangs_up(guest):
    fd, w = pipe_fd(guest)
    err, events = subscribe(guest, (1, Eventtype.FD_READ, fd, 0, 0),
                            (2, Eventtype.CLOCK, Clock.MONOTONIC, 20_000_000, 0))
    assert events == [(2, 0, Eventtype.CLOCK, 0, 0)]
    os.close(w)
    err, events = subscribe(guest, (1, Eventtype.FD_READ, fd, 0, 0))
    assert events == [(1, 0, Eventtype.FD_READ, 0, EVENT_FD_READWRITE_HANGUP)]


def test_files_and_streams_are_always_ready(guest):
    err, fd = guest.open("f.txt", rights=int(Rights.FD_READ | Rights.POLL_FD_READWRITE))
    assert err == Errno.SUCCESS
    err, events = subscribe(guest, (1, Eventtype.FD_READ, fd, 0, 0),
                            (2, Eventtype.FD_WRITE, 1, 0, 0))
    assert sorted(events) == [(1, 0, Eventtype.FD_READ, 5, 0), (2, 0, Eventtype.FD_WRITE, 0, 0)]


def test_poll_errors(guest):
    assert guest.poll_oneoff(SUB, EV, 0, 8) == Errno.INVAL
    err, events = subscribe(guest, (1, Eventtype.FD_READ, 99, 0, 0))
    assert events == [(1, Errno.BADF, Eventtype.FD_READ, 0, 0)]
    err, events = subscribe(guest, (1, Eventtype.CLOCK, 9, 0, 0))
    assert events == [(1, Errno.INVAL, Eventtype.CLOCK, 0, 0)]
    assert guest.poll_oneoff(MEMORY_SIZE - 40, EV, 1, 8) == Errno.FAULT
    assert guest.poll_oneoff(SUB, MEMORY_SIZE - 16, 1, 8) == Errno.FAULT
    assert guest.poll_oneoff(SUB, EV, 1, MEMORY_SIZE) == Errno.FAULT


def test_sockets_send_receive_shut_down(guest):
    a, b = socket.socketpair()
    fd = guest.ctx.fds.insert(Descriptor.for_host_fd(a.detach()))
    out, n = guest.s("ping")
    iovs, count = guest.iovecs((out, n))
    assert guest.sock_send(fd, iovs, count, 0, 8) == Errno.SUCCESS and guest.u32(8) == 4
    assert b.recv(10) == b"ping"
    b.send(b"pong")
    buf = guest.alloc(16)
    iovs, count = guest.iovecs((buf, 16))
    assert guest.sock_recv(fd, iovs, count, 1, 8, 12) == Errno.SUCCESS     # peek
    assert guest.sock_recv(fd, iovs, count, 0, 8, 12) == Errno.SUCCESS
    assert guest.vm.read(buf, guest.u32(8)) == b"pong" and guest.u16(12) == 0
    assert guest.sock_shutdown(fd, 2) == Errno.SUCCESS                   # SDFLAGS_WR
    assert b.recv(10) == b""
    assert guest.sock_shutdown(fd, 0) == Errno.INVAL
    b.close()


def test_accept(guest):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    fd = guest.ctx.fds.insert(Descriptor.for_host_fd(server.detach()))
    client = socket.create_connection(guest_addr(guest, fd))
    assert guest.sock_accept(fd, 0, 8) == Errno.SUCCESS
    conn = guest.u32(8)
    client.send(b"hi")
    buf = guest.alloc(4)
    iovs, count = guest.iovecs((buf, 4))
    assert guest.fd_read(conn, iovs, count, 12) == Errno.SUCCESS
    assert guest.vm.read(buf, guest.u32(12)) == b"hi"
    client.close()


def guest_addr(guest, fd):
    s = socket.socket(fileno=os.dup(guest.ctx.fds.get(fd).fd))
    try:
        return s.getsockname()
    finally:
        s.close()


def test_non_sockets_are_enotsock(guest):
    err, fd = guest.open("f.txt")
    buf = guest.alloc(4)
    iovs, count = guest.iovecs((buf, 4))
    for fdnum in (fd, 1, 3):
        assert guest.sock_shutdown(fdnum, 3) == Errno.NOTSOCK
        assert guest.sock_recv(fdnum, iovs, count, 0, 8, 12) == Errno.NOTSOCK
        assert guest.sock_send(fdnum, iovs, count, 0, 8) == Errno.NOTSOCK
        assert guest.sock_accept(fdnum, 0, 8) == Errno.NOTSOCK
    assert guest.sock_shutdown(99, 3) == Errno.BADF
