"""The compile cache: a ``.wasm``/``.wat`` compiles once to a ``.so``, later runs only load it.

Compiling a real program takes seconds to minutes in pure Python; loading its shared object takes
milliseconds. ``pylucet-wasi`` and ``pylucet run`` go through here, and so can a host
(:func:`load_module`).

An entry is keyed by the SHA-256 of the source bytes, the compiler's version and the compile
options, and lives at ``DIR/ab/abcdef....so`` where DIR is ``$PYLUCET_CACHE``, else
``$XDG_CACHE_HOME/pylucet``, else ``~/.cache/pylucet``. The compiler's version is pylucet's
version and artifact format, plus the size and mtime of every compiler source file, so editing
the compiler in a checkout does not serve stale code.

Entries are trusted native code (``dlopen`` runs them), so the cache must not hand out a part of
one or a damaged one:

- an entry is written to a temporary file in the same directory, synced, and renamed into place
  (:func:`pylucet._atomic.write_atomically`): concurrent first runs each write a whole entry and
  the last rename wins, and a crash leaves no entry rather than a short one;
- each entry ends in a trailer (``ENTRY_MAGIC``, the artifact's size and SHA-256), checked on
  every hit; the loader checks the artifact itself (:class:`~pylucet.LoadError`). An entry that
  fails either is removed and compiled again.

The ELF loader ignores bytes past what its headers describe, but the trailer is cut off before
loading anyway, so what is loaded is exactly what the compiler wrote.

A cache hit imports neither the compiler nor the WAT parser.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Tuple, Union

from ._atomic import write_atomically
from .errors import LoadError

if TYPE_CHECKING:  # pragma: no cover
    from .compiler.driver import Progress
    from .runtime.loader import LoadedModule

PathLike = Union[str, "os.PathLike[str]"]

ENTRY_MAGIC = b"PLCACHE1"
_TRAILER = struct.Struct("<8sQ32s")   # magic, artifact size, sha256 of the artifact
COMPILER_PACKAGES = ("compiler", "wasm", "module", "elf")
"""The packages whose code decides what an artifact contains."""

_fingerprint: Optional[str] = None


def default_directory() -> Path:
    env = os.environ.get("PYLUCET_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "pylucet" if xdg else Path.home() / ".cache" / "pylucet"


def compiler_fingerprint() -> str:
    """pylucet's version, the artifact format, and the size and mtime of each compiler source."""
    global _fingerprint
    if _fingerprint is None:
        from . import __version__
        from .module.serialize import FORMAT_VERSION
        h = hashlib.sha256(f"{__version__}\0{FORMAT_VERSION}".encode())
        root = Path(__file__).resolve().parent
        for package in COMPILER_PACKAGES:
            for dirpath, dirnames, filenames in os.walk(root / package):
                dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
                for name in sorted(filenames):
                    if name.endswith(".py"):
                        st = os.stat(os.path.join(dirpath, name))
                        rel = os.path.relpath(os.path.join(dirpath, name), root)
                        h.update(f"\0{rel}\0{st.st_size}\0{st.st_mtime_ns}".encode())
        _fingerprint = h.hexdigest()
    return _fingerprint


def cache_key(source: bytes, options: Optional[dict] = None) -> str:
    """The key of ``source`` compiled with ``options`` (``compile_module``'s keywords)."""
    h = hashlib.sha256(b"pylucet compile cache\0")
    h.update(compiler_fingerprint().encode())
    h.update(repr(sorted((options or {}).items())).encode())   # ints and bools: repr is exact
    h.update(b"\0")
    h.update(hashlib.sha256(source).digest())
    return h.hexdigest()


def seal(artifact: bytes) -> bytes:
    """An artifact with the trailer that lets the cache verify it later."""
    return artifact + _TRAILER.pack(ENTRY_MAGIC, len(artifact), hashlib.sha256(artifact).digest())


def unseal(entry: bytes) -> bytes:
    """The artifact inside a cache entry; LoadError if the entry is truncated or damaged."""
    if len(entry) < _TRAILER.size:
        raise LoadError("cache entry is truncated")
    magic, size, digest = _TRAILER.unpack_from(entry, len(entry) - _TRAILER.size)
    if magic != ENTRY_MAGIC or size != len(entry) - _TRAILER.size:
        raise LoadError("cache entry is truncated or not a cache entry")
    artifact = entry[:size]
    if hashlib.sha256(artifact).digest() != digest:
        raise LoadError("cache entry is corrupt (checksum mismatch)")
    return artifact


class CompileCache:
    """One cache directory. ``hits``/``compiles`` count what :meth:`artifact` did (for tests
    and tools)."""

    def __init__(self, directory: Optional[PathLike] = None):
        self.directory = Path(directory) if directory is not None else default_directory()
        self.hits = 0
        self.compiles = 0

    def entry_path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.so"

    def artifact(self, source: bytes, *, progress: Optional["Progress"] = None,
                 **options: Any) -> Tuple[bytes, Path]:
        """The compiled artifact of ``source`` (a wasm binary or WAT text, as bytes) and the
        entry holding it: read from the cache if a sound entry is there, else compiled and
        stored. Compile errors propagate (nothing is stored for them)."""
        path = self.entry_path(cache_key(source, options))
        found = self._read(path)
        if found is not None:
            self.hits += 1
            return found, path
        return self._compile(source, path, progress, options), path

    def load(self, source: bytes, *, progress: Optional["Progress"] = None,
             **options: Any) -> "LoadedModule":
        """``source`` compiled (or found) and loaded. An entry the loader refuses is removed
        and compiled once more."""
        from .runtime.loader import load
        artifact, path = self.artifact(source, progress=progress, **options)
        try:
            return load(artifact)
        except LoadError:
            self.discard(path)
            return load(self._compile(source, path, progress, options))

    def discard(self, path: Path) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def _read(self, path: Path) -> Optional[bytes]:
        try:
            with open(path, "rb") as f:
                entry = f.read()
        except FileNotFoundError:
            return None
        except OSError:
            return None   # unreadable: compile as if absent (storing may fail too; that's fine)
        try:
            return unseal(entry)
        except LoadError:
            self.discard(path)
            return None

    def _compile(self, source: bytes, path: Path, progress: Optional["Progress"],
                 options: dict) -> bytes:
        from .compiler.driver import compile_module
        artifact = compile_module(source, progress=progress, **options).to_elf()
        self.compiles += 1
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomically(path, seal(artifact), durable=True)
        except OSError:
            pass   # a read-only or full cache costs a compile next time, not this run
        return artifact


def load_module(path: PathLike, *, use_cache: bool = True,
                cache: Optional[CompileCache] = None, progress: Optional["Progress"] = None,
                **options: Any) -> "LoadedModule":
    """Load a module from a file: a ``.so`` as it is, a ``.wasm``/``.wat`` through the compile
    cache (or compiled in memory, ``use_cache=False``)."""
    from .runtime.loader import load
    if os.fspath(path).endswith(".so"):
        if options:
            raise ValueError("compile options do not apply to an already compiled .so")
        return load(path)
    with open(path, "rb") as f:
        source = f.read()
    if not use_cache:
        from .compiler.driver import compile_module
        return load(compile_module(source, progress=progress, **options).to_elf())
    return (cache or CompileCache()).load(source, progress=progress, **options)
