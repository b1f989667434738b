"""Memories across the link: one memfd mapped at the heap of every instance that uses it and in
the host's views, so writes and growth are seen everywhere; limits matched as the spec says;
slots that held an alias come back wiped and closed."""

from __future__ import annotations

import pytest

import pylucet
from pylucet import Limits, Linker, Memory, MemoryType, SizeLimits
from tests.conftest import instantiate

PAGE = 65536

USER = '''(module
  (import "env" "mem" (memory 1))
  (data (i32.const 16) "from the user")
  (func (export "load") (param i32) (result i32) (i32.load8_u (local.get 0)))
  (func (export "store") (param i32 i32) (i32.store8 (local.get 0) (local.get 1)))
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
  (func (export "size") (result i32) (memory.size))
  (func (export "fill") (param i32 i32 i32)
    (memory.fill (local.get 0) (local.get 1) (local.get 2))))'''

OWNER = '''(module
  (memory (export "mem") 1 4)
  (data (i32.const 0) "owned")
  (func (export "load") (param i32) (result i32) (i32.load8_u (local.get 0)))
  (func (export "store") (param i32 i32) (i32.store8 (local.get 0) (local.get 1)))
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
  (func (export "size") (result i32) (memory.size)))'''


def linked(memory: Memory) -> Linker:
    linker = Linker()
    linker.define_memory("env", "mem", memory)
    return linker


def test_a_host_memory_is_shared_with_every_importer():
    memory = Memory(MemoryType(SizeLimits(1, 2)))          # spectest's (memory 1 2)
    assert memory.size == 1 and memory.data_len == PAGE and memory.type.limits == SizeLimits(1, 2)
    with pylucet.MmapRegion(2) as region:
        a = instantiate(region, USER, linked(memory))
        b = instantiate(region, USER, linked(memory))
        assert memory.read(16, 13) == b"from the user"    # data segments land in the memory
        a.run("store", 100, 42)
        assert b.run("load", 100) == 42 and memory.view()[100] == 42
        memory.write(200, b"\x07")
        assert a.run("load", 200) == 7 and b.run("load", 200) == 7
        b.run("fill", 300, 9, 50)
        assert bytes(a.heap[300:350]) == b"\x09" * 50
        a.close()
        b.close()
    assert memory.read(100, 1) == b"\x2a"                 # the memory outlives its instances
    with pytest.raises(pylucet.MemoryAccessError):
        memory.read(PAGE - 1, 2)


def test_grow_is_seen_by_every_alias_and_the_host():
    memory = Memory(1, 3)
    with pylucet.MmapRegion(2) as region:
        a = instantiate(region, USER, linked(memory))
        b = instantiate(region, USER, linked(memory))
        old_view = memory.view()
        assert a.run("grow", 1) == 1                       # compiled memory.grow, via the host
        assert (a.run("size"), b.run("size"), memory.size, b.memory_pages) == (2, 2, 2, 2)
        b.run("store", PAGE + 5, 11)                       # the new page, in the other alias
        assert a.run("load", PAGE + 5) == 11 and memory.view()[PAGE + 5] == 11
        assert len(old_view) == PAGE                       # an old view keeps its size
        assert memory.grow(1) == 2                         # the host grows it
        assert a.run("size") == 3 and b.run("load", 3 * PAGE - 1) == 0
        assert b.run("grow", 1) == -1                      # past the maximum: -1, nothing changes
        with pytest.raises(pylucet.LimitsExceeded):
            memory.grow(1)
        with pytest.raises(pylucet.LimitsExceeded):
            a.grow_memory(1)
        assert a.run("grow", 0) == 3 and memory.size == 3
        with pytest.raises(pylucet.Trap, match="out of bounds"):
            a.run("load", 3 * PAGE)
        a.close()
        b.close()


def test_an_instance_memory_is_exported_and_shared_both_ways():
    with pylucet.MmapRegion(3) as region:
        owner = instantiate(region, OWNER)
        before = owner.heap                                # a view taken while it was private
        linker = Linker()
        linker.define_instance("env", owner)
        memory = linker.get("env", "mem")
        assert isinstance(memory, Memory) and memory.owner is owner
        assert memory.type.limits == SizeLimits(1, 4)
        user = instantiate(region, USER, linker)
        assert user.run("load", 0) == ord("o")             # the owner's contents moved over
        assert owner.run("load", 16) == ord("f")           # the user's data segment
        owner.run("store", 1, 0x55)
        assert user.run("load", 1) == 0x55 and before[1] == 0x55
        user.run("store", 2, 0x66)
        assert owner.run("load", 2) == 0x66
        assert owner.run("grow", 2) == 1                   # the exporter grows: both see it
        assert user.run("size") == 3 and owner.run("size") == 3
        user.run("store", 2 * PAGE, 1)
        assert owner.run("load", 2 * PAGE) == 1
        with pytest.raises(pylucet.StateError, match="globals or memory"):
            owner.close()
        user.close()
        owner.close()
        assert memory.owner is None and memory.read(2 * PAGE, 1) == b"\x01"


def test_the_smallest_limit_among_the_aliases_bounds_growth():
    memory = Memory(1)                                     # no maximum of its own
    small = Limits(heap_memory_size=2 * PAGE)
    with pylucet.MmapRegion(1) as wide, pylucet.MmapRegion(1, small) as narrow:
        a = instantiate(wide, USER, linked(memory))
        b = instantiate(narrow, USER, linked(memory))
        assert memory.limit == 2 * PAGE and a.memory_max == 2 * PAGE
        assert a.run("grow", 1) == 1 and a.run("grow", 1) == -1
        b.close()                                          # the narrow one leaves: room again
        assert memory.limit > 2 * PAGE and a.run("grow", 1) == 2
        with pytest.raises(pylucet.LimitsExceeded, match="more than the importing instance"):
            instantiate(narrow, USER, linked(memory))      # 3 pages already: it cannot join
        assert narrow.free_slots == 1
        a.close()


def test_limits_are_matched_at_link_time_and_every_problem_listed(region):
    wat = '(module (import "env" "a" (memory 2)) (import "env" "b" (global i32)))'
    linker = Linker()
    linker.define("env", "a", Memory(1))                  # too small, and b is missing
    with pytest.raises(pylucet.LinkError) as info:
        instantiate(region, wat, linker)
    assert info.value.problems == [
        "env.a: the module imports it as memory {min 2}, but it is defined as memory {min 1}",
        "env.b global i32 is not defined"]
    linker = Linker()
    linker.define_func("env", "a", lambda: None, "() -> ()")
    linker.define_memory("env", "b", Memory(2))
    with pytest.raises(pylucet.LinkError) as info:
        instantiate(region, wat, linker)
    assert info.value.problems == [
        "env.a: the module imports it as memory {min 2}, but it is defined as [] -> []",
        "env.b: the module imports it as global i32, but it is defined as memory {min 2}"]

    bounded = '(module (import "env" "mem" (memory 1 2)))'
    for memory, ok in ((Memory(1, 2), True), (Memory(2, 2), True), (Memory(1, 1), True),
                       (Memory(1, 3), False), (Memory(1), False)):
        if ok:
            instantiate(region, bounded, linked(memory)).close()
        else:
            with pytest.raises(pylucet.LinkError, match="imports it as memory {min 1, max 2}"):
                instantiate(region, bounded, linked(memory))
    grown = Memory(1)
    grown.grow(2)                                         # the size now is what counts
    instantiate(region, '(module (import "env" "mem" (memory 3)))', linked(grown)).close()
    with pytest.raises(TypeError):
        Linker().define_memory("a", "b", bytearray(10))
    with pytest.raises(ValueError, match="exceeds its maximum"):
        Memory(2, 1)


@pytest.mark.parametrize("strategy", ["cow", "copy"])
def test_a_reused_slot_never_shows_the_shared_memory(strategy):
    memory = Memory(2)
    with pylucet.MmapRegion(1, heap_strategy=strategy) as region:
        user = instantiate(region, USER, linked(memory))
        user.run("store", 1234, 0xAB)
        user.run("store", PAGE + 9, 0xCD)
        user.close()
        private = '''(module (memory 1)
          (func (export "load") (param i32) (result i32) (i32.load8_u (local.get 0))))'''
        with instantiate(region, private) as inst:          # the same slot, its own heap
            assert inst.slot_index == 0
            assert inst.run("load", 1234) == 0
            assert not any(inst.heap)
            with pytest.raises(pylucet.Trap, match="out of bounds"):
                inst.run("load", PAGE + 9)                   # the alias's second page is gone
        assert memory.read(1234, 1) == b"\xab"             # and the memory kept its data


def test_a_failing_data_segment_keeps_what_came_before_in_the_shared_memory(region):
    memory = Memory(1)
    wat = '''(module (import "env" "mem" (memory 1))
      (data (i32.const 10) "kept")
      (data (i32.const 65534) "too far"))'''
    with pytest.raises(pylucet.InstantiationError, match="out of bounds memory access"):
        instantiate(region, wat, linked(memory))
    assert memory.read(10, 4) == b"kept"                  # as the spec says: not rolled back
    assert region.free_slots == region.capacity


def test_reset_of_an_importer_and_of_an_exporter():
    memory = Memory(1)
    with pylucet.MmapRegion(2) as region:
        user = instantiate(region, USER, linked(memory))
        memory.write(16, b"X")
        user.reset()                                       # still the same memory, data again
        assert user.run("load", 16) == ord("f") and memory.read(16, 1) == b"f"
        user.run("store", 0, 5)
        assert memory.read(0, 1) == b"\x05"
        user.close()

        owner = instantiate(region, OWNER)
        shared = owner.exports["mem"]
        owner.run("store", 0, 0x77)
        owner.reset()                                      # its own memory again, fresh
        assert owner.run("load", 0) == ord("o") and shared.read(0, 1) == b"\x77"
        assert shared.owner is None and owner.exports["mem"] is not shared
        owner.close()


def test_an_exported_memory_does_not_keep_its_dropped_instance_in_the_slot():
    with pylucet.MmapRegion(1) as region:
        owner = instantiate(region, OWNER)
        memory = owner.exports["mem"]
        del owner                                          # no cycle through the memory
        assert region.free_slots == 1
        assert memory.owner is None and memory.read(0, 5) == b"owned"


def test_objdump_shows_an_imported_memory_and_its_data_segments(tmp_path, capsys):
    from pylucet.cli import objdump
    path = tmp_path / "m.so"
    pylucet.compile('''(module (import "env" "g" (global i32)) (import "env" "mem" (memory 1 2))
      (data (i32.const 8) "ab") (data (global.get 0) "xyz"))''', path)
    assert objdump.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "heap (imported): initial 0x10000 bytes, max 0x20000 bytes" in out
    assert "data segment written at instantiation: 2 bytes at 0x8" in out
    assert "data segment written at instantiation: 3 bytes at the value of global 0" in out
    assert "i32 = 0x0 at offset 0x0 imported from env.g" in out


def test_a_running_instance_cannot_make_its_memory_shared():
    seen = []

    def peek(vmctx: pylucet.Vmctx) -> None:
        try:
            vmctx.instance.exports["mem"]
        except pylucet.StateError as e:
            seen.append(str(e))
    linker = Linker()
    linker.define_func("env", "peek", peek)
    wat = '''(module (import "env" "peek" (func $peek)) (memory (export "mem") 1)
      (func (export "run") (call $peek)))'''
    with pylucet.MmapRegion(1) as region, instantiate(region, wat, linker) as inst:
        inst.run("run")
        assert seen and "while it runs" in seen[0]
        assert isinstance(inst.exports["mem"], Memory)    # once it is idle again


def test_memory_grow_inside_a_call_from_another_instance():
    with pylucet.MmapRegion(2) as region:
        owner = instantiate(region, OWNER)
        linker = Linker()
        linker.define_instance("env", owner)
        caller = instantiate(region, '''(module
          (import "env" "grow" (func $grow (param i32) (result i32)))
          (import "env" "mem" (memory 1))
          (func (export "grow_there") (param i32) (result i32) (call $grow (local.get 0)))
          (func (export "size") (result i32) (memory.size)))''', linker)
        assert caller.run("grow_there", 1) == 1        # the owner's memory.grow, from our call
        assert caller.run("size") == 2 and owner.run("size") == 2
        assert caller.run("grow_there", 5) == -1       # past the owner's maximum of 4
        caller.close()
        owner.close()


def test_instances_on_two_threads_grow_one_memory():
    import threading
    memory = Memory(1, 100)
    olds = []
    with pylucet.MmapRegion(2) as region:
        users = [instantiate(region, USER, linked(memory)) for _ in range(2)]

        def work(inst):
            for _ in range(20):
                old = inst.run("grow", 1)
                inst.run("store", old * PAGE, 1)      # the page it added is there, in its alias
                olds.append(old)
        threads = [threading.Thread(target=work, args=(u,)) for u in users]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(olds) == list(range(1, 41))     # every grow got a page of its own
        assert memory.size == 41 and all(u.run("size") == 41 for u in users)
        assert all(users[0].run("load", k * PAGE) == 1 for k in range(1, 41))
        for u in users:
            u.close()
