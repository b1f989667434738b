"""Which host function a hostcall is for, and the table instructions the host carries out.

When the guest leaves with ``ExitReason.HOSTCALL``, the root instance page says through what
(``INST_HC_ENTRY``) and from which instance (``INST_HC_VMCTX``): a FUNCREF record, whose
``vmctx`` and ``index`` name the instance that imported the host function and its place among
that instance's imports -- whoever called it, through a table or not -- or a small number, an
``abi.Builtin`` (``runtime.tables`` carries those out). The instance's run loop finds its own
host imports by record address first (``Instance._drive``); these are the other cases.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Mapping, Tuple

from ..errors import FatalFault, Trap
from ..module.abi import FUNCREF, GUEST_INT_ARG_REGS, INSTANCE_FIELDS, Builtin
from ..module.traps import TrapCode
from .calls import word as _w
from .tables import run_builtin

if TYPE_CHECKING:  # pragma: no cover
    from .instance import Instance
    from .linker import HostFunc
    from .vmctx import Vmctx

_HC_ENTRY = _w(INSTANCE_FIELDS["hc_entry"])
_HC_VMCTX = _w(INSTANCE_FIELDS["hc_vmctx"])
_HC_GPR = _w(INSTANCE_FIELDS["hc_gpr"])
_HC_STACK = _w(INSTANCE_FIELDS["hc_stack"])
_RET_RAX = _w(INSTANCE_FIELDS["ret_rax"])
_RECORD_VMCTX, _RECORD_INDEX = _w(FUNCREF["vmctx"]), _w(FUNCREF["index"])
_N_GPR = len(GUEST_INT_ARG_REGS)


def _instance(root: "Instance", vm: int, by_vmctx: Mapping[int, "Instance"],
              what: str) -> "Instance":
    inst = root if vm == root._slot.vmctx else by_vmctx.get(vm)
    if inst is None:
        raise FatalFault(f"{what} under instance {root._name!r} came from an unknown instance")
    return inst


def host_of_call(root: "Instance", by_vmctx: Mapping[int, "Instance"]
                 ) -> Tuple["HostFunc", "Vmctx"]:
    """The host function whose record the guest called through, and the Vmctx of the
    instance that called it (``root``, or one its call went into)."""
    u = root._page.u64
    words = (ctypes.c_uint64 * (FUNCREF["_end"] // 8)).from_address(u[_HC_ENTRY])
    owner = _instance(root, words[_RECORD_VMCTX], by_vmctx, "a hostcall")
    caller = _instance(root, u[_HC_VMCTX], by_vmctx, "a hostcall")
    index = words[_RECORD_INDEX]
    if not 0 <= index < len(owner._hosts) or not hasattr(owner._hosts[index], "plan"):
        raise FatalFault(f"instance {owner._name!r} called host import {index}, which "
                         "does not exist")
    return owner._hosts[index], caller._vmctx


def builtin_call(root: "Instance", by_vmctx: Mapping[int, "Instance"]) -> None:
    """Carry out the instruction the guest left for (``abi.Builtin``), for the instance whose
    code made it; its result goes back in rax. Returns None: no host function to run."""
    u = root._page.u64
    caller = _instance(root, u[_HC_VMCTX], by_vmctx, "a table instruction")
    args = [u[_HC_GPR + i] for i in range(_N_GPR)]
    if u[_HC_ENTRY] == Builtin.MEMORY_GROW:       # of a shared memory: every alias grows
        u[_RET_RAX] = caller._memory._grow_guest(args[0] & 0xFFFF_FFFF) & 0xFFFF_FFFF
        return None
    return_address = ctypes.c_uint64.from_address(u[_HC_STACK] - 8).value

    def trap(code: TrapCode, wasm_offset: int) -> Trap:
        func = caller._module.function_at(return_address)
        t = Trap(code, func=None if func is None else func.name, wasm_offset=wasm_offset)
        if func is not None:
            t._unwind = root._unwinder(func.name, u[_HC_STACK])
        return t
    u[_RET_RAX] = run_builtin(caller._refs, u[_HC_ENTRY], args, trap)
    return None
