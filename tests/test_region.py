"""MmapRegion and Limits: slot accounting, limits checks, wiping slots between instances, and no
growth of mappings, memory or file descriptors over many instance lifecycles."""

from __future__ import annotations

import ctypes
import os

import pytest

from pylucet import InstantiationError, LimitsExceeded, RegionFull, Trap, TrapCode
from pylucet.module.abi import (TABLE_DESC, TABLE_DESC_SIZE, TABLE_ENTRY_SIZE, VMCTX_GLOBALS,
                                VMCTX_TABLES, WASM_PAGE_SIZE)
from pylucet.module.spec import ElemSpec, GlobalSpec, HeapSpec, TableSpec
from pylucet.wasm.types import SegmentMode
from pylucet.runtime import Limits, MmapRegion, State
from pylucet.runtime.alloc import STACK_RESIDENT
from pylucet.runtime.testing import DEFAULT_HEAP, MockFunction, mock_module
from pylucet.wasm.types import ValType

I32, I64 = ValType.I32, ValType.I64
SECRET = 0x5EC2E7_5EC2E7_5E

FUNCS = [
    MockFunction("add", "lea eax, [rdi + rsi]\nret", (I32, I32), (I32,)),
    # leave SECRET in 4 KiB of stack below the guest's rsp
    MockFunction("stain_stack", f"""
        mov rax, {SECRET:#x}
        mov rcx, 512
    again:
        mov [rsp + rcx * 8 - 4096 - 8], rax
        dec rcx
        jnz again
        ret"""),
    # OR together the 4 KiB below rsp: nonzero if anything is left there
    MockFunction("stack_residue", """
        xor eax, eax
        mov rcx, 512
    again:
        or rax, [rsp + rcx * 8 - 4096 - 8]
        dec rcx
        jnz again
        ret""", (), (I64,)),
    MockFunction("boom", "here: ud2", traps={"here": TrapCode.Unreachable}),
    MockFunction("touch_heap", "mov edi, edi\nsite: mov dword ptr [r14 + rdi], edi\nret", (I32,),
                 traps={"site": TrapCode.HeapOutOfBounds}),
    MockFunction("mark_heap", "mov dword ptr [r14], 0x55\nret"),
]
MARK_HEAP, BOOM = 5, 3
GLOBALS = [GlobalSpec(I64, True, 7, 0)]


def make(**kw):
    kw.setdefault("globals", GLOBALS)
    kw.setdefault("exported_globals", {"g": 0})
    return mock_module(FUNCS, **kw)


@pytest.fixture(scope="module")
def module():
    return make()


# --- Limits --------------------------------------------------------------------------------------

def test_limits_defaults():
    limits = Limits()
    assert limits.heap_memory_size == 4 << 30 and limits.heap_address_space_size == 8 << 30
    assert limits.stack_size == 1 << 20 and limits.signal_stack_size >= 64 << 10


@pytest.mark.parametrize("kw,match", [
    ({"stack_size": 4097}, "stack_size .* multiple of the 4096-byte page"),
    ({"heap_memory_size": 4096}, "multiple of the 65536-byte wasm page"),
    ({"heap_memory_size": 8 << 30}, "exceeds the 4294967296-byte maximum"),
    ({"heap_address_space_size": 1 << 20, "heap_memory_size": 2 << 20}, "exceeds heap_address"),
    ({"hostcall_reservation": 1 << 20}, "smaller than stack_size"),
    ({"signal_stack_size": 8192}, "at least 65536"),
    ({"globals_size": -4096}, "non-negative int"),
    ({"table_elements": 1.5}, "non-negative int"),
])
def test_limits_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        Limits(**kw)


# --- slots ---------------------------------------------------------------------------------------

def test_region_full(module):
    with MmapRegion(2) as region:
        assert (region.capacity, region.free_slots, region.used_slots) == (2, 2, 0)
        a = region.new_instance(module)
        b = region.new_instance(module)
        assert {a.slot_index, b.slot_index} == {0, 1} and region.free_slots == 0
        with pytest.raises(RegionFull) as info:
            region.new_instance(module)
        assert info.value.capacity == 2
        b.close()
        c = region.new_instance(module)
        assert c.slot_index == 1 and region.used_slots == 2
        assert "2/2 slots used" in repr(region)


@pytest.mark.parametrize("kw,limits,match", [
    ({"heap": HeapSpec(2 * WASM_PAGE_SIZE, None, 4 << 30, 4 << 30)},
     Limits(heap_memory_size=WASM_PAGE_SIZE), "initial heap of 131072 bytes"),
    ({"heap": DEFAULT_HEAP}, Limits(heap_address_space_size=4 << 30), "plus 4294967296 of guard"),
    ({"globals": [GlobalSpec(I64, True, 0, 4096)]}, Limits(), "4104 bytes of globals"),
    ({"tables": [TableSpec(ValType.FUNCREF, 10, None), TableSpec(ValType.FUNCREF, 10, None)]},
     Limits(table_elements=16), "20 table elements"),
])
def test_limits_exceeded(kw, limits, match):
    module = make(**kw)
    with MmapRegion(1, limits) as region:
        with pytest.raises(LimitsExceeded, match=match):
            region.new_instance(module)
        assert region.free_slots == 1


def test_data_error_fails_instantiation_and_frees_the_slot():
    module = make(data_error="out of bounds memory access")
    with MmapRegion(1) as region:
        with pytest.raises(InstantiationError, match="out of bounds memory access"):
            region.new_instance(module)
        assert region.free_slots == 1


def test_start_function_runs_at_instantiation():
    with MmapRegion(1) as region:
        with region.new_instance(make(start=MARK_HEAP)) as inst:
            assert inst.heap[0] == 0x55
        with pytest.raises(Trap):                           # a trapping start frees the slot
            region.new_instance(make(start=BOOM))
        assert region.free_slots == 1


def test_close_region_closes_instances(module):
    region = MmapRegion(2)
    inst = region.new_instance(module)
    region.close()
    assert region.closed and inst.state.name == "CLOSED"
    with pytest.raises(ValueError, match="region is closed"):
        region.new_instance(module)


# --- no data crosses from one instance to the next -------------------------------------------

def test_reused_slot_sees_no_old_data(module):
    with MmapRegion(1) as region:
        with region.new_instance(module) as inst:
            heap = inst.heap
            heap[:8] = SECRET.to_bytes(8, "little")
            heap[WASM_PAGE_SIZE - 8:] = SECRET.to_bytes(8, "little")
            inst.globals["g"] = SECRET
            inst.run("stain_stack")
            assert inst.run("stack_residue") != 0           # the probe does see a stain
            inst.grow_memory(1)
            inst.heap[WASM_PAGE_SIZE:WASM_PAGE_SIZE + 8] = SECRET.to_bytes(8, "little")
        del heap   # a live view would hold the slot back from reuse (see test_heap_views)
        with region.new_instance(module) as inst:
            assert inst.slot_index == 0 and inst.memory_pages == 1
            assert not any(inst.heap)
            assert inst.globals["g"] == 7
            globals_area = ctypes.c_uint64.from_address(inst._slot.vmctx + VMCTX_GLOBALS).value
            assert not any(ctypes.string_at(globals_area + 8, 4096 - 8))
            assert inst.run("stack_residue") == 0
            with pytest.raises(Trap):                        # the grown page is gone again
                inst.run("touch_heap", WASM_PAGE_SIZE)


# --- 1,000 lifecycles leave nothing behind -------------------------------------------------------

def _maps_lines() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def _rss_kib(start: int = 0, end: int = 1 << 64) -> int:
    """Resident KiB of the mappings within [start, end), from /proc/self/smaps."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):
                lo, hi = (int(x, 16) for x in first.split("-"))
                inside = start <= lo and hi <= end
            elif first == "Rss:" and inside:
                total += int(line.split()[1])
    return total


def _mappings(start: int, end: int, spans: bool = False) -> list:
    """Permissions of each mapping within [start, end), from /proc/self/maps (with ``spans``:
    (lo, hi, permissions) each)."""
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            span, perms = line.split()[:2]
            lo, hi = (int(x, 16) for x in span.split("-"))
            if start <= lo and hi <= end:
                out.append((lo, hi, perms) if spans else perms)
    return out


def assert_heaps_exact(region) -> None:
    """Every tenant has exactly its memory_size of heap accessible, and nothing of the heap's
    address space after it: compiled code checks no bounds. (A free slot may keep its last
    tenant's pages open, wiped: no guest address reaches it; see runtime.alloc.)"""
    lo, hi = region._base, region._base + region.capacity * region.slot_size
    maps = _mappings(lo, hi, spans=True)
    for memory in region._memory:
        inst = memory.tenant() if memory.tenant is not None else None
        if inst is None or inst.state == State.CLOSED:
            continue
        vmctx, end = memory.slot.vmctx, memory.slot.vmctx + memory.slot.heap_space
        edge = vmctx + inst.memory_size
        for a, b, perms in maps:
            if a < end and vmctx < b:
                # (an accessible mapping may start below vmctx: the instance page merges in)
                if perms != "---p":
                    assert min(b, end) <= edge, (hex(a), hex(b), perms, hex(edge))
                else:
                    assert max(a, vmctx) >= edge, (hex(a), hex(b), "closed below the edge")


def _vm_rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_lifecycles_do_not_grow_mappings_memory_or_fds(module):
    with MmapRegion(2) as region:
        lo = region._base
        hi = lo + region.capacity * region.slot_size

        def cycle(i: int) -> None:
            with region.new_instance(module) as inst:
                assert inst.run("add", i, 1) == i + 1
                inst.run("touch_heap", (i * 4096) % WASM_PAGE_SIZE)
                inst.run("stain_stack")
                if i % 50 == 0:
                    with pytest.raises(Trap):
                        inst.run("boom")

        for i in range(50):                                 # warm up allocators and caches
            cycle(i)
        with region.new_instance(module), region.new_instance(module):
            pass            # both slots once: with "cow" heaps each keeps its module's image mapped
        maps, fds, rss, vm_rss = (_maps_lines(), len(os.listdir("/proc/self/fd")),
                                  _rss_kib(), _vm_rss_kib())
        # closed slots hold no memory but the few pages every tenant writes (runtime.alloc)
        resident = region.capacity * (STACK_RESIDENT + 3 * 4096) // 1024   # + the records page
        assert _rss_kib(lo, hi) <= resident
        other = region.new_instance(module)                  # a live neighbour throughout
        assert len(_mappings(lo, hi)) > 1                    # (its areas split the mapping)
        for i in range(1000):
            cycle(i)
        other.close()
        assert _rss_kib(lo, hi) <= resident
        # The heaps are inaccessible again. A slot stays in a few mappings: its areas outside
        # the heap stay accessible once used, each area first written while split off got its
        # own anon_vma (mappings with different ones never merge), and a "cow" heap adds its
        # image's file mapping. That is bounded by the areas, whatever the number of lifecycles.
        with region.new_instance(module) as inst:
            assert_heaps_exact(region)
        assert len(_mappings(lo, hi)) <= 8 * region.capacity
        assert _maps_lines() <= maps
        assert len(os.listdir("/proc/self/fd")) == fds
        assert _rss_kib() - rss < 1024 and _vm_rss_kib() - vm_rss < 1024


def test_capacity_beyond_the_address_space_is_refused():
    with pytest.raises(LimitsExceeded, match="cannot reserve 100000 slots"):
        MmapRegion(100_000)          # 100,000 x 8 GiB is more than a process can address
    with pytest.raises(ValueError):
        MmapRegion(0)
    with pytest.raises(TypeError):
        MmapRegion(1, limits={"stack_size": 4096})


def test_table_descriptors():
    tables = [TableSpec(ValType.FUNCREF, 2, 10), TableSpec(ValType.FUNCREF, 3, None)]
    elems = [ElemSpec(SegmentMode.ACTIVE, ValType.FUNCREF, (0,), 0, 0)]
    with MmapRegion(1, Limits(table_elements=100)) as region:
        with region.new_instance(make(tables=tables, elems=elems)) as inst:
            ptrs = ctypes.c_uint64.from_address(inst._slot.vmctx + VMCTX_TABLES).value
            descs = [(ctypes.c_uint64 * (TABLE_DESC_SIZE // 8)).from_address(
                ctypes.c_uint64.from_address(ptrs + 8 * i).value) for i in range(2)]
            field = {name: off // 8 for name, off in TABLE_DESC.items()}
            first, second = ([d[field["base"]], d[field["length"]], d[field["capacity"]]]
                             for d in descs)
            # growth room goes first to the table whose maximum asks for it, the rest after
            assert first[1:] == [2, 10] and second[1:] == [3, 100 - 10 - 3 + 3]
            assert second[0] == first[0] + 10 * TABLE_ENTRY_SIZE
            entries = (ctypes.c_uint64 * 2).from_address(first[0])
            assert list(entries) == [inst._record_address(0), 0]
    with MmapRegion(1) as region:
        with pytest.raises(LimitsExceeded, match="tables; at most"):
            region.new_instance(make(tables=[TableSpec(ValType.FUNCREF, 0, None)] * 1000))


def test_reset_restores_the_initial_state_in_place():
    with MmapRegion(1) as region:
        inst = region.new_instance(make(start=MARK_HEAP))
        inst.heap[8:16] = SECRET.to_bytes(8, "little")
        inst.heap[0] = 0
        inst.globals["g"] = SECRET
        inst.grow_memory(2)
        inst.run("stain_stack")
        inst.reset()
        assert inst.slot_index == 0 and region.free_slots == 0
        assert inst.memory_pages == 1 and inst.heap[0] == 0x55 and not any(inst.heap[1:])
        assert inst.globals["g"] == 7 and inst.run("stack_residue") == 0
        inst.close()
        assert region.free_slots == 1
        with pytest.raises(ValueError, match="closed"):
            inst.reset()
