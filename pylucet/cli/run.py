"""pylucet: run a function of a WebAssembly module in a fresh sandbox.

  pylucet run MODULE FUNC [ARGS...]

MODULE is a compiled .so, or a .wasm/.wat source (compiled through the compile cache first).
Each argument is read by the type of its parameter: integers in decimal or 0x hex (negative
ones too, and i32/i64 values from -2^(N-1) to 2^N - 1), floats as decimal, inf, nan or hex
floats (0x1p3). The result is printed; a trap prints its code and where it happened.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..wasm.types import ValType
from ._common import CommandError, ExitStatus, Parser, remainder, require_file, tool

PROG = "pylucet"
_INT_BITS = {ValType.I32: 32, ValType.I64: 64}


def parse_arg(text: str, valtype: ValType) -> object:
    """One command-line argument as a value of ``valtype``; ValueError says why not."""
    if valtype in (ValType.F32, ValType.F64):
        try:
            return float(text)
        except ValueError:
            pass
        try:
            return float.fromhex(text)
        except (ValueError, OverflowError):
            raise ValueError(f"{text!r} is not a float") from None
    bits = _INT_BITS.get(valtype)
    if bits is None:
        raise ValueError(f"parameters of type {valtype.text} cannot be given on the command line")
    try:
        value = int(text, 0)
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None
    if not -(1 << (bits - 1)) <= value < (1 << bits):
        raise ValueError(f"{text} does not fit {valtype.text} (from {-(1 << (bits - 1))} "
                         f"to {(1 << bits) - 1})")
    return value - (1 << bits) if value >= 1 << (bits - 1) else value   # the signed view


def format_result(value: object) -> str:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return repr(value)
    return str(value)


def run(args: argparse.Namespace) -> int:
    import pylucet
    from .. import cache
    path: Path = args.module
    require_file(path)
    module = cache.load_module(path)
    values_text = remainder(args.args)
    index = module.export_index(args.func)
    if index is None:
        names = ", ".join(module.export_names) or "none"
        raise CommandError(f"no exported function {args.func!r} (exported functions: {names})",
                           ExitStatus.USAGE)
    ftype = module.data.func_type(index)
    if len(values_text) != len(ftype.params):
        raise CommandError(f"{args.func} takes {len(ftype.params)} arguments ({ftype}), "
                           f"{len(values_text)} given", ExitStatus.USAGE)
    try:
        values = [parse_arg(a, t) for a, t in zip(values_text, ftype.params)]
    except ValueError as e:
        raise CommandError(f"bad argument: {e}", ExitStatus.USAGE) from None
    with pylucet.MmapRegion(1) as region, region.new_instance(module) as instance:
        try:
            result = instance.run(args.func, *values)
        except pylucet.Trap as trap:
            raise CommandError(f"trap: {trap}", ExitStatus.TRAP) from None
    if isinstance(result, tuple):
        print(" ".join(map(format_result, result)))
    elif result is not None:
        print(format_result(result))
    return ExitStatus.OK


def parser() -> argparse.ArgumentParser:
    ap = Parser(PROG, __doc__)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND",
                            parser_class=argparse.ArgumentParser)
    r = sub.add_parser("run", help="run an exported function and print its result",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.error = ap.error  # type: ignore[method-assign]   # one-line usage errors here too
    r.add_argument("module", type=Path, help=".so artifact, or .wasm/.wat source")
    r.add_argument("func", help="exported function name")
    # REMAINDER, so that -1e5, -inf and -0x10 are arguments and not unknown options
    r.add_argument("args", nargs=argparse.REMAINDER,
                   help="arguments: integers (decimal, 0x hex) or floats (1.5, -inf, 0x1p3)")
    return ap


@tool(PROG)
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    return run(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
