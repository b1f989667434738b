"""Shared test fixtures: where the conformance data lives, and compiling WAT for a test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def private_compile_cache(tmp_path_factory):
    """Tools the tests run (pylucet run, pylucet-wasi) compile through the compile cache: keep
    it out of the user's ~/.cache, for this process and the subprocesses it starts."""
    old = os.environ.get("PYLUCET_CACHE")
    os.environ["PYLUCET_CACHE"] = str(tmp_path_factory.mktemp("compile-cache"))
    yield
    if old is None:
        os.environ.pop("PYLUCET_CACHE", None)
    else:
        os.environ["PYLUCET_CACHE"] = old


def suite_path() -> Path:
    """``$PYLUCET_TESTSUITE``, else ``../shared/testsuite`` beside the project root."""
    return Path(os.environ.get("PYLUCET_TESTSUITE", ROOT.parent / "shared" / "testsuite"))


@pytest.fixture(scope="session")
def testsuite() -> Path:
    path = suite_path()
    if not path.is_dir():
        pytest.skip(f"conformance data not found at {path} (set PYLUCET_TESTSUITE to run these)")
    return path


@pytest.fixture(scope="module")
def region():
    """A small region shared by one test file's compiled snippets."""
    from pylucet.runtime import MmapRegion
    with MmapRegion(2) as r:
        yield r


def load_wat(wat: str, **options):
    """Compile ``wat`` (``options`` go to ``compile_module``) and load its machine code
    straight away through the mock loader (no ELF, no dlopen), so tests stay fast. The
    module's ``compiled`` is the compiler's output."""
    from pylucet.compiler.driver import compile_module
    from pylucet.runtime.testing import load_code
    compiled = compile_module(wat, **options)
    module = load_code(compiled.text, compiled.data)
    module.compiled = compiled
    return module


def instantiate(region, wat: str, linker=None, ctx=None):
    """Compile ``wat`` and instantiate it in ``region`` (see :func:`load_wat`). The instance
    is a context manager; ``inst.compiled`` is the compiler's output, for tests that look at
    the code."""
    module = load_wat(wat)
    inst = region.new_instance(module, linker=linker, ctx=ctx)
    inst.compiled = module.compiled
    return inst


def disassemble(wat: str, **options):
    """(mnemonic, operands) of each instruction ``wat`` compiles to (``options`` go to
    ``compile_module``), for tests that pin the shape of the code."""
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs
    from pylucet.compiler.driver import compile_module
    compiled = compile_module(wat, **options)
    return [(i.mnemonic, i.op_str) for i in Cs(CS_ARCH_X86, CS_MODE_64).disasm(compiled.text, 0)]
