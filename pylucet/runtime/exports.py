"""An instance's exports as typed objects, shaped like wasmtime-py's ``instance.exports(store)``.

``inst.exports["add"]`` (or ``inst.exports.add``) is a :class:`Func`: a callable that knows its
:class:`~pylucet.wasm.types.FuncType`, so a host can inspect a module before calling into it.
``inst.run("add", ...)`` stays the short form of the same call. An exported global is a
:class:`~pylucet.runtime.globalvars.Global`, an exported memory a
:class:`~pylucet.runtime.memories.Memory` (taking it makes the instance's memory shared, see
``runtime.memories``); either can be defined in a Linker for other instances to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional

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
    """The exports of an instance, by name (a read-only mapping): functions, globals, tables,
    memory."""

    __slots__ = ("_instance", "_funcs", "_others")

    def __init__(self, instance: "Instance"):
        self._instance = instance
        data = instance.module.data
        self._funcs: Dict[str, Func] = {
            e.name: Func(instance, e.name, e.index, data.func_type(e.index))
            for e in data.exports if e.kind == ExternKind.FUNC}
        self._others = {e.name: e for e in data.exports
                        if e.kind in (ExternKind.GLOBAL, ExternKind.MEMORY, ExternKind.TABLE)}

    def __getitem__(self, name: str) -> Any:
        func = self._funcs.get(name)
        if func is not None:
            return func
        export = self._others.get(name)
        if export is None:
            raise UnknownExport(name, self._names())
        instance = self._instance
        instance._check_open()
        if export.kind == ExternKind.MEMORY:
            from .links import share
            return share(instance)
        if export.kind == ExternKind.TABLE:
            return instance.tables[export.index]
        if export.index < len(instance._global_imports):   # re-exported: what it is linked to
            return instance._global_imports[export.index]
        from .globalvars import Global
        return Global._of_instance(instance, export.index)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self[name] if name in self else default

    def _names(self) -> List[str]:
        return [*self._funcs, *self._others]

    def __contains__(self, name: object) -> bool:
        return name in self._funcs or name in self._others

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._funcs) + len(self._others)

    def __repr__(self) -> str:
        others = (f"{n}: {e.kind.name.lower()}" for n, e in self._others.items())
        return "{" + ", ".join([*(f"{n}: {f.type}" for n, f in self._funcs.items()),
                                *others]) + "}"
