"""The calling convention seen from Python: values into registers and back, both ways.

:func:`pylucet.module.abi.call_layout` says where each argument and result of a signature lives.
Two host paths read it, once per signature, into a plan of word indices:

* :class:`CallPlan`, for the host calling the guest (``run``): arguments go into the instance
  page's ``INST_ENTRY_*`` words (and the stack-argument buffer), results come back from
  ``INST_RET_*`` or the return area;
* :class:`HostPlan`, for the guest calling the host (a hostcall), the same in reverse: arguments
  come from ``INST_HC_*`` and the guest's stack, the result goes to ``INST_RET_*`` or into the
  return area the guest passed.

Integer values cross as Python ints (i32/i64 read back signed), floats as Python floats, and
references as Python objects (``runtime.references``): a funcref as a
:class:`~pylucet.runtime.exports.Func`, an externref as whatever object the host passed in,
null as None.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Set, Tuple, Union

from ..errors import UnknownExport, Unsupported
from ..module.abi import (ENTRY_MAX_STACK_ARGS, GPR, INSTANCE_FIELDS, RET_AREA, RET_GPR,
                          STACK, call_layout)
from ..wasm.types import FuncType, ValType
from .references import extern_handle, extern_object, func_of_record, record_of_func

if TYPE_CHECKING:  # pragma: no cover
    from .loader import LoadedModule

Value = Union[int, float]

_I32, _I64, _F32, _F64 = ValType.I32, ValType.I64, ValType.F32, ValType.F64
_FUNCREF, _EXTERNREF = ValType.FUNCREF, ValType.EXTERNREF
REF_TYPES = (_FUNCREF, _EXTERNREF)
_INT_TYPES = (_I32, _I64)
_INT_RANGE = {_I32: (-(1 << 31), (1 << 32) - 1, 0xFFFF_FFFF),
              _I64: (-(1 << 63), (1 << 64) - 1, 0xFFFF_FFFF_FFFF_FFFF)}
BITS_MASK = {_I32: 0xFFFF_FFFF, _F32: 0xFFFF_FFFF,
             _I64: 0xFFFF_FFFF_FFFF_FFFF, _F64: 0xFFFF_FFFF_FFFF_FFFF}
"""The bit width of each scalar type, as a mask: raw-bits calls and results use it."""


def word(offset: int) -> int:
    """Word index of a byte offset (every field the host reads is 8-byte aligned)."""
    assert offset % 8 == 0
    return offset // 8


class Words:
    """Typed views of the same 8-byte words (an instance page, a buffer, a guest stack).

    Word ``i`` is ``u64[i]``/``i64[i]``/``f64[i]``; its low half is ``i32[2*i]``/``f32[2*i]``
    (little-endian), which is where the guest ABI keeps a 32-bit value.
    """

    __slots__ = ("u64", "i64", "f64", "i32", "f32", "address")

    def __init__(self, address: int, words: int):
        self.address = address
        self.u64 = (ctypes.c_uint64 * words).from_address(address)
        self.i64 = (ctypes.c_int64 * words).from_address(address)
        self.f64 = (ctypes.c_double * words).from_address(address)
        self.i32 = (ctypes.c_int32 * (2 * words)).from_address(address)
        self.f32 = (ctypes.c_float * (2 * words)).from_address(address)


def read_value(w: Words, t: ValType, i: int) -> Any:
    if t is _I32:
        return w.i32[2 * i]
    if t is _I64:
        return w.i64[i]
    if t is _F64:
        return w.f64[i]
    if t is _F32:
        return w.f32[2 * i]
    if t is _EXTERNREF:
        return extern_object(w.u64[i])
    return func_of_record(w.u64[i])


def write_value(w: Words, t: ValType, i: int, v: Any, holder: Optional[Set[int]] = None) -> None:
    """Store ``v`` as a ``t`` in word ``i``, converting or explaining (TypeError/OverflowError).
    An externref is held by ``holder`` (the receiving instance's handles) from then on."""
    if t in REF_TYPES:
        if t is _EXTERNREF:
            w.u64[i] = extern_handle(v, _UNOWNED if holder is None else holder)
        else:
            w.u64[i] = record_of_func(v, None)
    elif t is _I32:
        w.u64[i] = (v & 0xFFFF_FFFF if type(v) is int and -0x8000_0000 <= v <= 0xFFFF_FFFF
                    else int_arg(t, v))
    elif t is _I64:
        w.u64[i] = (v & 0xFFFF_FFFF_FFFF_FFFF if type(v) is int and -(1 << 63) <= v < (1 << 64)
                    else int_arg(t, v))
    elif t is _F64:
        w.f64[i] = v if type(v) is float else float_arg(t, v)
    else:
        w.u64[i] = 0
        w.f32[2 * i] = v if type(v) is float else float_arg(t, v)


def int_arg(t: ValType, v: Any) -> int:
    """``v`` as the raw bits of an i32/i64 (signed or unsigned input accepted)."""
    if type(v) is not int:
        if isinstance(v, bool) or not hasattr(v, "__index__"):
            raise TypeError(f"{t.text} needs an int, got {type(v).__name__} {v!r}")
        v = v.__index__()
    lo, hi, mask = _INT_RANGE[t]
    if not lo <= v <= hi:
        raise OverflowError(f"{v} is out of range for {t.text} [{lo}, {hi}]")
    return v & mask


def bits_arg(t: ValType, v: Any) -> int:
    """``v`` as a raw bit pattern of ``t``'s width (for ``Instance.run_bits``)."""
    mask = BITS_MASK[t]
    if type(v) is not int or not 0 <= v <= mask:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{t.text} bits need an int, got {type(v).__name__} {v!r}")
        raise OverflowError(f"{v:#x} does not fit the {mask.bit_length()} bits of {t.text}")
    return v


def float_arg(t: ValType, v: Any) -> float:
    if type(v) is float:
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{t.text} needs a float or int, got {type(v).__name__} {v!r}")
    return float(v)


_UNOWNED: Set[int] = set()
"""Holds for externrefs stored with no instance to hold them (kept for the process)."""


def _require_scalar(what: str, name: str, types: Sequence[ValType]) -> None:
    for t in types:
        if t not in BITS_MASK and t not in REF_TYPES:
            raise Unsupported(f"{name}: {what} of type {t.text} cannot cross the host boundary "
                              "yet")


_ENTRY_GPR = word(INSTANCE_FIELDS["entry_gpr"])
_ENTRY_XMM = word(INSTANCE_FIELDS["entry_xmm"])
_HC_GPR = word(INSTANCE_FIELDS["hc_gpr"])
_HC_XMM = word(INSTANCE_FIELDS["hc_xmm"])
_HC_STACK = word(INSTANCE_FIELDS["hc_stack"])
_VIEW = {_I32: "i32", _I64: "i64", _F32: "f32", _F64: "f64"}


def _compile(source: str, name: str, **names: Any) -> Any:
    """The function ``name`` defined by ``source``, with ``names`` as its globals."""
    scope: dict = dict(names)
    exec(compile(source, f"<pylucet {name}>", "exec"), scope)
    return scope[name]
_RET_RAX = word(INSTANCE_FIELDS["ret_rax"])
_RET_XMM0 = word(INSTANCE_FIELDS["ret_xmm0"])


DONE = object()
"""What :attr:`HostPlan.call` returns once the result is stored."""


def _register_word(kind: str, index: int, gpr: int, xmm: int) -> int:
    # an xmm slot is 16 bytes (room for a v128): two words per register
    return gpr + index if kind == GPR else xmm + 2 * index


class CallPlan:
    """Calling one guest function from the host: worked out once per module and function.

    ``params`` holds (type, on the stack?, word index) per argument: a page word, or a word of
    the stack-argument buffer. ``results`` holds (type, word index): page words for one result,
    return-area words for several.
    """

    __slots__ = ("name", "func_index", "type", "address", "params", "nstack", "results",
                 "return_area")

    def __init__(self, name: str, func_index: int, ftype: FuncType, address: int):
        _require_scalar("parameters", name, ftype.params)
        _require_scalar("results", name, ftype.results)
        layout = call_layout(ftype.params, ftype.results)
        if layout.stack_words > ENTRY_MAX_STACK_ARGS:
            raise Unsupported(f"{name}: {layout.stack_words} stack arguments, more than the "
                              f"{ENTRY_MAX_STACK_ARGS} the entry stub supports")
        self.name = name
        self.func_index = func_index
        self.type = ftype
        self.address = address
        self.return_area = layout.return_area
        self.nstack = layout.stack_words
        self.params: Tuple[Tuple[ValType, bool, int], ...] = tuple(
            (t, loc.kind == STACK, loc.index if loc.kind == STACK
             else _register_word(loc.kind, loc.index, _ENTRY_GPR, _ENTRY_XMM))
            for t, loc in zip(ftype.params, layout.params))
        self.results: Tuple[Tuple[ValType, int], ...] = tuple(
            (t, loc.index if loc.kind == RET_AREA else _RET_RAX if loc.kind == RET_GPR
             else _RET_XMM0)
            for t, loc in zip(ftype.results, layout.results))


class HostPlan:
    """A host function called by the guest: where its arguments are when the hostcall stub has
    left, and where its result goes before the guest resumes.

    ``params`` holds (type, on the guest stack?, word index): a page word (``INST_HC_*``) or a
    word from the start of the stack arguments. ``results`` holds (type, word index): a page
    word (``INST_RET_*``) for one result, a return-area word for several (the area's address is
    the hidden first argument, in ``INST_HC_RDI``).
    """

    __slots__ = ("type", "params", "results", "return_area", "nstack", "call")

    def __init__(self, name: str, ftype: FuncType, fn: Any = None, access_vmctx: bool = False):
        _require_scalar("parameters", name, ftype.params)
        _require_scalar("results", name, ftype.results)
        layout = call_layout(ftype.params, ftype.results)
        self.type = ftype
        self.return_area = layout.return_area
        self.nstack = layout.stack_words
        self.params: Tuple[Tuple[ValType, bool, int], ...] = tuple(
            (t, loc.kind == STACK, loc.index if loc.kind == STACK
             else _register_word(loc.kind, loc.index, _HC_GPR, _HC_XMM))
            for t, loc in zip(ftype.params, layout.params))
        self.results: Tuple[Tuple[ValType, int], ...] = tuple(
            (t, loc.index if loc.kind == RET_AREA else _RET_RAX if loc.kind == RET_GPR
             else _RET_XMM0)
            for t, loc in zip(ftype.results, layout.results))
        self.call = self._caller(fn, access_vmctx)
        """``call(page, vmctx)``: call the host function with the guest's arguments; DONE once
        a result of the expected type is in place, else what it returned (a generator, several
        results, something of the wrong type) for :attr:`store` to deal with."""

    # A hostcall's cost is mostly Python overhead, so what every call does is specialised per
    # signature, as ``dataclasses`` and ``namedtuple`` do: straight-line code reading the very
    # words this signature uses and storing the usual kind of result, instead of a loop over a
    # plan. Everything unusual goes through :meth:`store`.

    def _caller(self, fn: Any, access_vmctx: bool) -> Any:
        if fn is None:
            return None
        if self.nstack or any(t in REF_TYPES for t, _, _ in self.params):
            def call(page: Words, vmctx: Any) -> Any:
                args = self.read_args(page, Words(page.u64[_HC_STACK], max(1, self.nstack)))
                return fn(vmctx, *args) if access_vmctx else fn(*args)
            return call
        reads = [f"p.{_VIEW[t]}[{2 * i if t in (_I32, _F32) else i}]"
                 for t, _, i in self.params]
        if access_vmctx:
            reads.insert(0, "vmctx")
        if not self.results:
            done = "if v is None:\n        return DONE"
        elif len(self.results) > 1:
            done = "pass"
        elif self.results[0][0] in REF_TYPES:
            done = "pass"
        elif self.results[0][0] in _INT_TYPES:
            (t, i), = self.results
            lo, hi, mask = _INT_RANGE[t]
            done = (f"if type(v) is int and {lo} <= v <= {hi}:\n"
                    f"        p.u64[{i}] = v & {mask}\n        return DONE")
        else:
            (t, i), = self.results
            done = (f"if type(v) is float:\n"
                    f"        p.{_VIEW[t]}[{2 * i if t is _F32 else i}] = v\n        return DONE")
        return _compile(f"def call(p, vmctx):\n    v = fn({', '.join(reads)})\n    {done}\n"
                        "    return v\n", "call", fn=fn, DONE=DONE)

    def store(self, page: Words, value: Any, holder: Optional[Set[int]] = None) -> None:
        """Store what a host function returned, checking it against the type
        (TypeError/ValueError/OverflowError if it does not match); ``holder`` keeps the
        externrefs among them."""
        area = Words(page.u64[_HC_GPR], len(self.results)) if self.return_area else None
        self.write_results(page, area, value, holder)

    def read_args(self, page: Words, stack: Optional[Words]) -> List[Value]:
        out: List[Value] = []
        for t, on_stack, i in self.params:
            out.append(read_value(stack if on_stack else page, t, i))  # type: ignore[arg-type]
        return out

    def write_results(self, page: Words, area: Optional[Words], value: Any,
                      holder: Optional[Set[int]] = None) -> None:
        """Store what the host function returned; TypeError/OverflowError/ValueError if it
        does not match the function's type."""
        results = self.results
        if not results:
            if value is not None:
                raise TypeError(f"returned {type(value).__name__} {value!r}, but the type "
                                f"{self.type} has no results")
            return
        if len(results) == 1:
            if isinstance(value, tuple):
                if len(value) != 1:
                    raise ValueError(f"returned {len(value)} values, but the type {self.type} "
                                     "has 1 result")
                value = value[0]
            t, i = results[0]
            write_value(page, t, i, value, holder)
            return
        if not isinstance(value, (tuple, list)) or len(value) != len(results):
            raise ValueError(f"returned {value!r}, but the type {self.type} has "
                             f"{len(results)} results: return a tuple of them")
        for (t, i), v in zip(results, value):
            write_value(area, t, i, v, holder)  # type: ignore[arg-type]


# --- plans per module ------------------------------------------------------------------------

def plan(module: "LoadedModule", func: Union[str, int]) -> CallPlan:
    """The plan for an export name or a function index (cached on the module; index plans in
    a cache of their own, which ``run``'s fast path by name never looks in)."""
    cache = module._plans if isinstance(func, str) else module._index_plans
    plan = cache.get(func)
    if plan is None:
        if isinstance(func, str):
            index = module.export_index(func)
            if index is None:
                raise UnknownExport(func, module.export_names)
            name = func
        else:
            index = func
            total = module.data.num_imported_funcs + len(module.data.functions)
            if not 0 <= index < total:
                raise IndexError(f"function index {index} out of range (module has {total})")
            name = _func_name(module, index)
        plan = CallPlan(name, index, module.data.func_type(index), module.function_address(index))
        cache[func] = plan
    return plan


def _func_name(module: "LoadedModule", index: int) -> str:
    nimp = module.data.num_imported_funcs
    return module.data.functions[index - nimp].name if index >= nimp else str(index)
