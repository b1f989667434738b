"""``pylucet``: run a function of a WebAssembly module in a fresh sandbox.

``pylucet run MODULE FUNC [ARGS...]`` accepts a compiled ``.so`` or a ``.wasm``/``.wat`` source
(compiled in memory first). Arguments are parsed by the function's parameter types; the result is
printed, and a trap is reported with its code and the wasm function and offset where it happened.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from ..errors import Error, Trap
from ..wasm.types import ExternKind, ValType


def _parse_arg(text: str, valtype: ValType) -> object:
    if valtype in (ValType.F32, ValType.F64):
        return float(text)
    return int(text, 0)


def run(args: argparse.Namespace) -> int:
    import pylucet
    path: Path = args.module
    if path.suffix == ".so":
        module = pylucet.load(path)
    else:
        module = pylucet.load(pylucet.compile(path))
    export = module.data.export(args.func)
    if export is None:
        names = ", ".join(e.name for e in module.data.exports if e.kind == ExternKind.FUNC) or "none"
        print(f"pylucet: no exported function {args.func!r} (exported functions: {names})",
              file=sys.stderr)
        return 2
    ftype = module.data.func_type(export.index)
    if len(args.args) != len(ftype.params):
        print(f"pylucet: {args.func} takes {len(ftype.params)} arguments ({ftype}), "
              f"{len(args.args)} given", file=sys.stderr)
        return 2
    try:
        values = [_parse_arg(a, t) for a, t in zip(args.args, ftype.params)]
    except ValueError as e:
        print(f"pylucet: bad argument: {e}", file=sys.stderr)
        return 2
    with pylucet.MmapRegion(1) as region, region.new_instance(module) as instance:
        try:
            result = instance.run(args.func, *values)
        except Trap as trap:
            print(f"trap: {trap}", file=sys.stderr)
            return 3
    if result is not None:
        print(result)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="pylucet", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run an exported function and print its result")
    r.add_argument("module", type=Path, help=".so artifact, or .wasm/.wat source")
    r.add_argument("func", help="exported function name")
    r.add_argument("args", nargs="*", help="arguments (integers, 0x.. hex, or floats)")
    args = ap.parse_args(argv)
    try:
        return run(args)
    except (Error, OSError) as e:
        print(f"pylucet: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
