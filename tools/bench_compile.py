"""Compile throughput: wasm instructions per second through decode, validate and code generation,
with each phase's share, and wasmtime's Cranelift on the same module for scale when installed;
then the load time of the artifact (dlopen and module data, trap tables read in place)."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pylucet  # noqa: E402
from pylucet.compiler.driver import compile_module, read_source  # noqa: E402
from pylucet.wasm.decoder import decode_body, decode_module  # noqa: E402
from pylucet.wasm.validator import Validator  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _workloads import big_module  # noqa: E402


def phases(binary: bytes):
    """Seconds spent decoding bodies, validating, and in the whole compile, per instruction."""
    module = decode_module(binary)
    t0 = time.perf_counter()
    bodies = [decode_body(module, b) for b in module.codes]
    t1 = time.perf_counter()
    v = Validator(module)
    v.validate_module()
    nimp = module.num_imported_funcs
    for i, instrs in enumerate(bodies):
        v.validate_function(nimp + i, instrs)
    t2 = time.perf_counter()
    return sum(len(b) for b in bodies), t1 - t0, t2 - t1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--functions", type=int, default=400)
    ap.add_argument("module", nargs="?", help="a .wasm/.wat file instead of the generated module")
    args = ap.parse_args()
    source = Path(args.module) if args.module else big_module(args.functions)
    binary = read_source(source)
    n, t_dec, t_val = phases(binary)
    best = None
    for _ in range(3):
        c = compile_module(binary)
        if best is None or c.stats.seconds < best.stats.seconds:
            best = c
    t_elf = time.perf_counter()
    elf = best.to_elf()
    t_elf = time.perf_counter() - t_elf
    s = best.stats
    print(f"module: {len(binary):,} bytes, {s.functions} functions, {n:,} wasm instructions")
    print(f"pylucetc total : {s.seconds * 1e3:9.1f} ms  {s.instructions_per_second:12,.0f} instr/s")
    print(f"  decode bodies: {t_dec * 1e3:9.1f} ms  {n / t_dec:12,.0f} instr/s")
    print(f"  validate     : {t_val * 1e3:9.1f} ms  {n / t_val:12,.0f} instr/s")
    rest = s.seconds - t_dec - t_val
    print(f"  codegen+rest : {rest * 1e3:9.1f} ms  {n / rest:12,.0f} instr/s")
    print(f"  ELF writing  : {t_elf * 1e3:9.1f} ms  ({len(elf):,} bytes, {s.code_bytes:,} bytes of code)")
    loads = []
    for _ in range(5):
        t = time.perf_counter()
        module = pylucet.load(elf)
        loads.append(time.perf_counter() - t)
        del module
    sites = sum(len(f.traps) for f in best.data.functions)
    print(f"load           : {statistics.median(loads) * 1e3:9.1f} ms  (median of 5; "
          f"{sites:,} trap sites)")
    try:
        import wasmtime
    except ImportError:
        print("wasmtime not installed: no Cranelift comparison (pip install wasmtime)")
        return 0
    engine = wasmtime.Engine()
    t = time.perf_counter()
    wasmtime.Module(engine, binary)
    t = time.perf_counter() - t
    print(f"wasmtime (Cranelift, {engine.__class__.__module__}): {t * 1e3:9.1f} ms  "
          f"{n / t:12,.0f} instr/s   pylucetc/cranelift time ratio {s.seconds / t:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
