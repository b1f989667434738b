"""An instance's exports as typed objects, shaped like wasmtime-py's ``instance.exports(store)``.

``inst.exports["add"]`` (or ``inst.exports.add``) is a :class:`Func`: a callable that knows its
:class:`~pylucet.wasm.types.FuncType`, so a host can inspect a module before calling into it.
``inst.run("add", ...)`` stays the short form of the same call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterator, Optional

from ..errors import UnknownExport
from ..wasm.types import ExternKind, FuncType

if TYPE_CHECKING:  # pragma: no cover
    from .instance import Instance


class Func:
    """A function of one instance: an export, or a funcref the guest handed out."""

    __slots__ = ("_instance", "name", "index", "type")

    def __init__(self, instance: "Instance", name: str, index: int, ftype: FuncType):
        self._instance = instance
        self.name = name
        self.index = index
        self.type = ftype

    @property
    def instance(self) -> "Instance":
        return self._instance

    def __call__(self, *args: Any, timeout: Optional[float] = None) -> Any:
        if self._instance.module.export_index(self.name) == self.index:
            return self._instance.run(self.name, *args, timeout=timeout)
        if timeout is not None:
            return self._instance._with_timeout(timeout, self._instance.run_func_index,
                                                self.index, *args)
        return self._instance.run_func_index(self.index, *args)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Func) and other._instance is self._instance
                and other.index == self.index)

    def __hash__(self) -> int:
        return hash((id(self._instance), self.index))

    def __repr__(self) -> str:
        return f"<Func {self.name} {self.type} of {self._instance!r}>"


class Exports:
    """The exported functions of an instance, by name (a read-only mapping)."""

    __slots__ = ("_instance", "_funcs")

    def __init__(self, instance: "Instance"):
        self._instance = instance
        data = instance.module.data
        self._funcs: Dict[str, Func] = {
            e.name: Func(instance, e.name, e.index, data.func_type(e.index))
            for e in data.exports if e.kind == ExternKind.FUNC}

    def __getitem__(self, name: str) -> Func:
        try:
            return self._funcs[name]
        except KeyError:
            raise UnknownExport(name, list(self._funcs)) from None

    def __getattr__(self, name: str) -> Func:
        if name.startswith("__"):
            raise AttributeError(name)
        return self[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self._funcs.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self._funcs

    def __iter__(self) -> Iterator[str]:
        return iter(self._funcs)

    def __len__(self) -> int:
        return len(self._funcs)

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{n}: {f.type}" for n, f in self._funcs.items()) + "}"
