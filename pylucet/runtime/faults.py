"""Faults seen from the host: what the signal handler recorded, turned into an exception.

The native handler (``asm/trap.s``) only records the signal, the faulting address, rip and rsp in
the root instance page and returns to the host. Here, in Python, the fault is explained: a trap
site at exactly that rip (``module.traps``) makes it a :class:`~pylucet.Trap` of the guest's
call, which leaves the instance usable; anything else is a :class:`~pylucet.FatalFault`, and the
caller poisons the instance.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Any, Mapping

from ..errors import Error, FatalFault, Trap
from ..module.abi import INSTANCE_FIELDS, PAGE_SIZE
from ..module.traps import TrapCode
from .calls import word as _w

if TYPE_CHECKING:  # pragma: no cover
    from .instance import Instance

_FAULT_SIGNO = _w(INSTANCE_FIELDS["fault_signo"])
_FAULT_CODE = _w(INSTANCE_FIELDS["fault_code"])
_FAULT_ADDR = _w(INSTANCE_FIELDS["fault_addr"])
_FAULT_RIP = _w(INSTANCE_FIELDS["fault_rip"])
_FAULT_RSP = _w(INSTANCE_FIELDS["fault_rsp"])
_FAULT_VMCTX = _w(INSTANCE_FIELDS["fault_vmctx"])


def explain_fault(u: Any, root: "Instance", by_vmctx: Mapping[int, "Instance"]) -> Error:
    """The exception for the fault recorded in instance page words ``u`` of ``root`` (the
    instance whose call it was; the faulting code may be a callee's, found by its vmctx)."""
    signo, si_code, addr, rip = u[_FAULT_SIGNO], u[_FAULT_CODE], u[_FAULT_ADDR], u[_FAULT_RIP]
    vm = u[_FAULT_VMCTX]
    at = root if vm == root._slot.vmctx else by_vmctx.get(vm, root)
    module = at._module
    func = module.function_at(rip)
    if func is not None:
        offset = rip - module.text_base - func.code_offset
        site = func.traps.lookup(offset)
        memory_fault = signo in (signal.SIGSEGV, signal.SIGBUS)
        if site is not None:
            code = site.code
            if code != TrapCode.HeapOutOfBounds or in_heap_space(at, addr):
                trap = Trap(code, func=func.name, wasm_offset=site.wasm_offset,
                            code_offset=offset, fault_address=addr if memory_fault else None)
                trap._unwind = root._unwinder(func.name, u[_FAULT_RSP])
                return trap
        elif memory_fault and in_stack_guard(root, addr):
            # a frame too big for what the prologue's limit check left: still an overflow
            return Trap(TrapCode.StackOverflow, func=func.name, code_offset=offset,
                        fault_address=addr)
    where = (f"in {func.name} at code offset {rip - module.text_base - func.code_offset:#x}"
             if func is not None else "outside any guest function")
    return FatalFault(f"{_signame(signo)} (si_code {si_code}) {where} (rip {rip:#x}, "
                      f"address {addr:#x}, rsp {u[_FAULT_RSP]:#x}) in instance "
                      f"{root._name!r}: no trap site explains it; the instance is poisoned")


def in_heap_space(instance: "Instance", addr: int) -> bool:
    """Whether ``addr`` lies in the instance's heap reservation (an access straddling the end
    of the reserved space faults on the page after it)."""
    slot = instance._slot
    return slot.vmctx <= addr < slot.vmctx + slot.heap_space + PAGE_SIZE


def in_stack_guard(instance: "Instance", addr: int) -> bool:
    slot = instance._slot
    return slot.stack_base - PAGE_SIZE <= addr < slot.stack_base


def _signame(signo: int) -> str:
    try:
        return signal.Signals(signo).name
    except ValueError:
        return f"signal {signo}"
