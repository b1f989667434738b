"""WASI preview1 for pylucet: run programs built for ``wasm32-wasi``, sandboxed.

::

    config = pylucet.WasiConfig()
    config.argv = ["prog", "input.txt"]
    config.preopen_dir("data", "/")          # the guest sees host dir "data" as "/"
    config.inherit_stdio()
    exit_code = pylucet.wasi.run(pylucet.load("prog.so"), config)

Shaped like wasmtime-py's ``WasiConfig``. Host paths are only reachable through the directories
preopened here, and every path a guest names resolves beneath one of them (``wasi.sandbox``).
For more than ``_start`` (a reactor's exports after ``_initialize``, several instances), make
the pieces yourself::

    linker = pylucet.Linker()
    ctx = config.build()                     # a WasiCtx: descriptors, argv, env
    ctx.add_to_linker(linker)
    inst = region.new_instance(module, linker=linker)
    inst.run("_initialize"); inst.run("my_export", 1, 2)
"""

from __future__ import annotations

import os
import sys
from typing import IO, Any, Dict, List, Optional, Tuple, Union

from ..errors import Terminated
from .errno import Errno, WasiError
from .fdtable import Descriptor, FdTable, StreamDescriptor
from .preview1 import FUNCTIONS, MODULE, WasiCtx, WasiExit
from .sandbox import Resolver
from .types import DIR_RIGHTS, FILE_RIGHTS, Filetype

__all__ = ["WasiConfig", "WasiCtx", "WasiExit", "run", "MODULE", "FUNCTIONS", "Errno",
           "WasiError"]

Stdio = Union[None, str, "os.PathLike[str]", IO[Any]]


class WasiConfig:
    """What a WASI program gets: arguments, environment, stdio and preopened directories."""

    def __init__(self) -> None:
        self.argv: List[str] = []
        """argv[0] is the program's name."""
        self.env: Dict[str, str] = {}
        self.stdin_file: Stdio = None
        """A path, a file object, or None for an empty stdin (``inherit_stdio`` for the host's)."""
        self.stdout_file: Stdio = None
        """A path (created or truncated), a file object (a host capturing output, e.g.
        ``io.BytesIO``), or None to discard."""
        self.stderr_file: Stdio = None
        self.preopens: List[Tuple[str, str]] = []
        self.use_openat2: Optional[bool] = None
        """None: ``openat2(RESOLVE_BENEATH)`` where the kernel has it, else the careful walk;
        False forces the walk (tests cover both)."""
        self._inherit_stdio = False

    def inherit_env(self) -> None:
        self.env = dict(os.environ)

    def inherit_stdio(self) -> None:
        """The guest reads and writes the host process's own stdin, stdout and stderr."""
        self._inherit_stdio = True

    def preopen_dir(self, host: Union[str, "os.PathLike[str]"], guest: str) -> None:
        if not os.path.isdir(host):
            raise FileNotFoundError(f"cannot preopen {os.fspath(host)!r}: not a directory")
        self.preopens.append((os.fspath(host), guest))

    def build(self) -> WasiCtx:
        """A fresh WasiCtx with this configuration (host descriptors opened now)."""
        fds = FdTable()
        try:
            for n, (stream, readable) in enumerate(((self.stdin_file, True),
                                                    (self.stdout_file, False),
                                                    (self.stderr_file, False))):
                fds.insert(self._stdio(n, stream, readable), at=n)
            for host, guest in self.preopens:
                fd = os.open(host, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                fds.insert(Descriptor(fd, Filetype.DIRECTORY, DIR_RIGHTS,
                                      DIR_RIGHTS | FILE_RIGHTS, preopen=guest))
        except BaseException:
            fds.close_all()
            raise
        return WasiCtx(self.argv or ["main"], self.env, fds, Resolver(self.use_openat2))

    def _stdio(self, n: int, stream: Stdio, readable: bool) -> Descriptor:
        if stream is None:
            if self._inherit_stdio:
                return Descriptor.for_stdio(n, readable, owned=False)
            fd = os.open(os.devnull, (os.O_RDONLY if readable else os.O_WRONLY) | os.O_CLOEXEC)
            return Descriptor.for_stdio(fd, readable)
        if isinstance(stream, (str, os.PathLike)):
            flags = os.O_RDONLY if readable else os.O_WRONLY | os.O_CREAT | os.O_TRUNC
            return Descriptor.for_stdio(os.open(stream, flags | os.O_CLOEXEC, 0o666), readable)
        return StreamDescriptor(stream, readable)


def run(module: Any, config: WasiConfig, *, region: Any = None, limits: Any = None,
        entrypoint: str = "_start", timeout: Optional[float] = None) -> int:
    """Run a WASI command (``_start``, or ``entrypoint``) to completion; its exit code.

    ``proc_exit(n)`` ends the guest with ``n``; returning from ``_start`` is 0. A trap raises
    :class:`~pylucet.Trap`, an unknown import :class:`~pylucet.LinkError`, any other end
    :class:`~pylucet.Terminated`. A one-slot region is made when none is given."""
    from ..runtime import Limits, Linker, MmapRegion
    ctx = config.build()
    linker = Linker()
    ctx.add_to_linker(linker)
    own = region is None
    if own:
        region = MmapRegion(1, limits or Limits())
    try:
        with region.new_instance(module, linker=linker, ctx=ctx) as inst:
            try:
                if module.export_index("_initialize") is not None and entrypoint != "_initialize":
                    inst.run("_initialize", timeout=timeout)
                inst.run(entrypoint, timeout=timeout)
            except Terminated as e:
                if isinstance(e.details, WasiExit):
                    return e.details.code
                raise
            return 0
    finally:
        ctx.fds.close_all()
        if own:
            region.close()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
