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
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import benchlib  # noqa: E402
from benchlib import Budget, Stats  # noqa: E402
from _workloads import FIB, NOP  # noqa: E402
from bench_hostcall import CALLER  # noqa: E402
from pylucet.wasm.leb128 import encode_s, encode_u  # noqa: E402

KiB, MiB = 1 << 10, 1 << 20
DENSE_SIZES = [0, 4 * KiB, 8 * KiB, 16 * KiB, 32 * KiB, 64 * KiB, 128 * KiB, 256 * KiB,
               512 * KiB, 1 * MiB, 2 * MiB, 4 * MiB]
SPARSE_SIZES = [0, 256 * KiB, 512 * KiB, 1 * MiB, 2 * MiB, 4 * MiB]
TOUCH_SIZES = [0, 64 * KiB, 256 * KiB, 1 * MiB, 2 * MiB, 4 * MiB]
SMOKE_SIZES = [0, 64 * KiB]
HOSTCALLS = 1000
STRATEGIES = ("copy", "cow")

# Lucet's published figures, in microseconds (per MiB for teardown against the heap touched)
LUCET_US = {"load_region_instantiate": 52, "instantiate_hello": 30, "call_nop": 0.5,
            "first_run": 4.9, "drop_hello": 23, "touch_per_mib": "35-40 /MiB"}

HELLO_WASM = ROOT / "examples" / "hello.wasm"
HELLO_STANDIN = """(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "Hello, World!\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16)) (i32.store (i32.const 4) (i32.const 14))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"""
HELLO_OUTPUT = b"Hello, World!\n"

MANY_ARGS = 66
TOUCH = """(module (memory (export "memory") 64)
  (func (export "nop"))
  (func (export "touch") (param $n i32) (local $i i32)
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (i64.store (local.get $i) (i64.const -1))
      (local.set $i (i32.add (local.get $i) (i32.const 8)))
      (br $l)))))"""


TRAPS = {"oob": "trap round trip: heap out of bounds", "unreachable": "trap round trip: unreachable"}


def trapping(fn: Callable[..., Any], *args: Any) -> None:
    """Call ``fn``, which must trap (pylucet's Trap or wasmtime's Trap), and swallow the trap."""
    try:
        fn(*args)
    except Exception as e:   # noqa: BLE001 - each library's own trap type
        if "trap" not in type(e).__name__.lower():
            raise
    else:
        raise AssertionError(f"{fn} did not trap")


def many_args_wat() -> str:
    """Lucet's run_many_args: one function of 66 i64/f64 parameters (here alternating), summed
    as f64 so every argument must arrive in its place for the result to come out right."""
    params = " ".join("i64" if i % 2 == 0 else "f64" for i in range(MANY_ARGS))
    body = []
    for i in range(MANY_ARGS):
        body.append(f"(local.get {i})" + (" (f64.convert_i64_s)" if i % 2 == 0 else ""))
        if i:
            body.append("(f64.add)")
    return (f'(module (func (export "many") (param {params}) (result f64) '
            f'{" ".join(body)}))')


def many_args() -> List[Union[int, float]]:
    return [i if i % 2 == 0 else float(i) for i in range(MANY_ARGS)]


def heap_module(size: int, sparse: bool) -> bytes:
    """A wasm binary with an initial memory of ``size`` bytes (rounded up to wasm pages) whose
    data segments fill it densely (every byte i % 256) or sparsely (one 4 KiB page in eight),
    and one export, ``nop``. Binary because a 4 MiB segment is 12 MiB of escaped WAT text."""
    def vec(items: List[bytes]) -> bytes:
        return encode_u(len(items)) + b"".join(items)

    def section(sid: int, content: bytes) -> bytes:
        return bytes([sid]) + encode_u(len(content)) + content

    pattern = bytes(range(256)) * 16   # one 4 KiB page of i % 256
    if sparse:
        segments = [(off, pattern) for off in range(0, size, 8 * 4096)]
    else:
        segments = [(0, (pattern * (size // 4096 + 1))[:size])] if size else []
    pages = -(-size // 65536)
    return b"".join([
        b"\0asm\1\0\0\0",
        section(1, vec([b"\x60\x00\x00"])),
        section(3, vec([encode_u(0)])),
        section(5, vec([b"\x00" + encode_u(pages)])),
        section(7, vec([encode_u(3) + b"nop" + b"\x00" + encode_u(0)])),
        section(10, vec([encode_u(2) + b"\x00\x0b"])),
        section(11, vec([b"\x00\x41" + encode_s(off) + b"\x0b" + encode_u(len(data)) + data
                         for off, data in segments])),
    ])


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= MiB else f"{n >> 10} KiB"


# --- the results ---------------------------------------------------------------------------------

Result = Union[Stats, str]   # a measurement, or why it could not be made


class Results:
    """Rows in the order they were measured: our figure, Lucet's, and each peer's."""

    def __init__(self) -> None:
        self.rows: Dict[str, Dict[str, Any]] = {}

    def add(self, key: str, label: str, who: str, result: Result, lucet: Any = None,
            x: Optional[int] = None, curve: Optional[str] = None) -> None:
        row = self.rows.setdefault(key, {"label": label, "lucet_us": lucet, "x": x,
                                         "curve": curve, "by": {}})
        row["by"][who] = result

    def curve(self, curve: str, who: str) -> List[Tuple[int, float]]:
        return [(r["x"], r["by"][who].median) for r in self.rows.values()
                if r["curve"] == curve and isinstance(r["by"].get(who), Stats)]

    def to_json(self) -> Dict[str, Any]:
        return {k: {"label": r["label"], "lucet_us": r["lucet_us"], "heap_bytes": r["x"],
                    "results": {w: (v.to_json() if isinstance(v, Stats) else {"n/a": v})
                                for w, v in r["by"].items()}}
                for k, r in self.rows.items()}


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
        if HELLO_OUTPUT not in captured.getvalue():
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
                out.add(f"{kind}_{size}", f"{n}. instantiate, {kind} heap {_size(size)}",
                        f"pylucet {strategy}",
                        benchlib.batched(lambda: None, lambda _: region.new_instance(module),
                                         lambda inst: inst.close(), b),
                        x=size, curve=kind)

            def touched(size: int) -> Any:
                inst = region.new_instance(touch)
                inst.run("touch", size)
                return inst

            for size in touch_sizes:
                out.add(f"touch_{size}", f"8. teardown after touching {_size(size)}",
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


# --- wasmtime-py --------------------------------------------------------------------------------

def wasmtime_engines() -> Dict[str, Any]:
    """wasmtime's default engine (copy-on-write heap images), one without copy-on-write (copy),
    and one with the pooling allocator. wasmtime-py 50's Config has no pooling setter; its
    ctypes bindings to the C API (``wasmtime._bindings``) do, so the pool is set through them."""
    import wasmtime
    engines = {"wasmtime cow": wasmtime.Engine()}
    config = wasmtime.Config()
    config.memory_init_cow = False
    engines["wasmtime copy"] = wasmtime.Engine(config)
    try:
        from wasmtime import _bindings as c
        config = wasmtime.Config()
        pool = c.wasmtime_pooling_allocation_config_new()
        for setter in ("total_core_instances", "total_memories", "total_tables", "total_stacks"):
            getattr(c, f"wasmtime_pooling_allocation_config_{setter}_set")(pool, 16)
        c.wasmtime_pooling_allocation_config_max_memory_size_set(pool, 8 * MiB)
        c.wasmtime_pooling_allocation_strategy_set(config.ptr(), pool)
        c.wasmtime_pooling_allocation_config_delete(pool)
        engines["wasmtime pooling"] = wasmtime.Engine(config)
    except (ImportError, AttributeError) as e:
        print(f"(wasmtime pooling allocator unavailable: {e})")
    return engines


def measure_wasmtime(out: Results, p: Pylucet) -> None:
    import wasmtime
    b = p.budget
    engines = wasmtime_engines()
    hello_wasm = HELLO_WASM.read_bytes() if p.hello_is_real else wasmtime.wat2wasm(HELLO_STANDIN)
    for who, engine in engines.items():
        hello = wasmtime.Module(engine, hello_wasm)
        cwasm = p.workdir / f"hello-{who.split()[-1]}.cwasm"
        cwasm.write_bytes(hello.serialize())
        linker = wasmtime.Linker(engine)
        linker.define_wasi()

        def instantiate(module: Any, engine: Any = engine, linker: Any = linker) -> Any:
            store = wasmtime.Store(engine)
            store.set_wasi(wasmtime.WasiConfig())
            linker.instantiate(store, module)
            return store

        def load_instantiate(_: Any, engine: Any = engine, cwasm: Path = cwasm) -> Any:
            return instantiate(wasmtime.Module.deserialize_file(engine, str(cwasm)))

        def started(engine: Any = engine, linker: Any = linker, hello: Any = hello) -> Any:
            store = wasmtime.Store(engine)
            store.set_wasi(wasmtime.WasiConfig())
            return store, linker.instantiate(store, hello).exports(store)["_start"]

        close = lambda store: store.close()  # noqa: E731
        out.add("load_region_instantiate", "", who,
                benchlib.batched(lambda: None, load_instantiate, close, b))
        out.add("instantiate_hello", "", who,
                benchlib.batched(lambda: None, lambda _, h=hello: instantiate(h), close, b))
        out.add("drop_hello", "", who,
                benchlib.batched(lambda h=hello: instantiate(h), close, budget=b))
        out.add("hello_start", "", who,
                benchlib.batched(started, lambda sf: sf[1](sf[0]) or sf,
                                 lambda sf: sf[0].close(), b))
        # heap curves: wasmtime's cow and copy engines line up with our strategies
        if who == "wasmtime pooling":
            continue
        dense = SMOKE_SIZES if p.smoke else DENSE_SIZES
        sparse = SMOKE_SIZES if p.smoke else SPARSE_SIZES
        for kind, sizes in (("dense", dense), ("sparse", sparse)):
            for size in sizes:
                module = wasmtime.Module(engine, heap_module(size, kind == "sparse"))

                def plain(_: Any, engine: Any = engine, module: Any = module) -> Any:
                    store = wasmtime.Store(engine)
                    wasmtime.Instance(store, module, [])
                    return store

                out.add(f"{kind}_{size}", "", who, benchlib.batched(lambda: None, plain, close, b))
        touch = wasmtime.Module(engine, TOUCH)
        for size in (SMOKE_SIZES if p.smoke else TOUCH_SIZES):
            def touched(engine: Any = engine, size: int = size) -> Any:
                store = wasmtime.Store(engine)
                wasmtime.Instance(store, touch, []).exports(store)["touch"](store, size)
                return store
            out.add(f"touch_{size}", "", who, benchlib.batched(touched, close, budget=b))

    engine = engines["wasmtime cow"]
    store = wasmtime.Store(engine)
    nop = wasmtime.Instance(store, wasmtime.Module(engine, NOP), []).exports(store)["nop"]
    out.add("call_nop", "", "wasmtime cow", benchlib.iterate(lambda: nop(store), b))
    nop_exports = wasmtime.Instance(store, wasmtime.Module(engine, NOP), []).exports(store)
    add = nop_exports["add"]
    out.add("call_add", "", "wasmtime cow", benchlib.iterate(lambda: add(store, 1, 2), b))
    for export in TRAPS:
        f = nop_exports[export]
        out.add(f"trap_{export}", "", "wasmtime cow",
                benchlib.iterate(lambda f=f: trapping(f, store), b))
    out.add("first_run", "", "wasmtime cow",
            "n/a: wasmtime installs its handlers when the first Engine is made, with no "
            "separate first-run step to isolate")
    fib = wasmtime.Instance(store, wasmtime.Module(engine, FIB), []).exports(store)["fib"]
    out.add("fib25", "", "wasmtime cow", benchlib.iterate(
        lambda: fib(store, 25), Budget(b.warmup_s, b.measure_s * 2, min(b.samples, 20),
                                       b.max_iterations)))
    many = wasmtime.Instance(store, wasmtime.Module(engine, many_args_wat()),
                             []).exports(store)["many"]
    args = many_args()
    out.add("many_args", "", "wasmtime cow", benchlib.iterate(lambda: many(store, *args), b))
    i32 = wasmtime.ValType.i32()
    inc = wasmtime.Func(store, wasmtime.FuncType([i32], [i32]), lambda x: x + 1)
    hnop = wasmtime.Func(store, wasmtime.FuncType([], []), lambda: None)
    loop = wasmtime.Instance(store, wasmtime.Module(engine, CALLER),
                             [inc, hnop]).exports(store)["loop_inc"]
    assert loop(store, HOSTCALLS) == HOSTCALLS
    out.add("hostcall_1000", "", "wasmtime cow",
            benchlib.iterate(lambda: loop(store, HOSTCALLS), b))


# --- ppci ---------------------------------------------------------------------------------------

def measure_ppci(out: Results, p: Pylucet) -> None:
    """ppci's native target compiles wasm to x86-64 and loads it in-process. Its instantiate
    always runs its whole pipeline; with ``cache_file`` the compiled object is reused, so what
    is timed is loading that object, filling memory and tables, and building the exports."""
    from ppci import wasm
    b = p.budget
    who = "ppci native"
    no_wasi = "n/a: ppci has no WASI implementation to run hello with"
    for key in ("load_region_instantiate", "instantiate_hello", "drop_hello", "hello_start"):
        out.add(key, "", who, no_wasi)
    out.add("first_run", "", who, "n/a: not measured (no first-run step in ppci's API to "
                                  "isolate)")
    cache = p.workdir / "ppci"
    cache.mkdir(exist_ok=True)

    def attempt(key: str, fn: Callable[[], Result]) -> None:
        try:
            out.add(key, "", who, fn())
        except Exception as e:   # noqa: BLE001 - report why the peer cannot, and carry on
            out.add(key, "", who, f"n/a: {type(e).__name__}: {str(e)[:80]}")

    def inst(source: Union[str, bytes], name: str, imports: Any = None) -> Any:
        return wasm.instantiate(wasm.Module(source), imports or {}, target="native",
                                cache_file=str(cache / f"{name}.cache"))

    def nop_call() -> Result:
        i = inst(NOP, "nop")
        return benchlib.iterate(lambda: i.exports["nop"](), b)

    def fib() -> Result:
        f = inst(FIB, "fib").exports["fib"]
        assert f(20) == 6765
        return benchlib.iterate(lambda: f(25), Budget(b.warmup_s, b.measure_s * 2,
                                                     min(b.samples, 10), b.max_iterations))

    def many() -> Result:
        f = inst(many_args_wat(), "many").exports["many"]
        args = many_args()
        assert f(*args) == float(sum(range(MANY_ARGS)))
        return benchlib.iterate(lambda: f(*args), b)

    def hostcalls() -> Result:
        def inc(x: int) -> int:
            return x + 1

        def nop() -> None:
            pass
        # ppci types its imports from real annotations, not the strings this file's
        # ``from __future__ import annotations`` makes of them
        inc.__annotations__ = {"x": int, "return": int}
        nop.__annotations__ = {"return": None}

        f = inst(CALLER, "caller", {"env": {"inc": inc, "nop": nop}}).exports["loop_inc"]
        assert f(HOSTCALLS) == HOSTCALLS
        return benchlib.iterate(lambda: f(HOSTCALLS), b)

    attempt("call_nop", nop_call)
    attempt("fib25", fib)
    attempt("many_args", many)
    attempt("hostcall_1000", hostcalls)
    for kind, sizes in (("dense", SMOKE_SIZES if p.smoke else DENSE_SIZES),
                        ("sparse", SMOKE_SIZES if p.smoke else SPARSE_SIZES)):
        for size in sizes:
            data = heap_module(size, kind == "sparse")
            attempt(f"{kind}_{size}", lambda data=data, name=f"{kind}{size}": benchlib.batched(
                lambda: None, lambda _: inst(data, name), budget=b))
    for size in (SMOKE_SIZES if p.smoke else TOUCH_SIZES):
        out.add(f"touch_{size}", "", who,
                "n/a: ppci instances have no teardown of their own (freed by the GC)")


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
