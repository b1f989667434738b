"""The peers of tools/bench.py: the same lifecycle work in wasmtime-py and in ppci's native
wasm target, recorded into the same :class:`benchlib.Results` beside pylucet's figures.

``p`` is tools/bench.py's ``Pylucet`` measurer: its budget, work directory, smoke flag and
whether the real hello is present."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Union

import benchlib
from benchlib import Budget, Result, Results
from bench_hostcall import CALLER
from _workloads import (DENSE_SIZES, FIB, HELLO_STANDIN, HOSTCALLS, MANY_ARGS, MiB, NOP,
                        SMOKE_SIZES, SPARSE_SIZES, TOUCH, TOUCH_SIZES, TRAPS, heap_module,
                        many_args, many_args_wat, trapping)

HELLO_WASM = Path(__file__).resolve().parent.parent / "examples" / "hello.wasm"


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


def measure_wasmtime(out: Results, p: Any) -> None:
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

def measure_ppci(out: Results, p: Any) -> None:
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
