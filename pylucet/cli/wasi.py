"""pylucet-wasi: run a WASI program in the sandbox, as lucet-wasi and wasmtime run do.

  pylucet-wasi [OPTIONS] PROGRAM.(wasm|wat|so) [ARGS...]

A .wasm or .wat program is compiled once into the compile cache ($PYLUCET_CACHE, else
~/.cache/pylucet) and only loaded on later runs. The guest gets ARGS with the program's file
name as argv[0], this process's stdin, stdout and stderr, no environment unless given, and
no files except the directories passed with --dir. The exit status is the guest's; a trap
prints its code and a wasm backtrace and exits with 134. Sizes take K, M and G suffixes.
Everything after PROGRAM goes to the guest.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

from ._common import (CommandError, ExitStatus, Parser, progress_for, remainder, require_file,
                      size, status_of, tool)

PROG = "pylucet-wasi"


def _dir(text: str) -> Tuple[str, str]:
    host, sep, guest = text.partition("::")
    if not host or (sep and not guest):
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST or HOST::GUEST")
    return host, guest if sep else host


def _env(text: str) -> Tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def parser() -> argparse.ArgumentParser:
    ap = Parser(PROG, __doc__)
    ap.add_argument("--dir", type=_dir, action="append", default=[], metavar="HOST[::GUEST]",
                    help="give the guest the host directory HOST, under the name GUEST "
                         "(default: HOST as written); may repeat")
    ap.add_argument("--env", type=_env, action="append", default=[], metavar="K=V",
                    help="set an environment variable for the guest; may repeat")
    ap.add_argument("--inherit-env", action="store_true",
                    help="give the guest this process's environment (before any --env)")
    ap.add_argument("--max-heap-size", type=size, metavar="N",
                    help="the most linear memory the guest may have (default 4GiB)")
    ap.add_argument("--stack-size", type=size, metavar="N",
                    help="the guest's stack (default 1MiB)")
    ap.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                    help="stop the guest after this long (exit status 124)")
    ap.add_argument("--entrypoint", default="_start", metavar="NAME",
                    help="the export to run (default _start)")
    ap.add_argument("--no-cache", action="store_true",
                    help="compile in memory; neither read nor write the compile cache")
    ap.add_argument("program", type=Path, help="the WASI program: .wasm, .wat or a compiled .so")
    ap.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the program")
    return ap


def _limits(args: argparse.Namespace) -> Any:
    if args.max_heap_size is None and args.stack_size is None:
        return None
    from ..runtime.limits import Limits
    options = {}
    if args.max_heap_size is not None:
        options["heap_memory_size"] = args.max_heap_size
    if args.stack_size is not None:
        options["stack_size"] = args.stack_size
    try:
        return Limits(**options)
    except ValueError as e:
        raise CommandError(str(e), ExitStatus.USAGE) from None


def backtrace(trap: BaseException) -> List[str]:
    """The trap's wasm backtrace (function names, innermost first), else the function it
    happened in."""
    frames = getattr(trap, "backtrace", None)
    if frames:
        return [str(f) for f in frames]
    func = getattr(trap, "func", None)
    return [func] if func else []


def report_trap(trap: Any, out: Any = None) -> None:
    out = out or sys.stderr
    out.write(f"{PROG}: trap: {trap}\n")   # the message starts with the trap code
    frames = backtrace(trap)
    if frames:
        out.write("wasm backtrace:\n")
        for i, name in enumerate(frames):
            out.write(f"  {i}: {name}\n")
    out.flush()


@tool(PROG)
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    require_file(args.program)
    for host, _ in args.dir:
        if not os.path.isdir(host):
            raise CommandError(f"--dir {host}: not a directory", ExitStatus.NO_INPUT)
    limits = _limits(args)

    import pylucet
    from .. import cache
    progress = None if str(args.program).endswith(".so") else progress_for(
        f"compiling {args.program}")
    try:
        module = cache.load_module(args.program, use_cache=not args.no_cache, progress=progress)
    except pylucet.Error as e:
        raise CommandError(f"{args.program}: {e}", status_of(e)) from None
    finally:
        if progress is not None:
            progress.clear()

    from .. import wasi
    config = wasi.WasiConfig()
    config.argv = [args.program.name, *remainder(args.args)]
    env = dict(os.environ) if args.inherit_env else {}   # --env on top of the inherited ones
    env.update(args.env)
    config.env = env
    for host, guest in args.dir:
        config.preopen_dir(host, guest)
    config.inherit_stdio()

    sys.stdout.flush()
    try:
        status = wasi.run(module, config, limits=limits, entrypoint=args.entrypoint,
                          timeout=args.timeout)
    except pylucet.Trap as trap:
        report_trap(trap)
        return ExitStatus.TRAP
    except pylucet.Terminated as e:
        # the runtime's watchdog ends a call with the reason "timeout: ..." (Instance.run)
        if args.timeout is not None and str(e.reason).startswith("timeout"):
            raise CommandError(f"timed out after {args.timeout:g} s", ExitStatus.TIMEOUT) \
                from None
        cause = f" ({type(e.__cause__).__name__}: {e.__cause__})" if e.__cause__ else ""
        raise CommandError(f"{e}{cause}", ExitStatus.TERMINATED) from None
    except pylucet.UnknownExport as e:
        raise CommandError(f"{args.program}: {e}", ExitStatus.USAGE) from None
    return int(status) & 0xFF   # as a POSIX exit status keeps only the low byte


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
