"""Synthetic workloads shared by the benchmarks: generated WAT (or a wasm binary where WAT would
be megabytes of escapes), so no toolchain is needed."""

from __future__ import annotations

import random
from typing import Any, Callable, List, Union

from pylucet.wasm.leb128 import encode_s, encode_u

OPS_I32 = ["i32.add", "i32.sub", "i32.mul", "i32.and", "i32.or", "i32.xor", "i32.shl",
           "i32.shr_u", "i32.rotl"]


def big_module(functions: int = 400, seed: int = 1) -> str:
    """A module shaped like compiled C: many mid-sized functions with locals, loops, branches,
    memory traffic and calls. About 120 wasm instructions per function."""
    rng = random.Random(seed)
    out = ['(module (memory 1) (global $g (mut i32) (i32.const 0))']
    for f in range(functions):
        body = []
        for _ in range(6):
            op = rng.choice(OPS_I32)
            body.append(f"""
    (local.set $a ({op} (local.get $a) (i32.load offset={rng.randrange(0, 4096, 4)} (local.get $p))))
    (if (i32.lt_u (local.get $a) (i32.const {rng.randrange(1 << 20)}))
      (then (local.set $b (i32.add (local.get $b) (i32.const 1))))
      (else (i32.store offset={rng.randrange(0, 4096, 4)} (local.get $p) (local.get $b))))
    (block $out (loop $top
      (br_if $out (i32.ge_u (local.get $i) (i32.const 8)))
      (local.set $c (i32.xor (local.get $c) (i32.mul (local.get $i) (local.get $a))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $top)))""")
        callee = f"(call $f{f - 1} (local.get $c))" if f else "(local.get $c)"
        out.append(f"""  (func $f{f} (export "f{f}") (param $p i32) (result i32)
    (local $a i32) (local $b i32) (local $c i32) (local $i i32)
    {''.join(body)}
    (global.set $g (i32.add (global.get $g) (local.get $b)))
    (i32.and {callee} (i32.const 0xFFF0)))""")
    out.append(")")
    return "\n".join(out)


FIB = """(module (func $fib (export "fib") (param i32) (result i32)
  (if (result i32) (i32.lt_u (local.get 0) (i32.const 2)) (then (local.get 0))
    (else (i32.add (call $fib (i32.sub (local.get 0) (i32.const 1)))
                   (call $fib (i32.sub (local.get 0) (i32.const 2))))))))"""

NOP = """(module (memory 1)
  (func (export "nop"))
  (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1)))
  (func (export "oob") (result i32) (i32.load (i32.const -1)))
  (func (export "unreachable") (unreachable)))"""


# --- the lifecycle benchmarks (tools/bench.py) ---

KiB, MiB = 1 << 10, 1 << 20
DENSE_SIZES = [0, 4 * KiB, 8 * KiB, 16 * KiB, 32 * KiB, 64 * KiB, 128 * KiB, 256 * KiB,
               512 * KiB, 1 * MiB, 2 * MiB, 4 * MiB]
SPARSE_SIZES = [0, 256 * KiB, 512 * KiB, 1 * MiB, 2 * MiB, 4 * MiB]
TOUCH_SIZES = [0, 64 * KiB, 256 * KiB, 1 * MiB, 2 * MiB, 4 * MiB]
SMOKE_SIZES = [0, 64 * KiB]
HOSTCALLS = 1000


HELLO_STANDIN = """(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "Hello, World!\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16)) (i32.store (i32.const 4) (i32.const 14))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"""
HELLO_OUTPUT = b"Hello, World!\n"

MANY_ARGS = 66
TOUCH = """(module (memory (export "memory") 64)
  (func (export "nop"))
  (func (export "touch") (param $n i32) (local $i i32)
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (i64.store (local.get $i) (i64.const -1))
      (local.set $i (i32.add (local.get $i) (i32.const 8)))
      (br $l)))))"""


TRAPS = {"oob": "trap round trip: heap out of bounds",
         "unreachable": "trap round trip: unreachable"}


def trapping(fn: Callable[..., Any], *args: Any) -> None:
    """Call ``fn``, which must trap (pylucet's Trap or wasmtime's Trap), and swallow the trap."""
    try:
        fn(*args)
    except Exception as e:   # noqa: BLE001 - each library's own trap type
        if "trap" not in type(e).__name__.lower():
            raise
    else:
        raise AssertionError(f"{fn} did not trap")


def many_args_wat() -> str:
    """Lucet's run_many_args: one function of 66 i64/f64 parameters (here alternating), summed
    as f64 so every argument must arrive in its place for the result to come out right."""
    params = " ".join("i64" if i % 2 == 0 else "f64" for i in range(MANY_ARGS))
    body = []
    for i in range(MANY_ARGS):
        body.append(f"(local.get {i})" + (" (f64.convert_i64_s)" if i % 2 == 0 else ""))
        if i:
            body.append("(f64.add)")
    return (f'(module (func (export "many") (param {params}) (result f64) '
            f'{" ".join(body)}))')


def many_args() -> List[Union[int, float]]:
    return [i if i % 2 == 0 else float(i) for i in range(MANY_ARGS)]


def heap_module(size: int, sparse: bool) -> bytes:
    """A wasm binary with an initial memory of ``size`` bytes (rounded up to wasm pages) whose
    data segments fill it densely (every byte i % 256) or sparsely (one 4 KiB page in eight),
    and one export, ``nop``. Binary because a 4 MiB segment is 12 MiB of escaped WAT text."""
    def vec(items: List[bytes]) -> bytes:
        return encode_u(len(items)) + b"".join(items)

    def section(sid: int, content: bytes) -> bytes:
        return bytes([sid]) + encode_u(len(content)) + content

    pattern = bytes(range(256)) * 16   # one 4 KiB page of i % 256
    if sparse:
        segments = [(off, pattern) for off in range(0, size, 8 * 4096)]
    else:
        segments = [(0, (pattern * (size // 4096 + 1))[:size])] if size else []
    pages = -(-size // 65536)
    return b"".join([
        b"\0asm\1\0\0\0",
        section(1, vec([b"\x60\x00\x00"])),
        section(3, vec([encode_u(0)])),
        section(5, vec([b"\x00" + encode_u(pages)])),
        section(7, vec([encode_u(3) + b"nop" + b"\x00" + encode_u(0)])),
        section(10, vec([encode_u(2) + b"\x00\x0b"])),
        section(11, vec([b"\x00\x41" + encode_s(off) + b"\x0b" + encode_u(len(data)) + data
                         for off, data in segments])),
    ])
