"""pylucet.load always gives the module that is in the file now: a module compiled over the path
of one already loaded (by rename, as the compiler writes, or rewritten in place) is the new one,
while instances of the old one keep running the old code. Unchanged files share one module."""

from __future__ import annotations

import gc
import os
import tempfile

import pytest

import pylucet
from pylucet.runtime import libc, loader

def _source(value: int, extra: str = "") -> str:
    return f'(module (func (export "f") (result i32) (i32.const {value})) {extra})'


def _run(module, name="f"):
    with pylucet.MmapRegion(1) as region, region.new_instance(module) as inst:
        return inst.run(name)


def test_compiling_over_a_loaded_module_loads_the_new_one(tmp_path):
    so = tmp_path / "x.so"
    pylucet.compile(_source(1), so)
    first = pylucet.load(so)
    pylucet.compile(_source(2, '(func (export "g") (result i32) (i32.const 3))'), so)
    second = pylucet.load(so)
    assert second is not first
    assert _run(first) == 1 and first.export_names == ["f"]
    assert _run(second) == 2 and _run(second, "g") == 3
    assert second.path == str(so)


def test_a_file_rewritten_in_place_is_reloaded(tmp_path):
    # same path and same inode: glibc would match the loaded object by either
    so = tmp_path / "x.so"
    so.write_bytes(pylucet.compile(_source(1)))
    first = pylucet.load(so)
    inode = os.stat(so).st_ino
    with open(so, "r+b") as f:
        f.truncate(0)
        f.write(pylucet.compile(_source(5)))
    assert os.stat(so).st_ino == inode
    assert _run(pylucet.load(so)) == 5
    assert _run(first) == 1


def test_a_live_instance_keeps_its_code_while_the_file_is_replaced(tmp_path):
    so = tmp_path / "x.so"
    pylucet.compile(_source(10), so)
    with pylucet.MmapRegion(2) as region:
        old = region.new_instance(pylucet.load(so))   # the instance holds the only reference
        gc.collect()
        for value in (11, 12):
            pylucet.compile(_source(value), so)
            with region.new_instance(pylucet.load(so)) as new:
                assert new.run("f") == value
            gc.collect()
            assert old.run("f") == 10
        old.close()


def test_loading_an_unchanged_file_twice_shares_the_module(tmp_path):
    so = tmp_path / "x.so"
    pylucet.compile(_source(4), so)
    a = pylucet.load(so)
    b = pylucet.load(str(so))
    assert a is b and _run(b) == 4
    other = tmp_path / "copy.so"
    other.write_bytes(so.read_bytes())
    assert pylucet.load(other) is not a          # another path: its own module, its own name
    assert pylucet.load(other).path == str(other)
    del a, b
    gc.collect()
    assert _run(pylucet.load(so)) == 4           # and once dropped, it loads afresh


def test_loading_bytes(tmp_path):
    one, two = pylucet.compile(_source(1)), pylucet.compile(_source(2))
    m1, m2 = pylucet.load(one), pylucet.load(bytearray(two))
    assert (_run(m1), _run(m2)) == (1, 2)
    assert m1.path is None and pylucet.load(memoryview(one)) is m1


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_unloading_gives_back_descriptors_and_code_ranges():
    image = pylucet.compile(_source(3))
    gc.collect()
    before = _fds()
    for value in range(40):
        module = pylucet.load(pylucet.compile(_source(value)))
        assert _fds() == before + 1                   # its memfd, while it is loaded
        assert _run(module) == value
        del module
        gc.collect()
    assert _fds() == before
    assert _run(pylucet.load(image)) == 3


def test_without_memfds_a_private_file_is_used(monkeypatch, tmp_path):
    def no_memfd(name, flags=libc.MFD_CLOEXEC):
        raise OSError(38, "memfd_create: not here")
    monkeypatch.setattr(libc, "memfd_create", no_memfd)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    so = tmp_path / "x.so"
    pylucet.compile(_source(1), so)
    first = pylucet.load(so)
    pylucet.compile(_source(2), so)
    assert (_run(first), _run(pylucet.load(so))) == (1, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.so"]   # nothing left behind


def test_what_dlopen_mapped_is_compared_with_what_was_checked(monkeypatch):
    real = loader._dlopen_private
    decoy = pylucet.compile(_source(99))

    def confused(image, name):   # as if glibc handed back an object it already had
        return real(decoy, name)
    monkeypatch.setattr(loader, "_dlopen_private", confused)
    with pytest.raises(pylucet.LoadError, match="other than the checked file"):
        pylucet.load(pylucet.compile(_source(1)))


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(pylucet.LoadError, match="cannot load"):
        pylucet.load(tmp_path / "missing.so")
    junk = tmp_path / "junk.so"
    junk.write_bytes(b"\x7fELF not really")
    with pytest.raises(pylucet.LoadError):
        pylucet.load(junk)
