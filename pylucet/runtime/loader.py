"""Loading compiled code: from a shared object on disk (:func:`load`) or from raw machine code
(:func:`pylucet.runtime.testing.load_code`), both ending as the same :class:`LoadedModule`.

A loaded module is the code plus its :class:`~pylucet.module.spec.ModuleData`, with every address
the runtime needs worked out once: function entry points, the sorted table used to attribute a
faulting RIP to a function, and the initial images of tables and globals that each instantiation
copies in. Instances hold a reference to their module, so its code stays mapped (and registered
with the signal handler) for as long as any of them exists.
"""

from __future__ import annotations

import _ctypes
import bisect
import ctypes
import functools
import hashlib
import os
import struct
import tempfile
import threading
import weakref
from array import array
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from ..elf.reader import ELFFile, read_artifact
from ..errors import LoadError, UnknownExport
from ..module.abi import (DATA_DESC, DATA_DESC_SIZE, FUNCREF, FUNCREF_SIZE,
                          IMPORT_TRAMPOLINE_SIZE, MODULE_SYMBOL, call_layout, slot_size)
from ..module.serialize import HEADER_SIZE
from ..module.spec import FunctionSpec, ModuleData
from ..wasm.types import ExternKind, ValType
from . import cpu, libc, signals
from .references import signature_id

PathLike = Union[str, "os.PathLike[str]"]

_FUNCREF_WORDS = FUNCREF_SIZE // 8
_FR_FUNC, _FR_VMCTX, _FR_TARGET, _FR_INDEX, _FR_TYPE_ID = (
    FUNCREF[f] // 8 for f in ("func", "vmctx", "target", "index", "type_id"))
assert DATA_DESC == {"base": 0, "length": 8, "_end": 16}, "data descriptor packing below"


class LoadedModule:
    """Compiled code ready to instantiate with :meth:`MmapRegion.new_instance`.

    ``data`` is the module data; ``path`` the shared object it came from (None for code loaded
    from memory).
    """

    def __init__(self, data: ModuleData, text_base: int, text_size: int, *,
                 path: Optional[str] = None, owner: Any = None,
                 release: Optional[Callable[[], None]] = None):
        """Wrap code already mapped executable at ``text_base``.

        ``owner`` is kept alive as long as the module (the CDLL); ``release`` runs once the module
        and all its instances are gone, after the code range is unregistered from the signal
        handler (unmapping the code, for instance).
        """
        missing = sorted(set(data.features) - set(cpu.cpu_features()))
        if missing:
            raise LoadError(f"module {data.display_name!r} was compiled for CPU features this "
                            f"machine lacks: {', '.join(missing)}")
        for f in data.functions:
            if f.code_offset < 0 or f.code_offset + f.code_size > text_size:
                raise LoadError(f"function {f.name!r} ({f.code_offset:#x}+{f.code_size:#x}) lies "
                                f"outside the module's {text_size:#x} bytes of code")
        self.data = data
        self.path = path
        self.text_base = text_base
        self.text_size = text_size
        self._owner = owner
        by_address = sorted(data.functions, key=lambda f: f.code_offset)
        self._starts = [text_base + f.code_offset for f in by_address]
        self._by_address = by_address
        self._exports = {e.name: e.index for e in data.exports if e.kind == ExternKind.FUNC}
        # per-module caches filled by the runtime: Fit per Limits (region), call plans (instance)
        self._fits: Dict[Any, Any] = {}
        self._plans: Dict[str, Any] = {}         # by export name: run() looks here first
        self._index_plans: Dict[int, Any] = {}   # by function index (never found by run())
        self._images: Optional[bytes] = None
        self._signature_ids: Any = None
        self.signature_ids_address = 0
        self._records: Optional[array] = None
        self._record_images: Dict[int, bytes] = {}
        """FUNCREF records by vmctx, for modules whose imports are all host functions."""
        self._may_escape: Optional[bool] = None     # (runtime.instance_tables)
        self._ref_globals = [g for g in data.globals if g.init_func is not None]
        self._funcref_global_offsets = [g.offset for g in data.globals
                                        if g.valtype == ValType.FUNCREF and not g.by_reference]
        """Globals initialised by ``ref.func``: patched per instance."""
        self._elem_images: Dict[Any, array] = {}
        """Element segments as record addresses, by (records base, segment): the same in
        every instance of one slot."""
        nimp = data.num_imported_funcs
        self.funcref_slot: Dict[int, int] = {f: f for f in range(nimp)}
        """Record index of each function that can become a reference (``abi.FUNCREF``)."""
        self.funcref_slot.update((f, nimp + k) for k, f in enumerate(data.funcrefs))
        self.funcref_func: List[int] = list(range(nimp)) + list(data.funcrefs)
        """The function of each record index: the inverse of ``funcref_slot``."""
        self._passive, self._data_descs = _data_segments(data.passive_data)
        self._data_descs_address = ctypes.addressof(self._passive)
        # with every length 0 from the start, data.drop can only store the 0 already there:
        # then the instances need no copies of their own and share the module's descriptors
        self._data_descs_shared = not any(data.passive_data)
        # a module without functions has no code that could fault
        handle = signals.register_code(text_base, text_base + text_size) if text_size else None
        self._finalizer = weakref.finalize(self, _unload, handle, release)

    # --- lookups ------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.data.name or (os.path.basename(self.path) if self.path else "<anonymous>")

    @property
    def export_names(self) -> List[str]:
        """Names of the exported functions."""
        return list(self._exports)

    def export_index(self, name: str) -> Optional[int]:
        """The function index of export ``name``, None if there is no such exported function."""
        return self._exports.get(name)

    def function_address(self, func: Union[int, str]) -> int:
        """Entry address of a function, by wasm function index or export name. An imported
        function's is its trampoline in the module's code (``abi.IMPORT_TRAMPOLINE_SIZE``),
        which goes on to whatever the calling instance's record for the import holds."""
        if isinstance(func, str):
            index = self._exports.get(func)
            if index is None:
                raise UnknownExport(func, list(self._exports))
            func = index
        nimp = self.data.num_imported_funcs
        if 0 <= func < nimp:
            return self.text_base + IMPORT_TRAMPOLINE_SIZE * func
        if not nimp <= func < nimp + len(self.data.functions):
            raise IndexError(f"function index {func} out of range")
        return self.text_base + self.data.functions[func - nimp].code_offset

    def function_at(self, address: int) -> Optional[FunctionSpec]:
        """The function whose code contains ``address`` (for trap attribution), if any."""
        i = bisect.bisect_right(self._starts, address) - 1
        if i >= 0:
            f = self._by_address[i]
            if address < self._starts[i] + f.code_size:
                return f
        return None

    # --- instantiation images -----------------------------------------------------------------

    def func_name(self, func_index: int) -> str:
        """A human name for function ``func_index``: its own, or its import's."""
        nimp = self.data.num_imported_funcs
        if func_index < nimp:
            imp = [i for i in self.data.imports if i.kind == ExternKind.FUNC][func_index]
            return f"{imp.module}.{imp.name}"
        return self.data.functions[func_index - nimp].name

    # --- instantiation images -----------------------------------------------------------------

    def _globals_image(self) -> bytes:
        """The globals area as every instantiation copies it in (``ref.func`` initialisers are
        per instance: the instance patches them)."""
        if self._images is None:
            data = self.data
            end = max((g.offset + slot_size(g.valtype) for g in data.globals), default=0)
            glob = bytearray(end)
            for g in data.globals:
                struct.pack_into("<Q", glob, g.offset, g.init & 0xFFFF_FFFF_FFFF_FFFF)
            self._images = bytes(glob)
        return self._images

    @property
    def signature_ids(self) -> Any:
        """The process-wide signature id of each of the module's canonical types, as the u64
        array ``VMCTX_TYPE_IDS`` points to (``runtime.references``)."""
        if self._signature_ids is None:
            ids = [signature_id(t) for t in self.data.types]
            self._signature_ids = (ctypes.c_uint64 * max(1, len(ids)))(*ids)
            self.signature_ids_address = ctypes.addressof(self._signature_ids)
        return self._signature_ids

    def record_template(self, call_guest: int) -> "array":
        """FUNCREF records of the defined functions that can become references, every word but
        ``vmctx`` filled in (``abi.FUNCREF``): an instance copies them and sets its vmctx."""
        if self._records is None:
            data = self.data
            sigs = self.signature_ids
            words = array("Q", bytes(FUNCREF_SIZE * len(data.funcrefs)))
            for k, f in enumerate(data.funcrefs):
                t = data.func_type(f)
                w = k * _FUNCREF_WORDS
                words[w + _FR_FUNC] = call_guest
                words[w + _FR_TARGET] = self.function_address(f)
                words[w + _FR_INDEX] = call_layout(t.params, t.results).stack_words
                words[w + _FR_TYPE_ID] = sigs[data.function(f).type_id]
            self._records = words
        return self._records

    def __repr__(self) -> str:
        where = f" from {self.path}" if self.path else ""
        n = len(self.data.functions)
        return (f"<LoadedModule {self.name!r}{where}: {n} function{'' if n == 1 else 's'}, "
                f"{len(self._exports)} exported, code at {self.text_base:#x}>")


def _data_segments(segments: List[bytes]) -> Tuple[Any, bytes]:
    """The data segment descriptors (``abi.DATA_DESC``) that each instantiation copies in,
    and a buffer that holds them followed by the passive segments' bytes, at an address that
    stays fixed for as long as the module lives. A descriptor says where its segment's bytes
    are and how many, 0 for an active segment, which instantiation drops."""
    size = DATA_DESC_SIZE * len(segments)
    data = b"".join(segments)
    buffer = ctypes.create_string_buffer(size + len(data) or 1)
    at = ctypes.addressof(buffer) + size
    words: List[int] = []
    for seg in segments:
        words += (at, len(seg))
        at += len(seg)
    descs = struct.pack(f"<{len(words)}Q", *words)
    ctypes.memmove(buffer, descs + data, len(descs) + len(data))
    return buffer, descs


def _unload(handle: Any, release: Optional[Callable[[], None]]) -> None:
    if handle is not None:
        signals.unregister_code(handle)
    if release is not None:
        release()


_shared: "weakref.WeakValueDictionary[Tuple[Optional[str], bytes], LoadedModule]" = \
    weakref.WeakValueDictionary()
_load_lock = threading.Lock()


def load(artifact: Union[PathLike, bytes, bytearray, memoryview]) -> LoadedModule:
    """Load a shared object written by the pylucet compiler, from a path or from its bytes.

    Every call gives the module that is in the file *now*. ``dlopen`` alone would not: glibc
    hands back an object it already has when the path matches one it loaded (or the device
    and inode do), so compiling a new module over ``x.so`` and loading it again would return
    the old code. So the file is read once, checked (:func:`~pylucet.elf.reader.read_artifact`:
    the header against the ELF's segments), and that very image is ``dlopen``-ed from a private
    copy that no other load can be confused with: an anonymous memfd, kept open (which keeps
    its ``/proc/self/fd/N`` name from being reused) until the module is unloaded; where memfds
    cannot be mapped executable, a file in a fresh private directory, unlinked at once. After
    ``dlopen`` the header, module data and code it mapped are compared with what was checked.
    (The price: /proc/self/maps, perf and gdb name the mapping ``/memfd:pylucet:<file name>``,
    not the path; :attr:`LoadedModule.path` keeps the path.)

    Loading the same bytes from the same path again, while the first module lives, returns
    that same :class:`LoadedModule` (and its instances' code is shared).

    The module data sits behind the exported ``pylucet_module`` symbol as [header | blob]; the
    header says where the symbol and ``.text`` were linked, which gives the load base without
    relocations.
    """
    if isinstance(artifact, (bytes, bytearray, memoryview)):
        path, image = None, bytes(artifact)
    else:
        path = os.fspath(artifact)
        try:
            with open(path, "rb") as f:
                image = f.read()
        except OSError as e:
            raise LoadError(f"cannot load {path}: {e}") from None
    key = (os.path.abspath(path) if path is not None else None, hashlib.sha256(image).digest())
    with _load_lock:
        module = _shared.get(key)
        if module is None:
            module = _shared[key] = _load_image(image, path)
    return module


def _load_image(image: bytes, path: Optional[str]) -> LoadedModule:
    where = path or "artifact"
    elf = ELFFile(image)
    header, data = read_artifact(elf)
    lib, release = _dlopen_private(image, os.path.basename(path) if path else "bytes")
    try:
        symbol = ctypes.addressof(ctypes.c_char.in_dll(lib, MODULE_SYMBOL))
        base = symbol - header.self_vaddr
        text = base + header.text_vaddr
        for at, vaddr, size in ((symbol, header.self_vaddr, HEADER_SIZE + header.blob_size),
                                (text, header.text_vaddr, header.text_size)):
            if ctypes.string_at(at, size) != elf.read_vaddr(vaddr, size):
                raise LoadError(f"{where}: dlopen mapped something other than the checked "
                                "file (another object of the same name was already loaded?)")
        # ctypes never unloads a library; the module does, once it and its instances are gone,
        # so a host that loads many modules over time does not accumulate mappings
        return LoadedModule(data, text, header.text_size, path=path, owner=lib, release=release)
    except BaseException:
        release()
        raise


def _dlopen_private(image: bytes, name: str) -> Tuple[ctypes.CDLL, Callable[[], None]]:
    """``dlopen`` a private copy of ``image``; returns the library and what unloads it."""
    mode = os.RTLD_NOW | os.RTLD_LOCAL
    try:
        fd = libc.memfd_create(f"pylucet:{name}")
    except OSError:
        fd = -1
    if fd >= 0:
        try:
            _write_all(fd, image)
            lib = ctypes.CDLL(f"/proc/self/fd/{fd}", mode=mode)
        except OSError:
            os.close(fd)   # e.g. vm.memfd_noexec, or no /proc: the file fallback below
        else:
            return lib, functools.partial(_dlclose_then_close, lib._handle, fd)
    directory = tempfile.mkdtemp(prefix="pylucet-")
    copy = os.path.join(directory, name if name.endswith(".so") else name + ".so")
    try:
        fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o700)
        try:
            _write_all(fd, image)
        finally:
            os.close(fd)
        lib = ctypes.CDLL(copy, mode=mode)
    except OSError as e:
        raise LoadError(f"cannot load {name}: {e}") from None
    finally:
        if os.path.exists(copy):
            os.unlink(copy)
        os.rmdir(directory)
    return lib, functools.partial(_ctypes.dlclose, lib._handle)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _dlclose_then_close(handle: int, fd: int) -> None:
    # in this order: while the fd is open, no other memfd can get its /proc/self/fd name
    _ctypes.dlclose(handle)
    os.close(fd)
