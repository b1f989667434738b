"""LEB128, the variable-length integers of the wasm binary format: the only copy in pylucet.

Decoding follows the spec's limits: an N-bit integer takes at most ceil(N/7) bytes, and the
unused high bits of the last byte must be zero (unsigned) or a sign extension (signed). Within
those limits redundant encodings are accepted, which is how LLVM's ``80 80 80 80 00`` (a
five-byte zero for ``call_indirect``'s table index) stays valid.
"""

from __future__ import annotations

from typing import Tuple

from ..errors import MalformedModule


def read_u(data: bytes, pos: int, bits: int = 32) -> Tuple[int, int]:
    """Decode an unsigned ``bits``-bit LEB128 at ``pos``; return ``(value, new_pos)``."""
    result = shift = 0
    max_bytes = (bits + 6) // 7
    start = pos
    end = len(data)
    for i in range(max_bytes):
        if pos >= end:
            raise MalformedModule("unexpected end", pos)
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            # in the last byte allowed, bits above the value's width must be zero
            if i == max_bytes - 1 and byte >> (bits - shift):
                raise MalformedModule("integer too large", start)
            return result, pos
        shift += 7
    raise MalformedModule("integer representation too long", start)


def read_s(data: bytes, pos: int, bits: int = 32) -> Tuple[int, int]:
    """Decode a signed ``bits``-bit LEB128 at ``pos``; return ``(value, new_pos)``."""
    result = shift = 0
    max_bytes = (bits + 6) // 7
    start = pos
    end = len(data)
    for i in range(max_bytes):
        if pos >= end:
            raise MalformedModule("unexpected end", pos)
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            if i == max_bytes - 1:
                # the bits of the last byte above the value's width must all equal its sign bit
                used = bits - (shift - 7)          # value bits carried by this byte
                rest = (byte & 0x7F) >> (used - 1)  # sign bit and everything above it
                if rest not in (0, (1 << (8 - used)) - 1):
                    raise MalformedModule("integer too large", start)
            if byte & 0x40:
                result -= 1 << shift
            return result, pos
    raise MalformedModule("integer representation too long", start)


def encode_u(value: int) -> bytes:
    """Minimal unsigned LEB128 of a non-negative integer."""
    if value < 0:
        raise ValueError(f"encode_u of negative value {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_s(value: int) -> bytes:
    """Minimal signed LEB128."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if (value == 0 and not byte & 0x40) or (value == -1 and byte & 0x40):
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)
