"""Every function of ``wasi_snapshot_preview1``, as host functions over one :class:`WasiCtx`.

The functions are written by family in ``wasi.calls`` (``env``, ``fd``, ``path``, ``poll``,
``sock``); a WasiCtx inherits them all and holds one instance's state. :meth:`WasiCtx._host`
is the boundary: it turns a :class:`WasiError` into its errno, a guest pointer outside memory
into ``EFAULT`` and a host ``OSError`` into the WASI errno it maps to, so no Python exception
but ``proc_exit``'s termination leaves a WASI call.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List

from ..errors import MemoryAccessError
from .calls import FUNCTIONS, MODULE
from .calls.env import EnvCalls, WasiExit
from .calls.fd import FdCalls
from .calls.path import PathCalls
from .calls.poll import PollCalls
from .calls.sock import SockCalls
from .errno import Errno, WasiError, from_host
from .fdtable import FdTable
from .sandbox import Resolver

__all__ = ["WasiCtx", "WasiExit", "FUNCTIONS", "MODULE"]


class WasiCtx(EnvCalls, FdCalls, PathCalls, PollCalls, SockCalls):
    """One WASI instance's world: its arguments, environment, descriptors and clocks.

    :meth:`add_to_linker` defines every preview1 function into a :class:`pylucet.Linker`,
    bound to this context through a closure (not ``vmctx.ctx``): one linker carries one
    context. Make a linker per WASI instance, or link several instances with one context when
    they should share descriptors."""

    def __init__(self, argv: List[str], env: Dict[str, str], fds: FdTable,
                 resolver: Resolver):
        self.argv = [a.encode() for a in argv]
        self.env = [f"{k}={v}".encode() for k, v in env.items()]
        self.fds = fds
        self.resolver = resolver

    def add_to_linker(self, linker: Any) -> None:
        for name, (signature, fn) in FUNCTIONS.items():
            linker.define_func(MODULE, name, self._host(fn), signature, access_vmctx=True)

    def _host(self, fn: Callable[..., int]) -> Callable[..., int]:
        ctx = self

        def call(vmctx: Any, *args: int) -> int:
            try:
                result = fn(ctx, vmctx.memory, *args)
            except WasiError as e:
                return int(e.errno)
            except MemoryAccessError:
                return int(Errno.FAULT)
            except OSError as e:
                return int(from_host(e.errno or 5))
            # an Errno member as a plain int: the runtime's fast path for i32 results
            return 0 if result is None else int(result)
        call.__name__ = fn.__name__
        return call
