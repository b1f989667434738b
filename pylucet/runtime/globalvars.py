"""Globals seen from the host: an instance's, by index or export name (:class:`Globals`), and
one global as a value that can be linked (:class:`Global`).

A :class:`Global` is storage with a type: the host's own (a small buffer it owns), or one global
of an instance, as ``inst.exports["g"]`` gives it. Defined in a Linker, it satisfies a global
import: an immutable import is copied into the importer's globals area at instantiation, while
the slot of a mutable import holds the address of this storage, which compiled code reads and
writes through (``ModuleEnv.global_by_ref``), so either side sees the other's writes at once.
"""

from __future__ import annotations

import ctypes
import weakref
from typing import TYPE_CHECKING, Any, Optional, Set, Tuple, Union

from ..errors import Unsupported
from ..wasm.types import ExternKind, GlobalType, ValType
from .calls import REF_TYPES, Value, Words, float_arg, int_arg, read_value, write_value

if TYPE_CHECKING:  # pragma: no cover
    from .instance import Instance

_GLOBAL_CTYPES = {ValType.I32: ctypes.c_int32, ValType.I64: ctypes.c_int64,
                  ValType.F32: ctypes.c_float, ValType.F64: ctypes.c_double,
                  ValType.FUNCREF: ctypes.c_uint64, ValType.EXTERNREF: ctypes.c_uint64}
_VALTYPES = {t.text: t for t in _GLOBAL_CTYPES}
_BITS = {ValType.I32: 0xFFFF_FFFF, ValType.F32: 0xFFFF_FFFF,
         ValType.I64: (1 << 64) - 1, ValType.F64: (1 << 64) - 1}


def _cell(address: int, t: ValType) -> Any:
    ctype = _GLOBAL_CTYPES.get(t)
    if ctype is None:
        raise Unsupported(f"globals of type {t.text} are not supported yet")
    return ctype.from_address(address)


def read_global(address: int, t: ValType) -> Any:
    """The value of the ``t`` global stored at ``address`` (a reference as its Python object,
    ``runtime.references``)."""
    if t in REF_TYPES:
        return read_value(Words(address, 1), t, 0)
    return _cell(address, t).value


def global_bits(address: int, t: ValType) -> Any:
    """The raw bits of the global at ``address`` (references: their Python objects)."""
    if t in REF_TYPES:
        return read_global(address, t)
    return ctypes.c_uint64.from_address(address).value & _BITS[t]


def write_global(address: int, t: ValType, value: Any, what: str,
                 holder: Optional[Set[int]] = None) -> None:
    """Store ``value`` in the ``t`` global at ``address``: the whole 8-byte slot, so an i32's
    upper half and an f32's stay zero as at instantiation. ``holder`` keeps an externref."""
    cell = _cell(address, t)
    slot_word = ctypes.c_uint64.from_address(address)
    try:
        if t in REF_TYPES:
            write_value(Words(address, 1), t, 0, value, holder)
        elif t in (ValType.I32, ValType.I64):
            slot_word.value = int_arg(t, value)
        else:
            value = float_arg(t, value)
            slot_word.value = 0
            cell.value = value
    except (TypeError, OverflowError) as e:
        raise type(e)(f"{what}: {e}") from None


def global_type_text(t: GlobalType) -> str:
    """``i32`` or ``(mut i32)``, as WAT writes a global type."""
    return f"(mut {t.valtype.text})" if t.mutable else t.valtype.text


HOST_FUNCREF_GLOBALS: "weakref.WeakSet[Global]" = weakref.WeakSet()
"""The host's funcref globals (``runtime.instance_tables`` clears closed instances' references)."""


class Global:
    """One wasm global, typed, readable (and if mutable writable) from Python through
    :attr:`value`. Shaped like wasmtime-py's ``Global``, without a store.

    ``Global(type, value=0, mutable=False)`` makes one the host owns: ``type`` is a
    :class:`~pylucet.wasm.types.ValType`, its text (``"i32"``, ``"i64"``, ``"f32"``, ``"f64"``)
    or a :class:`~pylucet.wasm.types.GlobalType` (which then says the mutability). An instance's
    exported global is ``inst.exports["name"]``; it reads and writes the instance's own storage
    and keeps the instance alive.
    """

    __slots__ = ("type", "_address", "_owner", "_buffer", "_holds", "__weakref__")

    def __init__(self, type: Union[GlobalType, ValType, str], value: Value = 0, *,
                 mutable: Optional[bool] = None):
        if isinstance(type, GlobalType):
            if mutable is not None and mutable != type.mutable:
                raise ValueError(f"mutable={mutable} contradicts the global type "
                                 f"{global_type_text(type)}")
            gtype = type
        else:
            if isinstance(type, str):
                if type not in _VALTYPES:
                    raise ValueError(f"unknown global value type {type!r} (one of "
                                     f"{', '.join(_VALTYPES)})")
                type = _VALTYPES[type]
            if not isinstance(type, ValType):
                raise TypeError(f"a global's type is a GlobalType, a ValType or its name, "
                                f"got {type!r}")
            gtype = GlobalType(type, bool(mutable))
        if gtype.valtype not in _GLOBAL_CTYPES:
            raise Unsupported(f"globals of type {gtype.valtype.text} are not supported yet")
        self.type = gtype
        """The :class:`~pylucet.wasm.types.GlobalType`: value type and mutability."""
        self._buffer: Any = (ctypes.c_uint64 * 2)()   # a slot's size, 16-byte aligned room
        self._address = ctypes.addressof(self._buffer)
        self._owner: Optional["Instance"] = None
        self._holds: Set[int] = set()       # an externref value's handle, kept alive
        write_global(self._address, gtype.valtype, value, f"global {global_type_text(gtype)}",
                     self._holds)
        if gtype.valtype == ValType.FUNCREF:
            HOST_FUNCREF_GLOBALS.add(self)

    @classmethod
    def _of_instance(cls, instance: "Instance", index: int) -> "Global":
        """Global ``index`` of ``instance``, reading and writing the instance's storage."""
        spec = instance._module.data.globals[index]
        self = cls.__new__(cls)
        self.type = GlobalType(spec.valtype, spec.mutable)
        self._buffer = None
        self._address = instance._global_address(index)
        self._owner = instance
        self._holds = instance._externs
        return self

    @property
    def owner(self) -> Optional["Instance"]:
        """The instance whose global this is, or None for the host's own."""
        return self._owner

    def _check(self) -> None:
        if self._owner is not None:
            self._owner._check_open()

    @property
    def value(self) -> Value:
        self._check()
        return read_global(self._address, self.type.valtype)

    @value.setter
    def value(self, value: Value) -> None:
        self._check()
        if not self.type.mutable:
            raise ValueError(f"global {global_type_text(self.type)} is immutable")
        write_global(self._address, self.type.valtype, value,
                     f"global {global_type_text(self.type)}", self._holds)

    @property
    def bits(self) -> Any:
        """The value's raw bit pattern, an unsigned int of its width (a float's NaN payload
        survives, as with ``Instance.run_bits``); a reference's Python object."""
        self._check()
        return global_bits(self._address, self.type.valtype)

    def __repr__(self) -> str:
        where = "host" if self._owner is None else repr(self._owner)
        try:
            value = repr(self.value)
        except ValueError:
            value = "?"
        return f"<Global {global_type_text(self.type)} = {value} of {where}>"


class Globals:
    """An instance's globals, addressed by index in the global index space (imported globals
    first, then the defined ones, in order) or export name."""

    def __init__(self, instance: Instance):
        self._instance = instance
        data = instance._module.data
        self._specs = data.globals
        self._names = {e.name: e.index for e in data.exports if e.kind == ExternKind.GLOBAL}

    def _locate(self, key: Union[int, str]) -> Tuple[str, Any, int]:
        if isinstance(key, str):
            if key not in self._names:
                raise KeyError(f"no exported global {key!r} (exported globals: "
                               f"{', '.join(self._names) or 'none'})")
            index = self._names[key]
        elif isinstance(key, int) and not isinstance(key, bool):
            index = key
        else:
            raise TypeError(f"globals are indexed by int or export name, not {key!r}")
        if not 0 <= index < len(self._specs):
            raise IndexError(f"global index {index} out of range ({len(self._specs)} globals)")
        self._instance._check_open()
        return (f"global {key!r}", self._specs[index], self._instance._global_address(index))

    def __getitem__(self, key: Union[int, str]) -> Value:
        _, spec, address = self._locate(key)
        return read_global(address, spec.valtype)

    def __setitem__(self, key: Union[int, str], value: Value) -> None:
        what, spec, address = self._locate(key)
        if not spec.mutable:
            raise ValueError(f"{what} is immutable")
        write_global(address, spec.valtype, value, what, self._instance._externs)

    def __len__(self) -> int:
        return len(self._specs)

    def __repr__(self) -> str:
        parts = []
        names = {i: n for n, i in self._names.items()}
        for i, spec in enumerate(self._specs):
            label = names.get(i, str(i))
            value = read_global(self._instance._global_address(i), spec.valtype)
            parts.append(f"{label}: {spec.valtype.text} = {value!r}")
        return "{" + ", ".join(parts) + "}"
