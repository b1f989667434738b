"""The Linker: what a module's imports resolve to, checked once at instantiation.

A host defines Python functions, globals (:class:`~pylucet.runtime.globalvars.Global`) and
memories (:class:`~pylucet.runtime.memories.Memory`) under (module, name) pairs, or everything an
instance exports (:meth:`Linker.define_instance`); ``new_instance`` looks up every import of the
module there, refuses (``LinkError``) with every missing name and every type mismatch at once,
and builds the instance's import entries from the result. Types match as the spec's import
matching says: a function's and a global's exactly (value type and mutability), a memory's
limits by subtyping (at least the import's minimum now; no maximum beyond the import's).

At run time a call to a host import leaves the guest (``ExitReason.HOSTCALL``) and the instance
runs the Python function on the host's own stack (see ``runtime.instance``), so a host function
may do anything Python can: raise, block, call into another instance.

The wasm type of a host function comes from, in order: ``type=`` (a :class:`FuncType` or text
such as ``"(i32, i64) -> f64"``), or the function's annotations. Annotations use
:data:`I32`, :data:`I64`, :data:`F32`, :data:`F64` (``typing.Annotated`` aliases of int and
float), :data:`FuncRef` and :data:`ExternRef`; a bare ``float`` means f64, while a bare ``int`` is ambiguous and refused. The result
annotation is one of those, ``None`` for no result, or ``Tuple[I32, F64]`` for several. A first
parameter annotated :class:`~pylucet.runtime.vmctx.Vmctx` (or ``access_vmctx=True``) receives
the calling instance's Vmctx.
"""

from __future__ import annotations

import inspect
import re
import threading
import typing
import weakref
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple, Union

from ..errors import LinkError
from ..module.abi import WASM_PAGE_SIZE
from ..wasm.types import ExternKind, FuncType, GlobalType, SizeLimits, ValType
from .calls import HostPlan
from .exports import Func
from .globalvars import Global, global_type_text
from .memories import Memory, limits_text
from .tables import Table
from .vmctx import Vmctx

I32 = typing.Annotated[int, ValType.I32]
I64 = typing.Annotated[int, ValType.I64]
F32 = typing.Annotated[float, ValType.F32]
F64 = typing.Annotated[float, ValType.F64]

FuncRef = typing.Annotated[Optional[Func], ValType.FUNCREF]
ExternRef = typing.Annotated[Any, ValType.EXTERNREF]
"""A reference parameter or result: a Func (or None), any object (or None)."""

_NAMES = {t.text: t for t in (ValType.I32, ValType.I64, ValType.F32, ValType.F64,
                              ValType.FUNCREF, ValType.EXTERNREF)}
_ARROW = re.compile(r"^\s*\(([^()]*)\)\s*->\s*(\(([^()]*)\)|\w+)\s*$")


def parse_functype(text: str) -> FuncType:
    """``"(i32, i64) -> f64"``, ``"() -> ()"``, ``"(i32) -> (i32, i32)"`` as a FuncType."""
    m = _ARROW.match(text)
    if not m:
        raise ValueError(f"cannot read {text!r} as a function type: write it as "
                         "'(i32, i64) -> f64', '() -> ()' or '(i32) -> (i32, i32)'")

    def types(part: str) -> Tuple[ValType, ...]:
        out = []
        for word in filter(None, (w.strip() for w in part.split(","))):
            if word not in _NAMES:
                raise ValueError(f"unknown value type {word!r} in {text!r} "
                                 f"(one of {', '.join(_NAMES)})")
            out.append(_NAMES[word])
        return tuple(out)

    results = m.group(3) if m.group(3) is not None else m.group(2)
    return FuncType(types(m.group(1)), types(results))


def _annotation_type(hint: Any, where: str) -> ValType:
    if typing.get_origin(hint) is typing.Annotated:
        for meta in hint.__metadata__:
            if isinstance(meta, ValType):
                return meta
    if hint is float:
        return ValType.F64
    if hint is int:
        raise TypeError(f"{where} is annotated int, which could be i32 or i64: use pylucet.I32 "
                        "or pylucet.I64 (or pass type=)")
    raise TypeError(f"{where}: cannot tell a wasm type from the annotation {hint!r}: use "
                    "pylucet.I32, I64, F32 or F64 (or pass type=)")


def _from_annotations(fn: Callable[..., Any], access_vmctx: Optional[bool]
                      ) -> Tuple[FuncType, bool]:
    name = getattr(fn, "__qualname__", repr(fn))
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as e:
        raise TypeError(f"cannot read the annotations of {name}: {e}") from None
    params = list(inspect.signature(fn).parameters.values())
    if params and hints.get(params[0].name) is Vmctx:
        if access_vmctx is False:
            raise TypeError(f"{name}: the first parameter is annotated Vmctx, but "
                            "access_vmctx=False")
        access_vmctx = True
        params = params[1:]
    elif access_vmctx:
        params = params[1:]
    ptypes = []
    for p in params:
        if p.name not in hints:
            raise TypeError(f"{name}: parameter {p.name!r} has no annotation; annotate it "
                            "(pylucet.I32, I64, F32, F64) or pass type=")
        ptypes.append(_annotation_type(hints[p.name], f"{name}: parameter {p.name!r}"))
    if "return" not in hints:
        raise TypeError(f"{name}: no return annotation; use -> None for no result")
    ret = hints["return"]
    if ret is None or ret is type(None):
        results: Tuple[ValType, ...] = ()
    elif typing.get_origin(ret) in (tuple, Tuple):
        results = tuple(_annotation_type(h, f"{name}: result {k}")
                        for k, h in enumerate(typing.get_args(ret)))
    else:
        results = (_annotation_type(ret, f"{name}: result"),)
    return FuncType(tuple(ptypes), results), bool(access_vmctx)


class HostFunc:
    """A Python function as a wasm function, ready to be imported.

    ``access_vmctx``: the function takes the calling instance's :class:`Vmctx` first. It may be
    a generator function: each ``yield value`` then suspends the guest (``run`` returns
    :class:`~pylucet.Yielded`) until ``instance.resume(v)`` sends ``v`` back in; what it
    returns is the call's result.
    """

    __slots__ = ("fn", "type", "access_vmctx", "name", "plan")

    def __init__(self, fn: Callable[..., Any], type: Union[FuncType, str, None] = None, *,
                 access_vmctx: Optional[bool] = None, name: Optional[str] = None):
        if not callable(fn):
            raise TypeError(f"a host function must be callable, got {fn!r}")
        if isinstance(type, str):
            ftype = parse_functype(type)
        elif isinstance(type, FuncType):
            ftype = type
        elif type is None:
            ftype, access_vmctx = _from_annotations(fn, access_vmctx)
        else:
            raise TypeError(f"type must be a FuncType or a string like '(i32) -> i64', "
                            f"got {type!r}")
        self.fn = fn
        self.type = ftype
        self.access_vmctx = bool(access_vmctx)
        self.name = name or getattr(fn, "__qualname__", repr(fn))
        self.plan = HostPlan(self.name, ftype, fn, self.access_vmctx)

    def __repr__(self) -> str:
        return f"<HostFunc {self.name} {self.type}>"


class Resolution(NamedTuple):
    """What a module's imports are linked to, by kind, each in import order."""

    funcs: Tuple[Any, ...] = ()          # HostFunc, or Func of another instance
    globals: Tuple[Global, ...] = ()
    memory: Optional[Memory] = None
    tables: Tuple[Table, ...] = ()


NO_IMPORTS = Resolution()


def _describe(item: Any) -> str:
    """What a definition is, for messages: ``[i32] -> []``, ``global (mut i32)``..."""
    if isinstance(item, Global):
        return f"global {global_type_text(item.type)}"
    if isinstance(item, Memory):
        return f"memory {limits_text(item.type.limits)}"
    if isinstance(item, Table):
        return f"table {_table_text(item.elem, item.size, item.maximum)}"
    if isinstance(item, (HostFunc, Func)):
        return str(item.type)
    return type(item).__name__


class Linker:
    """Definitions to satisfy imports, by (module, name). Shaped like wasmtime-py's Linker.

    Defining the same name twice is a LinkError unless ``allow_shadowing`` is set. A linker may
    be shared by many instantiations (and threads); it is only read while instantiating.
    """

    def __init__(self) -> None:
        self._defs: Dict[Tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self.allow_shadowing = False
        self.generation = 0
        """Bumped on every definition, so resolutions cached per module can tell they are old."""
        # (generation, resolution) per module, held weakly: the cache dies with the linker, and
        # a module never keeps alive the linkers (and their host functions' closures) it met
        self._resolved: "weakref.WeakKeyDictionary[Any, Tuple[int, Tuple[Any, ...]]]" = \
            weakref.WeakKeyDictionary()

    def define_func(self, module: str, name: str, fn: Callable[..., Any],
                    type: Union[FuncType, str, None] = None, *,
                    access_vmctx: Optional[bool] = None) -> Any:
        """Define ``fn`` as function ``module.name``; returns what was defined.

        ``fn`` is a Python callable (or a :class:`HostFunc`), or an exported function of another
        pylucet instance (``other.exports["f"]``): importers then call it natively, with its
        own vmctx and no Python in between. That instance cannot be closed or reset while an
        importer lives."""
        if not isinstance(module, str) or not isinstance(name, str):
            raise TypeError("module and name must be str")
        if isinstance(fn, Func):
            if type is not None and (parse_functype(type) if isinstance(type, str)
                                     else type) != fn.type:
                raise LinkError(f"{module}.{name}: type {type} given for {fn.name}, which is "
                                f"{fn.type}")
            func: Any = fn
        else:
            func = fn if isinstance(fn, HostFunc) else HostFunc(
                fn, type, access_vmctx=access_vmctx, name=f"{module}.{name}")
        return self._add(module, name, func)

    def define_global(self, module: str, name: str, global_: Global) -> Global:
        """Define ``global_`` (the host's own :class:`Global`, or another instance's exported
        one) as global ``module.name``; returns it. An importer of a mutable global shares it:
        its writes and the owner's are seen by both."""
        if not isinstance(global_, Global):
            raise TypeError(f"define_global takes a pylucet.Global, got {global_!r}")
        return self._add(module, name, global_)

    def define_memory(self, module: str, name: str, memory: Memory) -> Memory:
        """Define ``memory`` (the host's own :class:`Memory`, or another instance's exported
        one) as memory ``module.name``; returns it. Importers map the memory itself: writes and
        growth are seen by everyone using it."""
        if not isinstance(memory, Memory):
            raise TypeError(f"define_memory takes a pylucet.Memory, got {memory!r}")
        return self._add(module, name, memory)

    def define_table(self, module: str, name: str, table: Table) -> Table:
        """Define ``table`` (a host :class:`Table`, or an instance's exported one) as table
        ``module.name``; returns it. Importers share it: entries and growth are seen by all."""
        if not isinstance(table, Table):
            raise TypeError(f"define_table takes a pylucet.Table, got {table!r}")
        return self._add(module, name, table)

    def define(self, module: str, name: str, item: Any) -> Any:
        """Define ``item`` under ``module.name`` by what it is: a :class:`Global`, a
        :class:`Memory`, a :class:`Table`, or a function (:meth:`define_func`)."""
        if isinstance(item, Global):
            return self.define_global(module, name, item)
        if isinstance(item, Memory):
            return self.define_memory(module, name, item)
        if isinstance(item, Table):
            return self.define_table(module, name, item)
        return self.define_func(module, name, item)

    def _add(self, module: str, name: str, item: Any) -> Any:
        if not isinstance(module, str) or not isinstance(name, str):
            raise TypeError("module and name must be str")
        with self._lock:
            if (module, name) in self._defs and not self.allow_shadowing:
                raise LinkError(f"{module}.{name} is already defined in this linker "
                                "(set allow_shadowing to replace it)")
            self._defs[(module, name)] = item
            self.generation += 1
        return item

    def func(self, module: str, name: str, type: Union[FuncType, str, None] = None, *,
             access_vmctx: Optional[bool] = None) -> Callable[[Callable[..., Any]], Any]:
        """Decorator form of :meth:`define_func`; returns the function unchanged."""
        def define(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.define_func(module, name, fn, type, access_vmctx=access_vmctx)
            return fn
        return define

    def define_instance(self, module: str, instance: Any) -> None:
        """Define every export of ``instance`` under ``module``: its functions (an exported
        import stands for what it was linked to), globals, tables and memory (which becomes
        shared, ``runtime.memories``)."""
        exports = instance.exports
        for name, func in exports._funcs.items():
            self.define_func(module, name, func)
        for name in exports._others:
            self._add(module, name, exports[name])

    def get(self, module: str, name: str) -> Optional[Any]:
        return self._defs.get((module, name))

    def __iter__(self) -> Iterator[Tuple[str, str]]:
        return iter(list(self._defs))

    def __len__(self) -> int:
        return len(self._defs)

    def resolve_module(self, module: Any) -> Resolution:
        """:meth:`resolve` for a loaded module, remembered until the next definition. (A memory's
        size, the one thing that changes, only grows: a match stays a match.)"""
        generation = self.generation
        cached = self._resolved.get(module)
        if cached is None or cached[0] != generation:
            cached = (generation, self.resolve(module.data))
            with self._lock:
                self._resolved[module] = cached
        return cached[1]

    def resolve(self, data: Any) -> Resolution:
        """The definition of each import of module data ``data``, by kind, in import order;
        LinkError naming every import that is missing or has the wrong type."""
        funcs: List[Any] = []
        globals_: List[Global] = []
        tables: List[Table] = []
        memory: Optional[Memory] = None
        problems: List[str] = []
        imported_globals = iter(data.globals)
        for imp in data.imports:
            where = f"{imp.module}.{imp.name}"
            found = self._defs.get((imp.module, imp.name))
            if imp.kind == ExternKind.FUNC:
                want: Any = data.types[imp.type_id]
                shown = str(want)
                ok = isinstance(found, (HostFunc, Func)) and found.type == want
            elif imp.kind == ExternKind.GLOBAL:
                spec = next(imported_globals)
                want = GlobalType(spec.valtype, spec.mutable)
                shown = f"global {global_type_text(want)}"
                ok = isinstance(found, Global) and found.type == want
            elif imp.kind == ExternKind.MEMORY:
                want = _memory_limits(data.heap)
                shown = f"memory {limits_text(want)}"
                ok = isinstance(found, Memory) and _memory_matches(found, want)
            else:
                want = imp.table
                shown = f"table {_table_text(want.elem, want.initial, want.max)}"
                ok = isinstance(found, Table) and _table_matches(found, want)
            if found is None:
                problems.append(f"{where} {shown} is not defined")
            elif not ok:
                problems.append(f"{where}: the module imports it as {shown}, but it is "
                                f"defined as {_describe(found)}")
            elif imp.kind == ExternKind.FUNC:
                funcs.append(found)
            elif imp.kind == ExternKind.GLOBAL:
                globals_.append(found)  # type: ignore[arg-type]
            elif imp.kind == ExternKind.TABLE:
                tables.append(found)  # type: ignore[arg-type]
            else:
                memory = found  # type: ignore[assignment]
        if problems:
            name = data.name or "<anonymous>"
            raise LinkError(f"cannot link module {name!r}: " + "; ".join(problems),
                            problems=problems)
        return Resolution(tuple(funcs), tuple(globals_), memory, tuple(tables))

    def __repr__(self) -> str:
        return f"<Linker, {len(self._defs)} definitions>"


def _memory_limits(heap: Any) -> SizeLimits:
    """The limits, in pages, that a module's imported memory must satisfy."""
    return SizeLimits(heap.initial_size // WASM_PAGE_SIZE,
                      None if heap.max_size is None else heap.max_size // WASM_PAGE_SIZE)


def _memory_matches(memory: Memory, want: SizeLimits) -> bool:
    """The spec's limits subtyping: at least the minimum now, and a maximum no larger."""
    have = memory.type.limits
    if have.min < want.min:
        return False
    return want.max is None or (have.max is not None and have.max <= want.max)


def _table_matches(table: Table, want: Any) -> bool:
    """The same for tables, whose element types must also be equal."""
    if table.elem != want.elem or table.size < want.initial:
        return False
    return want.max is None or (table.maximum is not None and table.maximum <= want.max)


def _table_text(elem: ValType, initial: int, maximum: Optional[int]) -> str:
    return f"{initial}{'' if maximum is None else f' {maximum}'} {elem.text}"


def link_without(data: Any) -> None:
    """LinkError for a module with imports instantiated without a linker."""
    if data.imports:
        Linker().resolve(data)
