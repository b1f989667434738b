"""Heap views that outlive their instance or region must never crash the host, and must never
show another instance's data. Each scenario runs in a subprocess: a regression here is a
segfault, which should fail one test rather than take pytest down."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from .conftest import ROOT

PRELUDE = textwrap.dedent("""
    import gc, pylucet
    m = pylucet.load(pylucet.compile('(module (memory 1 4) (func (export "poke") (param i32 i32)'
                                     ' (i32.store (local.get 0) (local.get 1)))'
                                     ' (func (export "grow") (result i32) (memory.grow (i32.const 1))))'))
""")

SCENARIOS = {
    "view outlives its instance": """
        region = pylucet.MmapRegion(1)
        inst = region.new_instance(m)
        inst.run("poke", 16, 0x5EC2E7)
        view = inst.heap
        assert view[16] == 0xE7
        inst.close()
        assert not any(view[:4096]), "a closed instance's heap must read as zeros"
        view[0] = 1                                   # writable, harmlessly
        try:
            region.new_instance(m)                    # its only slot is held back for the view
            raise SystemExit("slot was reused while a view of it was alive")
        except pylucet.RegionFull:
            pass
        del view
        gc.collect()
        with region.new_instance(m) as again:
            assert not any(again.heap), "reused slot shows old data"
        print("ok")
    """,
    "slice outlives its instance": """
        region = pylucet.MmapRegion(1)
        inst = region.new_instance(m)
        inst.run("poke", 8, 7)
        piece = inst.heap[4:12]
        inst.close()
        assert bytes(piece) == bytes(8)
        print("ok")
    """,
    "view outlives its region": """
        region = pylucet.MmapRegion(2)
        inst = region.new_instance(m)
        inst.run("poke", 0, 42)
        view = inst.heap
        region.close()
        assert view[0] == 0 and not any(view)
        print("ok")
    """,
    "grown view blocks reset": """
        region = pylucet.MmapRegion(1)
        inst = region.new_instance(m)
        assert inst.run("grow") == 1
        big = inst.heap
        assert len(big) == 2 * 65536
        try:
            inst.reset()
            raise SystemExit("reset kept grown pages reachable by the guest")
        except RuntimeError:
            pass
        del big
        gc.collect()
        inst.reset()
        assert inst.memory_pages == 1
        print("ok")
    """,
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_stale_heap_view(name):
    script = PRELUDE + textwrap.dedent(SCENARIOS[name])
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert proc.stdout.strip() == "ok"
