"""A stand-in for ``pylucet.wasi`` with its API (``WasiConfig``, ``run``), for testing
``pylucet-wasi``'s own logic (argument handling, exit statuses, trap reports) apart from WASI.

``run`` instantiates the module with no imports and calls the entry point; an i32 result is
the exit status. What the config received is printed to stderr as one JSON line when
``PYLUCET_WASI_STUB_ECHO`` is set, so a test can check what the tool passed on.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List, Optional, Tuple


class WasiConfig:
    def __init__(self) -> None:
        self.argv: List[str] = []
        self.env: Dict[str, str] = {}
        self.preopens: List[Tuple[str, str]] = []
        self.stdio_inherited = False

    def inherit_env(self) -> None:
        self.env = dict(os.environ)

    def preopen_dir(self, host: str, guest: str) -> None:
        self.preopens.append((host, guest))

    def inherit_stdio(self) -> None:
        self.stdio_inherited = True


def run(module: Any, config: WasiConfig, *, region: Any = None, limits: Any = None,
        entrypoint: str = "_start", timeout: Optional[float] = None) -> int:
    import pylucet
    if os.environ.get("PYLUCET_WASI_STUB_ECHO"):
        sys.stderr.write(json.dumps({"argv": config.argv, "env": config.env,
                                     "preopens": config.preopens,
                                     "stdio": config.stdio_inherited, "entrypoint": entrypoint,
                                     "timeout": timeout,
                                     "limits": None if limits is None else
                                     [limits.heap_memory_size, limits.stack_size]}) + "\n")
    with pylucet.MmapRegion(1, limits or pylucet.Limits()) as r, r.new_instance(module) as inst:
        result = inst.run(entrypoint)
    return result if isinstance(result, int) else 0


def install() -> None:
    """Make ``import pylucet.wasi`` (and ``from pylucet import wasi``) find this stub."""
    import pylucet
    sys.modules["pylucet.wasi"] = sys.modules[__name__]
    pylucet.wasi = sys.modules[__name__]  # type: ignore[attr-defined]
