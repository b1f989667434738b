"""Instance: calls with every value type, traps and recovery, heap, memory growth, globals.

Guest functions are hand-written x86-64 (guest ABI: SysV with r14 = vmctx) assembled by keystone,
with module data built by hand (``pylucet.runtime.testing.mock_module``), so these tests need no
compiler.
"""

from __future__ import annotations

import ctypes
import math
import threading
import time

import pytest

from pylucet import FatalFault, LimitsExceeded, LoadError, Trap, TrapCode
from pylucet.module.abi import (FUNCREF, FUNCREF_SIZE, TABLE_DESC, TABLE_ENTRY_SIZE, VMCTX_GLOBALS,
                                VMCTX_MEMORY_SIZE, VMCTX_STACK_LIMIT, VMCTX_TABLES,
                                WASM_PAGE_SIZE, Libcall,
                                vmctx_libcall)
from pylucet.module.spec import ElemSpec, GlobalSpec, HeapSpec, TableSpec
from pylucet.wasm.types import SegmentMode
from pylucet.runtime import Limits, MmapRegion, State, UnknownExport, load
from pylucet.runtime.testing import MockFunction, mock_module
from pylucet.wasm.types import ValType

I32, I64, F32, F64 = ValType.I32, ValType.I64, ValType.F32, ValType.F64

FUNCS = [
    MockFunction("nop", "ret"),
    MockFunction("add", "lea eax, [rdi + rsi]\nret", (I32, I32), (I32,)),
    MockFunction("add64", "lea rax, [rdi + rsi]\nret", (I64, I64), (I64,)),
    MockFunction("fadd", "addsd xmm0, xmm1\nret", (F64, F64), (F64,)),
    MockFunction("fmul32", "mulss xmm0, xmm1\nret", (F32, F32), (F32,)),
    # 8 integer arguments: six in registers, two on the stack above the return address
    MockFunction("sum8", """
        lea rax, [rdi + rsi]
        add rax, rdx
        add rax, rcx
        add rax, r8
        add rax, r9
        add rax, [rsp + 8]
        add rax, [rsp + 16]
        ret""", (I64,) * 8, (I64,)),
    # interleaved types: the 7th integer, then the 9th and 10th floats go to the stack, in
    # parameter order; returns the first two stack arguments' sum
    MockFunction("overflow", """
        cvtsi2sd xmm0, qword ptr [rsp + 8]
        addsd xmm0, qword ptr [rsp + 16]
        ret""", (F64, I64) * 6 + (I64, F64, F64, F64, F64), (F64,)),
    MockFunction("load", "mov edi, edi\noob: mov eax, [r14 + rdi]\nret", (I32,), (I32,),
                 traps={"oob": TrapCode.HeapOutOfBounds}),
    MockFunction("boom", "nop\nhere: ud2", traps={"here": TrapCode.Unreachable}),
    MockFunction("div", "mov eax, edi\ncdq\nsite: idiv esi\nret", (I32, I32), (I32,),
                 traps={"site": TrapCode.IntegerDivByZero}),
    MockFunction("unexplained", "ud2"),
    # a "heap" access through a raw pointer: a trap site, but the address is not in the heap
    MockFunction("wild_load", "site: mov eax, [rdi]\nret", (I64,), (I32,),
                 traps={"site": TrapCode.HeapOutOfBounds}),
    # recursion guarded as compiled code does it: the prologue compares rsp with the limit
    MockFunction("deep", f"""
    deep:
        cmp rsp, [r14 + ({VMCTX_STACK_LIMIT})]
        jb overflow
        sub rsp, 8
        call deep
    overflow:
        ud2""", traps={"overflow": TrapCode.StackOverflow}),
    # unguarded recursion runs into the guard page below the stack
    MockFunction("runaway", "again: call again"),
    MockFunction("memsize", f"mov rax, [r14 + ({VMCTX_MEMORY_SIZE})]\nret", (), (I64,)),
    MockFunction("grow", f"""
        push rbx
        call qword ptr [r14 + ({vmctx_libcall(Libcall.MEMORY_GROW)})]
        pop rbx
        ret""", (I32,), (I32,)),
    MockFunction("get_g1", f"mov rax, [r14 + ({VMCTX_GLOBALS})]\nmov rax, [rax + 8]\nret",
                 (), (I64,)),
    # call table 0 entry i if i < length, else return -1
    MockFunction("call_slot", f"""
        mov rax, [r14 + ({VMCTX_TABLES})]
        mov rax, [rax]
        mov edi, edi
        cmp rdi, [rax + {TABLE_DESC['length']}]
        jae out
        mov rax, [rax + {TABLE_DESC['base']}]
        mov rax, [rax + rdi * {TABLE_ENTRY_SIZE}]
        test rax, rax
        jz out
        push rbx
        call qword ptr [rax + {FUNCREF['target']}]
        pop rbx
        ret
    out:
        mov eax, -1
        ret""", (I32,), (I32,)),
    MockFunction("seven", "mov eax, 7\nret", (), (I32,), export=False),
    # spin until heap byte 0 is set (for some seconds at most, so nothing can hang the test)
    MockFunction("spin", """
        mov rcx, 0x200000000
    again:
        cmp byte ptr [r14], 0
        jne done
        dec rcx
        jnz again
    done:
        xor eax, eax
        ret""", (), (I32,)),
]
GLOBALS = [
    GlobalSpec(I32, True, 0xFFFF_FFFF, 0),        # -1
    GlobalSpec(I64, True, 1234, 8),
    GlobalSpec(F64, False, 0x4009_21FB_5444_2D18, 16),   # pi
    GlobalSpec(F32, True, 0x3FC0_0000, 24),       # 1.5
]
SEVEN = [f.name for f in FUNCS].index("seven")


@pytest.fixture(scope="module")
def module():
    return mock_module(FUNCS, name="guest", globals=GLOBALS,
                       exported_globals={"counter": 1, "pi": 2},
                       heap=HeapSpec(WASM_PAGE_SIZE, 4 * WASM_PAGE_SIZE, 4 << 30, 4 << 30),
                       tables=[TableSpec(ValType.FUNCREF, 3, None)],
                       elems=[ElemSpec(SegmentMode.ACTIVE, ValType.FUNCREF, (None, SEVEN), 0, 0)],
                       sparse_data={1: b"\x2a" * 16})


@pytest.fixture
def inst(module):
    with MmapRegion(1) as region:
        with region.new_instance(module) as inst:
            yield inst


# --- calls ---------------------------------------------------------------------------------------

def test_typed_results(inst):
    assert inst.run("nop") is None
    assert inst.run("add", 2, 40) == 42
    assert inst.run("add", 0x7FFF_FFFF, 1) == -2**31          # i32 wraps, comes back signed
    assert inst.run("add", 0xFFFF_FFFF, 0) == -1               # unsigned input accepted
    assert inst.run("add64", 2**63 - 1, 1) == -2**63
    assert inst.run("add64", -5, 3) == -2
    assert inst.run("fadd", 0.5, 2) == 2.5
    assert inst.run("fmul32", 1.5, 3.0) == 4.5
    assert math.isnan(inst.run("fadd", math.inf, -math.inf))
    assert inst.run("sum8", *range(1, 9)) == 36
    args = [0.0, 0] * 6 + [-7, 1.0, 1.0, 0.75, 0.25]          # stack: -7, 0.75, 0.25
    assert inst.run("overflow", *args) == -6.25
    assert inst.run_func_index(1, 1, 2) == 3


def test_argument_errors(inst):
    with pytest.raises(TypeError, match=r"add\(\) takes 2 arguments"):
        inst.run("add", 1)
    with pytest.raises(TypeError, match="argument 1: i32 needs an int"):
        inst.run("add", 1, 2.0)
    with pytest.raises(TypeError, match="f64 needs a float"):
        inst.run("fadd", "1", 2)
    with pytest.raises(OverflowError, match="out of range for i32"):
        inst.run("add", 2**32, 0)
    with pytest.raises(OverflowError):
        inst.run("add", -2**31 - 1, 0)
    with pytest.raises(OverflowError):
        inst.run("add64", 2**64, 0)
    with pytest.raises(UnknownExport, match="exported functions: nop, add") as info:
        inst.run("nope")
    assert isinstance(info.value, LookupError) and "seven" not in info.value.available
    assert inst.run("add", 1, 2) == 3                          # nothing stuck after the errors


# --- traps ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("func,args,code", [
    ("load", (0xFFFF_FFFF,), TrapCode.HeapOutOfBounds),
    ("load", (WASM_PAGE_SIZE - 3,), TrapCode.HeapOutOfBounds),
    ("boom", (), TrapCode.Unreachable),
    ("div", (1, 0), TrapCode.IntegerDivByZero),
])
def test_trap_and_recovery(inst, func, args, code):
    with pytest.raises(Trap) as info:
        inst.run(func, *args)
    trap = info.value
    assert trap.code == code and trap.func == func
    assert trap.wasm_offset is not None and trap.code_offset is not None
    assert inst.state == State.READY
    assert inst.run("add", 1, 2) == 3
    assert inst.run("load", 0x1000) == 0x2A2A2A2A               # sparse data page 1


@pytest.mark.parametrize("func", ["deep", "runaway"])
def test_stack_overflow(inst, func):
    with pytest.raises(Trap) as info:
        inst.run(func)
    assert info.value.code == TrapCode.StackOverflow and info.value.func == func
    assert inst.run("sum8", *range(8)) == 28                  # a fresh stack for the next call


def test_heap_fault_address(inst):
    with pytest.raises(Trap) as info:
        inst.run("load", 0x12345678)
    assert info.value.fault_address == inst._slot.vmctx + 0x12345678


@pytest.mark.parametrize("func,args", [("unexplained", ()), ("wild_load", (8,))])
def test_unexplained_fault_poisons(module, func, args):
    with MmapRegion(1) as region:
        inst = region.new_instance(module)
        with pytest.raises(FatalFault, match=func):
            inst.run(func, *args)
        assert inst.state == State.FAULTED
        with pytest.raises(FatalFault, match="poisoned"):
            inst.run("add", 1, 2)
        inst.close()
        with region.new_instance(module) as fresh:              # the slot is fine
            assert fresh.run("add", 1, 2) == 3


# --- memory --------------------------------------------------------------------------------------

def test_heap_view(inst):
    heap = inst.heap
    assert len(heap) == WASM_PAGE_SIZE == inst.memory_size and inst.memory_pages == 1
    assert heap[0x1000:0x1010] == b"\x2a" * 16
    heap[100:104] = (0x01020304).to_bytes(4, "little")
    assert inst.run("load", 100) == 0x01020304


def test_grow_memory(inst):
    assert inst.memory_max == 4 * WASM_PAGE_SIZE
    assert inst.grow_memory(0) == 1
    assert inst.grow_memory(1) == 1
    assert inst.memory_pages == 2 and inst.run("memsize") == 2 * WASM_PAGE_SIZE
    inst.heap[WASM_PAGE_SIZE + 8] = 9                          # the new page is writable
    assert inst.run("load", WASM_PAGE_SIZE + 8) == 9
    with pytest.raises(LimitsExceeded, match="maximum is 4 pages"):
        inst.grow_memory(3)
    with pytest.raises(ValueError):
        inst.grow_memory(-1)
    assert inst.memory_pages == 2


def test_grow_memory_from_guest(inst):
    assert inst.run("grow", 2) == 1
    assert inst.memory_pages == 3 and len(inst.heap) == 3 * WASM_PAGE_SIZE
    assert inst.run("load", 3 * WASM_PAGE_SIZE - 4) == 0
    assert inst.run("grow", 2) == -1                           # past the module's maximum
    assert inst.memory_pages == 3


def test_memory_max_respects_limits(module):
    limits = Limits(heap_memory_size=2 * WASM_PAGE_SIZE)
    with MmapRegion(1, limits) as region, region.new_instance(module) as inst:
        assert inst.memory_max == 2 * WASM_PAGE_SIZE
        assert inst.run("grow", 1) == 1 and inst.run("grow", 1) == -1


# --- globals and tables --------------------------------------------------------------------------

def test_globals(inst):
    g = inst.globals
    assert len(g) == 4
    assert g[0] == -1 and g["counter"] == 1234 and g[1] == 1234
    assert g["pi"] == math.pi and g[3] == 1.5
    g["counter"] = -2
    assert inst.run("get_g1") == -2
    g[0] = 0xFFFF_FFFE
    assert g[0] == -2
    g[3] = 0.25
    assert g[3] == 0.25
    with pytest.raises(ValueError, match="immutable"):
        g["pi"] = 3.0
    with pytest.raises(KeyError, match="counter, pi"):
        g["nope"]
    with pytest.raises(IndexError):
        g[4]
    with pytest.raises(OverflowError):
        g[1] = 2**64
    assert "counter: i64 = -2" in repr(g)


def test_table(inst, module):
    assert inst.run("call_slot", 1) == 7                      # the element segment's function
    assert inst.run("call_slot", 0) == -1                     # null entry
    assert inst.run("call_slot", 3) == -1                     # past the table's length
    tables = ctypes.c_uint64.from_address(inst._slot.vmctx + VMCTX_TABLES).value
    desc = ctypes.c_uint64.from_address(tables).value
    base = ctypes.c_uint64.from_address(desc + TABLE_DESC["base"]).value
    entries = (ctypes.c_uint64 * 3).from_address(base)
    record = inst._record_address(SEVEN)
    assert list(entries) == [0, record, 0]
    words = (ctypes.c_uint64 * (FUNCREF_SIZE // 8)).from_address(record)
    assert words[FUNCREF["target"] // 8] == module.function_address(SEVEN)
    assert words[FUNCREF["vmctx"] // 8] == inst._slot.vmctx
    assert inst.tables[0][1] == inst.exports.get("seven", inst.tables[0][1])
    assert inst.tables[0][1].index == SEVEN and inst.tables[0][0] is None


# --- lifecycle -----------------------------------------------------------------------------------

def test_repr_and_close(module):
    region = MmapRegion(2)
    inst = region.new_instance(module)
    assert repr(inst) == "<Instance of 'guest' in slot 0, heap 1 pages, ready>"
    assert "1/2 slots used" in repr(region)
    inst.close()
    inst.close()                                              # idempotent
    assert repr(inst) == "<Instance of 'guest' in slot 0, closed>"
    with pytest.raises(ValueError, match="closed"):
        inst.run("nop")
    with pytest.raises(ValueError, match="closed"):
        inst.heap
    assert region.free_slots == 2
    region.close()
    assert "closed" in repr(region)


def test_garbage_collected_instance_frees_its_slot(module):
    with MmapRegion(1) as region:
        region.new_instance(module)                           # dropped at once
        with region.new_instance(module) as inst:
            assert inst.run("add", 1, 1) == 2


def test_run_cannot_be_reentered(module):
    with MmapRegion(1) as region, region.new_instance(module) as inst:
        result = []
        worker = threading.Thread(target=lambda: result.append(inst.run("spin")))
        worker.start()
        try:
            deadline = time.monotonic() + 10
            while inst.state != State.RUNNING and time.monotonic() < deadline:
                time.sleep(0.001)
            assert inst.state == State.RUNNING, "the guest never started (or the stub kept the GIL)"
            with pytest.raises(RuntimeError, match=r"is running: run\(\) cannot be re-entered"):
                inst.run("nop")
            with pytest.raises(RuntimeError, match="while it runs"):
                inst.close()
            with pytest.raises(RuntimeError, match="is running"):
                region.close()
        finally:
            inst.heap[0] = 1                                  # let the guest return
            worker.join()
        assert result == [0] and inst.state == State.READY


def test_module_without_memory():
    module = mock_module([MockFunction("add", "lea eax, [rdi + rsi]\nret", (I32, I32), (I32,))],
                         heap=None)
    with MmapRegion(1) as region, region.new_instance(module) as inst:
        assert inst.memory_size == 0 and len(inst.heap) == 0 and inst.memory_max == 0
        with pytest.raises(LimitsExceeded):
            inst.grow_memory(1)
        assert inst.run("add", 2, 3) == 5


def test_instances_run_and_trap_on_several_threads(module):
    errors = []

    def work(region):
        try:
            with region.new_instance(module) as inst:
                for i in range(200):
                    assert inst.run("add", i, 1) == i + 1
                    with pytest.raises(Trap):
                        inst.run("div", 1, 0)
                    with pytest.raises(Trap):
                        inst.run("runaway")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    with MmapRegion(4) as region:
        threads = [threading.Thread(target=work, args=(region,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


# --- loaded modules ------------------------------------------------------------------------------

def test_loaded_module_lookups(module):
    assert "'guest'" in repr(module) and "functions" in repr(module)
    add = module.function_address("add")
    assert module.function_at(add).name == "add"
    assert module.function_at(add + module.data.functions[1].code_size - 1).name == "add"
    assert module.function_at(module.text_base - 1) is None
    assert module.function_address(1) == add
    with pytest.raises(UnknownExport, match="'nope'.*add"):
        module.function_address("nope")


def test_missing_cpu_features_refuse_to_load():
    with pytest.raises(LoadError, match="lacks: no-such-feature"):
        mock_module([MockFunction("nop", "ret")], features=frozenset({"no-such-feature"}))


def test_load_refuses_other_shared_objects(tmp_path):
    with open("/proc/self/maps") as f:
        libc_path = next(line.split()[-1] for line in f if "/libc.so" in line or "/libc-" in line)
    with pytest.raises(LoadError, match="no 'pylucet_module' symbol"):
        load(libc_path)
    with pytest.raises(LoadError, match="cannot load"):
        load(tmp_path / "missing.so")


def test_dropped_modules_release_their_code():
    # the signal handler's table of code ranges is finite: modules must give theirs back
    for _ in range(1000):
        mod = mock_module([MockFunction("nop", "ret")])
        with MmapRegion(1) as region, region.new_instance(mod) as inst:
            inst.run("nop")
        del mod


def test_run_bits_keeps_nan_payloads(inst):
    snan32, snan64 = 0x7FA0_0001, 0x7FF4_0000_0000_0001
    # mulss/addsd quiet a signalling NaN, keeping its payload: the bits show exactly that
    assert inst.run_bits("fmul32", snan32, 0x3F80_0000) == (snan32 | 0x0040_0000,)
    assert inst.run_bits("fadd", snan64, 0) == (snan64 | 0x0008_0000_0000_0000,)
    assert inst.run_bits("add", 0xFFFF_FFFF, 2) == (1,)       # results unsigned
    assert inst.run_bits(2, 2**64 - 1, 0) == (2**64 - 1,)     # by function index
    assert inst.run_bits("nop") == ()
    with pytest.raises(OverflowError, match="32 bits of f32"):
        inst.run_bits("fmul32", 2**32, 0)
    with pytest.raises(TypeError, match="bits need an int"):
        inst.run_bits("fadd", 1.0, 0)


def test_load_refuses_a_header_that_overstates_its_data(tmp_path):
    import pylucet
    artifact = bytearray(pylucet.compile('(module (func (export "f")))'))
    header = artifact.index(b"PYLUCET\0")
    artifact[header + 16:header + 24] = (1 << 40).to_bytes(8, "little")   # blob_size
    path = tmp_path / "bad.so"
    path.write_bytes(bytes(artifact))
    with pytest.raises(LoadError, match="header is corrupt"):
        load(path)


def test_reset_recovers_from_a_fatal_fault(module):
    with MmapRegion(1) as region, region.new_instance(module) as inst:
        with pytest.raises(FatalFault):
            inst.run("unexplained")
        inst.reset()
        assert inst.state == State.READY and inst.run("add", 2, 2) == 4
        assert inst.run("sum8", *range(9, 17)) == sum(range(9, 17))   # stack arguments still work
