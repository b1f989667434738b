"""Run the Sightglass benchmark programs as Sightglass does, in pylucet (and, with ``--compare``,
in wasmtime-py beside it, in the same run).

Per ``${PYLUCET_BENCHMARKS:-../shared/benchmarks}/README.md``: each program runs ``_start`` with its
own folder (a temporary copy) preopened as ``.``; ``bench.start`` and ``bench.end`` are host
functions reading a monotonic clock, and the time between them is the measurement; stdout and
stderr must equal ``<stem>.stdout.expected`` / ``<stem>.stderr.expected`` (the stem is the
program's, or ``default`` where ``default.stdout.expected`` exists).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def benchmarks_dir() -> Path:
    return Path(os.environ.get("PYLUCET_BENCHMARKS", ROOT.parent / "shared" / "benchmarks")) \
        / "sightglass"


def programs(base: Optional[Path] = None) -> List[Path]:
    return sorted((base or benchmarks_dir()).glob("**/*.wasm"))


def expected(wasm: Path) -> Tuple[Optional[bytes], Optional[bytes]]:
    stem = "default" if (wasm.parent / "default.stdout.expected").exists() else wasm.stem
    out, err = wasm.parent / f"{stem}.stdout.expected", wasm.parent / f"{stem}.stderr.expected"
    return (out.read_bytes() if out.exists() else None,
            err.read_bytes() if err.exists() else None)


def run_pylucet(wasm: Path, module=None) -> Tuple[float, bytes, bytes, int]:
    """(seconds between bench.start and bench.end, stdout, stderr, exit code)."""
    import pylucet
    from pylucet import wasi
    module = module or pylucet.load(pylucet.compile(wasm.read_bytes()))
    marks: Dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="pylucet-sg-") as tmp:
        work = Path(tmp) / "b"
        shutil.copytree(wasm.parent, work)
        config = wasi.WasiConfig()
        config.argv = [wasm.name]
        out, err = io.BytesIO(), io.BytesIO()
        config.stdout_file, config.stderr_file = out, err
        config.preopen_dir(work, ".")
        ctx = config.build()
        linker = pylucet.Linker()
        ctx.add_to_linker(linker)
        linker.define_func("bench", "start", lambda: marks.__setitem__("start",
                                                                       time.perf_counter_ns()),
                           "() -> ()")
        linker.define_func("bench", "end", lambda: marks.__setitem__("end",
                                                                     time.perf_counter_ns()),
                           "() -> ()")
        code = 0
        cwd = os.getcwd()
        os.chdir(work)
        try:
            with pylucet.MmapRegion(1) as region, \
                    region.new_instance(module, linker=linker) as inst:
                try:
                    inst.run("_start")
                except pylucet.Terminated as e:
                    if not isinstance(e.details, wasi.WasiExit):
                        raise
                    code = e.details.code
        finally:
            os.chdir(cwd)
            ctx.fds.close_all()
    seconds = (marks.get("end", 0) - marks.get("start", 0)) / 1e9
    return seconds, out.getvalue(), err.getvalue(), code


def run_wasmtime(wasm: Path, engine=None) -> Tuple[float, bytes, bytes, int]:
    import wasmtime
    engine = engine or wasmtime.Engine()
    module = wasmtime.Module(engine, wasm.read_bytes())
    marks: Dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="pylucet-sg-") as tmp:
        work = Path(tmp) / "b"
        shutil.copytree(wasm.parent, work)
        out, err = Path(tmp) / "out", Path(tmp) / "err"
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        store = wasmtime.Store(engine)
        cfg = wasmtime.WasiConfig()
        cfg.argv = [wasm.name]
        cfg.stdout_file, cfg.stderr_file = str(out), str(err)
        cfg.preopen_dir(str(work), ".")
        store.set_wasi(cfg)
        unit = wasmtime.FuncType([], [])
        linker.define(store, "bench", "start", wasmtime.Func(
            store, unit, lambda: marks.__setitem__("start", time.perf_counter_ns())))
        linker.define(store, "bench", "end", wasmtime.Func(
            store, unit, lambda: marks.__setitem__("end", time.perf_counter_ns())))
        code = 0
        cwd = os.getcwd()
        os.chdir(work)
        try:
            inst = linker.instantiate(store, module)
            inst.exports(store)["_start"](store)
        except wasmtime.ExitTrap as e:
            code = e.code
        finally:
            os.chdir(cwd)
        return ((marks.get("end", 0) - marks.get("start", 0)) / 1e9, out.read_bytes(),
                err.read_bytes(), code)


def check(wasm: Path, result: Tuple[float, bytes, bytes, int]) -> Optional[str]:
    """None if the run's output is what Sightglass expects, else what differs."""
    _, out, err, code = result
    want_out, want_err = expected(wasm)
    if code != 0:
        return f"exit code {code}"
    if want_out is not None and out != want_out:
        return f"stdout differs ({len(out)} bytes, expected {len(want_out)})"
    if want_err is not None and err != want_err:
        return f"stderr differs ({err[:200]!r})"
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("programs", nargs="*", type=Path, help="benchmarks (default: all)")
    ap.add_argument("--compare", action="store_true", help="also run each in wasmtime-py")
    ap.add_argument("--repeat", type=int, default=1, help="runs per figure (median)")
    args = ap.parse_args(argv)
    todo = args.programs or programs()
    import pylucet
    ratios = []
    failed = 0
    print(f"{'benchmark':<42}{'pylucet ms':>12}{'cranelift ms':>14}{'ratio':>8}")
    for wasm in todo:
        name = str(wasm.relative_to(benchmarks_dir())) if benchmarks_dir() in wasm.parents \
            else wasm.name
        try:
            module = pylucet.load(pylucet.compile(wasm.read_bytes()))
            runs = [run_pylucet(wasm, module) for _ in range(args.repeat)]
        except pylucet.Error as e:
            print(f"{name:<42} FAIL {type(e).__name__}: {str(e)[:120]}")
            failed += 1
            continue
        problem = check(wasm, runs[0])
        ours = statistics.median(r[0] for r in runs) * 1e3
        line = f"{name:<42}{ours:>12.2f}"
        if args.compare:
            theirs_runs = [run_wasmtime(wasm) for _ in range(args.repeat)]
            theirs = statistics.median(r[0] for r in theirs_runs) * 1e3
            line += f"{theirs:>14.2f}"
            if theirs > 0 and ours > 0:
                ratios.append(ours / theirs)
                line += f"{ours / theirs:>8.2f}"
        if problem:
            failed += 1
            line += f"   FAIL: {problem}"
        print(line)
    if ratios:
        print(f"geometric mean ratio: {statistics.geometric_mean(ratios):.2f}")
    print(f"{len(todo) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
