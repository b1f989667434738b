"""An instance's globals, read and written from the host by index or export name."""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Any, Tuple, Union

from ..errors import Unsupported
from ..wasm.types import ExternKind, ValType
from .calls import Value, float_arg, int_arg

if TYPE_CHECKING:  # pragma: no cover
    from .instance import Instance

_GLOBAL_CTYPES = {ValType.I32: ctypes.c_int32, ValType.I64: ctypes.c_int64,
                  ValType.F32: ctypes.c_float, ValType.F64: ctypes.c_double}


class Globals:
    """An instance's globals, addressed by index (defined globals, in order) or export name."""

    def __init__(self, instance: Instance):
        self._instance = instance
        data = instance._module.data
        self._specs = data.globals
        self._names = {e.name: e.index for e in data.exports if e.kind == ExternKind.GLOBAL}

    def _locate(self, key: Union[int, str]) -> Tuple[str, Any]:
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
        spec = self._specs[index]
        return (f"global {key!r}", spec)

    def _cell(self, spec: Any) -> Any:
        ctype = _GLOBAL_CTYPES.get(spec.valtype)
        if ctype is None:
            raise Unsupported(f"globals of type {spec.valtype.text} are not supported yet")
        return ctype.from_address(self._instance._slot.globals + spec.offset)

    def __getitem__(self, key: Union[int, str]) -> Value:
        _, spec = self._locate(key)
        return self._cell(spec).value

    def __setitem__(self, key: Union[int, str], value: Value) -> None:
        what, spec = self._locate(key)
        if not spec.mutable:
            raise ValueError(f"{what} is immutable")
        t = spec.valtype
        cell = self._cell(spec)
        slot_word = ctypes.c_uint64.from_address(ctypes.addressof(cell))
        try:
            if t in (ValType.I32, ValType.I64):
                # masked to the type's width, so an i32's upper half stays zero as at instantiation
                slot_word.value = int_arg(t, value)
            else:
                value = float_arg(t, value)
                slot_word.value = 0
                cell.value = value
        except (TypeError, OverflowError) as e:
            raise type(e)(f"{what}: {e}") from None

    def __len__(self) -> int:
        return len(self._specs)

    def __repr__(self) -> str:
        parts = []
        names = {i: n for n, i in self._names.items()}
        for i, spec in enumerate(self._specs):
            label = names.get(i, str(i))
            parts.append(f"{label}: {spec.valtype.text} = {self._cell(spec).value!r}")
        return "{" + ", ".join(parts) + "}"
