"""A slot's memory under both heap strategies (runtime.alloc): a slot reused by the same or by
another module shows its new tenant zeros or that module's own initial image, never what a
previous tenant wrote nor another module's image; heap views outliving their instance stay safe;
and many lifecycles do not grow mappings, memory or file descriptors."""

from __future__ import annotations

import gc
import os

import pytest

import pylucet
from pylucet.runtime import MmapRegion
from pylucet.runtime.alloc import STACK_RESIDENT, HeapStrategy

from .test_region import _maps_lines, _rss_kib, assert_heaps_exact

STRATEGIES = ["copy", "cow"]

A = pylucet.load(pylucet.compile('''(module (memory 2)
  (data (i32.const 100) "AAAA") (data (i32.const 70000) "aaaa")
  (func (export "w") (param i32 i32) (i32.store (local.get 0) (local.get 1)))
  (func (export "r") (param i32) (result i32) (i32.load (local.get 0)))
  (func (export "grow") (result i32) (memory.grow (i32.const 1))))'''))
B = pylucet.load(pylucet.compile('''(module (memory 3)
  (data (i32.const 200) "BBBB")
  (func (export "r") (param i32) (result i32) (i32.load (local.get 0))))'''))
AAAA, aaaa, BBBB = 0x41414141, 0x61616161, 0x42424242


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_tenants_see_zeros_or_their_own_image(strategy):
    with MmapRegion(1, heap_strategy=strategy) as region:
        assert region.heap_strategy == HeapStrategy(strategy)
        for _ in range(3):
            with region.new_instance(A) as a:
                assert (a.run("r", 100), a.run("r", 70000), a.run("r", 200)) == (AAAA, aaaa, 0)
                for addr in (0, 100, 5000, 70000, 131068):
                    a.run("w", addr, 0x5EC12E7)          # stain the image and the zeros
                assert a.run("grow") == 2
                a.run("w", 2 * 65536 + 12, 0x5EC12E7)   # and a grown page
            with region.new_instance(A) as a:            # same module: its pristine image
                assert (a.run("r", 100), a.run("r", 70000), a.run("r", 0)) == (AAAA, aaaa, 0)
                assert a.run("r", 5000) == 0 and a.run("r", 131068) == 0
                assert a.memory_pages == 2 and a.run("grow") == 2
                assert a.run("r", 2 * 65536 + 12) == 0
            with region.new_instance(B) as b:            # another module: none of A's bytes
                assert (b.run("r", 100), b.run("r", 200), b.run("r", 70000)) == (0, BBBB, 0)
                assert b.run("r", 131068) == 0 and b.run("r", 2 * 65536 + 12) == 0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_reset_restores_the_image(strategy):
    with MmapRegion(1, heap_strategy=strategy) as region, region.new_instance(A) as a:
        a.run("w", 100, 1)
        a.run("w", 8, 2)
        a.reset()
        assert (a.run("r", 100), a.run("r", 8)) == (AAAA, 0)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_view_outliving_its_instance_is_safe_and_holds_the_slot(strategy):
    with MmapRegion(1, heap_strategy=strategy) as region:
        a = region.new_instance(A)
        a.run("w", 8, 7)
        view = a.heap
        a.close()
        assert bytes(view[8:12]) == b"\0\0\0\0"           # wiped: no tenant data, no crash
        view[0] = 1                                       # still writable memory of ours
        with pytest.raises(pylucet.RegionFull, match="heap view"):
            region.new_instance(B)
        del view
        gc.collect()
        with region.new_instance(B) as b:                 # the slot comes back, clean
            assert b.run("r", 0) == 0 and b.run("r", 200) == BBBB


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_many_lifecycles_do_not_grow_mappings_memory_or_fds(strategy):
    with MmapRegion(2, heap_strategy=strategy) as region:
        lo, hi = region._base, region._base + region.capacity * region.slot_size

        def cycle(i: int) -> None:
            module = A if i % 3 else B
            with region.new_instance(module) as inst:
                if module is A:
                    inst.run("w", (i * 4096) % 131072, i)
                    if i % 7 == 0:
                        inst.run("grow")

        for i in range(60):
            cycle(i)
        with region.new_instance(A), region.new_instance(B):
            pass
        gc.collect()
        maps, fds, rss = _maps_lines(), len(os.listdir("/proc/self/fd")), _rss_kib()
        for i in range(10_000):
            cycle(i)
        gc.collect()
        assert _maps_lines() <= maps
        assert len(os.listdir("/proc/self/fd")) <= fds
        assert _rss_kib() <= rss + 2048                    # allocator noise, not 10,000 heaps
        # what stays resident per slot: the pages every tenant writes at once, zeroed in place
        # (runtime.alloc: the top of the stack, the globals, the instance page, the first page
        # of the table area with the function records); cow also keeps the image's page cache
        resident = (STACK_RESIDENT + 3 * 4096) // 1024
        assert _rss_kib(lo, hi) <= region.capacity * resident or strategy == "cow"
        for module in (A, B, A):
            with region.new_instance(module) as inst:
                if module is A:
                    inst.run("grow")
                assert_heaps_exact(region)


def test_the_strategy_is_checked():
    with pytest.raises(ValueError, match="heap_strategy must be one of 'copy', 'cow'"):
        MmapRegion(1, heap_strategy="zero")


def test_instances_left_open_at_exit_do_not_crash_the_interpreter():
    """Interpreter shutdown finalises regions and instances in any order (and clears weak
    references first): a slot must never be touched after its region is unmapped."""
    import subprocess
    import sys
    code = """
import gc, pylucet
m = pylucet.load(pylucet.compile('(module (memory 1) (func (export "f")))'))
regions = [pylucet.MmapRegion(1, heap_strategy=s) for s in ("copy", "cow")]
instances = [r.new_instance(m) for r in regions]
class Cycle: pass
c = Cycle(); c.me = c; c.inst = instances[0]; c.region = regions[0]   # garbage in a cycle
del c
print("bye")
"""
    r = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "bye\n", r.stderr
