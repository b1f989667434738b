"""pylucet.wasi.run and WasiCtx on real compiled guests: output captured, exit codes through
proc_exit from deep in the guest, traps and link errors propagating, reactors."""

from __future__ import annotations

import io

import pytest

import pylucet
from pylucet.runtime import Linker
from pylucet.wasi import WasiConfig, run

from .conftest import load_wat

WRITE = """
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "hello\\n")
  (func $say (param $fd i32) (result i32)
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 6))
    (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
"""


def module(body: str):
    return load_wat(f"(module {WRITE} {body})")


def test_output_is_captured_and_start_returning_is_zero():
    config = WasiConfig()
    config.stdout_file, config.stderr_file = io.BytesIO(), io.BytesIO()
    m = module('(func (export "_start") (drop (call $say (i32.const 1)))'
               ' (drop (call $say (i32.const 2))))')
    assert run(m, config) == 0
    assert config.stdout_file.getvalue() == b"hello\n"
    assert config.stderr_file.getvalue() == b"hello\n"


def test_proc_exit_from_deep_in_the_guest_ends_it_there():
    config = WasiConfig()
    config.stdout_file = io.BytesIO()
    m = module("""
      (func $deep (param i32)
        (if (local.get 0)
          (then (call $deep (i32.sub (local.get 0) (i32.const 1))))
          (else (call $proc_exit (i32.const 7)))))
      (func (export "_start") (call $deep (i32.const 50)) (drop (call $say (i32.const 1))))""")
    assert run(m, config) == 7
    assert config.stdout_file.getvalue() == b""         # nothing ran after proc_exit
    assert run(m, config) == 7                          # and it runs again, cleanly


def test_a_bad_fd_is_an_errno_for_the_guest():
    m = module('(func (export "_start") (call $proc_exit (call $say (i32.const 9))))')
    assert run(m, WasiConfig()) == 8                    # EBADF, as the guest saw it


def test_a_trap_propagates():
    m = module('(func (export "_start") unreachable)')
    with pytest.raises(pylucet.Trap):
        run(m, WasiConfig())


def test_an_unknown_wasi_function_is_a_link_error():
    m = load_wat('(module (import "wasi_snapshot_preview1" "no_such_call" (func))'
                 ' (func (export "_start") (call 0)))')
    with pytest.raises(pylucet.LinkError):
        run(m, WasiConfig())


def test_stdio_as_paths(tmp_path):
    config = WasiConfig()
    config.stdout_file = tmp_path / "out.txt"
    m = module('(func (export "_start") (drop (call $say (i32.const 1))))')
    assert run(m, config) == 0
    assert (tmp_path / "out.txt").read_bytes() == b"hello\n"


REACTOR = """
  (global $ready (mut i32) (i32.const 0))
  (func (export "_initialize") (global.set $ready (i32.const 1)))
  (func (export "_start") (call $proc_exit (i32.add (global.get $ready) (i32.const 40))))
  (func (export "greet") (param i32) (result i32)
    (if (i32.eqz (global.get $ready)) (then unreachable))
    (call $say (local.get 0)))
"""


def test_initialize_runs_before_the_entry_point():
    config = WasiConfig()
    config.stdout_file = io.BytesIO()
    m = module(REACTOR)
    assert run(m, config) == 41
    assert run(m, config, entrypoint="_initialize") == 0        # run once, not twice
    with pytest.raises(pylucet.Trap):                           # a trap in _initialize
        run(module(REACTOR.replace("(global.set $ready (i32.const 1))", "unreachable")), config)


def test_a_reactor_called_through_its_own_exports(region):
    config = WasiConfig()
    config.stdout_file = io.BytesIO()
    ctx = config.build()
    linker = Linker()
    ctx.add_to_linker(linker)
    try:
        with region.new_instance(module(REACTOR), linker=linker, ctx=ctx) as inst:
            inst.run("_initialize")
            assert inst.run("greet", 1) == 0
            assert inst.run("greet", 5) == 8             # EBADF
    finally:
        ctx.fds.close_all()
    assert config.stdout_file.getvalue() == b"hello\n"


def test_an_entrypoint_and_a_given_region(region):
    config = WasiConfig()
    config.stdout_file = io.BytesIO()
    m = module('(func (export "main2") (call $proc_exit (i32.const 3)))')
    assert run(m, config, region=region, entrypoint="main2") == 3
    assert run(m, config, region=region, entrypoint="main2") == 3   # the slot came back
