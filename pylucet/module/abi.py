"""The binary contract between compiled guest code, the runtime and the ``asm/`` stubs.

Every offset that more than one of the three halves relies on is defined here, once, and derived
from an ordered list of fields rather than written out by hand. The compiler reads these
constants when it emits code; the runtime builds its ctypes views from them; and the assembly
stubs get them as ``.equ`` lines (see :func:`asm_equates`), so the ``.s`` files hold no numbers
that could drift.

Picture of one instance's memory (see ``pylucet.runtime.region`` for the whole slot)::

    instance page (4 KiB)                                        heap
    +--------------------------------------------+---------------------+ +----------------- ...
    | host-side fields (INST_*), from offset 0   | runtime data (VMCTX_*) | | wasm linear memory
    +--------------------------------------------+---------------------+ +----------------- ...
                                                                        ^
                                                                        vmctx = heap base, held in r14

Compiled code addresses the heap as ``[r14 + zero-extended i32 + offset]`` with no bounds check:
the heap's address space is reserved far past 4 GiB + 4 GiB, so every out-of-bounds access lands
on an inaccessible page and faults. It reads runtime data at small negative offsets from r14.
"""

from __future__ import annotations

import enum
import functools
from typing import Dict, Iterable, List, NamedTuple, Tuple

from ..wasm.types import ValType

PAGE_SIZE = 4096                 # host page
WASM_PAGE_SIZE = 65536           # wasm memory page
WASM_MAX_PAGES = 65536           # 4 GiB of 32-bit linear memory
INSTANCE_PAGE_SIZE = PAGE_SIZE   # vmctx = instance page + INSTANCE_PAGE_SIZE
INSTANCE_MAGIC = 0x746563756C7970  # b"pylucet\0", little-endian: marks a live instance page


def _layout_up(fields: Iterable[Tuple[str, int]], start: int = 0) -> Dict[str, int]:
    """Offsets for fields laid out one after another from ``start`` (8-byte aligned each)."""
    out, pos = {}, start
    for name, size in fields:
        out[name] = pos
        pos += (size + 7) & ~7
    out["_end"] = pos
    return out


def _layout_down(fields: Iterable[Tuple[str, int]]) -> Dict[str, int]:
    """Offsets (negative, from vmctx) for fields laid out downward from vmctx: the first field
    ends at vmctx. An array field's offset is its lowest address, so element i is at +8*i."""
    out, pos = {}, 0
    for name, size in fields:
        pos -= (size + 7) & ~7
        out[name] = pos
    out["_end"] = pos
    return out


# --- Host-side instance fields ---------------------------------------------------------------------
# Read and written by the runtime (through ctypes) and by the stubs in asm/. Compiled guest code
# never touches them.

CONTEXT_REGS = ("rbx", "rsp", "rbp", "r12", "r13", "r14", "r15")
"""Registers a context switch saves: the SysV callee-saved set plus rsp."""


# --- The calling convention ------------------------------------------------------------------------
# One rule, read by the code generator (calls and function entry), the runtime's entry path (which
# fills the registers for run()), and the hostcall path (which reads them back, in reverse). It is
# SysV x86-64 for wasm's value types:
# * integers and references go in the next free GUEST_INT_ARG_REGS register, floats (and, later,
#   v128, which takes a whole xmm register) in the next free GUEST_FLOAT_ARG_REGS register; the
#   rest go on the stack, first argument first, 8 bytes each (v128: 16, 16-byte aligned);
# * one result comes back in rax (integers, references) or xmm0 (floats, v128). Several results
#   come back through a *return area*: the caller passes its address as a hidden first integer
#   argument (in rdi, shifting the others along) and the callee stores result i at
#   ``CallLayout.results[i].index * RESULT_SLOT_SIZE``. One rule for any count and mix of types
#   keeps callers, callees and the runtime simple.

GUEST_INT_ARG_REGS = ("rdi", "rsi", "rdx", "rcx", "r8", "r9")
GUEST_FLOAT_ARG_REGS = tuple(f"xmm{i}" for i in range(8))
ENTRY_MAX_STACK_ARGS = 1024      # wasm allows 1000 params; the rest of 1024 is headroom


class ValueClass(enum.IntEnum):
    """Which register file a value lives in, and so where the convention puts it."""

    INT = 0      # i32, i64, funcref, externref: general-purpose registers, 8-byte slots
    FLOAT = 1    # f32, f64: the low bits of an xmm register, 8-byte slots
    VECTOR = 2   # v128: a whole xmm register, 16-byte aligned slots


_VALUE_CLASS = {ValType.I32: ValueClass.INT, ValType.I64: ValueClass.INT,
                ValType.F32: ValueClass.FLOAT, ValType.F64: ValueClass.FLOAT,
                ValType.V128: ValueClass.VECTOR, ValType.FUNCREF: ValueClass.INT,
                ValType.EXTERNREF: ValueClass.INT}


def value_class(t: ValType) -> ValueClass:
    return _VALUE_CLASS[t]


SLOT_WORD = 8
"""Bytes of one slot word: every scalar and reference value takes one (an i32 zero-extended, an
f32 in the low half), a v128 two, 16-byte aligned."""


def slot_words(t: ValType) -> int:
    """8-byte words a value of type ``t`` takes in a stack, result or global slot."""
    return 2 if _VALUE_CLASS[t] == ValueClass.VECTOR else 1


def slot_size(t: ValType) -> int:
    """Bytes (and alignment) of a ``t`` in a frame, result or global slot: 8, or 16 for v128."""
    return SLOT_WORD * slot_words(t)


class Loc(NamedTuple):
    """Where one argument or result travels. ``kind`` is GPR (``index`` into
    GUEST_INT_ARG_REGS), XMM (into GUEST_FLOAT_ARG_REGS), STACK (8-byte word index from the
    first stack argument), RET_GPR/RET_XMM (``index`` 0: rax/xmm0) or RET_AREA (8-byte word index
    in the return area)."""

    kind: str
    index: int


GPR, XMM, STACK, RET_GPR, RET_XMM, RET_AREA = "gpr", "xmm", "stack", "ret_gpr", "ret_xmm", "area"


class CallLayout(NamedTuple):
    params: Tuple[Loc, ...]
    results: Tuple[Loc, ...]
    return_area: bool            # several results: rdi carries the return area's address
    stack_words: int             # 8-byte words of stack arguments (before alignment padding)
    area_words: int              # 8-byte words of the return area


@functools.lru_cache(maxsize=4096)
def call_layout(params: Tuple[ValType, ...], results: Tuple[ValType, ...]) -> CallLayout:
    """Where every argument and result of a function with this signature lives."""
    return_area = len(results) > 1
    ngpr = 1 if return_area else 0
    nxmm = nstack = 0
    locs: List[Loc] = []
    for t in params:
        cls = _VALUE_CLASS[t]
        if cls == ValueClass.INT and ngpr < len(GUEST_INT_ARG_REGS):
            locs.append(Loc(GPR, ngpr))
            ngpr += 1
        elif cls != ValueClass.INT and nxmm < len(GUEST_FLOAT_ARG_REGS):
            locs.append(Loc(XMM, nxmm))
            nxmm += 1
        else:
            if cls == ValueClass.VECTOR:
                nstack += nstack & 1
            locs.append(Loc(STACK, nstack))
            nstack += slot_words(t)
    outs: List[Loc] = []
    area = 0
    if return_area:
        for t in results:
            if _VALUE_CLASS[t] == ValueClass.VECTOR:
                area += area & 1
            outs.append(Loc(RET_AREA, area))
            area += slot_words(t)
    elif results:
        outs.append(Loc(RET_GPR if _VALUE_CLASS[results[0]] == ValueClass.INT else RET_XMM, 0))
    return CallLayout(tuple(locs), tuple(outs), return_area, nstack, area)


class ExitReason(enum.IntEnum):
    """Why ``pylucet_enter`` / ``pylucet_resume`` (asm/context.s) returned to the host.

    The stubs return one of these in eax (they get them as ``EXIT_<NAME>`` equates); the
    runtime's run loop (``runtime.instance``) dispatches on them.
    """

    RETURNED = 0      # the guest function returned; results in INST_RET_*
    FAULTED = 1       # the guest faulted; the signal handler filled INST_FAULT_*
    BAD_ENTRY = 2     # INST_ENTRY_NSTACK exceeded ENTRY_MAX_STACK_ARGS; the guest did not run
    HOSTCALL = 3      # the guest called a host import: INST_HC_* say which, with what arguments
    INTERRUPTED = 4   # compiled code saw the interrupt flag (kill switch, timeout, Ctrl-C)
    BUSY = 5          # the instance to enter (or call through an import) is already in use by
                      # another call; nothing ran


_INSTANCE_FIELDS: List[Tuple[str, int]] = [
    ("magic", 8),                 # INSTANCE_MAGIC while the slot holds an instance
    ("state", 8),                 # runtime.instance.State, for the stubs and for inspection
    # the instance page whose pylucet_enter is under way and holds the host context: this one
    # when the host called it, the caller's root while another instance calls into it through
    # an import (pylucet_call_guest), 0 when idle. Claimed atomically, so one instance is never
    # entered by two calls at once.
    ("root", 8),
    # host context: saved by pylucet_enter/pylucet_resume, restored on every exit to the host
    *((f"host_{r}", 8) for r in CONTEXT_REGS),
    ("host_mxcsr", 8),            # low 32 bits: MXCSR; restored so a guest cannot change rounding
    # guest context: saved when the guest leaves for the host mid-call (a hostcall, an
    # interruption), restored by pylucet_resume
    *((f"guest_{r}", 8) for r in CONTEXT_REGS),
    ("guest_mxcsr", 8),
    # the call the entry stub makes
    ("entry_func", 8),            # absolute address of the guest function
    ("entry_gpr", 8 * len(GUEST_INT_ARG_REGS)),    # values for rdi, rsi, rdx, rcx, r8, r9
    ("entry_xmm", 16 * len(GUEST_FLOAT_ARG_REGS)), # xmm0..xmm7, 16 bytes each (room for v128)
    ("entry_nstack", 8),          # how many 8-byte stack arguments
    ("entry_stack", 8),           # address of an array of entry_nstack u64, first argument first
    ("stack_top", 8),             # the guest stack's initial rsp (16-byte aligned)
    # results: written by the entry stub when the guest function returns, and by the host for
    # a hostcall's result before pylucet_resume loads them into rax / xmm0
    ("ret_rax", 8),
    ("ret_rdx", 8),
    ("ret_xmm0", 16),
    ("ret_xmm1", 16),
    # a hostcall in progress (ExitReason.HOSTCALL): the argument registers as the guest left
    # them, where its stack arguments start, the record (or Builtin) it called through, its vmctx
    ("hc_gpr", 8 * len(GUEST_INT_ARG_REGS)),
    ("hc_xmm", 16 * len(GUEST_FLOAT_ARG_REGS)),
    ("hc_stack", 8),
    ("hc_entry", 8),              # the FUNCREF record called through, or a Builtin
    ("hc_vmctx", 8),
    ("fault_vmctx", 8),           # r14 of the faulting code: which instance faulted
    # filled in by the signal handler when a guest faults
    ("fault_signo", 8),
    ("fault_code", 8),            # siginfo si_code
    ("fault_addr", 8),            # siginfo si_addr
    ("fault_rip", 8),
    ("fault_rsp", 8),
]
INSTANCE_FIELDS = _layout_up(_INSTANCE_FIELDS)


# --- Runtime data read by compiled code, at negative offsets from vmctx -----------------------------

class Libcall(enum.IntEnum):
    """Runtime functions that compiled code calls through the vmctx libcall array.

    Calling convention: SysV (arguments in rdi, rsi, rdx, ...; result in rax), with r14 = vmctx on
    entry and preserved. The caller treats every SysV caller-saved register as clobbered.
    Some are libc's own functions (``runtime.stubs.LIBC_LIBCALLS``): the caller checks every
    address they touch first, so nothing faults inside libc, where a fault is the host's.
    """

    MEMORY_GROW = 0   # (edi = delta pages) -> eax = old size in pages, or 0xFFFFFFFF on failure
    BUILTIN = 1       # pylucet_hostcall, with r10 = a Builtin: the host does the work (below)
    MEMMOVE = 2       # libc memmove(rdi = dst, rsi = src, rdx = n): host addresses, in the heap
    MEMSET = 3        # libc memset(rdi = dst, esi = byte, rdx = n): host addresses, in the heap


class Builtin(enum.IntEnum):
    """Instructions the host carries out, in Python on its own stack, reached like a hostcall:
    compiled code puts the operands in the argument registers (SysV order, then the
    instruction's immediates), r10 = the Builtin and calls ``Libcall.BUILTIN``. They are the
    rare, variable-length table operations, whose range checks and segment bookkeeping are
    clearer (and no slower where it matters) written once in Python than emitted per call site.
    A small value in r10 can never be a function record's address, which is how the host tells
    a builtin from a host function."""

    TABLE_GROW = 1    # (init ref, delta, table) -> old size, or 0xFFFFFFFF
    TABLE_FILL = 2    # (start, ref, n, table)
    TABLE_COPY = 3    # (dst, src, n, dst table, src table)
    TABLE_INIT = 4    # (dst, src, n, table, segment)
    ELEM_DROP = 5     # (segment)
    MEMORY_GROW = 6   # (delta pages) -> old size in pages, or 0xFFFFFFFF: memory.grow of a
                      # memory shared with other instances or the host, which grows every
                      # mapping of it (runtime.memories; asm/libcalls.s memory_grow_shared)


BUILTIN_LIMIT = 256
"""Every Builtin is below this; every function record's address is far above."""


LIBCALL_SLOTS = 32  # room in the array; Libcall members use the low indices

_VMCTX_FIELDS: List[Tuple[str, int]] = [
    ("stack_limit", 8),        # lowest rsp a guest prologue may move to (stack base + reservation)
    ("instr_count_bound", 8),  # for the kill switch / instruction counting (later issue)
    ("instr_count_adj", 8),
    ("globals", 8),            # address of the globals area
    ("memory_size", 8),        # current heap size in bytes (a multiple of WASM_PAGE_SIZE)
    ("memory_max", 8),         # largest heap size memory.grow may reach, in bytes
    ("tables", 8),             # address of an array of pointers to TABLE_DESC, one per table
    ("funcrefs", 8),           # address of this instance's FUNCREF records: the imported
                               # functions first (their import entries), then the defined ones
                               # that can become references (ModuleData.funcrefs)
    ("type_ids", 8),           # address of a u64 array: the process-wide signature id of each
                               # of the module's canonical types (ModuleData.types)
    ("data_segments", 8),      # address of an array of DATA_DESC, one per data segment
    ("libcalls", 8 * LIBCALL_SLOTS),
]
VMCTX_FIELDS = _layout_down(_VMCTX_FIELDS)
RUNTIME_DATA_SIZE = 512
assert -VMCTX_FIELDS["_end"] <= RUNTIME_DATA_SIZE
assert INSTANCE_FIELDS["_end"] <= INSTANCE_PAGE_SIZE - RUNTIME_DATA_SIZE

VMCTX_STACK_LIMIT = VMCTX_FIELDS["stack_limit"]
VMCTX_INSTR_COUNT_BOUND = VMCTX_FIELDS["instr_count_bound"]
VMCTX_INSTR_COUNT_ADJ = VMCTX_FIELDS["instr_count_adj"]
VMCTX_GLOBALS = VMCTX_FIELDS["globals"]
VMCTX_MEMORY_SIZE = VMCTX_FIELDS["memory_size"]
VMCTX_MEMORY_MAX = VMCTX_FIELDS["memory_max"]
VMCTX_TABLES = VMCTX_FIELDS["tables"]
VMCTX_FUNCREFS = VMCTX_FIELDS["funcrefs"]
VMCTX_TYPE_IDS = VMCTX_FIELDS["type_ids"]
VMCTX_DATA_SEGMENTS = VMCTX_FIELDS["data_segments"]
VMCTX_LIBCALLS = VMCTX_FIELDS["libcalls"]


def vmctx_libcall(call: Libcall) -> int:
    """Offset from vmctx of the pointer to ``call``."""
    return VMCTX_LIBCALLS + 8 * int(call)


# --- Interrupt polls -------------------------------------------------------------------------------
# Compiled code polls at every function entry and loop header by *reading* a word of its slot's
# poll page, the page just below the instance page: ``mov r11d, [r14 + VMCTX_POLL]``. A load that
# hits costs next to nothing (no compare, no branch). To interrupt a guest, the host revokes the
# page (mprotect PROT_NONE); the next poll faults, and the signal handler, seeing a fault on the
# poll page, makes the guest call pylucet_interrupt from the instruction after the poll, which
# leaves with ExitReason.INTERRUPTED -- resumable, since polls sit only where every live value is
# in a callee-saved register, the frame or a leaf function's local registers (which
# pylucet_interrupt keeps).

VMCTX_POLL = -(INSTANCE_PAGE_SIZE + PAGE_SIZE)
POLL_INSN_SIZE = 7
"""Bytes of the poll instruction (REX, 8B, ModRM, disp32): the handler resumes past it."""


# --- Function references ----------------------------------------------------------------------------
# A funcref value is the address of a FUNCREF record, wasmtime's VMFuncRef; null is 0. Records
# live in their instance's slot, so a reference can sit in a local, a global or a table of any
# instance and still say which function of which instance it is:
#   func     code a caller from *another* instance (or any caller of an import) calls, with
#            r10 = the record: pylucet_call_guest, which switches to ``vmctx`` (for a function of
#            an instance), or pylucet_hostcall (for a host function)
#   vmctx    the instance the function belongs to (for a host function: the one importing it)
#   target   the function's code, which a caller whose r14 is already ``vmctx`` calls directly
#            (for a host function: pylucet_hostcall again)
#   index    the stack-argument words pylucet_call_guest copies; for a host function, its index
#            among the owning instance's host imports
#   type_id  the process-wide signature id (never 0: a wiped record matches no signature)
# The import entries of an instance are exactly the records of its imported functions: a call to
# import i goes through a trampoline at ``.text + IMPORT_TRAMPOLINE_SIZE * i`` that loads r10 =
# &record i and jumps to ``record.func``, so a direct call to an import is an ordinary call.

FUNCREF = _layout_up([("func", 8), ("vmctx", 8), ("target", 8), ("index", 8), ("type_id", 8),
                      ("_pad0", 8), ("_pad1", 8), ("_pad2", 8)])
FUNCREF_SIZE = FUNCREF["_end"]
"""64 bytes: a power of two, so that a record never straddles a cache line."""

IMPORT_TRAMPOLINE_SIZE = 32
"""Bytes of each imported function's trampoline at the start of ``.text``."""

# --- Tables -----------------------------------------------------------------------------------------
# Each table is a descriptor and an array of 8-byte references (funcref: a record address,
# externref: the host's handle; 0 is null). The vmctx points to an array of descriptor
# *pointers*, so an imported table is the exporter's own descriptor, and a table.grow by either
# side is seen by both. ``capacity`` entries of address space sit behind ``base``.

TABLE_DESC = _layout_up([("base", 8), ("length", 8), ("capacity", 8), ("max", 8)])
TABLE_DESC_SIZE = TABLE_DESC["_end"]
TABLE_ENTRY_SIZE = SLOT_WORD
TABLE_MAX_LENGTH = 0xFFFF_FFFF
"""A table's length is a u32 (table.grow answers -1 rather than pass it)."""

# --- Data segments ----------------------------------------------------------------------------------
# What ``memory.init`` may still copy from each data segment, in the module's data index order:
# ``base`` is the address of its bytes (read-only, shared by every instance of the module),
# ``length`` how many there are. The descriptors are per instance: ``data.drop`` sets ``length``
# to 0, and so does instantiation for every active segment, as the spec drops those once applied.

DATA_DESC = _layout_up([("base", 8), ("length", 8)])
DATA_DESC_SIZE = DATA_DESC["_end"]

RESULT_SLOT_SIZE = SLOT_WORD
"""Bytes per return-area word: result i sits at ``CallLayout.results[i].index`` words."""


# --- Symbols in a compiled artifact -----------------------------------------------------------------

MODULE_SYMBOL = "pylucet_module"
"""The exported data symbol holding the serialised module data (see ``module.serialize``)."""

FUNC_SYMBOL_PREFIX = "guest_func_"


def asm_equates() -> str:
    """``.equ`` lines for every constant above, prepended to each ``asm/`` source before assembly.

    Names: ``INST_<FIELD>`` for instance-page fields (offset from the instance page), plus
    ``INST_ENTRY_<REG>`` / ``INST_HC_<REG>`` for the slot of each argument register,
    ``VMCTX_<FIELD>`` (negative offset from vmctx), ``TABLE_DESC_<FIELD>``, ``FUNCREF_<FIELD>``,
    ``DATA_DESC_<FIELD>``, ``LIBCALL_<NAME>`` (offset from vmctx), ``EXIT_<REASON>``,
    ``BUILTIN_<NAME>``, and the
    scalar constants by their Python names.
    """
    lines = []
    for name, off in INSTANCE_FIELDS.items():
        if not name.startswith("_"):
            lines.append((f"INST_{name.upper()}", off))
    for area in ("entry", "hc"):
        for i, reg in enumerate(GUEST_INT_ARG_REGS):
            lines.append((f"INST_{area.upper()}_{reg.upper()}", INSTANCE_FIELDS[f"{area}_gpr"] + 8 * i))
        for i, reg in enumerate(GUEST_FLOAT_ARG_REGS):
            lines.append((f"INST_{area.upper()}_{reg.upper()}", INSTANCE_FIELDS[f"{area}_xmm"] + 16 * i))
    for name, off in VMCTX_FIELDS.items():
        if not name.startswith("_"):
            lines.append((f"VMCTX_{name.upper()}", off))
    # instance-page fields the stubs reach from a vmctx (keystone mangles [reg - SYMBOL + ...])
    lines.append(("VMCTX_INST_ROOT", INSTANCE_FIELDS["root"] - INSTANCE_PAGE_SIZE))
    # ... and the runtime data the signal handlers reach from an instance page
    lines.append(("VMCTX_POLL", VMCTX_POLL))
    for prefix, layout in (("TABLE_DESC", TABLE_DESC), ("FUNCREF", FUNCREF),
                           ("DATA_DESC", DATA_DESC)):
        for name, off in layout.items():
            if not name.startswith("_"):
                lines.append((f"{prefix}_{name.upper()}", off))
    for call in Libcall:
        lines.append((f"LIBCALL_{call.name}", vmctx_libcall(call)))
    for reason in ExitReason:
        lines.append((f"EXIT_{reason.name}", int(reason)))
    for builtin in Builtin:
        lines.append((f"BUILTIN_{builtin.name}", int(builtin)))
    for name in ("PAGE_SIZE", "WASM_PAGE_SIZE", "WASM_MAX_PAGES", "INSTANCE_PAGE_SIZE",
                 "INSTANCE_MAGIC", "TABLE_DESC_SIZE", "TABLE_ENTRY_SIZE", "DATA_DESC_SIZE",
                 "ENTRY_MAX_STACK_ARGS", "RESULT_SLOT_SIZE", "FUNCREF_SIZE", "POLL_INSN_SIZE",
                 "BUILTIN_LIMIT"):
        lines.append((name, globals()[name]))
    return "".join(f".equ {n}, {v}\n" for n, v in lines)
