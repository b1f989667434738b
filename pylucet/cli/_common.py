"""What every pylucet command-line tool shares: exit statuses, one-line errors, argument parsing.

The rule for the tools: an error is one line on stderr, ``PROG: message``, and an exit status
that says what kind of error it was, never a Python traceback. A user (or a script) can tell a
missing file from a bad module from a guest trap by the status alone. The statuses follow BSD's
``sysexits.h`` where one fits, and the conventions of ``timeout(1)`` and of shells for the rest.
A guest run by ``pylucet-wasi`` exits with its own status, so the tool's own statuses sit where
wasi-libc programs rarely go (a guest calling ``exit(65)`` is indistinguishable, as under
``wasmtime run``).

Set ``PYLUCET_TRACEBACK=1`` to get the traceback of an unexpected error anyway.
"""

from __future__ import annotations

import argparse
import enum
import functools
import os
import re
import sys
import time
from typing import Any, Callable, List, NoReturn, Optional, Sequence, TextIO

from ..errors import (CompileError, Error, LimitsExceeded, LinkError, LoadError, Terminated,
                      Trap, Unsupported)


class ExitStatus(enum.IntEnum):
    """The exit statuses of pylucet's command-line tools (README has the table)."""

    OK = 0
    ERROR = 1             # anything else pylucet reports on purpose (a pylucet.Error)
    USAGE = 2             # bad flags or arguments (argparse's own convention)
    BAD_MODULE = 65       # EX_DATAERR: malformed or invalid wasm, a corrupt or foreign artifact
    NO_INPUT = 66         # EX_NOINPUT: the input file is missing or unreadable
    LINK_ERROR = 67       # an import the host does not provide
    UNSUPPORTED = 69      # EX_UNAVAILABLE: valid wasm this compiler does not translate yet
    INTERNAL = 70         # EX_SOFTWARE: a bug in pylucet (unexpected exception)
    CANT_CREATE = 73      # EX_CANTCREAT: the output file cannot be written
    LIMITS = 75           # the module needs more than the limits given allow
    TIMEOUT = 124         # --timeout expired (as timeout(1))
    TERMINATED = 125      # the instance was terminated (a hostcall failed)
    INTERRUPTED = 130     # Ctrl-C (128 + SIGINT, as shells report it)
    TRAP = 134            # the guest trapped (128 + SIGABRT, as wasmtime reports a trap)


class CommandError(Exception):
    """A one-line error with its exit status, raised anywhere below a tool's ``main``."""

    def __init__(self, message: str, status: ExitStatus):
        super().__init__(message)
        self.status = status


def status_of(error: BaseException) -> ExitStatus:
    """The exit status for an error pylucet raised."""
    for cls, status in _STATUS_OF:
        if isinstance(error, cls):
            return status
    return ExitStatus.ERROR


_STATUS_OF = (
    (Unsupported, ExitStatus.UNSUPPORTED),
    (CompileError, ExitStatus.BAD_MODULE),
    (LoadError, ExitStatus.BAD_MODULE),
    (LinkError, ExitStatus.LINK_ERROR),
    (LimitsExceeded, ExitStatus.LIMITS),
    (Trap, ExitStatus.TRAP),
    (Terminated, ExitStatus.TERMINATED),
    (FileNotFoundError, ExitStatus.NO_INPUT),
    (IsADirectoryError, ExitStatus.NO_INPUT),
    (PermissionError, ExitStatus.NO_INPUT),
    (Error, ExitStatus.ERROR),
)


def one_line(text: str) -> str:
    """Messages that span lines (a nested cause, a WAT excerpt) folded into one."""
    return " ".join(str(text).split())


def version_text(prog: str) -> str:
    from .. import __version__
    from ..module.serialize import FORMAT_VERSION
    return f"{prog} (pylucet) {__version__}, artifact format version {FORMAT_VERSION}"


class _Version(argparse.Action):
    """``--version``, worked out only when asked (start-up stays free of the imports)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> NoReturn:
        print(version_text(parser.prog))
        parser.exit()


class Parser(argparse.ArgumentParser):
    """argparse with a ``--version``, plain help text and one-line usage errors (status 2)."""

    def __init__(self, prog: str, description: str, **kw: Any):
        kw.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(prog=prog, description=description, **kw)
        self.add_argument("--version", action=_Version, nargs=0,
                          help="show the version and exit")

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: {one_line(message)} (see {self.prog} --help)\n")
        sys.exit(ExitStatus.USAGE)


def tool(prog: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Wrap a tool's ``main``: errors become ``prog: message`` and an exit status.

    A closed stdout (``pylucet-objdump x.so | head -1``) ends the tool quietly, as a C tool
    killed by SIGPIPE would end; stdout is pointed at /dev/null so that the interpreter's own
    flush at exit does not complain a second time.
    """
    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(argv: Optional[Sequence[str]] = None) -> int:
            try:
                return int(main(argv))
            except CommandError as e:
                return report(prog, str(e), e.status)
            except BrokenPipeError:
                _silence_stdout()
                return ExitStatus.OK
            except KeyboardInterrupt:
                return report(prog, "interrupted", ExitStatus.INTERRUPTED)
            except (Error, OSError) as e:
                return report(prog, describe(e), status_of(e))
            except Exception as e:  # noqa: BLE001 - the rule: never a traceback
                if os.environ.get("PYLUCET_TRACEBACK"):
                    raise
                return report(prog, f"internal error: {type(e).__name__}: {e} (please report "
                              "this; PYLUCET_TRACEBACK=1 shows where)", ExitStatus.INTERNAL)
        return run
    return wrap


def describe(e: BaseException) -> str:
    """An OSError names its file and says what is wrong; anything else is its message."""
    if isinstance(e, OSError) and e.strerror:
        where = f"{e.filename}: " if e.filename is not None else ""
        return f"{where}{e.strerror}"
    return str(e)


def report(prog: str, message: str, status: ExitStatus) -> int:
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        _silence_stdout()
    sys.stderr.write(f"{prog}: {one_line(message)}\n")
    sys.stderr.flush()
    return status


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def require_file(path: "os.PathLike[str]") -> None:
    """A missing input is its own error (status 66), said before anything else is tried."""
    if not os.path.exists(path):
        raise CommandError(f"{os.fspath(path)}: no such file", ExitStatus.NO_INPUT)
    if os.path.isdir(path):
        raise CommandError(f"{os.fspath(path)}: is a directory", ExitStatus.NO_INPUT)


_SIZE = re.compile(r"^\s*(\d+|0x[0-9a-f]+)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def size(text: str) -> int:
    """An argparse type for byte sizes: ``65536``, ``0x10000``, ``64K``, ``4GiB``, ``1m``.

    Suffixes are binary (K = 1024), as every size in pylucet is a multiple of a page."""
    m = _SIZE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 65536, 64K, 4GiB)")
    return int(m.group(1), 0) * _UNITS[m.group(2).lower()]


def seconds_since_process_start() -> Optional[float]:
    """How long ago the kernel started this process: interpreter start-up plus imports, when
    asked first thing in ``main``. None where /proc does not say."""
    try:
        with open("/proc/self/stat") as f:
            stat = f.read()
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
        return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def add_heap_options(parser: argparse.ArgumentParser) -> None:
    """The compile options that shape the heap and the code (pylucetc; cache keys)."""
    parser.add_argument("--reserved-size", type=size, metavar="N",
                        help="address space the heap may address without a bounds check "
                             "(default 4GiB)")
    parser.add_argument("--guard-size", type=size, metavar="N",
                        help="inaccessible guard space after the reserved part (default 4GiB; "
                             "reserved + guard must be at least 8GiB, as compiled code does "
                             "no bounds checks)")
    parser.add_argument("--max-heap", type=size, metavar="N",
                        help="cap the module's maximum memory at N bytes")
    parser.add_argument("--no-interrupt-checks", action="store_true",
                        help="leave out the interrupt checks at function entries and loops "
                             "(faster; a timeout or Ctrl-C can then not stop a spinning guest)")


def compile_options(args: argparse.Namespace) -> dict:
    """The keyword options of ``compile_module`` that ``add_heap_options`` parsed."""
    out: dict = {}
    if getattr(args, "reserved_size", None) is not None:
        out["reserved_size"] = args.reserved_size
    if getattr(args, "guard_size", None) is not None:
        out["guard_size"] = args.guard_size
    if getattr(args, "max_heap", None) is not None:
        out["max_heap"] = args.max_heap
    if getattr(args, "no_interrupt_checks", False):
        out["interrupt_checks"] = False
    return out


def remainder(values: List[str]) -> List[str]:
    """Arguments after the positionals, as the user typed them (a leading ``--`` dropped)."""
    return values[1:] if values[:1] == ["--"] else values


class ProgressLine:
    """A one-line progress display on a terminal: functions done of total, rate, ETA.

    Draws at most ten times a second and only after the compile has run for half a second, so
    small modules print nothing; ``clear`` removes the line when the compile ends.
    """

    def __init__(self, out: TextIO, label: str):
        self.out = out
        self.label = label
        self.started = time.perf_counter()
        self.last = 0.0
        self.drawn = False

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        elapsed = now - self.started
        if done < total and (elapsed < 0.5 or now - self.last < 0.1):
            return
        if not self.drawn and done == total:
            return
        self.last = now
        rate = done / elapsed if elapsed else 0.0
        eta = (total - done) / rate if rate else 0.0
        self.out.write(f"\r{self.label}: {done}/{total} functions ({100 * done // total}%), "
                       f"{rate:,.0f} functions/s, ETA {_duration(eta)}\x1b[K")
        self.out.flush()
        self.drawn = True

    def clear(self) -> None:
        if self.drawn:
            self.out.write("\r\x1b[K")
            self.out.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds}s"


def progress_for(label: str, stream: TextIO = sys.stderr) -> Optional[ProgressLine]:
    """A progress display on ``stream`` if it is a terminal, else None (nothing is printed)."""
    try:
        return ProgressLine(stream, label) if stream.isatty() else None
    except (AttributeError, ValueError):
        return None
