"""pylucetc: compile a WebAssembly module (.wasm binary or .wat text) into a native shared object.

The shared object is a real ELF file: readelf, objdump, gdb and perf can read it, and
pylucet.load() or pylucet-wasi run it. Sizes take K, M and G suffixes (binary: 64K = 65536).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

from ..errors import Error
from ._common import (CommandError, ExitStatus, Parser, add_heap_options, compile_options,
                      progress_for, require_file, seconds_since_process_start, status_of, tool)

PROG = "pylucetc"


def parser() -> argparse.ArgumentParser:
    ap = Parser(PROG, __doc__)
    ap.add_argument("input", type=Path, help="module to compile (.wasm or .wat)")
    ap.add_argument("-o", "--output", type=Path,
                    help="shared object to write (default: INPUT with the suffix .so)")
    add_heap_options(ap)
    ap.add_argument("--stats", action="store_true",
                    help="print where the time went: start-up, each compile phase, writing")
    return ap


@tool(PROG)
def main(argv: Optional[Sequence[str]] = None) -> int:
    startup = seconds_since_process_start()
    args = parser().parse_args(argv)
    output: Path = args.output or args.input.with_suffix(".so")
    require_file(args.input)
    t0 = time.perf_counter()
    from ..compiler.driver import check_heap_options, compile_module
    t_import = time.perf_counter() - t0
    options = compile_options(args)
    try:
        check_heap_options(**{k: v for k, v in options.items() if k != "interrupt_checks"})
    except ValueError as e:   # options the code generator cannot honour
        raise CommandError(str(e), ExitStatus.USAGE) from None
    progress = progress_for(str(args.input))
    try:
        compiled = compile_module(args.input, progress=progress, **options)
    except Error as e:
        raise CommandError(f"{args.input}: {e}", status_of(e)) from None
    finally:
        if progress is not None:
            progress.clear()
    t1 = time.perf_counter()
    elf = compiled.to_elf()
    t2 = time.perf_counter()
    from .._atomic import write_atomically
    try:
        write_atomically(output, elf)
    except OSError as e:
        raise CommandError(f"cannot write {output}: {e.strerror}", ExitStatus.CANT_CREATE) \
            from None
    t3 = time.perf_counter()
    if args.stats:
        lines: List[str] = []
        if startup is not None:
            lines.append(f"start-up: {startup * 1e3:.0f} ms (interpreter and pylucet's "
                         "imports, before main)")
        lines.append(f"compiler import: {t_import * 1e3:.1f} ms")
        lines.append(f"compile: {compiled.stats}")
        lines.append(f"ELF: {len(elf)} bytes built in {(t2 - t1) * 1e3:.1f} ms, written in "
                     f"{(t3 - t2) * 1e3:.1f} ms")
        print("\n".join(f"{args.input}: {line}" for line in lines))
    return ExitStatus.OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
