"""A fingerprint of the code generator's output: one hash over the machine code it emits for the
spec suite's modules, the benchmark kernels and the generated big module.

Refactorings of the code generator that must not change what it emits (``compiler/codegen/``)
are checked by comparing this hash before and after. Each module's ``.text`` is hashed with its
name; a module the compiler refuses contributes the error's class and message, so a change in
what is supported shows up too. ``--check HASH`` exits non-zero on a mismatch."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import pylucet  # noqa: E402
from pylucet.compiler.driver import compile_module  # noqa: E402
from pylucet.wasm import wast  # noqa: E402
from _workloads import big_module  # noqa: E402
from bench_code import KERNELS  # noqa: E402


def _modules(suite: Path):
    """(name, wasm source) of every module to compile, in a fixed order."""
    for path in sorted((suite / "spec").glob("*.wast")):
        try:
            commands = wast.parse_wast(path.read_text(encoding="utf-8"))
        except pylucet.Error as e:
            yield f"{path.name}: unparsable", None, e
            continue
        for cmd in commands:
            if isinstance(cmd, wast.Module):
                try:
                    yield f"{path.name}:{cmd.line}", cmd.wasm(), None
                except pylucet.Error as e:
                    yield f"{path.name}:{cmd.line}", None, e
    yield "bench_code.KERNELS", KERNELS, None
    yield "big_module", big_module(), None


def fingerprint(suite: Path, verbose: bool = False) -> str:
    digest = hashlib.sha256()
    count = 0
    for name, source, error in _modules(suite):
        for checks in (True, False):
            if source is not None:
                try:
                    text = compile_module(source, interrupt_checks=checks).text
                    digest.update(f"{name}:{checks}:ok:{len(text)}\n".encode() + text)
                    count += 1
                    if verbose:
                        print(name, checks, hashlib.sha256(text).hexdigest()[:16])
                    continue
                except pylucet.Error as e:
                    error = e
            digest.update(f"{name}:{checks}:{type(error).__name__}:{error}\n".encode())
    print(f"{count} compiled modules", file=sys.stderr)
    return digest.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--check", metavar="HASH", help="exit 1 unless the fingerprint is HASH")
    ap.add_argument("--verbose", action="store_true", help="print a hash per module")
    args = ap.parse_args()
    suite = Path(os.environ.get("PYLUCET_TESTSUITE", ROOT.parent / "shared" / "testsuite"))
    if not (suite / "spec").is_dir():
        print(f"no spec suite at {suite} (set PYLUCET_TESTSUITE)", file=sys.stderr)
        return 2
    h = fingerprint(suite, args.verbose)
    print(h)
    if args.check and h != args.check:
        print(f"MISMATCH: expected {args.check}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
