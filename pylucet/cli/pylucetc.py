"""``pylucetc``: compile a wasm binary or WAT text file into a native shared object."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from ..compiler.driver import compile_module
from ..errors import Error


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="pylucetc", description=__doc__)
    ap.add_argument("input", type=Path, help="module to compile (.wasm or .wat)")
    ap.add_argument("-o", "--output", type=Path,
                    help="shared object to write (default: INPUT with the suffix .so)")
    ap.add_argument("--stats", action="store_true",
                    help="print compile statistics (functions, instructions/s)")
    args = ap.parse_args(argv)
    output = args.output or args.input.with_suffix(".so")
    try:
        compiled = compile_module(args.input)
        elf = compiled.to_elf()
    except (Error, OSError) as e:
        print(f"pylucetc: {args.input}: {e}", file=sys.stderr)
        return 1
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_bytes(elf)
    tmp.replace(output)
    if args.stats:
        print(f"{args.input}: {compiled.stats}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
