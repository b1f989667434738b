"""The ELF writer against its real consumers: glibc's dlopen/dlsym, binutils, gdb, our reader."""

from __future__ import annotations

import ctypes
import shutil
import struct
import subprocess
import sys

import pytest

from pylucet.cli import objdump as objdump_cli
from pylucet.cli._common import ExitStatus
from pylucet.elf.reader import ELFFile, read_module_data
from pylucet.elf.structs import PF, PT, SHT, STB, STT, sysv_hash
from pylucet.elf.writer import write_shared_object
from pylucet.errors import LoadError
from pylucet.module.abi import FUNC_SYMBOL_PREFIX, MODULE_SYMBOL
from pylucet.module.serialize import HEADER_SIZE, dumps, loads, unpack_header
from pylucet.module.spec import ExportSpec, FunctionSpec, HeapSpec, ModuleData
from pylucet.module.traps import TrapCode, TrapSite, TrapTable
from pylucet.wasm.types import ExternKind, FuncType, ValType

I32 = ValType.I32

# SysV x86-64: int answer(void) { return 42; }  and  int add(int a, int b) { return a + b; }
ANSWER = bytes.fromhex("b8 2a 00 00 00 c3")    # mov eax, 42; ret
ADD = bytes.fromhex("8d 04 37 c3")             # lea eax, [rdi + rsi]; ret
TEXT = ANSWER + b"\xcc" * 10 + ADD             # add starts 16-byte aligned


def two_function_module():
    fns = [FunctionSpec(0, "answer", 0, 0, len(ANSWER), TrapTable([]), wasm_offset=0x20),
           FunctionSpec(1, "add", 1, 16, len(ADD),
                        TrapTable([TrapSite(0, TrapCode.HeapOutOfBounds, 0x2A)]), 0x30)]
    md = ModuleData(name="two", heap=HeapSpec(65536, 131072, 8 << 30, 4 << 30),
                    types=[FuncType((), (I32,)), FuncType((I32, I32), (I32,))], globals=[],
                    functions=fns, imports=[], exports=[ExportSpec("add", ExternKind.FUNC, 1)],
                    tables=[], sparse_data={0: b"hello".ljust(4096, b"\0")})
    symbols = [(f.symbol, f.code_offset, f.code_size) for f in fns]
    return md, symbols


@pytest.fixture
def artifact(tmp_path):
    md, symbols = two_function_module()
    path = tmp_path / "two.so"
    path.write_bytes(write_shared_object(TEXT, symbols, md, soname="two.so"))
    return path, md


def test_dlopen_and_call_both_functions(artifact):
    path, _ = artifact
    lib = ctypes.CDLL(str(path))
    answer = lib[FUNC_SYMBOL_PREFIX + "answer"]
    answer.restype = ctypes.c_int
    add = lib[FUNC_SYMBOL_PREFIX + "add"]
    add.argtypes, add.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    assert answer() == 42
    assert add(40, 2) == 42 and add(-5, 3) == -2


def test_dlsym_finds_module_data_and_the_header_locates_the_code(artifact):
    path, md = artifact
    lib = ctypes.CDLL(str(path))
    addr = ctypes.addressof(ctypes.c_char.in_dll(lib, MODULE_SYMBOL))
    header = unpack_header(ctypes.string_at(addr, HEADER_SIZE))
    assert header.text_size == len(TEXT)
    assert loads(ctypes.string_at(addr + HEADER_SIZE, header.blob_size)) == md
    base = addr - header.self_vaddr
    for f in md.functions:
        sym = ctypes.cast(lib[f.symbol], ctypes.c_void_p).value
        assert sym == base + header.text_vaddr + f.code_offset
    # The blob, and so each sparse page, starts on a page in memory.
    assert (addr + HEADER_SIZE) % 4096 == 0


def test_many_functions_resolve_through_the_hash_tables(tmp_path):
    n = 700
    text = b"".join(b"\xb8" + struct.pack("<i", i) + b"\xc3" + b"\xcc" * 10 for i in range(n))
    fns = [FunctionSpec(i, f"f{i}", 0, 16 * i, 6, TrapTable([])) for i in range(n)]
    md = ModuleData("many", None, [FuncType((), (I32,))], [], fns, [], [], [], {})
    path = tmp_path / "many.so"
    path.write_bytes(write_shared_object(text, [(f.symbol, f.code_offset, 6) for f in fns], md))
    lib = ctypes.CDLL(str(path))       # glibc looks up through .gnu.hash
    for i in range(0, n, 13):
        f = lib[f"{FUNC_SYMBOL_PREFIX}f{i}"]
        f.restype = ctypes.c_int
        assert f() == i
    # .hash (gABI 5 "Hash Table") is checked by walking it the way a DT_HASH-only loader would.
    elf = ELFFile(path.read_bytes())
    syms = elf.symbols(".dynsym")
    words = elf.get_section_by_name(".hash").data()
    nbucket, nchain = struct.unpack_from("<II", words)
    bucket = struct.unpack_from(f"<{nbucket}I", words, 8)
    chain = struct.unpack_from(f"<{nchain}I", words, 8 + 4 * nbucket)
    assert nchain == len(syms)
    for sym in syms[1:]:
        i = bucket[sysv_hash(sym.name.encode()) % nbucket]
        while i and syms[i].name != sym.name:
            i = chain[i]
        assert i == sym.index


def test_module_without_functions_loads(tmp_path):
    md = ModuleData(None, None, [], [], [], [], [], [], {})
    path = tmp_path / "empty.so"
    path.write_bytes(write_shared_object(b"", [], md))
    lib = ctypes.CDLL(str(path))
    addr = ctypes.addressof(ctypes.c_char.in_dll(lib, MODULE_SYMBOL))
    assert unpack_header(ctypes.string_at(addr, HEADER_SIZE)).text_size == 0
    assert read_module_data(path)[1] == md


def test_writer_rejects_symbols_outside_text():
    md, _ = two_function_module()
    with pytest.raises(ValueError):
        write_shared_object(TEXT, [("guest_func_x", len(TEXT) - 2, 4)], md)


def test_reader_reads_back_what_the_writer_wrote(artifact):
    path, md = artifact
    header, back = read_module_data(path)
    assert back == md
    elf = ELFFile.open(path)
    names = [s.name for s in elf.iter_sections()]
    for wanted in (".text", ".pylucet", ".dynsym", ".dynstr", ".hash", ".gnu.hash", ".dynamic",
                   ".symtab", ".strtab", ".shstrtab"):
        assert wanted in names
    text = elf.get_section_by_name(".text")
    assert text.addr == header.text_vaddr and text.data()[:len(TEXT)] == TEXT

    segments = list(elf.iter_segments())
    loads_ = [s for s in segments if s.type == PT.LOAD]
    assert [s.header.p_flags for s in loads_] == [PF.R, PF.R | PF.X, PF.R | PF.W]
    assert all(s.header.p_offset % 4096 == s.header.p_vaddr % 4096 for s in loads_)
    stack = [s for s in segments if s.type == PT.GNU_STACK]
    assert len(stack) == 1 and not stack[0].header.p_flags & PF.X
    assert any(s.type == PT.DYNAMIC for s in segments)
    assert elf.get_section_by_name(".dynamic").type == SHT.DYNAMIC

    for table in (".symtab", ".dynsym"):
        syms = {s.name: s for s in elf.symbols(table)}
        for f in md.functions:
            s = syms[f.symbol]
            assert (s.type, s.bind) == (STT.FUNC, STB.GLOBAL)
            assert s.value == header.text_vaddr + f.code_offset and s.size == f.code_size
        mod = syms[MODULE_SYMBOL]
        assert mod.type == STT.OBJECT and mod.value == header.self_vaddr
        assert mod.size == HEADER_SIZE + header.blob_size
    # The blob sits page aligned in the file too, ready for a copy-on-write mmap.
    assert (header.self_vaddr + HEADER_SIZE) % 4096 == 0
    assert header.blob_size == len(dumps(md))


def test_reader_rejects_non_artifacts(tmp_path):
    junk = tmp_path / "junk.so"
    junk.write_bytes(b"not an elf file at all")
    with pytest.raises(LoadError):
        read_module_data(junk)
    md, symbols = two_function_module()
    data = write_shared_object(TEXT, symbols, md)
    truncated = tmp_path / "truncated.so"
    truncated.write_bytes(data[:len(data) // 2])
    with pytest.raises(LoadError):
        read_module_data(truncated)


binutils = pytest.mark.skipif(not (shutil.which("readelf") and shutil.which("objdump")),
                              reason="binutils (readelf, objdump) not installed")


@binutils
def test_readelf_reads_it_without_warnings(artifact):
    path, _ = artifact
    r = subprocess.run(["readelf", "-a", "-W", str(path)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == ""
    assert "Warning" not in r.stdout
    for name in ("guest_func_answer", "guest_func_add", MODULE_SYMBOL, "GNU_STACK",
                 "Library soname: [two.so]", "NT_GNU_BUILD_ID"):
        assert name in r.stdout


@binutils
def test_objdump_labels_each_function(artifact):
    path, _ = artifact
    d = subprocess.run(["objdump", "-d", str(path)], capture_output=True, text=True)
    assert d.returncode == 0 and d.stderr == "" and "Warning" not in d.stdout
    assert "<guest_func_answer>:" in d.stdout and "<guest_func_add>:" in d.stdout
    assert "mov    $0x2a,%eax" in d.stdout and "lea    (%rdi,%rsi,1),%eax" in d.stdout


@pytest.mark.skipif(not shutil.which("gdb"), reason="gdb not installed")
def test_gdb_sees_the_function_symbols(artifact):
    path, _ = artifact
    g = subprocess.run(["gdb", "-nx", "-batch", "-ex", "info functions guest_func_",
                        str(path)], capture_output=True, text=True, timeout=120)
    assert g.returncode == 0
    assert "guest_func_answer" in g.stdout and "guest_func_add" in g.stdout


def test_objdump_cli(artifact, capsys):
    path, _ = artifact
    assert objdump_cli.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "guest_func_add" in out and "HeapOutOfBounds" in out and "wasm 0x2a" in out
    assert "heap: initial 0x10000 bytes, max 0x20000 bytes" in out
    assert "func 'add' -> 1" in out

    assert objdump_cli.main([str(path), "--disassemble", "-f", "add"]) == 0
    out = capsys.readouterr().out
    assert "<guest_func_add>:" in out and "<guest_func_answer>:" not in out
    pytest.importorskip("capstone")
    assert "lea eax, [rdi + rsi]" in out and "trap HeapOutOfBounds" in out


@binutils
def test_objdump_cli_falls_back_to_system_objdump(artifact, capsys, monkeypatch):
    path, _ = artifact
    monkeypatch.setitem(sys.modules, "capstone", None)    # import capstone -> ImportError
    assert objdump_cli.main([str(path), "-d"]) == 0
    out = capsys.readouterr().out
    assert "<guest_func_add>:" in out and "Disassembly of section .text" in out


def test_objdump_cli_reports_bad_input(tmp_path, capsys):
    bad = tmp_path / "bad.so"
    bad.write_bytes(b"\x7fELF")
    assert objdump_cli.main([str(bad)]) == ExitStatus.BAD_MODULE
    assert "pylucet-objdump" in capsys.readouterr().err
