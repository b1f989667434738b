"""Passive data segments, ``memory.init`` and ``data.drop``, run for real against a model.

The spec checks both ranges before a byte is written: ``s + n`` against the segment's current
length (0 once dropped, and 0 for an active segment once instantiation has applied it) and
``d + n`` against the memory's current size; either failing traps "out of bounds memory access"
and leaves memory as it was. The edges are covered one by one, in both ranges: sums ending
exactly at the end, empty ranges at and just past it, sums that would wrap in 32 bits. Dropping
is per instance (others of the same module keep the segment) and undone by ``reset``; the
segments' bytes survive the artifact (a real ELF, loaded by ``pylucet.load``).
"""

from __future__ import annotations

import io

import pytest

import pylucet
from pylucet import Trap, TrapCode
from pylucet.compiler.driver import compile_module, read_source
from pylucet.elf.reader import ELFFile, read_artifact
from pylucet.module.serialize import dumps, loads

from .conftest import instantiate as instance

PAGE = 65536
PASSIVE = bytes(range(1, 200))          # segment 1, 199 bytes
ACTIVE = b"active!"                     # segment 0, written at 0x40 by instantiation


def _held(k: int) -> str:
    """``k`` values computed into scratch registers and kept on the stack across memory.init,
    so it has to move them out of the registers it claims (and find one for the descriptor)."""
    return "".join(f"(i32.add (local.get $a) (i32.const {i + 1}))" for i in range(k))


SEGMENTS = """
(module (memory 1 2)
  (data $act (i32.const 0x40) "active!")
  (data $p "{passive}")
  (data $empty "")
  (func (export "init") (param i32 i32 i32) (memory.init $p (local.get 0) (local.get 1) (local.get 2)))
  (func (export "init_active") (param i32 i32 i32)
    (memory.init $act (local.get 0) (local.get 1) (local.get 2)))
  (func (export "init_empty") (param i32 i32 i32)
    (memory.init $empty (local.get 0) (local.get 1) (local.get 2)))
  (func (export "init_const") (memory.init $p (i32.const 0x300) (i32.const 5) (i32.const 10)))
  (func (export "drop") (data.drop $p))
  (func (export "drop_active") (data.drop $act))
  (func (export "drop_empty") (data.drop $empty))
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
  {held}
)"""

HELD_FUNCS = "".join(f"""
  (func (export "init_held{k}") (param $a i32) (param $d i32) (param $s i32) (param $n i32)
        (result i32)
    {_held(k)}
    (memory.init $p (i32.or (local.get $d) (i32.const 0)) (i32.or (local.get $s) (i32.const 0))
                    (i32.or (local.get $n) (i32.const 0)))
    {"(i32.add)" * (k - 1) if k else "(i32.const 0)"})""" for k in range(12))

WAT = SEGMENTS.format(passive="".join(f"\\{b:02x}" for b in PASSIVE), held=HELD_FUNCS)


@pytest.fixture
def inst(region):
    with instance(region, WAT) as i:
        yield i


def _model(inst):
    return bytearray(inst.heap)


def _init(inst, model, d, s, n, name="init", data=PASSIVE):
    inst.run(name, d, s, n)
    model[d:d + n] = data[s:s + n]
    assert bytes(inst.heap) == model, (name, d, s, n)


def _trap(inst, name, *args):
    before = bytes(inst.heap)
    with pytest.raises(Trap) as info:
        inst.run(name, *args)
    assert info.value.code == TrapCode.HeapOutOfBounds, (name, args)
    assert bytes(inst.heap) == before, f"{name}{args} wrote before trapping"
    return info.value


def test_the_active_segment_is_applied_and_passive_ones_are_not(inst):
    model = bytearray(PAGE)
    model[0x40:0x40 + len(ACTIVE)] = ACTIVE
    assert bytes(inst.heap) == model


def test_init_copies_from_the_segment(inst):
    model = _model(inst)
    for d, s, n in ((0x1000, 0, len(PASSIVE)), (0x2000, 7, 13), (0x2001, 198, 1), (5, 3, 0),
                    (0x1000, 100, 50)):
        _init(inst, model, d, s, n)
    inst.run("init_const")
    model[0x300:0x30A] = PASSIVE[5:15]
    assert bytes(inst.heap) == model


def test_ranges_ending_exactly_at_the_end(inst):
    size = len(inst.heap)
    model = _model(inst)
    _init(inst, model, size - 10, 0, 10)
    _init(inst, model, 0, len(PASSIVE) - 16, 16)
    _init(inst, model, size - 9, len(PASSIVE) - 9, 9)
    for d, s, n in ((size - 10, 0, 11), (0, len(PASSIVE) - 16, 17), (0, 0, len(PASSIVE) + 1),
                    (size - 9, len(PASSIVE) - 9, 10)):
        _trap(inst, "init", d, s, n)


def test_empty_ranges_at_and_past_the_ends(inst):
    size = len(inst.heap)
    for d, s in ((size, 0), (0, len(PASSIVE)), (size, len(PASSIVE))):
        inst.run("init", d, s, 0)
    for d, s in ((size + 1, 0), (0, len(PASSIVE) + 1), (0xFFFFFFFF, 0), (0, 0xFFFFFFFF)):
        _trap(inst, "init", d, s, 0)
    inst.run("init_empty", 0, 0, 0)
    inst.run("init_empty", size, 0, 0)
    _trap(inst, "init_empty", 0, 1, 0)
    _trap(inst, "init_empty", 0, 0, 1)


def test_sums_that_wrap_in_32_bits_trap(inst):
    for d, s, n in ((1, 0, 0xFFFFFFFF), (0, 1, 0xFFFFFFFF), (0xFFFFFFFF, 0, 1), (0, 0xFFFFFFFF, 1),
                    (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), (0x80000000, 0, 0x80000000)):
        _trap(inst, "init", d, s, n)


def test_a_trap_writes_nothing(inst):
    size = len(inst.heap)
    # each would write in-bounds bytes first if it started before checking: past the end of
    # the memory only, past the end of the segment only, and both
    for d, s, n in ((size - 8, 0, 9), (0, len(PASSIVE) - 8, 9), (size - 8, len(PASSIVE) - 8, 9),
                    (100, 0, size)):
        _trap(inst, "init", d, s, n)


def test_trap_names_the_instruction(inst):
    wasm = read_source(WAT)
    for args in ((0xFFFFFFFF, 0, 1), (0, 0xFFFFFFFF, 1)):   # the memory's range, the segment's
        trap = _trap(inst, "init", *args)
        assert wasm[trap.wasm_offset:trap.wasm_offset + 2] == bytes([0xFC, 0x08]), args
    inst.run("init", 0, 0, 0)                                 # still usable


def test_a_dropped_segment_is_empty(inst):
    model = _model(inst)
    _init(inst, model, 0x100, 0, 4)
    inst.run("drop")
    inst.run("drop")                 # dropping again is allowed
    inst.run("init", 0, 0, 0)
    inst.run("init", len(inst.heap), 0, 0)
    _trap(inst, "init", 0, 0, 1)
    _trap(inst, "init", 0, 1, 0)
    inst.run("drop_empty")
    inst.run("init_empty", 0, 0, 0)
    assert bytes(inst.heap) == model


def test_an_active_segment_is_dropped_by_instantiation(inst):
    inst.run("init_active", 0, 0, 0)
    inst.run("init_active", len(inst.heap), 0, 0)
    _trap(inst, "init_active", 0, 0, 1)
    _trap(inst, "init_active", 0, 1, 0)
    inst.run("drop_active")
    inst.run("init_active", 0, 0, 0)


def test_dropping_is_per_instance_and_undone_by_reset(region):
    with instance(region, WAT) as a:
        b = region.new_instance(a.module)
        with b:
            a.run("drop")
            _trap(a, "init", 0, 0, 1)
            model = _model(b)
            _init(b, model, 0x10, 0, len(PASSIVE))
        a.reset()
        model = _model(a)
        _init(a, model, 0x10, 0, len(PASSIVE))


def test_bounds_follow_memory_growth(inst):
    size = len(inst.heap)
    _trap(inst, "init", size, 0, 1)
    assert inst.run("grow", 1) == size // PAGE
    inst.run("init", size + PAGE - len(PASSIVE), 0, len(PASSIVE))
    assert bytes(inst.heap[size + PAGE - len(PASSIVE):]) == PASSIVE
    _trap(inst, "init", size + PAGE - 1, 0, 2)


@pytest.mark.parametrize("k", range(12))
def test_values_held_across_the_fixed_registers(inst, k):
    a = 1000
    held = sum(a + i + 1 for i in range(k))
    model = _model(inst)
    assert inst.run(f"init_held{k}", a, 21, 7, 50) == held
    model[21:71] = PASSIVE[7:57]
    assert bytes(inst.heap) == model
    with pytest.raises(Trap):
        inst.run(f"init_held{k}", a, 0, 190, 10)
    assert inst.run(f"init_held{k}", a, 0, 0, 0) == held   # usable after the trap


def test_many_segments(region):
    """Each segment has its own descriptor: the index selects the right bytes and the right
    length, and dropping one leaves the others."""
    count = 300
    datas = "".join(f'(data "seg{i:03d}{"x" * (i % 5)}")' for i in range(count))
    funcs = "".join(f"""
      (func (export "init{i}") (param i32 i32 i32)
        (memory.init {i} (local.get 0) (local.get 1) (local.get 2)))
      (func (export "drop{i}") (data.drop {i}))""" for i in (0, 1, 150, 298, 299))
    with instance(region, f"(module (memory 1) {datas} {funcs})") as inst:
        for i in (0, 1, 150, 298, 299):
            data = f"seg{i:03d}{'x' * (i % 5)}".encode()
            inst.run(f"init{i}", 0, 0, len(data))
            assert bytes(inst.heap[:len(data)]) == data
            _trap(inst, f"init{i}", 0, 0, len(data) + 1)
        inst.run("drop150")
        _trap(inst, "init150", 0, 0, 1)
        inst.run("init298", 0, 0, 6)
        assert bytes(inst.heap[:6]) == b"seg298"


def test_segments_survive_the_artifact(region, tmp_path):
    compiled = compile_module(WAT)
    assert compiled.data.passive_data == [b"", PASSIVE, b""]
    assert loads(dumps(compiled.data)).passive_data == compiled.data.passive_data
    so = tmp_path / "segments.so"
    pylucet.compile(WAT, so)
    with region.new_instance(pylucet.load(so)) as inst:
        model = _model(inst)
        _init(inst, model, 0x500, 0, len(PASSIVE))
        inst.run("drop")
        _trap(inst, "init", 0, 0, 1)


def test_segments_that_start_empty_share_the_module_descriptors(region):
    """Active and empty segments only: every length starts at 0, so the instances use the
    module's descriptors, and data.drop (which stores 0) and memory.init behave the same."""
    wat = """(module (memory 1) (data (i32.const 8) "abc") (data "")
      (func (export "init") (param i32 i32 i32 i32)
        (if (local.get 0) (then (memory.init 1 (local.get 1) (local.get 2) (local.get 3)))
                          (else (memory.init 0 (local.get 1) (local.get 2) (local.get 3)))))
      (func (export "drop") (data.drop 0) (data.drop 1)))"""
    with instance(region, wat) as a:
        b = region.new_instance(a.module)
        with b:
            assert a.module._data_descs_shared
            for inst in (a, b):
                for seg in (0, 1):
                    inst.run("init", seg, 0, 0, 0)
                    inst.run("init", seg, PAGE, 0, 0)
                    _trap(inst, "init", seg, 0, 0, 1)
                    _trap(inst, "init", seg, 0, 1, 0)
                inst.run("drop")
                inst.run("init", 1, 0, 0, 0)
                assert bytes(inst.heap[8:11]) == b"abc"


def test_objdump_lists_the_passive_segments(tmp_path):
    from pylucet.cli import objdump
    so = tmp_path / "segments.so"
    pylucet.compile(WAT, so)
    out = io.StringIO()
    objdump.print_module(*read_artifact(ELFFile(so.read_bytes())), out)
    assert (f"data segments: 3; passive ones with bytes for memory.init: [1] {len(PASSIVE)} "
            "bytes\n") in out.getvalue()
