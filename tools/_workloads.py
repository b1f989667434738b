"""Synthetic workloads shared by the benchmarks: generated WAT, so no toolchain is needed."""

from __future__ import annotations

import random

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
