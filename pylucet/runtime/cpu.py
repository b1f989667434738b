"""Which instruction set extensions this CPU (and OS) offers, for refusing incompatible modules.

A module compiled to use, say, ``lzcnt`` would silently compute garbage on a CPU without it
(the encoding means ``bsr`` there), so the loader compares a module's required features with
:func:`cpu_features` before running anything. Names follow the compiler's feature names.
"""

from __future__ import annotations

import functools
from typing import FrozenSet

from .stubs import STUBS

# (leaf, subleaf, register index in (eax, ebx, ecx, edx), bit, name)
_BITS = (
    (1, 0, 3, 25, "sse"),
    (1, 0, 3, 26, "sse2"),
    (1, 0, 2, 0, "sse3"),
    (1, 0, 2, 9, "ssse3"),
    (1, 0, 2, 12, "fma"),
    (1, 0, 2, 19, "sse4.1"),
    (1, 0, 2, 20, "sse4.2"),
    (1, 0, 2, 23, "popcnt"),
    (1, 0, 2, 28, "avx"),
    (1, 0, 2, 29, "f16c"),
    (7, 0, 1, 3, "bmi1"),
    (7, 0, 1, 5, "avx2"),
    (7, 0, 1, 8, "bmi2"),
    (7, 0, 1, 16, "avx512f"),
    (0x80000001, 0, 2, 5, "lzcnt"),
)
_NEEDS_OS_AVX = frozenset({"avx", "avx2", "fma", "f16c", "avx512f"})
"""Features that use the ymm/zmm registers: usable only if the OS saves them on a switch."""

_OSXSAVE = 1 << 27        # cpuid leaf 1, ecx: xgetbv is available
_XCR0_SSE_AVX = 0b110     # XCR0: the OS saves xmm and the upper halves of ymm
_XCR0_AVX512 = 0b1110_0000  # XCR0: opmask and zmm state


@functools.lru_cache(maxsize=None)
def cpu_features() -> FrozenSet[str]:
    """The features usable here, e.g. ``{"sse4.1", "popcnt", "lzcnt", "bmi1", "avx2", ...}``."""
    max_leaf = STUBS.cpuid(0)[0]
    max_ext = STUBS.cpuid(0x80000000)[0]
    found = set()
    for leaf, sub, reg, bit, name in _BITS:
        if leaf > (max_ext if leaf >= 0x80000000 else max_leaf):
            continue
        if STUBS.cpuid(leaf, sub)[reg] >> bit & 1:
            found.add(name)
    xcr0 = STUBS.xgetbv(0) if STUBS.cpuid(1)[2] & _OSXSAVE else 0
    if xcr0 & _XCR0_SSE_AVX != _XCR0_SSE_AVX:
        found -= _NEEDS_OS_AVX
    elif xcr0 & _XCR0_AVX512 != _XCR0_AVX512:
        found.discard("avx512f")
    return frozenset(found)
