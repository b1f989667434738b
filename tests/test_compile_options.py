"""compile_module's keyword options: heap reservation, guard and maximum into the HeapSpec,
interrupt checks recorded in the module data, and compile statistics by phase."""

from __future__ import annotations

import pytest

import pylucet
from pylucet.compiler.driver import HEAP_GUARD_SIZE, HEAP_RESERVED_SIZE, compile_module
from pylucet.module.serialize import dumps, loads

GiB = 1 << 30
WAT = """(module (memory 2 100) (func (export "f") (result i32) (memory.size)))"""
UNBOUNDED = """(module (memory 1) (func (export "f") (result i32) (memory.size)))"""


def heap(source=WAT, **options):
    return compile_module(source, **options).data.heap


def test_defaults():
    h = heap()
    assert (h.initial_size, h.max_size) == (2 * 65536, 100 * 65536)
    assert (h.reserved_size, h.guard_size) == (HEAP_RESERVED_SIZE, HEAP_GUARD_SIZE)
    assert heap(UNBOUNDED).max_size is None


def test_max_heap_caps_the_maximum():
    assert heap(max_heap=10 * 65536).max_size == 10 * 65536
    assert heap(max_heap=1000 * 65536).max_size == 100 * 65536     # a cap, never a raise
    assert heap(UNBOUNDED, max_heap=3 * 65536).max_size == 3 * 65536


def test_reserved_and_guard_sizes_go_into_the_heap_spec():
    h = heap(reserved_size=1 * GiB, guard_size=7 * GiB)
    assert (h.reserved_size, h.guard_size) == (1 * GiB, 7 * GiB)
    assert heap(UNBOUNDED, reserved_size=1 * GiB, guard_size=7 * GiB).max_size == 1 * GiB


@pytest.mark.parametrize("options,error", [
    ({"max_heap": 65536}, pylucet.LimitsExceeded),                     # below the initial 2 pages
    ({"reserved_size": 65536, "guard_size": 8 * GiB}, pylucet.LimitsExceeded),
    ({"reserved_size": 1 * GiB}, ValueError),                          # 1 + 4 GiB < 8 GiB
    ({"reserved_size": 8 * GiB, "guard_size": 0}, ValueError),         # beyond 32-bit addresses
    ({"guard_size": 100}, ValueError),                                 # not page aligned
    ({"max_heap": 1000}, ValueError),                                  # not wasm-page aligned
    ({"max_heap": -65536}, ValueError),
    ({"max_heap": True}, ValueError),
])
def test_options_it_cannot_honour(options, error):
    with pytest.raises(error):
        compile_module(WAT, **options)


def test_smaller_reservation_still_runs_and_grows_to_its_cap():
    so = pylucet.compile("""(module (memory 1)
        (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0))))""",
                         reserved_size=2 * GiB, guard_size=6 * GiB, max_heap=4 * 65536)
    module = pylucet.load(so)
    with pylucet.MmapRegion(1) as region, region.new_instance(module) as inst:
        assert inst.run("grow", 3) == 1
        assert inst.run("grow", 1) == -1


@pytest.mark.parametrize("checks", [True, False])
def test_interrupt_checks_are_recorded_and_survive_serialisation(checks):
    data = compile_module(WAT, interrupt_checks=checks).data
    assert data.interrupt_checks is checks
    assert loads(dumps(data)).interrupt_checks is checks
    assert pylucet.load(pylucet.compile(WAT, interrupt_checks=checks)).data.interrupt_checks \
        is checks


def test_stats_by_phase():
    stats = compile_module(WAT).stats
    assert stats.functions == 1 and stats.instructions >= 1
    parts = (stats.read_seconds, stats.decode_seconds, stats.validate_seconds,
             stats.codegen_seconds)
    assert all(p > 0 for p in parts)
    assert sum(parts) <= stats.seconds
    assert stats.instructions_per_second == pytest.approx(
        stats.instructions / stats.function_seconds)


def test_anonymous_module_is_named_as_such():
    data = compile_module("(module)").data
    assert data.name is None and data.display_name == "<anonymous>"
