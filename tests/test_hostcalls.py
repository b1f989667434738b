"""Hostcalls: host functions of every signature shape, how their types are given, the Linker's
errors, what a Vmctx offers, and what a host function's exceptions do to its instance."""

from __future__ import annotations

import gc
import struct
import weakref
from typing import Tuple

import pytest

import pylucet
from pylucet import (F32, F64, I32, I64, LinkError, MemoryAccessError, StateError, Terminate,
                     Terminated, Vmctx)
from pylucet.runtime import Linker, MmapRegion, State

from .conftest import instantiate, load_wat


@pytest.fixture(scope="module")
def region():
    with MmapRegion(4) as r:
        yield r


def _relay(params, results, name="f"):
    """A module importing env.f with this type and exporting ``go``, which passes its arguments
    straight to it and returns what it returns."""
    p = " ".join(params)
    r = " ".join(results)
    gets = " ".join(f"(local.get {i})" for i in range(len(params)))
    return f"""(module
      (import "env" "{name}" (func $f (param {p}) (result {r})))
      (func (export "go") (param {p}) (result {r}) (call $f {gets})))"""


def _sample(t, k):
    return {"i32": -(k + 1) * 1000003, "i64": -(k + 1) * (1 << 40) - 7,
            "f32": (k + 1) * 0.5, "f64": -(k + 1) * 1.25e100}[t]


SHAPES = [
    (), ("i32",), ("i64",), ("f32",), ("f64",), ("i32", "i64"), ("f64", "i32", "f32"),
    ("i32",) * 5, ("i64", "f64") * 3, ("i32", "f32", "i64", "f64") * 2,
    ("f64",) * 10, ("i64",) * 10, ("i32", "f64", "i64", "f32", "i32", "f64", "i64", "f32",
                                   "i32", "f64"),
    ("i64",) * 20 + ("f64",) * 12,                  # more than the registers: stack arguments
    ("f32", "i32") * 10,
]


@pytest.mark.parametrize("params", SHAPES, ids=lambda p: ",".join(p) or "none")
def test_arguments_of_every_shape_arrive_in_order(region, params):
    seen = []

    def f(*args):
        seen.append(args)
        return sum(a * (k + 1) for k, a in enumerate(args)) if args else 0.0

    linker = Linker()
    linker.define_func("env", "f", f, type=f"({', '.join(params)}) -> f64")
    args = [_sample(t, k) for k, t in enumerate(params)]
    with instantiate(region, _relay(params, ["f64"]), linker=linker) as inst:
        got = inst.run("go", *args)
    assert seen == [tuple(args)]
    assert all(type(a) is (int if t[0] == "i" else float) for a, t in zip(seen[0], params))
    assert got == sum(a * (k + 1) for k, a in enumerate(args)) if args else got == 0.0


@pytest.mark.parametrize("results", [("i32",), ("i64",), ("f32",), ("f64",),
                                     ("i32", "i64"), ("f64", "f32", "i32", "i64"),
                                     ("i64",) * 7, ("f64", "i32") * 5])
def test_results_of_every_shape(region, results):
    want = tuple(_sample(t, k) for k, t in enumerate(results))
    linker = Linker()
    linker.define_func("env", "f", lambda x: want if len(want) > 1 else want[0],
                       type=f"(i32) -> ({', '.join(results)})")
    with instantiate(region, _relay(["i32"], results), linker=linker) as inst:
        got = inst.run("go", 1)
    assert got == (want if len(want) > 1 else want[0])


def test_no_arguments_no_results(region):
    calls = []
    linker = Linker()
    linker.define_func("env", "f", lambda: calls.append(1), type="() -> ()")
    wat = """(module (import "env" "f" (func $f))
      (func (export "go") (call $f) (call $f)))"""
    with instantiate(region, wat, linker=linker) as inst:
        assert inst.run("go") is None
    assert calls == [1, 1]


def test_i32_sign_handling(region):
    seen = []
    linker = Linker()

    @linker.func("env", "f", "(i32, i32) -> i32")
    def f(a, b):
        seen.append((a, b))
        return 0xFFFFFFFF    # unsigned form of -1 is accepted, as for arguments
    wat = """(module (import "env" "f" (func $f (param i32 i32) (result i32)))
      (func (export "go") (result i64)
        (i64.extend_i32_s (call $f (i32.const -1) (i32.const 0x80000000)))))"""
    with instantiate(region, wat, linker=linker) as inst:
        assert inst.run("go") == -1
    assert seen == [(-1, -0x80000000)]


def test_i32_results_out_of_range_terminate(region):
    linker = Linker()
    linker.define_func("env", "f", lambda a, b: 1 << 32, type="(i32, i32) -> i32")
    with instantiate(region, _relay(["i32", "i32"], ["i32"]), linker=linker) as inst:
        with pytest.raises(Terminated, match="env.f"):
            inst.run("go", 1, 2)


def test_f32_nan_payload_bits(region):
    """A quiet NaN with a payload survives host → guest and guest → host as f32."""
    seen = []
    qnan = struct.unpack("<f", struct.pack("<I", 0x7FC12345))[0]
    linker = Linker()

    @linker.func("env", "f", "(f32) -> f32")
    def f(x):
        seen.append(struct.unpack("<I", struct.pack("<f", x))[0])
        return qnan
    wat = """(module (import "env" "f" (func $f (param f32) (result f32)))
      (func (export "go") (result i32)
        (i32.reinterpret_f32 (call $f (f32.reinterpret_i32 (i32.const 0x7fc54321))))))"""
    with instantiate(region, wat, linker=linker) as inst:
        assert inst.run("go") & 0xFFFFFFFF == 0x7FC12345
    assert seen == [0x7FC54321]


# --- where types come from ------------------------------------------------------------------

def test_types_from_annotations(region):
    linker = Linker()

    def f(a: I32, b: I64, c: F32, d: F64) -> Tuple[I64, F64]:
        return a + b, c + d

    def g(vmctx: Vmctx, x: I32) -> None:
        vmctx.write(0, x.to_bytes(4, "little", signed=True))

    def h(x: float) -> I32:
        return int(x)
    assert linker.define_func("env", "f", f).type == pylucet.runtime.linker.parse_functype(
        "(i32, i64, f32, f64) -> (i64, f64)")
    g_def = linker.define_func("env", "g", g)
    assert g_def.access_vmctx and str(g_def.type) == str(
        pylucet.runtime.linker.parse_functype("(i32) -> ()"))
    linker.define_func("env", "h", h)
    wat = """(module
      (import "env" "f" (func $f (param i32 i64 f32 f64) (result i64 f64)))
      (import "env" "g" (func $g (param i32)))
      (import "env" "h" (func $h (param f64) (result i32)))
      (memory 1)
      (func (export "f") (param i32 i64 f32 f64) (result i64 f64)
        (call $f (local.get 0) (local.get 1) (local.get 2) (local.get 3)))
      (func (export "g") (param i32) (result i32) (call $g (local.get 0)) (i32.load (i32.const 0)))
      (func (export "h") (param f64) (result i32) (call $h (local.get 0))))"""
    with instantiate(region, wat, linker=linker) as inst:
        assert inst.run("f", 1, 2, 0.5, 0.25) == (3, 0.75)
        assert inst.run("g", -77) == -77
        assert inst.run("h", 9.75) == 9


def test_a_missing_return_annotation_is_refused():
    def f(x: I32):
        return x
    with pytest.raises(TypeError, match="no return annotation"):
        Linker().define_func("env", "f", f)


def test_bare_int_is_refused():
    def f(x: int) -> I32:
        return x

    def g(x: I32) -> int:
        return x
    for fn in (f, g):
        with pytest.raises(TypeError, match="i32 or i64"):
            Linker().define_func("env", "f", fn)


def test_unannotated_parameter_is_refused():
    def f(x) -> None:
        pass
    with pytest.raises(TypeError, match="'x' has no annotation"):
        Linker().define_func("env", "f", f)


@pytest.mark.parametrize("text", ["i32 -> i32", "(i33) -> ()", "(i32) ->", "(v128) -> ()"])
def test_bad_type_strings(text):
    with pytest.raises(ValueError):
        Linker().define_func("env", "f", lambda *a: None, type=text)


def test_type_must_be_functype_or_str():
    with pytest.raises(TypeError):
        Linker().define_func("env", "f", lambda: None, type=42)
    with pytest.raises(TypeError):
        Linker().define_func("env", "f", 42, type="() -> ()")


def test_defining_twice_needs_allow_shadowing(region):
    linker = Linker()
    linker.define_func("env", "f", lambda: 1, type="() -> i32")
    with pytest.raises(LinkError, match="already defined"):
        linker.define_func("env", "f", lambda: 2, type="() -> i32")
    linker.allow_shadowing = True
    linker.define_func("env", "f", lambda: 3, type="() -> i32")
    with instantiate(region, _relay([], ["i32"]), linker=linker) as inst:
        assert inst.run("go") == 3


def test_missing_imports_are_all_named(region):
    wat = """(module
      (import "env" "a" (func (param i32)))
      (import "env" "b" (func (result i64)))
      (import "wasi" "c" (func))
      (import "env" "d" (func (param f32) (result f32))))"""
    linker = Linker()
    linker.define_func("env", "b", lambda: 0, type="() -> i64")
    linker.define_func("env", "d", lambda x: x, type="(f64) -> f64")
    module = load_wat(wat)
    free = len(region._free)
    with pytest.raises(LinkError) as info:
        region.new_instance(module, linker=linker)
    message = str(info.value)
    assert "env.a" in message and "wasi.c" in message and "env.b" not in message
    assert len(info.value.problems) == 3
    # the mismatch names both types
    d_problem = [p for p in info.value.problems if "env.d" in p][0]
    parse = pylucet.runtime.linker.parse_functype
    assert (f"imports it as {parse('(f32) -> f32')}, but it is defined as "
            f"{parse('(f64) -> f64')}") in d_problem
    assert len(region._free) == free    # no slot taken
    with pytest.raises(LinkError, match="env.a"):
        region.new_instance(module)     # no linker at all


# --- the Vmctx ------------------------------------------------------------------------------

VMCTX_WAT = """(module
  (import "env" "call" (func $call (param i32 i32) (result i32)))
  (memory (export "memory") 1 4)
  (func (export "go") (param i32 i32) (result i32) (call $call (local.get 0) (local.get 1)))
  (func (export "size") (result i32) (memory.size))
  (func (export "peek") (param i32) (result i32) (i32.load8_u (local.get 0))))"""


def _vmctx_instance(region, body, ctx=None):
    linker = Linker()
    linker.define_func("env", "call", body, type="(i32, i32) -> i32", access_vmctx=True)
    return instantiate(region, VMCTX_WAT, linker=linker, ctx=ctx)


def test_vmctx_read_write_read_str(region):
    def body(vmctx, ptr, n):
        assert vmctx.read_str(ptr, n) == "héllo"
        vmctx.write(ptr + n, b"!!")
        assert vmctx.read(ptr, n + 2) == "héllo!!".encode()
        return n
    with _vmctx_instance(region, body) as inst:
        data = "héllo".encode()
        inst.heap[100:100 + len(data)] = data
        assert inst.run("go", 100, len(data)) == len(data)
        assert bytes(inst.heap[100 + len(data):102 + len(data)]) == b"!!"


@pytest.mark.parametrize("ptr, n", [(65536, 1), (65535, 2), (-1, 1), (0, 65537), (0, -1),
                                    (1 << 32, 0)])
def test_vmctx_bounds_are_checked(region, ptr, n):
    errors = []

    def body(vmctx, _p, _n):
        for attempt in (lambda: vmctx.read(ptr, n), lambda: vmctx.read_str(ptr, n),
                        lambda: vmctx.write(ptr, b"x" * max(n, 0))):
            try:
                attempt()
            except MemoryAccessError as e:
                errors.append(e)
        return 0
    with _vmctx_instance(region, body) as inst:
        assert inst.run("go", 0, 0) == 0
    assert len(errors) == (3 if n >= 0 else 2)   # (a negative length writes b"")
    assert all(isinstance(e, pylucet.Error) for e in errors)


def test_vmctx_memory_view_is_the_heap(region):
    def body(vmctx, ptr, n):
        mem = vmctx.memory
        assert len(mem) == 65536
        mem[ptr] = n
        return mem[ptr + 1]
    with _vmctx_instance(region, body) as inst:
        inst.heap[11] = 42
        assert inst.run("go", 10, 7) == 42
        assert inst.run("peek", 10) == 7


def test_grow_memory_from_a_hostcall(region):
    def body(vmctx, pages, _):
        old = vmctx.grow_memory(pages)
        assert len(vmctx.memory) == (old + pages) * 65536
        vmctx.write(vmctx.memory_size - 1, b"\x5a")
        return old
    with _vmctx_instance(region, body) as inst:
        assert inst.run("go", 2, 0) == 1
        assert inst.run("size") == 3
        assert inst.run("peek", 3 * 65536 - 1) == 0x5A
        with pytest.raises(Terminated) as info:   # past the maximum of 4
            inst.run("go", 5, 0)
        assert isinstance(info.value.__cause__, pylucet.LimitsExceeded)


def test_vmctx_ctx_and_instance(region):
    seen = []
    embed = object()

    def body(vmctx, a, b):
        seen.append((vmctx.ctx, vmctx.instance))
        return 0
    with _vmctx_instance(region, body, ctx=embed) as inst:
        inst.run("go", 0, 0)
        assert seen == [(embed, inst)]
        assert inst.ctx is embed


# --- errors ---------------------------------------------------------------------------------

def test_terminate_carries_details(region):
    details = {"exit": 3}

    def body(vmctx, a, b):
        raise Terminate(details)
    with _vmctx_instance(region, body) as inst:
        with pytest.raises(Terminated) as info:
            inst.run("go", 0, 0)
        assert info.value.details is details
        assert inst.state == State.TERMINATED


def test_vmctx_terminate(region):
    with _vmctx_instance(region, lambda vmctx, a, b: vmctx.terminate(a)) as inst:
        with pytest.raises(Terminated) as info:
            inst.run("go", 17, 0)
        assert info.value.details == 17


def test_other_exceptions_terminate_with_the_cause_and_print_nothing(region, capfd):
    class Oops(Exception):
        pass

    def body(vmctx, a, b):
        raise Oops("deep inside")
    with _vmctx_instance(region, body) as inst:
        with pytest.raises(Terminated) as info:
            inst.run("go", 0, 0)
        cause = info.value.__cause__
        assert isinstance(cause, Oops) and str(cause) == "deep inside"
        assert cause.__traceback__ is not None
        assert "Oops" in str(info.value)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


@pytest.mark.parametrize("ftype, value, match", [
    ("(i32, i32) -> i32", "text", "str"),
    ("(i32, i32) -> i32", 1.5, "float"),
    ("(i32, i32) -> i32", None, "None"),
    ("(i32, i32) -> ()", 5, "no results"),
    ("(i32, i32) -> (i32, i32)", 5, "2 results"),
    ("(i32, i32) -> (i32, i32)", (1, 2, 3), "2 results"),
    ("(i32, i32) -> i32", (1, 2), "1 result"),
    ("(i32, i32) -> f64", "1.0", "str"),
])
def test_wrong_results_terminate_with_a_clear_message(region, ftype, value, match):
    wat = _relay(["i32", "i32"], pylucet.runtime.linker.parse_functype(ftype).results and
                 [t.text for t in pylucet.runtime.linker.parse_functype(ftype).results] or [])
    linker = Linker()
    linker.define_func("env", "f", lambda a, b: value, type=ftype)
    with instantiate(region, wat, linker=linker) as inst:
        with pytest.raises(Terminated, match=match) as info:
            inst.run("go", 1, 2)
        assert "env.f" in str(info.value)


def test_terminated_instance_refuses_to_run_until_reset(region):
    calls = []

    def body(vmctx, a, b):
        calls.append(a)
        if a:
            raise Terminate("stop")
        return 5
    with _vmctx_instance(region, body) as inst:
        inst.heap[0] = 9
        with pytest.raises(Terminated):
            inst.run("go", 1, 0)
        with pytest.raises(StateError, match="terminated"):
            inst.run("go", 0, 0)
        with pytest.raises(StateError):
            inst.run("size")
        inst.reset()
        assert inst.heap[0] == 0
        assert inst.run("go", 0, 0) == 5
    assert calls == [1, 0]


def test_hostcall_calls_another_instance(region):
    callee = instantiate(region, """(module
      (func (export "sq") (param i64) (result i64) (i64.mul (local.get 0) (local.get 0))))""")
    linker = Linker()
    linker.define_func("env", "f", lambda x: callee.run("sq", x) + 1, type="(i64) -> i64")
    with callee, instantiate(region, _relay(["i64"], ["i64"]), linker=linker) as inst:
        assert inst.run("go", 12) == 145
        assert callee.state == State.READY


def test_hostcall_calling_its_own_instance_is_a_state_error(region):
    def body(vmctx, a, b):
        return vmctx.instance.run("size")
    with _vmctx_instance(region, body) as inst:
        with pytest.raises(Terminated) as info:
            inst.run("go", 0, 0)
        assert isinstance(info.value.__cause__, StateError)
        assert "re-entered" in str(info.value.__cause__)
        inst.reset()
        assert inst.run("size") == 1


def test_host_function_catching_a_trap_of_another_instance(region):
    callee = instantiate(region, """(module
      (func (export "div") (param i32 i32) (result i32)
        (i32.div_s (local.get 0) (local.get 1))))""")
    linker = Linker()

    @linker.func("env", "f", "(i32, i32) -> i32")
    def f(a, b):
        try:
            return callee.run("div", a, b)
        except pylucet.Trap as trap:
            assert trap.code == pylucet.TrapCode.IntegerDivByZero
            return -99
    with callee, instantiate(region, _relay(["i32", "i32"], ["i32"]), linker=linker) as inst:
        assert inst.run("go", 7, 0) == -99
        assert inst.run("go", 7, 2) == 3
        assert callee.run("div", 9, 3) == 3


def test_a_trap_after_a_hostcall_returned(region):
    linker = Linker()
    linker.define_func("env", "f", lambda x: x, type="(i32) -> i32")
    wat = """(module (import "env" "f" (func $f (param i32) (result i32)))
      (func (export "go") (param i32) (result i32)
        (i32.div_u (i32.const 100) (call $f (local.get 0)))))"""
    with instantiate(region, wat, linker=linker) as inst:
        with pytest.raises(pylucet.Trap) as info:
            inst.run("go", 0)
        assert info.value.code == pylucet.TrapCode.IntegerDivByZero
        assert inst.state == State.READY
        assert inst.run("go", 4) == 25


def test_recursion_guest_host_other_instance_host(region):
    """insts[5].go(5) → host → insts[4].go(4) → host → ... → insts[0].go(0) → host: one
    module, six instances, each busy in its own call while the next one runs."""
    depth = []
    insts = []
    linker = Linker()

    @linker.func("env", "f", "(i32) -> i32")
    def f(n):
        depth.append(n)
        if n == 0:
            return 0
        return insts[n - 1].run("go", n - 1) + n
    wat = _relay(["i32"], ["i32"])
    module = load_wat(wat)
    with MmapRegion(6) as r:
        insts.extend(r.new_instance(module, linker=linker) for _ in range(6))
        assert insts[5].run("go", 5) == 15
        assert depth == [5, 4, 3, 2, 1, 0]
        assert all(i.state == State.READY for i in insts)


def test_keyboard_interrupt_in_a_host_function_propagates(region):
    """Ctrl-C while a host function runs is not a hostcall error: it reaches the caller as
    itself, and the instance, which cannot continue, is TERMINATED until reset."""
    def body(vmctx, a, b):
        raise KeyboardInterrupt
    with _vmctx_instance(region, body) as inst:
        with pytest.raises(KeyboardInterrupt):
            inst.run("go", 0, 0)
        assert inst.state == State.TERMINATED
        inst.reset()
        assert inst.run("size") == 1


def test_stack_arguments_and_a_return_area_together(region):
    params = ("i64",) * 20 + ("f64",) * 12
    results = ("i64", "f64", "i32")
    seen = []

    def f(*args):
        seen.append(args)
        return sum(args[:20]), sum(args[20:]), len(args)
    linker = Linker()
    linker.define_func("env", "f", f, type=f"({', '.join(params)}) -> ({', '.join(results)})")
    args = [_sample(t, k) for k, t in enumerate(params)]
    with instantiate(region, _relay(params, results), linker=linker) as inst:
        assert inst.run("go", *args) == (sum(args[:20]), sum(args[20:]), 32)
    assert seen == [tuple(args)]


@pytest.mark.parametrize("action", ["close", "reset"])
def test_closing_or_resetting_the_calling_instance_is_refused(region, action):
    def body(vmctx, a, b):
        getattr(vmctx.instance, action)()
        return 0
    with _vmctx_instance(region, body) as inst:
        with pytest.raises(Terminated) as info:
            inst.run("go", 0, 0)
        assert isinstance(info.value.__cause__, StateError)
        assert inst.state == State.TERMINATED
        inst.reset()
        assert inst.run("size") == 1


def test_a_vmctx_kept_after_close_refuses_cleanly(region):
    kept = []
    with _vmctx_instance(region, lambda vmctx, a, b: kept.append(vmctx) or 0) as inst:
        inst.run("go", 0, 0)
    with pytest.raises(ValueError):
        kept[0].read(0, 4)
    with pytest.raises(ValueError):
        kept[0].memory


def test_a_linker_and_its_host_functions_are_not_kept_alive_by_the_module(region):
    """One linker per request is a common pattern: the module must not keep every linker
    (and whatever its host functions hold) it was ever instantiated with."""
    class Payload(bytearray):
        pass
    module = load_wat(_relay(["i32"], ["i32"]))
    refs = []
    for k in range(20):
        payload = Payload(1 << 16)
        linker = Linker()
        linker.define_func("env", "f", lambda x, p=payload: x + len(p), type="(i32) -> i32")
        with region.new_instance(module, linker=linker) as inst:
            assert inst.run("go", k) == k + (1 << 16)
        refs.append(weakref.ref(payload))
        del linker, payload, inst
    gc.collect()
    assert sum(r() is not None for r in refs) == 0


def test_a_redefinition_is_seen_by_the_next_instantiation(region):
    module = load_wat(_relay(["i32"], ["i32"]))
    linker = Linker()
    linker.allow_shadowing = True
    linker.define_func("env", "f", lambda x: x + 1, type="(i32) -> i32")
    with region.new_instance(module, linker=linker) as inst:
        assert inst.run("go", 1) == 2
        linker.define_func("env", "f", lambda x: x + 2, type="(i32) -> i32")
        assert inst.run("go", 1) == 2            # an instance keeps what it was linked with
    with region.new_instance(module, linker=linker) as inst:
        assert inst.run("go", 1) == 3


def test_i32_arguments_ignore_the_upper_register_bits(region):
    """An i32 the guest made by wrapping an i64 may leave the upper half of its register or
    stack slot set; the host must see only the low 32 bits, in registers and on the stack."""
    seen = []
    n = 12                                   # 6 in registers, 6 on the stack
    linker = Linker()
    linker.define_func("env", "f", lambda *a: seen.append(a),
                       type=f"({', '.join(['i32'] * n)}) -> ()")
    args = " ".join(f"(i32.wrap_i64 (i64.add (local.get 0) (i64.const {k})))" for k in range(n))
    wat = f"""(module (import "env" "f" (func $f (param {' '.join(['i32'] * n)})))
      (func (export "go") (param i64) (call $f {args})))"""
    with instantiate(region, wat, linker=linker) as inst:
        inst.run("go", 0x12345678_7FFFFFFE)
    assert seen == [tuple(((0x7FFFFFFE + k + 2**31) % 2**32) - 2**31 for k in range(n))]


def test_negative_i32_results_reach_the_guest_zero_extended(region):
    linker = Linker()
    linker.define_func("env", "f", lambda x: -1, type="(i32) -> i32")
    linker.define_func("env", "g", lambda x: (-2, -3), type="(i32) -> (i32, i32)")
    wat = """(module
      (import "env" "f" (func $f (param i32) (result i32)))
      (import "env" "g" (func $g (param i32) (result i32 i32)))
      (func (export "one") (result i64) (i64.extend_i32_u (call $f (i32.const 0))))
      (func (export "two") (result i64) (local $b i32)
        (call $g (i32.const 0)) (local.set $b)
        (i64.extend_i32_u)
        (i64.add (i64.shl (i64.extend_i32_u (local.get $b)) (i64.const 32))))
      (func (export "addr") (result i32) (i32.load8_u (call $f (i32.const 0))))
      (memory 1))"""
    with instantiate(region, wat, linker=linker) as inst:
        assert inst.run("one") == 0xFFFFFFFF
        assert inst.run("two") == (0xFFFFFFFD << 32) + 0xFFFFFFFE - (1 << 64)
        with pytest.raises(pylucet.Trap) as info:    # address 0xffffffff: out of bounds, in
            inst.run("addr")                         # the guard, not 4 GiB below the heap
        assert info.value.code == pylucet.TrapCode.HeapOutOfBounds


def test_the_host_sees_memory_the_guest_grew(region):
    sizes = []

    def body(vmctx, ptr, n):
        sizes.append(len(vmctx.memory))
        vmctx.write(ptr, b"\x07")
        return vmctx.memory[ptr]
    wat = """(module
      (import "env" "call" (func $call (param i32 i32) (result i32)))
      (memory 1 4)
      (func (export "grow_then_call") (result i32)
        (drop (memory.grow (i32.const 2)))
        (call $call (i32.const 196607) (i32.const 0))))"""
    linker = Linker()
    linker.define_func("env", "call", body, type="(i32, i32) -> i32", access_vmctx=True)
    with instantiate(region, wat, linker=linker) as inst:
        assert inst.run("grow_then_call") == 7
        assert sizes == [3 * 65536]
        inst.reset()
        assert inst.memory_pages == 1


def test_a_base_exception_from_a_host_function_terminates(region):
    class Custom(BaseException):
        pass

    def body(vmctx, a, b):
        raise Custom()
    with _vmctx_instance(region, body) as inst:
        with pytest.raises(Custom):
            inst.run("go", 0, 0)
        assert inst.state == State.TERMINATED
        inst.reset()
        assert inst.run("size") == 1
