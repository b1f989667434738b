"""The compile cache: keyed by source, compiler and options; hits only load; concurrent first
compiles never leave a broken entry; truncated or corrupt entries are found and rebuilt."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import pylucet
from pylucet import cache
from pylucet.cache import CompileCache, cache_key, seal, unseal
from pylucet.errors import LoadError

ROOT = Path(__file__).resolve().parent.parent

SOURCE = b"""(module (memory 1)
  (func (export "answer") (result i32) (i32.const 42)))"""


def answer(module) -> int:
    with pylucet.MmapRegion(1) as region, region.new_instance(module) as inst:
        return inst.run("answer")


@pytest.fixture
def c(tmp_path):
    return CompileCache(tmp_path / "cache")


def test_first_load_compiles_then_hits(c):
    assert answer(c.load(SOURCE)) == 42
    assert (c.compiles, c.hits) == (1, 0)
    assert answer(c.load(SOURCE)) == 42
    assert (c.compiles, c.hits) == (1, 1)
    entries = list(c.directory.rglob("*.so"))
    assert len(entries) == 1 and not list(c.directory.rglob("*.tmp"))


def test_key_covers_source_options_and_compiler(monkeypatch):
    k = cache_key(SOURCE)
    assert cache_key(SOURCE + b" ") != k
    assert cache_key(SOURCE, {"interrupt_checks": False}) != k
    assert cache_key(SOURCE, {"max_heap": 65536}) != cache_key(SOURCE, {"max_heap": 131072})
    monkeypatch.setattr(cache, "_fingerprint", "another compiler")
    assert cache_key(SOURCE) != k


def test_options_are_compiled_in(c):
    module = c.load(SOURCE, interrupt_checks=False, max_heap=65536)
    assert module.data.interrupt_checks is False and module.data.heap.max_size == 65536
    assert c.load(SOURCE).data.interrupt_checks is True
    assert c.compiles == 2


def test_compile_errors_store_nothing(c):
    with pytest.raises(pylucet.CompileError):
        c.load(b"(module (func (result i32) (i64.const 0)))")
    assert not list(c.directory.rglob("*.so"))


def entry(c) -> Path:
    (path,) = c.directory.rglob("*.so")
    return path


@pytest.mark.parametrize("damage", [
    lambda b: b[:len(b) // 2],                                   # truncated
    lambda b: b[:-1],                                            # the trailer cut
    lambda b: b"",                                               # empty (a crash mid-write)
    lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:],           # one bit flipped
])
def test_damaged_entry_is_detected_and_rebuilt(c, damage):
    c.load(SOURCE)
    path = entry(c)
    path.write_bytes(damage(path.read_bytes()))
    assert answer(c.load(SOURCE)) == 42
    assert c.compiles == 2
    assert unseal(path.read_bytes())       # a sound entry again


def test_entry_the_loader_refuses_is_rebuilt(c):
    """A sealed entry whose artifact is not loadable (checksum fine, content wrong)."""
    c.load(SOURCE)
    path = entry(c)
    path.write_bytes(seal(b"\x7fELF" + bytes(200)))
    with pytest.raises(LoadError):
        pylucet.load(unseal(path.read_bytes()))
    assert answer(c.load(SOURCE)) == 42
    assert c.compiles == 2


def test_unseal_checks_the_trailer():
    sealed = seal(b"artifact")
    assert unseal(sealed) == b"artifact"
    for bad in (sealed[:-1], b"x" + sealed, sealed[:-32] + bytes(32), b"short"):
        with pytest.raises(LoadError):
            unseal(bad)


def test_read_only_cache_still_runs(c, tmp_path):
    c.directory.mkdir()
    os.chmod(c.directory, 0o500)
    try:
        if os.access(c.directory, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        assert answer(c.load(SOURCE)) == 42
    finally:
        os.chmod(c.directory, 0o700)


def test_environment_chooses_the_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("PYLUCET_CACHE", str(tmp_path / "here"))
    assert cache.default_directory() == tmp_path / "here"
    monkeypatch.delenv("PYLUCET_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.default_directory() == tmp_path / "xdg" / "pylucet"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache.default_directory() == Path.home() / ".cache" / "pylucet"


def test_load_module_by_suffix(tmp_path):
    wat = tmp_path / "m.wat"
    wat.write_bytes(SOURCE)
    so = tmp_path / "m.so"
    pylucet.compile(wat, so)
    c = CompileCache(tmp_path / "cache")
    assert answer(cache.load_module(so, cache=c)) == 42
    assert answer(cache.load_module(wat, cache=c)) == 42
    assert answer(cache.load_module(wat, use_cache=False)) == 42
    assert c.compiles == 1
    with pytest.raises(ValueError):
        cache.load_module(so, interrupt_checks=False)


CONCURRENT = """
import os, sys, time
sys.path.insert(0, {root!r})
from pylucet.cache import CompileCache
import pylucet.compiler.driver   # imported before the barrier, so all start compiling at once
c = CompileCache({directory!r})
open(os.path.join({barrier!r}, str(os.getpid())), "w").close()
deadline = time.time() + 120
while len(os.listdir({barrier!r})) < {n} and time.time() < deadline:
    time.sleep(0.001)
art, path = c.artifact(open({source!r}, "rb").read())
print(c.compiles, c.hits, len(art))
"""


def test_concurrent_first_compiles_leave_one_sound_entry(tmp_path):
    """Several processes miss at the same moment and each compiles and stores; whatever order
    the renames land in, the entry is whole and every process got a whole artifact."""
    src = tmp_path / "big.wasm"
    src.write_bytes((ROOT / "examples" / "hello.wasm").read_bytes())
    directory = tmp_path / "cache"
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    script = CONCURRENT.format(root=str(ROOT), directory=str(directory), source=str(src),
                               barrier=str(barrier), n=4)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [r[1] for r in results]
    sizes = {int(out.split()[2]) for out, _ in results}
    assert len(sizes) == 1
    assert sum(int(out.split()[0]) for out, _ in results) >= 2    # they really raced
    (path,) = directory.rglob("*.so")
    assert len(unseal(path.read_bytes())) in sizes
    assert not [p for p in directory.rglob("*") if p.is_file() and p != path]   # no temp files
    c = CompileCache(directory)
    c.artifact(src.read_bytes())
    assert (c.compiles, c.hits) == (0, 1)
