"""The compiler driver: wasm (binary or text) in, an ELF shared object out.

It streams one function at a time through decode -> validate -> generate code, so a large
module never holds more than one function's instructions, and nothing reaches the code generator
before the validator has accepted it. Everything that is not per-function code (heap spec, initial
data pages, globals, tables, exports, trap tables) becomes :class:`~pylucet.module.spec.ModuleData`.
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from ..errors import LimitsExceeded, MalformedModule, Unsupported
from ..module.spec import (SPARSE_PAGE_SIZE, DataSpec, ElemSpec, ExportSpec, FunctionSpec,
                           GlobalSpec, HeapSpec, ImportSpec, ModuleData, TableSpec, symbol_safe)
from ..module.abi import (FUNC_SYMBOL_PREFIX, FUNCREF, FUNCREF_SIZE, IMPORT_TRAMPOLINE_SIZE,
                          PAGE_SIZE, VMCTX_FUNCREFS, WASM_PAGE_SIZE)
from ..module.traps import TrapTable
from ..wasm.decoder import decode_body, decode_module
from ..wasm.opcodes import Op
from ..wasm.types import ConstExpr, ElemSegment, ExternKind, Module, SegmentMode
from ..wasm.validator import Validator
from .codegen import compile_function
from .env import ModuleEnv
from .x86_64 import encoding as X
from .x86_64.encoding import NO_INDEX
from .x86_64.registers import R10, R14

Source = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]"]

HEAP_RESERVED_SIZE = 4 << 30
"""Address space compiled code may address without a check: every i32 address."""
HEAP_GUARD_SIZE = 4 << 30
"""Past the reserved part, enough inaccessible space for the largest memarg offset (u32)."""
FUNCTION_ALIGN = 16


Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` after each function a compile finishes."""


@dataclass
class CompileStats:
    """What a compile did and where its time went.

    ``seconds`` is the whole of :func:`compile_module`; the phases are its parts: reading the
    source (and parsing WAT), decoding the module, validating, generating code, and the rest
    (module data, call relocation). Throughput counts the per-function phases only, so it does
    not depend on how long reading or parsing text took.
    """

    functions: int = 0
    instructions: int = 0
    code_bytes: int = 0
    seconds: float = 0.0
    read_seconds: float = 0.0
    decode_seconds: float = 0.0
    validate_seconds: float = 0.0
    codegen_seconds: float = 0.0

    @property
    def function_seconds(self) -> float:
        """Decoding, validating and compiling function bodies."""
        return self.decode_seconds + self.validate_seconds + self.codegen_seconds

    @property
    def instructions_per_second(self) -> float:
        s = self.function_seconds
        return self.instructions / s if s else 0.0

    def __str__(self) -> str:
        ms = lambda s: f"{s * 1e3:.1f} ms"  # noqa: E731
        rest = self.seconds - self.read_seconds - self.function_seconds
        return (f"{self.functions} functions, {self.instructions} wasm instructions, "
                f"{self.code_bytes} bytes of code; compile {ms(self.seconds)} = read/parse "
                f"{ms(self.read_seconds)} + decode {ms(self.decode_seconds)} + validate "
                f"{ms(self.validate_seconds)} + codegen {ms(self.codegen_seconds)} + module "
                f"data {ms(max(rest, 0.0))}; {self.instructions_per_second:,.0f} "
                "instructions/s through decode, validate and codegen")


@dataclass
class CompiledModule:
    """The compiler's output before (and including) its ELF form."""

    data: ModuleData
    text: bytes
    symbols: List[Tuple[str, int, int]]      # (symbol, offset in .text, size) per function
    stats: CompileStats = field(default_factory=CompileStats)

    def to_elf(self) -> bytes:
        from ..elf.writer import write_shared_object
        return write_shared_object(self.text, self.symbols, self.data,
                                   soname=f"{symbol_safe(self.data.name or 'module')}.so")

    def __repr__(self) -> str:
        return (f"<CompiledModule {self.data.name or '?'}: {len(self.data.functions)} functions, "
                f"{len(self.text)} bytes of code>")


def read_source(source: Source) -> bytes:
    """Turn whatever the user handed us into a wasm binary: bytes that start with the wasm magic
    are a binary, other bytes or a str are WAT text, a path is read first."""
    if isinstance(source, os.PathLike) or (isinstance(source, str) and _looks_like_path(source)):
        with open(source, "rb") as f:
            source = f.read()
    if isinstance(source, (bytearray, memoryview)):
        source = bytes(source)
    if isinstance(source, bytes):
        text = _as_text(source)
        if text is None:
            return source   # a binary, or bytes that are nothing: the decoder says which
        source = text
    if not isinstance(source, str):
        raise TypeError(f"cannot compile {type(source).__name__!r} objects: expected wasm bytes, "
                        "WAT text or a path")
    from ..wasm.wat import parse_wat
    return parse_wat(source)


def _as_text(data: bytes) -> Optional[str]:
    """``data`` as WAT text if it reads as such (UTF-8 starting with '(' or a comment)."""
    if data.startswith(b"\0asm"):
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if text.lstrip().startswith(("(", ";;")) else None


def _looks_like_path(text: str) -> bool:
    """A str is WAT text if it contains a parenthesis; otherwise it names a file."""
    return "(" not in text and "\n" not in text


def compile_module(source: Source, name: Optional[str] = None, *,
                   interrupt_checks: bool = True,
                   reserved_size: int = HEAP_RESERVED_SIZE, guard_size: int = HEAP_GUARD_SIZE,
                   max_heap: Optional[int] = None,
                   progress: Optional[Progress] = None) -> CompiledModule:
    """Decode, validate and compile ``source`` into machine code plus module data.

    ``interrupt_checks`` (default on) makes every function entry and loop iteration test the
    instance's interrupt flag, so a kill switch, a timeout or Ctrl-C can stop a guest that never
    calls out; off, code is a little faster and only ends by itself or by a trap.

    ``reserved_size`` and ``guard_size`` go into the module's :class:`HeapSpec` (see
    :func:`heap_spec` for what they must satisfy); ``max_heap`` caps the memory's maximum, in
    bytes. ``progress(done, total)`` is called after each function, for a progress display."""
    check_heap_options(reserved_size, guard_size, max_heap)
    started = time.perf_counter()
    binary = read_source(source)
    read_done = time.perf_counter()
    try:
        module = decode_module(binary)
    except MalformedModule:
        # Bodies are decoded lazily, one at a time, but the spec reports the first error a
        # sequential reader meets, which may lie inside a body: only now is it worth looking.
        decode_module(binary, check_bodies=True)
        raise

    validator = Validator(module)
    validator.validate_module()
    env = ModuleEnv.from_module(module)
    env.interrupt_checks = interrupt_checks

    nimp = module.num_imported_funcs
    text = bytearray(_import_trampolines(nimp))
    functions: List[FunctionSpec] = []
    symbols: List[Tuple[str, int, int]] = []
    used_symbols: Dict[str, int] = {}
    relocs: List[Tuple[int, int]] = []   # (absolute offset of a rel32 in text, callee index)
    features: set = set()
    stats = CompileStats()

    stats.read_seconds = read_done - started
    stats.decode_seconds = time.perf_counter() - read_done   # the module's sections
    total = len(module.codes)
    for i, body in enumerate(module.codes):
        func_index = nimp + i
        t0 = time.perf_counter()
        instrs = decode_body(module, body)
        t1 = time.perf_counter()
        validator.validate_function(func_index, instrs)
        t2 = time.perf_counter()
        compiled = compile_function(env, func_index, body, instrs)
        t3 = time.perf_counter()
        stats.decode_seconds += t1 - t0
        stats.validate_seconds += t2 - t1
        stats.codegen_seconds += t3 - t2
        text.extend(b"\xcc" * (-len(text) % FUNCTION_ALIGN))   # int3 padding between functions
        start = len(text)
        text.extend(compiled.code)
        relocs.extend((start + off, callee) for off, callee in compiled.calls)
        features |= compiled.features
        name_ = module.func_name(func_index)
        functions.append(FunctionSpec(
            func_index=func_index, name=name_, type_id=env.func_type_ids[func_index],
            code_offset=start, code_size=len(compiled.code),
            traps=TrapTable(sorted(compiled.traps)), wasm_offset=body.start))
        symbols.append((_unique_symbol(FUNC_SYMBOL_PREFIX + symbol_safe(name_), func_index,
                                       used_symbols), start, len(compiled.code)))
        stats.instructions += len(instrs)
        if progress is not None:
            progress(i + 1, total)

    for at, callee in relocs:
        target = (IMPORT_TRAMPOLINE_SIZE * callee if callee < nimp
                  else functions[callee - nimp].code_offset)
        struct.pack_into("<i", text, at, target - (at + 4))
    for i, imp in enumerate(i for i in module.imports if i.kind == ExternKind.FUNC):
        symbols.append((_unique_symbol(f"guest_import_{symbol_safe(imp.module)}_"
                                       f"{symbol_safe(imp.name)}", i, used_symbols),
                        IMPORT_TRAMPOLINE_SIZE * i, IMPORT_TRAMPOLINE_SIZE))

    data = ModuleData(
        name=name or module.names.module,
        heap=heap_spec(module, reserved_size, guard_size, max_heap),
        types=list(env.types),
        globals=_globals(module, env),
        functions=functions,
        imports=_imports(module, env),
        exports=[ExportSpec(e.name, e.kind, e.index) for e in module.exports],
        tables=[],
        sparse_data={},
        start=module.start,
        features=frozenset(features),
        interrupt_checks=interrupt_checks,
    )
    data.tables = [TableSpec(t.elem, t.limits.min, t.limits.max) for t in module.tables]
    data.funcrefs = list(env.funcrefs)
    data.elems = [_elem(seg, i) for i, seg in enumerate(module.elems)]
    if module.imported(ExternKind.MEMORY) or any(
            global_ref(seg.offset or ()) is not None for seg in module.datas):
        data.active_data, data.data_error = _active_data(module), None
    else:
        data.sparse_data, data.data_error = _sparse_data(module)
    data.passive_data = [seg.data if seg.mode == SegmentMode.PASSIVE else b""
                         for seg in module.datas]

    stats.functions = len(functions)
    stats.code_bytes = len(text)
    stats.seconds = time.perf_counter() - started
    return CompiledModule(data, bytes(text), symbols, stats)


def _import_trampolines(count: int) -> bytes:
    """The trampoline of each imported function (see ``abi.IMPORT_TRAMPOLINE_SIZE``)."""
    out = bytearray()
    for i in range(count):
        asm = X.Assembler()
        asm.mov_rm(64, R10, (R14, NO_INDEX, 1, VMCTX_FUNCREFS))   # the records, imports first
        asm.lea(64, R10, (R10, NO_INDEX, 1, FUNCREF_SIZE * i))    # r10 = &record i
        asm.jmp_m((R10, NO_INDEX, 1, FUNCREF["func"]))            # tail-jump to its code
        code = bytes(asm.code)
        out += code + b"\xcc" * (IMPORT_TRAMPOLINE_SIZE - len(code))
    return bytes(out)


def _unique_symbol(symbol: str, func_index: int, used: Dict[str, int]) -> str:
    """Function names need not be unique in wasm; symbols must be."""
    if symbol in used:
        symbol = f"{symbol}.{func_index}"
    used[symbol] = func_index
    return symbol


def check_heap_options(reserved_size: int = HEAP_RESERVED_SIZE, guard_size: int = HEAP_GUARD_SIZE,
                       max_heap: Optional[int] = None) -> None:
    """Heap options the code generator can honour (misuse of the API: ValueError)."""
    for what, value, unit in (("reserved_size", reserved_size, WASM_PAGE_SIZE),
                              ("guard_size", guard_size, PAGE_SIZE),
                              ("max_heap", max_heap, WASM_PAGE_SIZE)):
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{what} must be a non-negative int, not {value!r}")
        if value % unit:
            raise ValueError(f"{what} {value:#x} is not a multiple of {unit:#x}")
    if reserved_size > HEAP_RESERVED_SIZE:
        raise ValueError(f"reserved_size {reserved_size:#x} exceeds the {HEAP_RESERVED_SIZE:#x} "
                         "bytes a 32-bit address can name")
    # Memory accesses are compiled without bounds checks: address (u32) + offset (u32) must
    # land inside the reservation or its guard, whatever the split between the two.
    if reserved_size + guard_size < HEAP_RESERVED_SIZE + HEAP_GUARD_SIZE:
        raise ValueError(f"reserved_size + guard_size must cover "
                         f"{HEAP_RESERVED_SIZE + HEAP_GUARD_SIZE:#x} bytes (8 GiB): compiled "
                         "code does no bounds checks, so every 32-bit address plus a 32-bit "
                         "offset must land on reserved or guard pages")


def heap_spec(module: Module, reserved_size: int = HEAP_RESERVED_SIZE,
              guard_size: int = HEAP_GUARD_SIZE,
              max_heap: Optional[int] = None) -> Optional[HeapSpec]:
    """The module's memory as a HeapSpec: its maximum capped by ``max_heap`` and by the
    reservation (growth beyond ``reserved_size`` would reach the guard). For an imported memory,
    the sizes are the import's: what the memory linked to it must at least have, and may at most
    grow to here."""
    memories = module.all_memories()
    if not memories:
        return None
    lim = memories[0].limits
    initial = lim.min * WASM_PAGE_SIZE
    max_size = None if lim.max is None else lim.max * WASM_PAGE_SIZE
    for cap, what in ((max_heap, "the maximum heap"), (reserved_size, "the reserved size")):
        if cap is None:
            continue
        if initial > cap:
            raise LimitsExceeded(f"the module's memory starts at {initial:#x} bytes, more than "
                                 f"{what} of {cap:#x} bytes")
        if cap < HEAP_RESERVED_SIZE and (max_size is None or max_size > cap):
            max_size = cap
    return HeapSpec(initial_size=initial, max_size=max_size, reserved_size=reserved_size,
                    guard_size=guard_size, imported=bool(module.imported(ExternKind.MEMORY)))


def const_value(expr: ConstExpr, what: str) -> int:
    """The raw bits of a constant expression the compiler can evaluate on its own."""
    if len(expr) == 1:
        op, imm, _ = expr[0]
        if op == Op.I32_CONST:
            return imm & 0xFFFF_FFFF  # type: ignore[operator]
        if op == Op.I64_CONST:
            return imm & 0xFFFF_FFFF_FFFF_FFFF  # type: ignore[operator]
        if op in (Op.F32_CONST, Op.F64_CONST):
            return imm  # type: ignore[return-value]
        if op == Op.REF_NULL:
            return 0
    raise Unsupported(f"{what}: only constant initialisers are supported yet here "
                      "(ref.func, and global.get outside global initialisers and data segment "
                      "offsets, come with reference types)")


def global_ref(expr: ConstExpr) -> Optional[int]:
    """The global a constant expression ``global.get``s (an imported one: the validator saw to
    that), or None for any other expression."""
    if len(expr) == 1 and expr[0][0] == Op.GLOBAL_GET:
        return expr[0][1]  # type: ignore[return-value]
    return None


def _globals(module: Module, env: ModuleEnv) -> List[GlobalSpec]:
    """Every global of the index space, imports first: an import's value comes from what it is
    linked to, a defined global's from its constant, from the imported global it reads, or
    (``ref.func``) from the function's record, which is per instance."""
    out = [GlobalSpec(imp.desc.valtype, imp.desc.mutable, 0,  # type: ignore[union-attr]
                      env.global_offsets[i], import_from=(imp.module, imp.name))
           for i, imp in enumerate(module.imported(ExternKind.GLOBAL))]
    for g in module.globals:
        i = len(out)
        if len(g.init) == 1 and g.init[0][0] == Op.REF_FUNC:
            out.append(GlobalSpec(g.type.valtype, g.type.mutable, 0, env.global_offsets[i],
                                  init_func=g.init[0][1]))
            continue
        source = global_ref(g.init)
        init = 0 if source is not None else const_value(g.init, f"global {i}")
        out.append(GlobalSpec(g.type.valtype, g.type.mutable, init, env.global_offsets[i],
                              init_global=source))
    return out


def _imports(module: Module, env: ModuleEnv) -> List[ImportSpec]:
    out = []
    for imp in module.imports:
        type_id = env.type_ids[imp.desc] if imp.kind == ExternKind.FUNC else None  # type: ignore[index]
        table = None
        if imp.kind == ExternKind.TABLE:
            t = imp.desc
            table = TableSpec(t.elem, t.limits.min, t.limits.max)  # type: ignore[union-attr]
        out.append(ImportSpec(imp.module, imp.name, imp.kind, type_id, table))
    return out


def _elem(seg: ElemSegment, index: int) -> ElemSpec:
    """An element segment as the runtime applies it (active ones at instantiation, in order,
    stopping at the first that does not fit, as Wasm 2.0 says)."""
    items: List[Optional[int]] = []
    item_globals: List[Tuple[int, int]] = []
    for k, expr in enumerate(seg.init):
        op, imm, _ = expr[0] if len(expr) == 1 else (None, None, None)
        if op == Op.REF_FUNC:
            items.append(imm)  # type: ignore[arg-type]
        elif op == Op.REF_NULL:
            items.append(None)
        elif op == Op.GLOBAL_GET:
            items.append(None)
            item_globals.append((k, imm))  # type: ignore[arg-type]
        else:
            raise Unsupported(f"element segment {index}: element {k} is not a constant "
                              "reference")
    offset = offset_global = None
    if seg.mode == SegmentMode.ACTIVE:
        expr = seg.offset or ()
        if len(expr) == 1 and expr[0][0] == Op.GLOBAL_GET:
            offset_global = expr[0][1]
        else:
            offset = const_value(expr, f"element segment {index} offset")
    return ElemSpec(seg.mode, seg.elem_type, tuple(items), seg.table, offset, offset_global,
                    tuple(item_globals))


def _sparse_data(module: Module) -> Tuple[Dict[int, bytes], Optional[str]]:
    """The initial heap as 4 KiB pages: only pages some data segment touches are stored."""
    pages: Dict[int, bytearray] = {}
    initial = module.memories[0].limits.min * WASM_PAGE_SIZE if module.memories else 0
    error = None
    for seg in module.datas:
        if seg.mode != SegmentMode.ACTIVE:
            continue
        offset = const_value(seg.offset or (), "data segment offset")
        if offset + len(seg.data) > initial:
            error = "out of bounds memory access"
            break
        pos = 0
        while pos < len(seg.data):
            addr = offset + pos
            page, within = divmod(addr, SPARSE_PAGE_SIZE)
            chunk = seg.data[pos:pos + SPARSE_PAGE_SIZE - within]
            buf = pages.setdefault(page, bytearray(SPARSE_PAGE_SIZE))
            buf[within:within + len(chunk)] = chunk
            pos += len(chunk)
    return {k: bytes(v) for k, v in sorted(pages.items())}, error


def _active_data(module: Module) -> List[DataSpec]:
    """The active data segments, for the runtime to write at instantiation (``DataSpec``)."""
    out = []
    for seg in module.datas:
        if seg.mode != SegmentMode.ACTIVE:
            continue
        source = global_ref(seg.offset or ())
        offset = 0 if source is not None else const_value(seg.offset or (),
                                                          "data segment offset")
        out.append(DataSpec(offset, source, seg.data))
    return out


def compile(source: Source, output: Optional[Union[str, "os.PathLike[str]"]] = None,
            name: Optional[str] = None, **options: Any) -> bytes:
    """Compile wasm or WAT to an ELF shared object; write it to ``output`` if given.

    ``options`` are :func:`compile_module`'s keywords. Returns the shared object's bytes, which
    :func:`pylucet.load` also accepts directly. The output is written atomically, so a reader
    never sees half an artifact under its name.
    """
    elf = compile_module(source, name=name, **options).to_elf()
    if output is not None:
        from .._atomic import write_atomically
        write_atomically(output, elf)
    return elf
