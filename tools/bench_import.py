"""Import cost: `import pylucet`, the runtime (whose import assembles the asm/ stubs with keystone
and maps them), and the compiler, each in a fresh interpreter; median of --runs.

Two figures per case: the wall time of the statement, and what "python3 -X importtime" reports
as the cumulative time of the top-level import (the number the import-time issue is about).
With --baseline DIR (another checkout, e.g. "git archive <commit> | tar -x -C DIR") the
same cases run against it too and the ratio is printed beside them.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
CASES: Dict[str, Tuple[str, Optional[str]]] = {
    # label: (statement, module whose cumulative -X importtime figure is reported)
    "import keystone": ("import keystone", "keystone"),
    "import pylucet": ("import pylucet", "pylucet"),
    "import pylucet.runtime.stubs": ("import pylucet.runtime.stubs", "pylucet.runtime.stubs"),
    "import pylucet.runtime": ("import pylucet.runtime", "pylucet.runtime"),
    "import pylucet.compiler.driver": ("import pylucet.compiler.driver",
                                       "pylucet.compiler.driver"),
    # what the stubs alone cost: assembling asm/ with keystone and mapping it, once more
    "assemble + map asm/ stubs": ("from pylucet.runtime.stubs import Stubs; "
                                  "t = time.perf_counter(); Stubs()", None),
}
PROBE = "import time; t = time.perf_counter(); {0}; print(time.perf_counter() - t)"
_IMPORTTIME = re.compile(r"^import time:\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\S+)\s*$")


def _run(root: Path, args: List[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(root))
    return subprocess.run([sys.executable, *args], cwd=root, env=env, capture_output=True,
                          text=True, check=True)


def wall_ms(root: Path, statement: str) -> float:
    return float(_run(root, ["-c", PROBE.format(statement)]).stdout) * 1e3


def importtime_ms(root: Path, statement: str, module: str) -> float:
    """Cumulative import time of ``module`` as ``-X importtime`` reports it (its last line)."""
    err = _run(root, ["-X", "importtime", "-c", statement]).stderr
    for line in reversed(err.splitlines()):
        m = _IMPORTTIME.match(line)
        if m and m.group(3) == module:
            return int(m.group(2)) / 1e3
    raise RuntimeError(f"-X importtime printed no line for {module}")


def measure(root: Path, runs: int) -> Dict[str, Tuple[float, Optional[float]]]:
    out = {}
    for label, (statement, module) in CASES.items():
        wall = statistics.median(wall_ms(root, statement) for _ in range(runs))
        cumulative = (statistics.median(importtime_ms(root, statement, module)
                                        for _ in range(runs)) if module else None)
        out[label] = (wall, cumulative)
    return out


def _fmt(v: Optional[float]) -> str:
    return f"{v:9.1f}" if v is not None else f"{'-':>9}"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--runs", type=int, default=5, help="fresh interpreters per case (median)")
    ap.add_argument("--baseline", type=Path, metavar="DIR",
                    help="another checkout to measure beside this one")
    args = ap.parse_args(argv)

    here = measure(ROOT, args.runs)
    base = measure(args.baseline.resolve(), args.runs) if args.baseline else None
    head = f"{'ms, median of ' + str(args.runs):<32}{'wall':>9}{'importtime':>11}"
    if base:
        head += f"{'base wall':>11}{'base imp.':>11}{'ratio':>8}"
    print(head)
    for label, (wall, cumulative) in here.items():
        line = f"{label:<32}{_fmt(wall)}  {_fmt(cumulative)}"
        if base:
            bwall, bcum = base[label]
            now, then = (cumulative, bcum) if cumulative is not None else (wall, bwall)
            ratio = f"{then / now:7.2f}x" if now and then else f"{'-':>8}"
            line += f"  {_fmt(bwall)}  {_fmt(bcum)} {ratio}"
        print(line)
    if base:
        print("ratio: baseline / this checkout (importtime where there is one, else wall)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
