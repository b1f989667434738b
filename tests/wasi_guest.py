"""A guest for testing WASI host functions without compiling anything: a fake vmctx over a
bytearray (the ``memory`` / ``read`` / ``write`` / ``read_str`` of :class:`pylucet.Vmctx`), and
calls made as a guest makes them, with strings and records placed in that memory."""

from __future__ import annotations

import struct
from typing import Any, Callable, Dict, Tuple

from pylucet.errors import MemoryAccessError
from pylucet.wasi.preview1 import FUNCTIONS
from pylucet.wasi.errno import Errno
from pylucet.wasi.types import Rights

MEMORY_SIZE = 65536


class FakeVmctx:
    """What a host function sees of guest memory, bounds-checked as the real one is."""

    def __init__(self, size: int = MEMORY_SIZE) -> None:
        self.memory = memoryview(bytearray(size))

    def _check(self, ptr: int, n: int) -> None:
        if not (0 <= ptr and 0 <= n and ptr + n <= len(self.memory)):
            raise MemoryAccessError(f"[{ptr}, +{n}) is outside the heap")

    def read(self, ptr: int, n: int) -> bytes:
        self._check(ptr, n)
        return bytes(self.memory[ptr:ptr + n])

    def write(self, ptr: int, data: bytes) -> None:
        self._check(ptr, len(data))
        self.memory[ptr:ptr + len(data)] = data

    def read_str(self, ptr: int, n: int) -> str:
        return self.read(ptr, n).decode()


class Guest:
    """Calls WASI functions of one WasiCtx as a guest would: ``guest.fd_write(...)`` returns
    the Errno; ``s`` places a string in memory; ``u32``/``u64`` read results back. Addresses
    below ``SCRATCH`` are free for a test's out-parameters."""

    SCRATCH = 1024

    def __init__(self, ctx: Any, size: int = MEMORY_SIZE):
        self.ctx = ctx
        self.vm = FakeVmctx(size)
        self.calls: Dict[str, Callable[..., int]] = {
            name: ctx._host(fn) for name, (_, fn) in FUNCTIONS.items()}
        self.heap = self.SCRATCH

    def alloc(self, n: int) -> int:
        at = self.heap
        self.heap += (n + 15) & ~7
        return at

    def s(self, text: "str | bytes") -> Tuple[int, int]:
        raw = text.encode() if isinstance(text, str) else text
        at = self.alloc(len(raw))
        self.vm.write(at, raw)
        return at, len(raw)

    def iovecs(self, *bufs: Tuple[int, int]) -> Tuple[int, int]:
        """An iovec array over (address, length) pairs: (its address, its count)."""
        at = self.alloc(8 * len(bufs))
        for k, (p, n) in enumerate(bufs):
            struct.pack_into("<II", self.vm.memory, at + 8 * k, p, n)
        return at, len(bufs)

    def __getattr__(self, name: str) -> Callable[..., Errno]:
        fn = self.calls[name]
        return lambda *args: Errno(fn(self.vm, *args))

    def u8(self, at: int) -> int:
        return self.vm.memory[at]

    def u16(self, at: int) -> int:
        return struct.unpack_from("<H", self.vm.memory, at)[0]

    def u32(self, at: int) -> int:
        return struct.unpack_from("<I", self.vm.memory, at)[0]

    def u64(self, at: int) -> int:
        return struct.unpack_from("<Q", self.vm.memory, at)[0]

    def open(self, path: str, oflags: int = 0, rights: int = int(Rights.FD_READ),
             follow: bool = True, fdflags: int = 0, dirfd: int = 3,
             inheriting: "int | None" = None) -> Tuple[Errno, int]:
        """path_open beneath ``dirfd``: (errno, the new fd). Inheriting rights default to
        ``rights``."""
        p, n = self.s(path)
        err = self.path_open(dirfd, int(follow), p, n, oflags, rights,
                             rights if inheriting is None else inheriting, fdflags, 16)
        return err, self.u32(16)


def guest_for(config: Any, size: int = MEMORY_SIZE) -> Guest:
    """A Guest over a fresh WasiCtx built from ``config`` (a WasiConfig)."""
    return Guest(config.build(), size)
