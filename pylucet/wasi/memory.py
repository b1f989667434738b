"""Guest memory as WASI calls use it: every pointer and length checked against the heap.

Pointers arrive as signed i32 and are taken as unsigned (``& 0xFFFFFFFF``); a range past the end
of memory is ``EFAULT``, never a read or write of host memory. Records are read and written in
place with ``struct`` on the heap's memoryview (no copies on the hot path).
"""

from __future__ import annotations

import struct
from typing import Callable, List, Tuple

from .errno import Errno, WasiError
from .types import IOVEC

M32 = 0xFFFF_FFFF
M64 = 0xFFFF_FFFF_FFFF_FFFF


def check(mem: memoryview, ptr: int, n: int) -> int:
    """``ptr`` as an unsigned offset, if [ptr, ptr + n) lies in memory."""
    ptr &= M32
    if ptr + n > len(mem):
        raise WasiError(Errno.FAULT)
    return ptr


def put(mem: memoryview, record: struct.Struct, ptr: int, *values: int) -> None:
    record.pack_into(mem, check(mem, ptr, record.size), *values)


def string(mem: memoryview, ptr: int, n: int) -> str:
    """A guest's path or symlink target: UTF-8 (else EILSEQ), and no NUL (which the host's
    calls would otherwise refuse with a ValueError)."""
    n &= M32
    ptr = check(mem, ptr, n)
    raw = bytes(mem[ptr:ptr + n])
    if b"\0" in raw:
        raise WasiError(Errno.ILSEQ)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise WasiError(Errno.ILSEQ) from None


def iovecs(mem: memoryview, iovs: int, count: int) -> List[Tuple[int, int]]:
    """(offset, length) of each buffer of an iovec array, every one checked first."""
    count &= M32
    iovs = check(mem, iovs, IOVEC.size * count)
    out = []
    for k in range(count):
        buf, n = IOVEC.unpack_from(mem, iovs + IOVEC.size * k)
        out.append((check(mem, buf, n), n))
    return out


def gather(mem: memoryview, iovs: int, count: int) -> bytes:
    """The bytes of an iovec array, joined (for a write)."""
    return b"".join(mem[p:p + n] for p, n in iovecs(mem, iovs, count))


def scatter(mem: memoryview, iovs: int, count: int, read: Callable[[int], bytes]) -> int:
    """Fills an iovec array with ``read(n)`` per buffer, stopping at the first short read
    (as ``readv`` does); the bytes read."""
    total = 0
    for p, n in iovecs(mem, iovs, count):
        if not n:
            continue
        data = read(n)
        mem[p:p + len(data)] = data
        total += len(data)
        if len(data) < n:
            break
    return total
