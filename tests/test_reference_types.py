"""Reference types end to end: funcref and externref values, tables shared between instances and
the host, the table instructions, and what happens to references when instances go away."""

from __future__ import annotations

import gc
import weakref

import pytest

import pylucet
from pylucet import Func, LinkError, Table, Trap, TrapCode, ValType
from pylucet.runtime.references import live_externrefs

TABLES = r"""
(module
  (type $ii (func (param i32) (result i32)))
  (table $t (export "t") 4 10 funcref)
  (table $e 2 externref)
  (elem (table $t) (i32.const 0) func $inc $dbl)
  (elem $p func $dbl $inc)
  (func $inc (export "inc") (param i32) (result i32) (i32.add (local.get 0) (i32.const 1)))
  (func $dbl (param i32) (result i32) (i32.mul (local.get 0) (i32.const 2)))
  (func (export "call") (param i32 i32) (result i32)
    (call_indirect (type $ii) (local.get 1) (local.get 0)))
  (func (export "size") (result i32) (table.size $t))
  (func (export "grow") (param i32) (result i32) (table.grow $t (ref.func $inc) (local.get 0)))
  (func (export "fill") (param i32 i32) (table.fill $t (local.get 0) (ref.null func) (local.get 1)))
  (func (export "init") (param i32 i32 i32) (table.init $t $p (local.get 0) (local.get 1) (local.get 2)))
  (func (export "copy") (param i32 i32 i32) (table.copy $t $t (local.get 0) (local.get 1) (local.get 2)))
  (func (export "drop") (elem.drop $p))
  (func (export "get") (param i32) (result funcref) (table.get $t (local.get 0)))
  (func (export "set") (param i32 funcref) (table.set $t (local.get 0) (local.get 1)))
  (func (export "setext") (param i32 externref) (table.set $e (local.get 0) (local.get 1)))
  (func (export "getext") (param i32) (result externref) (table.get $e (local.get 0)))
  (func (export "same") (param externref) (result externref) (local.get 0))
  (func (export "isnull") (param externref) (result i32) (ref.is_null (local.get 0)))
  (func (export "reffunc") (result funcref) (ref.func $inc))
  (func (export "pick") (param funcref funcref i32) (result funcref)
    (select (result funcref) (local.get 0) (local.get 1) (local.get 2)))
)"""

SHARED = r"""
(module
  (import "env" "t" (table 2 funcref))
  (type $ii (func (param i32) (result i32)))
  (func $triple (param i32) (result i32) (i32.mul (local.get 0) (i32.const 3)))
  (elem (i32.const 1) $triple)
  (func (export "call") (param i32 i32) (result i32)
    (call_indirect (type $ii) (local.get 1) (local.get 0)))
)"""


@pytest.fixture(scope="module")
def tables_module():
    return pylucet.load(pylucet.compile(TABLES))


@pytest.fixture(scope="module")
def shared_module():
    return pylucet.load(pylucet.compile(SHARED))


@pytest.fixture
def region():
    with pylucet.MmapRegion(4) as r:
        yield r


def test_call_indirect_and_its_traps(region, tables_module):
    inst = region.new_instance(tables_module)
    assert inst.run("call", 0, 5) == 6 and inst.run("call", 1, 5) == 10
    with pytest.raises(Trap) as null:
        inst.run("call", 2, 5)
    assert null.value.code == TrapCode.IndirectCallToNull and null.value.func == "call"
    with pytest.raises(Trap) as oob:
        inst.run("call", 4, 5)
    assert oob.value.code == TrapCode.TableOutOfBounds


def test_table_instructions_check_every_range_first(region, tables_module):
    inst = region.new_instance(tables_module)
    assert inst.run("size") == 4
    assert inst.run("grow", 3) == 4 and inst.run("size") == 7
    assert inst.run("call", 6, 1) == 2                 # grown entries hold the init value
    assert inst.run("grow", 4) == -1                   # past the maximum of 10
    inst.run("init", 2, 0, 2)
    assert [inst.run("call", i, 5) for i in (2, 3)] == [10, 6]
    inst.run("copy", 4, 0, 3)
    assert [inst.run("call", i, 5) for i in (4, 5, 6)] == [6, 10, 10]
    with pytest.raises(Trap) as t:
        inst.run("init", 6, 0, 2)                      # 6 + 2 > 7: nothing written
    assert t.value.code == TrapCode.TableAccessOutOfBounds and t.value.func == "init"
    assert "out of bounds table access" in str(t.value) and t.value.wasm_offset is not None
    assert inst.run("call", 6, 5) == 10
    with pytest.raises(Trap):
        inst.run("copy", 0, 5, 3)                      # source range runs past the end
    assert inst.run("call", 0, 5) == 6
    inst.run("fill", 5, 2)
    with pytest.raises(Trap, match="uninitialized element"):
        inst.run("call", 5, 1)
    inst.run("drop")
    inst.run("init", 0, 0, 0)                          # an empty range of a dropped segment
    with pytest.raises(Trap, match="out of bounds table access"):
        inst.run("init", 0, 0, 1)
    inst.reset()                                       # segments and tables as at first
    assert inst.run("size") == 4
    inst.run("init", 2, 0, 1)
    assert inst.run("call", 2, 5) == 10


def test_references_at_the_host_boundary(region, tables_module):
    inst = region.new_instance(tables_module)
    f = inst.run("get", 0)
    assert isinstance(f, Func) and f.index == inst.exports["inc"].index and f(41) == 42
    assert inst.run("get", 3) is None
    assert inst.run("reffunc") == inst.exports["inc"]
    inst.run("set", 3, inst.exports["inc"])
    assert inst.run("call", 3, 1) == 2
    dbl = inst.run("get", 1)
    assert dbl.name == "dbl" and dbl(21) == 42        # not exported, still callable
    assert inst.run("pick", f, None, 1) == f and inst.run("pick", f, None, 0) is None
    thing = object()
    assert inst.run("same", thing) is thing and inst.run("same", None) is None
    assert inst.run("isnull", None) == 1 and inst.run("isnull", thing) == 0
    inst.run("setext", 1, thing)
    assert inst.run("getext", 1) is thing and inst.run("getext", 0) is None
    assert inst.tables[1][1] is thing and inst.tables[0][0] == f
    with pytest.raises(TypeError, match="funcref"):
        inst.run("set", 0, "not a function")
    with pytest.raises(Trap, match="out of bounds table access"):
        inst.run("setext", 2, thing)


def test_externrefs_live_while_an_instance_holds_them(region, tables_module):
    class Thing:
        pass
    inst = region.new_instance(tables_module)
    before = live_externrefs()
    thing = Thing()
    ref = weakref.ref(thing)
    inst.run("setext", 0, thing)
    del thing
    gc.collect()
    assert ref() is not None and inst.run("getext", 0) is ref()
    assert live_externrefs() == before + 1
    inst.close()
    gc.collect()
    assert ref() is None and live_externrefs() == before


def test_host_functions_take_and_return_references():
    seen = []
    linker = pylucet.Linker()
    linker.define_func("env", "keep", lambda r: seen.append(r) or r, "(externref) -> externref")
    module = pylucet.load(pylucet.compile(r"""(module
      (import "env" "keep" (func $keep (param externref) (result externref)))
      (func (export "round") (param externref) (result externref) (call $keep (local.get 0))))"""))
    with pylucet.MmapRegion(1) as region, region.new_instance(module, linker) as inst:
        token = ["a list is fine"]
        assert inst.run("round", token) is token and seen == [token]
        assert inst.run("round", None) is None


def test_a_host_table_is_shared_by_its_importers(region, shared_module, tables_module):
    table = Table(ValType.FUNCREF, 2, 8)
    linker = pylucet.Linker()
    linker.define_table("env", "t", table)
    a = region.new_instance(shared_module, linker)
    b = region.new_instance(shared_module, linker)
    assert table[1].instance is b                     # the later segment wrote over the first
    assert a.run("call", 1, 5) == 15 and b.run("call", 1, 5) == 15
    other = region.new_instance(tables_module)
    table[0] = other.exports["inc"]                   # another instance's function: a native
    assert a.run("call", 0, 5) == 6                   # call through pylucet_call_guest
    assert table.grow(2) == 2 and len(table) == 4 and table[3] is None
    with pytest.raises(ValueError, match="past its maximum"):
        table.grow(5)
    with pytest.raises(IndexError):
        table[4]
    with pytest.raises(TypeError):
        table[0] = 7
    other.close()                 # its function left through the host: cleared everywhere
    assert table[0] is None and a.run("call", 1, 2) == 6


def test_closing_an_instance_clears_its_functions_from_shared_tables(shared_module):
    table = Table(ValType.FUNCREF, 2)
    linker = pylucet.Linker()
    linker.define_table("env", "t", table)
    with pylucet.MmapRegion(1) as one:
        a = one.new_instance(shared_module, linker)
        assert table[1] is not None
        a.close()
        assert table[1] is None                       # not a dangling record in a reused slot
        b = one.new_instance(shared_module, linker)   # the same slot, a new tenant
        table[0] = None
        assert b.run("call", 1, 2) == 6
        b.close()
        with pytest.raises(Trap, match="uninitialized element"):
            one.new_instance(shared_module, linker).run("call", 0, 1)


def test_a_failed_instantiation_lives_on_in_a_shared_table(region):
    owner = region.new_instance(pylucet.load(pylucet.compile(r"""(module
      (type $v (func (result i32)))
      (table (export "t") 3 funcref)
      (func (export "call") (param i32) (result i32) (call_indirect (type $v) (local.get 0))))""")))
    linker = pylucet.Linker()
    linker.define_instance("m", owner)
    failing = pylucet.load(pylucet.compile(r"""(module
      (import "m" "t" (table 3 funcref))
      (func $f (result i32) (i32.const 42))
      (elem (i32.const 0) $f)
      (elem (i32.const 2) $f $f))"""))
    used = region.used_slots
    with pytest.raises(pylucet.InstantiationError, match="out of bounds table access"):
        region.new_instance(failing, linker)
    assert owner.run("call", 0) == 42                 # the first segment stays, as the spec says
    with pytest.raises(Trap, match="uninitialized element"):
        owner.run("call", 2)                          # the second was checked whole first
    assert region.used_slots == used + 1
    owner.close()                                     # takes the orphan with it
    assert region.used_slots == used - 1


def test_table_imports_are_type_checked(region, shared_module):
    for table, why in ((Table(ValType.EXTERNREF, 2), "table 2 funcref"),
                       (Table(ValType.FUNCREF, 1), "table 2 funcref"),
                       (Table(ValType.FUNCREF, 2, 100), None)):
        linker = pylucet.Linker()
        linker.define_table("env", "t", table)
        if why is None:
            region.new_instance(shared_module, linker).close()
            continue
        with pytest.raises(LinkError, match=why):
            region.new_instance(shared_module, linker)
    with pytest.raises(LinkError, match="env.t table 2 funcref is not defined"):
        region.new_instance(shared_module, pylucet.Linker())
    bounded = pylucet.load(pylucet.compile('(module (import "env" "t" (table 1 4 funcref)))'))
    linker = pylucet.Linker()
    linker.define_table("env", "t", Table(ValType.FUNCREF, 1))      # may grow past 4
    with pytest.raises(LinkError, match="table 1 4 funcref"):
        region.new_instance(bounded, linker)


def test_deep_recursion_through_tables_and_instances_is_a_stack_overflow(region):
    table = Table(ValType.FUNCREF, 1)
    linker = pylucet.Linker()
    linker.allow_shadowing = True
    linker.define_table("env", "t", table)
    c = region.new_instance(pylucet.load(pylucet.compile(r"""(module
      (import "env" "t" (table 1 funcref)) (type $v (func (param i32) (result i32)))
      (func $h (export "h") (param i32) (result i32)
        (i32.add (i32.const 1) (call_indirect (type $v) (local.get 0) (i32.const 0))))
      (elem (i32.const 0) $h))""")), linker)
    linker.define_instance("c", c)
    d = region.new_instance(pylucet.load(pylucet.compile(r"""(module
      (import "c" "h" (func $h (param i32) (result i32)))
      (func (export "k") (param i32) (result i32) (call $h (local.get 0))))""")), linker)
    table[0] = d.exports["k"]                         # c -> d -> c -> d ... on one stack
    for inst, name in ((c, "h"), (d, "k")):
        with pytest.raises(Trap) as t:
            inst.run(name, 1)
        assert t.value.code == TrapCode.StackOverflow
    table[0] = None
    with pytest.raises(Trap, match="uninitialized element"):
        c.run("h", 1)                                 # both usable again, nothing held


def test_call_indirect_calls_its_own_instance_directly():
    """A record of the calling instance is called at its code; only another instance's goes
    through the record's ``func`` (pylucet_call_guest or the hostcall stub): one call, its
    target picked without a branch."""
    capstone = pytest.importorskip("capstone")
    from pylucet.compiler.driver import compile_module
    from pylucet.module.abi import FUNCREF
    cm = compile_module(r"""(module (type $v (func)) (table 1 funcref)
      (func (export "f") (call_indirect (type $v) (i32.const 0))))""")
    f = cm.data.functions[0]
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    text = [f"{i.mnemonic} {i.op_str}" for i in
            md.disasm(cm.text[f.code_offset:f.code_offset + f.code_size], 0)]
    def disp(field: str) -> str:        # as capstone writes a displacement
        n = FUNCREF[field]
        return "" if n == 0 else f" + {n}" if n < 10 else f" + {n:#x}"
    pick = text.index(f"cmp r14, qword ptr [r10{disp('vmctx')}]")
    assert text[pick - 1] == f"mov r11, qword ptr [r10{disp('func')}]"
    assert text[pick + 1] == f"cmove r11, qword ptr [r10{disp('target')}]"
    assert text[pick + 2] == "call r11"


def test_closing_an_instance_clears_its_functions_from_funcref_globals(region):
    shared = pylucet.Global(ValType.FUNCREF, None, mutable=True)    # the host's
    linker = pylucet.Linker()
    linker.define_global("env", "g", shared)
    holder = region.new_instance(pylucet.load(pylucet.compile(r"""(module
      (global (mut funcref) (ref.null func))
      (func (export "set") (param funcref) (global.set 0 (local.get 0)))
      (func (export "get") (result funcref) (global.get 0)))""")))
    source = region.new_instance(pylucet.load(pylucet.compile(r"""(module
      (import "env" "g" (global (mut funcref)))
      (func $f (export "f") (result i32) (i32.const 7))
      (func (export "put") (global.set 0 (ref.func $f))))""")), linker)
    source.run("put")
    holder.run("set", source.exports["f"])
    assert shared.value() == 7 and holder.run("get")() == 7
    source.close()
    assert shared.value is None and holder.run("get") is None


def test_table_copy_between_tables_and_overlapping(region):
    host = Table(ValType.FUNCREF, 4)
    linker = pylucet.Linker()
    linker.define_table("env", "h", host)
    inst = region.new_instance(pylucet.load(pylucet.compile(r"""(module
      (import "env" "h" (table $h 4 funcref))
      (table $t 4 funcref)
      (type $v (func (result i32)))
      (func $a (result i32) (i32.const 1)) (func $b (result i32) (i32.const 2))
      (func $c (result i32) (i32.const 3))
      (elem (table $t) (i32.const 0) func $a $b $c)
      (func (export "copy_th") (param i32 i32 i32) (table.copy $h $t (local.get 0) (local.get 1) (local.get 2)))
      (func (export "copy_tt") (param i32 i32 i32) (table.copy $t $t (local.get 0) (local.get 1) (local.get 2)))
      (func (export "at") (param i32) (result i32)
        (if (result i32) (ref.is_null (table.get $t (local.get 0)))
          (then (i32.const 0)) (else (call_indirect $t (type $v) (local.get 0))))))""")), linker)
    at = lambda: [inst.run("at", i) for i in range(4)]  # noqa: E731
    inst.run("copy_th", 1, 0, 3)                      # into the host's table
    assert [None if f is None else f() for f in (host[i] for i in range(4))] == [None, 1, 2, 3]
    inst.run("copy_tt", 1, 0, 3)                      # overlapping, forwards: as memmove
    assert at() == [1, 1, 2, 3]
    inst.run("copy_tt", 0, 1, 3)                      # and backwards
    assert at() == [1, 2, 3, 3]
    with pytest.raises(Trap, match="out of bounds table access"):
        inst.run("copy_th", 2, 0, 3)                  # destination too short: nothing written
    assert host[1]() == 1 and host[3]() == 3
