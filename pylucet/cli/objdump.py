"""pylucet-objdump: show what a compiled artifact holds, without loading it.

Prints the module data (heap spec, sparse data pages, passive data segments, globals, tables,
signatures), imports and exports, and each function with its address, size and trap sites.
Lucet ships lucet-objdump for the same reason: when a guest traps somewhere surprising, the first
question is what the compiler recorded, and the artifact must be readable even if it would not
load.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, TextIO

from ..elf.reader import ELFFile, read_artifact
from ..errors import Error
from ..module.serialize import ArtifactHeader
from ..module.spec import SPARSE_PAGE_SIZE, FunctionSpec, ModuleData
from ..wasm.types import ExternKind
from ._common import CommandError, ExitStatus, Parser, one_line, require_file, status_of, tool

PROG = "pylucet-objdump"


def _opt(v: Optional[int], fmt: str = "{}") -> str:
    return "none" if v is None else fmt.format(v)


def _ranges(indices: Iterable[int]) -> str:
    """``0-3,7,9-10``: page lists stay short for contiguous data."""
    out: List[str] = []
    run: List[int] = []
    for i in sorted(indices):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [i]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def print_module(header: ArtifactHeader, md: ModuleData, out: TextIO,
                 functions: Optional[List[FunctionSpec]] = None) -> None:
    w = lambda *a: print(*a, file=out)  # noqa: E731
    w(f"module {md.display_name!r}: format version {header.version}")
    w(f"  .text at {header.text_vaddr:#x}, {header.text_size:#x} bytes; "
      f"module data at {header.self_vaddr:#x}, {header.blob_size:#x} bytes")
    w(f"  start function: {_opt(md.start)}")
    w(f"  CPU features: {', '.join(sorted(md.features)) or 'none'}")
    w(f"  interrupt checks: {'yes' if md.interrupt_checks else 'no (a timeout cannot stop it)'}")
    if md.data_error:
        w(f"  instantiation fails after data segments: {md.data_error}")

    if md.heap is None:
        w("heap: none")
    else:
        h = md.heap
        w(f"heap{' (imported)' if h.imported else ''}: initial {h.initial_size:#x} "
          f"bytes, max {_opt(h.max_size, '{:#x} bytes')}, reserved {h.reserved_size:#x}, "
          f"guard {h.guard_size:#x}")
    w(f"  sparse data pages: {len(md.sparse_data)}")
    if md.sparse_data:
        w(f"  initial data: {len(md.sparse_data)} pages of {SPARSE_PAGE_SIZE} bytes "
          f"(page indices {_ranges(md.sparse_data)})")
    passive = [i for i, d in enumerate(md.passive_data) if d]
    w(f"  data segments: {len(md.passive_data)}; passive ones with bytes for memory.init: "
      + (", ".join(f"[{i}] {len(md.passive_data[i])} bytes" for i in passive) or "none"))
    for seg in md.active_data:
        at = (f"{seg.offset:#x}" if seg.offset_global is None
              else f"the value of global {seg.offset_global}")
        w(f"  data segment written at instantiation: {len(seg.data)} bytes at {at}")

    w(f"signatures ({len(md.types)}):")
    for i, t in enumerate(md.types):
        w(f"  [{i}] {t}")
    w(f"globals ({len(md.globals)}):")
    for i, g in enumerate(md.globals):
        extra = f" imported from {g.import_from[0]}.{g.import_from[1]}" if g.import_from else ""
        if g.init_global is not None:
            extra += f" init = global {g.init_global}"
        if g.init_func is not None:
            extra += f" init = ref.func {g.init_func}"
        w(f"  [{i}] {'mut ' if g.mutable else ''}{g.valtype.text} = {g.init:#x} "
          f"at offset {g.offset:#x}{extra}")
    w(f"tables ({len(md.tables)}):")
    for i, t in enumerate(md.tables):
        w(f"  [{i}] {t.elem.text} initial {t.initial} max {_opt(t.max)}")
    w(f"element segments ({len(md.elems)}):")
    for i, e in enumerate(md.elems):
        where = ""
        if e.offset is not None or e.offset_global is not None:
            at = e.offset if e.offset is not None else f"global {e.offset_global}"
            where = f" table {e.table} at {at}"
        w(f"  [{i}] {e.mode.name.lower()} {e.elem_type.text}{where}: "
          + " ".join("null" if f is None else str(f) for f in e.items))
    if md.funcrefs:
        w(f"function records: {len(md.funcrefs)} after the imports' "
          f"({' '.join(map(str, md.funcrefs))})")
    w(f"imports ({len(md.imports)}):")
    for i in md.imports:
        ty = f" type [{i.type_id}] {md.types[i.type_id]}" if i.type_id is not None else ""
        w(f"  {i.kind.name.lower()} {i.module}.{i.name}{ty}")
    w(f"exports ({len(md.exports)}):")
    for e in md.exports:
        w(f"  {e.kind.name.lower()} {e.name!r} -> {e.index}")

    fns = md.functions if functions is None else functions
    w(f"functions ({len(fns)}):")
    for f in fns:
        start = header.text_vaddr + f.code_offset
        exported = [e.name for e in md.exports if e.kind == ExternKind.FUNC
                    and e.index == f.func_index]
        w(f"  [{f.func_index}] {f.name} {md.types[f.type_id]}"
          + (f" (exported as {', '.join(map(repr, exported))})" if exported else ""))
        w(f"      symbol {f.symbol}, code {start:#x}..{start + f.code_size:#x} "
          f"({f.code_size} bytes), wasm body at {f.wasm_offset:#x}")
        if len(f.traps):
            w(f"      trap sites ({len(f.traps)}):")
            for s in f.traps.sites:
                w(f"        {start + s.code_offset:#x} (+{s.code_offset:#x})  "
                  f"{s.code.name:<24} wasm {s.wasm_offset:#x}")


def disassemble(elf: ELFFile, path: Path, header: ArtifactHeader,
                functions: List[FunctionSpec], out: TextIO) -> int:
    """Each function with capstone, trap sites marked; system objdump if capstone is absent."""
    try:
        import capstone
    except ImportError:
        exe = shutil.which("objdump")
        if exe is None:
            raise CommandError("--disassemble needs capstone (pip install capstone) or "
                               "binutils' objdump", ExitStatus.UNSUPPORTED)
        done = subprocess.run([exe, "-d", str(path)], capture_output=True, text=True)
        out.write(done.stdout)
        if done.returncode:
            raise CommandError(f"objdump failed: {one_line(done.stderr)}", ExitStatus.ERROR)
        return ExitStatus.OK
    cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    for f in functions:
        start = header.text_vaddr + f.code_offset
        print(f"\n{start:016x} <{f.symbol}>:", file=out)
        code = elf.read_vaddr(start, f.code_size)
        for insn in cs.disasm(code, start):
            site = f.traps.lookup(insn.address - start)
            note = f"   ; trap {site.code.name} at wasm {site.wasm_offset:#x}" if site else ""
            text = f"{insn.mnemonic} {insn.op_str}".rstrip()
            print(f"  {insn.address:8x}:  {insn.bytes.hex(' '):<30} {text}{note}", file=out)
    return 0


def parser() -> argparse.ArgumentParser:
    ap = Parser(PROG, __doc__)
    ap.add_argument("artifact", type=Path, nargs="?", help="shared object written by pylucetc")
    ap.add_argument("-d", "--disassemble", nargs="?", const="", metavar="FUNC",
                    help="disassemble each function, or only FUNC (capstone, else binutils' "
                         "objdump)")
    ap.add_argument("-f", "--function", action="append", metavar="NAME",
                    help="only this function (by name, symbol or index); may repeat")
    return ap


@tool(PROG)
def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    if args.artifact is None:
        # "-d x.so": argparse gives the file to --disassemble's optional FUNC
        if not args.disassemble or not Path(args.disassemble).exists():
            ap.error("the following arguments are required: artifact")
        args.artifact, args.disassemble = Path(args.disassemble), ""
    require_file(args.artifact)
    try:
        elf = ELFFile.open(args.artifact)
        header, md = read_artifact(elf)
    except Error as e:
        raise CommandError(f"{args.artifact}: {e}", status_of(e)) from None
    wanted = set(args.function or ())
    if args.disassemble:
        wanted.add(args.disassemble)
    functions = md.functions
    if wanted:
        functions = [f for f in md.functions if {f.name, f.symbol, str(f.func_index)} & wanted]
        if not functions:
            raise CommandError(f"no function named {', '.join(sorted(wanted))}",
                               ExitStatus.USAGE)
    print_module(header, md, sys.stdout, functions)
    if args.disassemble is not None:
        return disassemble(elf, args.artifact, header, functions, sys.stdout)
    return ExitStatus.OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
