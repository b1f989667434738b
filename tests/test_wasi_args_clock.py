"""WASI args, environ, clocks, random, proc and sched, against a fake guest memory."""

from __future__ import annotations

import time

import pytest

from pylucet.errors import Terminate
from pylucet.wasi import WasiConfig, WasiExit
from pylucet.wasi.errno import Errno
from pylucet.wasi.types import Clock

from .wasi_guest import MEMORY_SIZE, guest_for


@pytest.fixture
def guest():
    config = WasiConfig()
    config.argv = ["prog", "één", ""]
    config.env = {"A": "1", "EMPTY": ""}
    g = guest_for(config)
    yield g
    g.ctx.fds.close_all()


def strings(guest, ptrs, count):
    out = []
    for k in range(count):
        at = guest.u32(ptrs + 4 * k)
        end = bytes(guest.vm.memory[at:]).index(b"\0")
        out.append(bytes(guest.vm.memory[at:at + end]).decode())
    return out


@pytest.mark.parametrize("family, want", [("args", ["prog", "één", ""]),
                                          ("environ", ["A=1", "EMPTY="])])
def test_strings_and_their_sizes(guest, family, want):
    assert getattr(guest, family + "_sizes_get")(0, 4) == Errno.SUCCESS
    count, size = guest.u32(0), guest.u32(4)
    assert count == len(want) and size == sum(len(w.encode()) + 1 for w in want)
    ptrs, buf = guest.alloc(4 * count), guest.alloc(size)
    assert getattr(guest, family + "_get")(ptrs, buf) == Errno.SUCCESS
    assert strings(guest, ptrs, count) == want
    assert guest.u32(ptrs) == buf                     # packed one after another from buf
    assert getattr(guest, family + "_get")(ptrs, MEMORY_SIZE - size + 1) == Errno.FAULT
    assert getattr(guest, family + "_get")(MEMORY_SIZE - 4, buf) == Errno.FAULT
    assert getattr(guest, family + "_sizes_get")(MEMORY_SIZE - 3, 4) == Errno.FAULT


def test_argv_defaults_to_a_program_name():
    g = guest_for(WasiConfig())
    assert g.args_sizes_get(0, 4) == Errno.SUCCESS and g.u32(0) == 1
    assert g.environ_sizes_get(0, 4) == Errno.SUCCESS and (g.u32(0), g.u32(4)) == (0, 0)


@pytest.mark.parametrize("clock", list(Clock))
def test_every_clock_has_a_resolution_and_a_time(guest, clock):
    assert guest.clock_res_get(clock, 8) == Errno.SUCCESS
    assert 1 <= guest.u64(8) <= 1_000_000_000
    assert guest.clock_time_get(clock, 1, 16) == Errno.SUCCESS
    first = guest.u64(16)
    sum(range(100_000))                               # the CPU clocks move too
    assert guest.clock_time_get(clock, 1, 16) == Errno.SUCCESS
    assert guest.u64(16) >= first > 0


def test_realtime_is_the_epoch_and_monotonic_is_monotonic(guest):
    assert guest.clock_time_get(Clock.REALTIME, 0, 8) == Errno.SUCCESS
    assert abs(guest.u64(8) - time.time_ns()) < 5_000_000_000
    assert guest.clock_time_get(Clock.MONOTONIC, 0, 8) == Errno.SUCCESS
    assert abs(guest.u64(8) - time.monotonic_ns()) < 5_000_000_000


def test_clock_errors(guest):
    assert guest.clock_res_get(4, 8) == Errno.INVAL
    assert guest.clock_time_get(-1, 0, 8) == Errno.INVAL
    assert guest.clock_res_get(0, MEMORY_SIZE - 7) == Errno.FAULT
    assert guest.clock_time_get(0, 0, -8) == Errno.FAULT


def test_random_fills_exactly_the_buffer(guest):
    guest.vm.memory[100:200] = bytes(100)
    assert guest.random_get(110, 64) == Errno.SUCCESS
    assert bytes(guest.vm.memory[100:110]) == bytes(10)
    assert bytes(guest.vm.memory[174:200]) == bytes(26)
    assert bytes(guest.vm.memory[110:174]) != bytes(64)
    assert guest.random_get(MEMORY_SIZE, 0) == Errno.SUCCESS
    assert guest.random_get(MEMORY_SIZE - 10, 11) == Errno.FAULT
    assert guest.random_get(0, -1) == Errno.FAULT     # a huge unsigned length


def test_proc_exit_terminates_with_the_code(guest):
    with pytest.raises(Terminate) as info:
        guest.calls["proc_exit"](guest.vm, 3)
    assert isinstance(info.value.details, WasiExit) and info.value.details.code == 3
    with pytest.raises(Terminate) as info:
        guest.calls["proc_exit"](guest.vm, -1)
    assert info.value.details.code == 0xFFFF_FFFF


def test_proc_raise_ends_the_guest_not_the_host(guest):
    assert guest.proc_raise(0) == Errno.SUCCESS
    assert guest.proc_raise(99) == Errno.INVAL
    for ignored in (16, 17, 22, 27):                  # chld, cont, urg, winch
        assert guest.proc_raise(ignored) == Errno.SUCCESS
    with pytest.raises(Terminate) as info:
        guest.calls["proc_raise"](guest.vm, 9)         # SIGKILL: the guest's end, not ours
    assert info.value.details.code == 128 + 9


def test_sched_yield(guest):
    assert guest.sched_yield() == Errno.SUCCESS
