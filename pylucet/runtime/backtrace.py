"""A trap's wasm backtrace, found by scanning the guest stack for return addresses.

Compiled code keeps no frame pointers, so the frames are recovered conservatively: every word of
the stack copied at the fault that points just past a call instruction inside a guest function
is a return address of that function. A stale return address left in a spill slot may show up
as an extra frame; nothing real is missed.
"""

from __future__ import annotations

import ctypes
import struct
from typing import Any, Callable, List, Sequence

MAX_FRAMES = 256


def unwinder(innermost: str, rsp: int, stack_base: int, stack_top: int,
             modules: Sequence[Any]) -> Callable[[], List[str]]:
    """What Trap.backtrace calls: the guest stack from the faulting rsp up is copied now (the
    next call reuses it), and scanned for return addresses only if someone asks."""
    if not stack_base <= rsp < stack_top:
        return lambda: [innermost]
    stack = ctypes.string_at(rsp, (stack_top - rsp) & ~7)

    def unwind() -> List[str]:
        frames = [innermost]
        for (value,) in struct.iter_unpack("<Q", stack):
            for module in modules:
                f = module.function_at(value - 1)
                if f is not None and _after_call(value):
                    frames.append(f.name)
                    break
            if len(frames) >= MAX_FRAMES:
                break
        return frames
    return unwind


def _after_call(address: int) -> bool:
    """Whether the code just before ``address`` is a call: ``call rel32`` (E8) or ``call r/m``
    (FF /2, 2 to 7 bytes), as the code generator and the trampolines emit them."""
    before = ctypes.string_at(address - 7, 7)
    if before[2] == 0xE8:
        return True
    for length in (2, 3, 4, 6, 7):
        at = 7 - length
        if before[at] == 0xFF and (before[at + 1] >> 3) & 7 == 2:
            return True
        if at and before[at - 1] in (0x41, 0x42, 0x43) and before[at] == 0xFF \
                and (before[at + 1] >> 3) & 7 == 2:
            return True
    return False
