"""The lifecycle of an instance, measured after Lucet's published benchmarks, with peers beside.

Fastly published the life of a Lucet instance as eight figures ("The lifecycle and performance
of a Lucet instance"); this tool measures the same things in pylucet, prints Lucet's figure beside
each, and with ``--compare`` the same work in wasmtime-py (its default copy-on-write engine, one
without copy-on-write, and its pooling allocator) and in ppci's native wasm target:

 1. load the .so, create a one-slot region and instantiate hello;
 2. instantiate hello, region and module already loaded;
 3. instantiate against the initial heap size, dense (every byte i % 256);
 4. the same with sparse heaps (one 4 KiB page in eight non-zero);
 5. a trivial call's round trip;
 6. the same, first run of a process (installing the signal handler);
 7. drop a hello instance;
 8. teardown against the heap the program touched;
and fib(25), a call with 66 arguments, hello's ``_start`` end to end and 1,000 guest->Python
hostcalls. Heap measurements run once per ``--strategy`` (the region's ``heap_strategy``).

"hello" is ``examples/hello.wasm`` run through ``pylucet.wasi`` when that file exists; without it,
a hand-written WASI hello (one ``fd_write`` of "Hello, World!\\n"), labelled as a stand-in.
Figures are medians with a 95% bootstrap interval (``tools/benchlib.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import benchlib  # noqa: E402
from benchlib import Budget, Result, Results, Stats, size_label  # noqa: E402
from _workloads import (DENSE_SIZES, FIB, HELLO_OUTPUT, HELLO_STANDIN, HOSTCALLS,  # noqa: E402
                        MANY_ARGS, NOP, SMOKE_SIZES, SPARSE_SIZES, TOUCH, TOUCH_SIZES, TRAPS,
                        MiB, heap_module, many_args, many_args_wat, trapping)
from bench_hostcall import CALLER  # noqa: E402
from bench_peers import measure_ppci, measure_wasmtime  # noqa: E402

STRATEGIES = ("copy", "cow")
# Lucet's published figures, in microseconds (per MiB for teardown against the heap touched)
LUCET_US = {"load_region_instantiate": 52, "instantiate_hello": 30, "call_nop": 0.5,
            "first_run": 4.9, "drop_hello": 23, "touch_per_mib": "35-40 /MiB"}

HELLO_WASM = ROOT / "examples" / "hello.wasm"


# --- pylucet ------------------------------------------------------------------------------------

class Pylucet:
    """The measurements, made through the public API only."""

    def __init__(self, budget: Budget, workdir: Path, strategies: List[str], smoke: bool):
        import pylucet
        self.pl = pylucet
        self.budget = budget
        self.workdir = workdir
        self.strategies = strategies
        self.smoke = smoke
        self.hello_is_real = HELLO_WASM.exists()
        self.hello_path = str(workdir / "hello.so")
        pylucet.compile(HELLO_WASM.read_bytes() if self.hello_is_real else HELLO_STANDIN,
                        self.hello_path)
        self.hello = pylucet.load(self.hello_path)

    @property
    def hello_label(self) -> str:
        return "hello" if self.hello_is_real else "hello*"

    def wasi_linker(self, stdout: Any = None) -> Any:
        """A linker with WASI over a fresh context; stdout to ``stdout`` (None discards)."""
        from pylucet.wasi import WasiConfig
        config = WasiConfig()
        config.argv = ["hello"]
        config.stdout_file = stdout
        linker = self.pl.Linker()
        config.build().add_to_linker(linker)
        return linker

    def run_start(self, inst: Any) -> None:
        """Run ``_start`` as wasi.run does: proc_exit(0) is a normal end."""
        from pylucet.wasi import WasiExit
        try:
            inst.run("_start")
        except self.pl.Terminated as e:
            if not (isinstance(e.details, WasiExit) and e.details.code == 0):
                raise

    def measure(self, out: Results) -> None:
        pl, b = self.pl, self.budget
        name = self.hello_label
        linker = self.wasi_linker()

        # check hello says hello before timing it
        captured = io.BytesIO()
        with pl.MmapRegion(1) as region:
            with region.new_instance(self.hello, linker=self.wasi_linker(captured)) as inst:
                self.run_start(inst)
        if HELLO_OUTPUT.lower() not in captured.getvalue().lower():   # stand-in or examples/hello
            raise RuntimeError(f"hello printed {captured.getvalue()!r}")

        def load_region_instantiate(_: Any) -> Any:
            module = pl.load(self.hello_path)
            region = pl.MmapRegion(1)
            return region, region.new_instance(module, linker=linker)

        def close_pair(pair: Any) -> None:
            pair[1].close()
            pair[0].close()

        out.add("load_region_instantiate", f"1. load .so + 1-slot region + instantiate {name}",
                "pylucet", benchlib.batched(lambda: None, load_region_instantiate, close_pair, b),
                LUCET_US["load_region_instantiate"])
        out.add("load_only", f"1a. of which: load the .so of {name}", "pylucet",
                benchlib.batched(lambda: None, lambda _: pl.load(self.hello_path), budget=b))
        out.add("region_only", "1b. of which: create (and close) a 1-slot region", "pylucet",
                benchlib.batched(lambda: None, lambda _: pl.MmapRegion(1),
                                 lambda region: region.close(), b))

        def fresh() -> Any:
            return pl.load(self.hello_path), pl.MmapRegion(1)

        out.add("first_instantiate", "1c. of which: instantiate, module and region fresh",
                "pylucet", benchlib.batched(
                    fresh, lambda mr: (mr[1], mr[1].new_instance(mr[0], linker=linker)),
                    close_pair, b))

        region = pl.MmapRegion(2)
        out.add("instantiate_hello", f"2. instantiate {name}", "pylucet",
                benchlib.batched(lambda: None, lambda _: region.new_instance(self.hello,
                                                                             linker=linker),
                                 lambda inst: inst.close(), b), LUCET_US["instantiate_hello"])
        out.add("drop_hello", f"7. drop {name}", "pylucet",
                benchlib.batched(lambda: region.new_instance(self.hello, linker=linker),
                                 lambda inst: inst.close(), budget=b), LUCET_US["drop_hello"])
        out.add("hello_start", f"{name}: instantiate done, _start end to end", "pylucet",
                benchlib.batched(lambda: region.new_instance(self.hello, linker=linker),
                                 self.run_start_keep, lambda inst: inst.close(), b))

        nop = pl.load(pl.compile(NOP))
        with region.new_instance(nop) as inst:
            out.add("call_nop", "5. call a nop export (round trip)", "pylucet",
                    benchlib.iterate(lambda: inst.run("nop"), b), LUCET_US["call_nop"])
            out.add("call_add", "call add(i32, i32)", "pylucet",
                    benchlib.iterate(lambda: inst.run("add", 1, 2), b))
            for export, label in TRAPS.items():
                out.add(f"trap_{export}", label, "pylucet",
                        benchlib.iterate(lambda e=export: trapping(inst.run, e), b))
        first, once_only = self.first_run()
        out.add("first_run", "6. first instantiate+run of a process, over warm", "pylucet",
                first, LUCET_US["first_run"])
        out.add("first_run_once_only", "6b. of which once per process (handler install)",
                "pylucet", once_only)

        fib = pl.load(pl.compile(FIB))
        with region.new_instance(fib) as inst:
            assert inst.run("fib", 20) == 6765
            out.add("fib25", "fib(25)", "pylucet", benchlib.iterate(
                lambda: inst.run("fib", 25), Budget(b.warmup_s, b.measure_s * 2,
                                                    min(b.samples, 20), b.max_iterations)))
        many = pl.load(pl.compile(many_args_wat()))
        args = many_args()
        with region.new_instance(many) as inst:
            assert inst.run("many", *args) == float(sum(range(MANY_ARGS)))
            out.add("many_args", f"call with {MANY_ARGS} i64/f64 arguments", "pylucet",
                    benchlib.iterate(lambda: inst.run("many", *args), b))
        host = pl.Linker()
        host.define_func("env", "inc", lambda x: x + 1, "(i32) -> i32")
        host.define_func("env", "nop", lambda: None, "() -> ()")
        with region.new_instance(pl.load(pl.compile(CALLER)), linker=host) as inst:
            assert inst.run("loop_inc", HOSTCALLS) == HOSTCALLS
            out.add("hostcall_1000", f"{HOSTCALLS} guest->Python hostcalls (inc)", "pylucet",
                    benchlib.iterate(lambda: inst.run("loop_inc", HOSTCALLS), b))
        region.close()
        self.heaps(out)

    def run_start_keep(self, inst: Any) -> Any:
        self.run_start(inst)
        return inst

    def heaps(self, out: Results) -> None:
        """Measurements 3, 4 and 8, once per heap strategy."""
        pl, b = self.pl, self.budget
        dense = SMOKE_SIZES if self.smoke else DENSE_SIZES
        sparse = SMOKE_SIZES if self.smoke else SPARSE_SIZES
        touch_sizes = SMOKE_SIZES if self.smoke else TOUCH_SIZES
        modules = {}
        for kind, sizes in (("dense", dense), ("sparse", sparse)):
            for size in sizes:
                modules[kind, size] = pl.load(pl.compile(heap_module(size, kind == "sparse")))
        touch = pl.load(pl.compile(TOUCH))
        for strategy in self.strategies:
            region = pl.MmapRegion(2, heap_strategy=strategy)
            for (kind, size), module in modules.items():
                n = "3" if kind == "dense" else "4"
                out.add(f"{kind}_{size}", f"{n}. instantiate, {kind} heap {size_label(size)}",
                        f"pylucet {strategy}",
                        benchlib.batched(lambda: None, lambda _: region.new_instance(module),
                                         lambda inst: inst.close(), b),
                        x=size, curve=kind)

            def touched(size: int) -> Any:
                inst = region.new_instance(touch)
                inst.run("touch", size)
                return inst

            for size in touch_sizes:
                out.add(f"touch_{size}", f"8. teardown after touching {size_label(size)}",
                        f"pylucet {strategy}",
                        benchlib.batched(lambda: touched(size), lambda inst: inst.close(),
                                         budget=b),
                        LUCET_US["touch_per_mib"] if size == MiB else None, x=size,
                        curve="touch")
            region.close()

    def first_run(self) -> Tuple[Result, Result]:
        """Measurement 6. pylucet installs its fault handler once per process, at the first
        instantiation, so the first-run cost only exists in a fresh process: each sample is a
        new interpreter that imports pylucet (which assembles the stubs), compiles and loads two
        modules and makes a region untimed, then times its first ``new_instance`` + ``run``.

        Returned: (a) that first pair minus the same pair warm -- all the first run adds; and
        (b) that first pair minus the first pair of the *second* module in the same process,
        which pays the same first use of a slot and of a module's code but not the process's
        once-only work: (b) is what the handler install (and other per-process firsts) costs."""
        other = NOP.replace('"nop"', '"nop2"')
        script = f"""
import sys, time, json
sys.path.insert(0, {str(ROOT)!r})
import pylucet
m = pylucet.load(pylucet.compile({NOP!r}))
m2 = pylucet.load(pylucet.compile({other!r}))
region = pylucet.MmapRegion(2)
region2 = pylucet.MmapRegion(1)
t = time.perf_counter(); inst = region.new_instance(m); inst.run("nop")
first = time.perf_counter() - t
t = time.perf_counter(); inst2 = region2.new_instance(m2); inst2.run("nop2")
second = time.perf_counter() - t
inst.close(); inst2.close()
warm = []
for _ in range(200):
    t = time.perf_counter(); inst = region.new_instance(m); inst.run("nop")
    warm.append(time.perf_counter() - t); inst.close()
warm.sort()
print(json.dumps([first, second, warm[len(warm) // 2]]))
"""
        samples = 2 if self.smoke else (5 if self.budget is benchlib.QUICK else 20)
        extra, once_only = [], []
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        for _ in range(samples):
            done = subprocess.run([sys.executable, "-c", script], capture_output=True,
                                  text=True, env=env, timeout=120)
            if done.returncode:
                why = f"subprocess failed: {done.stderr.strip().splitlines()[-1:]}"
                return why, why
            first, second, warm = json.loads(done.stdout)
            extra.append(first - warm)
            once_only.append(first - second)
        return benchlib.summarise(extra, samples), benchlib.summarise(once_only, samples)

# --- output -------------------------------------------------------------------------------------

def print_table(out: Results, ours: List[str], peers: List[str]) -> None:
    print(f"{'measurement':<58}{'Lucet':>11}" + "".join(f"{c:>26}" for c in ours))
    for r in out.rows.values():
        lucet = r["lucet_us"]
        lucet_s = "" if lucet is None else (f"{lucet} us" if not isinstance(lucet, str)
                                            else lucet)
        cells = []
        for c in ours:
            v = r["by"].get(c)
            cells.append(benchlib.fmt_stats(v) if isinstance(v, Stats) else (v or "-"))
        print(f"{r['label'][:57]:<58}{lucet_s:>11}" + "".join(f"{c:>26}" for c in cells))
    if not peers:
        return
    print("\nspeedup = peer median / pylucet median (above 1: pylucet is faster); a peer's "
          "copy/cow engine is set against pylucet's copy/cow strategy where both ran, "
          f"anything else against {ours[-1]}")
    print(f"{'measurement':<58}" + "".join(f"{p:>18}" for p in peers))
    notes = []
    for r in out.rows.values():
        cells = []
        for peer in peers:
            # a peer's copy (cow) engine against our copy (cow) strategy where both were run
            matched = [o for o in ours if o.split()[-1] in peer.split()]
            mine = next((r["by"][o] for o in matched + list(reversed(ours))
                         if isinstance(r["by"].get(o), Stats)), None)
            v = r["by"].get(peer)
            if isinstance(v, Stats) and mine is not None:
                cells.append(f"{v.median / mine.median:.2f}x ({benchlib.fmt_time(v.median)})")
            elif isinstance(v, str):
                cells.append("n/a")
                notes.append(f"{peer}, {r['label']}: {v[5:] if v.startswith('n/a: ') else v}")
            else:
                cells.append("-")
        print(f"{r['label'][:57]:<58}" + "".join(f"{c:>18}" for c in cells))
    for note in dict.fromkeys(notes):
        print(f"  n/a: {note}")


def plot(out: Results, who: List[str], directory: Path) -> List[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for curve, title, xlabel in (
            ("dense", "instantiate vs initial heap, dense", "initial heap (every byte i%256)"),
            ("sparse", "instantiate vs initial heap, sparse", "initial heap (1 page in 8 set)"),
            ("touch", "teardown vs heap touched", "bytes the guest wrote before close")):
        series = {w: out.curve(curve, w) for w in who}
        path = directory / f"bench-{curve}.png"
        benchlib.plot_lines(str(path), title, xlabel, series,
                            note=f"{platform.processor() or platform.machine()}, "
                                 f"{os.cpu_count()} cores; medians; 0-byte point in the table")
        paths.append(path)
    return paths


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Measurements: see the module docstring of tools/bench.py.")
    ap.add_argument("--quick", action="store_true", help="shorter budget: the run within a minute")
    ap.add_argument("--smoke", action="store_true",
                    help="every measurement for a couple of samples (a test that the tool runs)")
    ap.add_argument("--compare", action="store_true",
                    help="the same work in wasmtime-py and ppci, and a table of ratios")
    ap.add_argument("--strategy", default=",".join(STRATEGIES),
                    help="heap strategies for the heap measurements, comma-separated "
                         "(copy, cow; default both)")
    ap.add_argument("--json", metavar="PATH", help="write every figure and sample here")
    ap.add_argument("--plots", metavar="DIR", default=None,
                    help="write the PNG plots here (default docs/ for a full run; none for "
                         "--smoke unless given)")
    args = ap.parse_args(argv)
    strategies = [s.strip() for s in args.strategy.split(",") if s.strip()]
    for s in strategies:
        if s not in STRATEGIES:
            ap.error(f"unknown strategy {s!r}: choose from {', '.join(STRATEGIES)}")
    budget = benchlib.SMOKE if args.smoke else benchlib.QUICK if args.quick else benchlib.FULL

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pylucet-bench-") as tmp:
        p = Pylucet(budget, Path(tmp), strategies, args.smoke)
        out = Results()
        phases: Dict[str, float] = {}

        def phase(name: str, fn: Callable[[], None]) -> bool:
            t = time.perf_counter()
            try:
                fn()
            except ImportError as e:
                print(f"({name} not measured: {e}; pip install -e '.[bench]')")
                return False
            finally:
                phases[name] = time.perf_counter() - t
            return True

        phase("pylucet", lambda: p.measure(out))
        peers: List[str] = []
        if args.compare:
            if phase("wasmtime", lambda: measure_wasmtime(out, p)):
                peers += ["wasmtime cow", "wasmtime copy", "wasmtime pooling"]
            if phase("ppci", lambda: measure_ppci(out, p)):
                peers.append("ppci native")
        peers = [w for w in peers if any(w in r["by"] for r in out.rows.values())]
    ours = [f"pylucet {s}" for s in strategies]
    # rows measured once (not per strategy) live under "pylucet": show them in the last column
    for r in out.rows.values():
        if "pylucet" in r["by"]:
            r["by"][ours[-1]] = r["by"].pop("pylucet")
    print(f"pylucet lifecycle, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{'hello = examples/hello.wasm' if p.hello_is_real else 'hello = STAND-IN'}; "
          "median [95% CI]")
    if not p.hello_is_real:
        print("* hello = STAND-IN: a hand-written WAT WASI hello (one fd_write), because "
              "examples/hello.wasm is absent; it runs through pylucet.wasi all the same")
    print_table(out, ours, peers)
    plots_dir = Path(args.plots) if args.plots else (None if args.smoke else ROOT / "docs")
    if plots_dir is not None:
        for path in plot(out, ours + [w for w in peers if "pooling" not in w], plots_dir):
            print(f"plot: {path}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform()},
            "hello": "examples/hello.wasm" if p.hello_is_real else "stand-in (WAT WASI hello)",
            "budget": dataclasses.asdict(budget),
            "measurements": out.to_json()}, indent=1))
        print(f"json: {args.json}")
    print(f"(whole run: {time.perf_counter() - started:.1f} s; "
          + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items()) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
