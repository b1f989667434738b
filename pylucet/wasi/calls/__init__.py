"""How a preview1 function is written: a method of one family's class, registered by name.

Each family (``env``, ``fd``, ``path``, ``poll``, ``sock``) is a class of methods, one per WASI
function, decorated with ``@wasi(type)``; :class:`~pylucet.wasi.preview1.WasiCtx` inherits them
all. A method gets the guest's memory and the call's arguments, and returns an errno (or None
for 0), or raises :class:`~pylucet.wasi.errno.WasiError`.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Tuple

from ..fdtable import FdTable
from ..sandbox import Resolver

MODULE = "wasi_snapshot_preview1"

FUNCTIONS: Dict[str, Tuple[str, Callable[..., int]]] = {}
"""name -> (wasm type, implementation) of every preview1 function."""


def wasi(signature: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Registers a method as the preview1 function of its name, with wasm type ``signature``."""
    def register(fn: Callable[..., int]) -> Callable[..., int]:
        FUNCTIONS[fn.__name__] = (signature, fn)
        return fn
    return register


class Calls:
    """The state every family of calls reads (set by ``WasiCtx``)."""

    argv: List[bytes]
    env: List[bytes]
    fds: FdTable
    resolver: Resolver
