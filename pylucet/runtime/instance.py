"""Instances: a module's state in a region slot, and calls into its guest code.

An instance owns one slot from :meth:`MmapRegion.new_instance` until :meth:`Instance.close`. Its
instance page is shared with the native stubs: the host fills the ``INST_ENTRY_*`` fields and calls
``STUBS.enter``, which switches to the slot's stack and calls the guest. Whatever happens, the stub
comes back with an :class:`~pylucet.module.abi.ExitReason`, and a call is a small loop over them
(:meth:`Instance._drive`): RETURNED ends it; FAULTED becomes a trap; HOSTCALL runs the host function
here, in Python, on the host's own stack, then ``STUBS.resume`` continues the guest with its result
(or, if the host function yields, the call returns :class:`Yielded` and :meth:`Instance.resume`
continues it later, on any thread); INTERRUPTED ends it when its kill switch asked for that.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import signal
import types
import weakref
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple, Union

from ..errors import (Error, FatalFault, InstantiationError, LimitsExceeded, StateError,
                      Terminate, Terminated, Trap)
from ..module.abi import (ENTRY_MAX_STACK_ARGS, INSTANCE_FIELDS, INSTANCE_MAGIC,
                          INSTANCE_PAGE_SIZE, PAGE_SIZE, TABLE_DESC, TABLE_DESC_SIZE,
                          VMCTX_GLOBALS, VMCTX_IMPORTS, VMCTX_INTERRUPT, VMCTX_MEMORY_MAX,
                          VMCTX_MEMORY_SIZE, VMCTX_STACK_LIMIT, VMCTX_TABLES, WASM_PAGE_SIZE,
                          IMPORT_ENTRY, IMPORT_ENTRY_SIZE, ExitReason, Libcall, vmctx_libcall)
from ..module.traps import TrapCode
from ..wasm.types import ExternKind, ValType
from .calls import (BITS_MASK, CallPlan, Value, Words, bits_arg, float_arg, int_arg,
                    read_value, word as _w, write_value)
from .killswitch import WATCHDOG, KillOutcome, KillState, KillSwitch
from .vmctx import Vmctx

if TYPE_CHECKING:  # pragma: no cover
    from .loader import LoadedModule
    from .linker import HostFunc
    from .region import Fit, MmapRegion, Slot

class State(enum.IntEnum):
    """Lifecycle of an instance, mirrored in its page's ``state`` field for the stubs.

    Legal transitions (Lucet's states; NOT_STARTED is READY before the first run)::

        READY --run--> RUNNING --returns or traps--> READY
                               --fault no trap table explains--> FAULTED (refuses to run)
                               --a host function yields--> YIELDING --> YIELDED
                               --kill switch, timeout, a host function raises or
                                 terminates--> TERMINATING --> TERMINATED (refuses to run)
        YIELDED --resume--> RUNNING (then as above)
        READY / FAULTED / YIELDED / TERMINATED --reset--> READY (wiped and initialised again)
        any state but RUNNING --close--> CLOSED (the slot is wiped and returned to the region)

    YIELDING and TERMINATING last only while the host unwinds from the guest's call. CLOSED is
    0 so that a wiped instance page reads as "no instance".
    """

    CLOSED = 0
    READY = 1
    RUNNING = 2
    FAULTED = 3
    YIELDING = 4
    YIELDED = 5
    TERMINATING = 6
    TERMINATED = 7


_READY, _RUNNING = State.READY, State.RUNNING


class Yielded:
    """What ``run`` / ``resume`` return when a host function suspended the guest:
    ``value`` is what it yielded. ``instance.resume(v)`` continues the guest."""

    __slots__ = ("value",)

    def __init__(self, value: object):
        self.value = value

    def __repr__(self) -> str:
        return f"Yielded({self.value!r})"


class _Deadline:
    """A timeout's claim on one call: ``live`` until that call finishes."""

    __slots__ = ("live",)

    def __init__(self) -> None:
        self.live = True


class UnknownExport(Error, LookupError):
    """``run`` named no exported function; ``available`` lists the names there are."""

    def __init__(self, name: str, available: Sequence[str]):
        self.name = name
        self.available = list(available)
        super().__init__(f"no exported function {name!r} (exported functions: "
                         f"{', '.join(self.available) or 'none'})")

    def __str__(self) -> str:  # LookupError would show the message's repr
        return str(self.args[0])


# --- the instance page as typed arrays ----------------------------------------------------------
# Word indices into the page; vmctx fields are at negative offsets from the page's end.

_MAGIC = _w(INSTANCE_FIELDS["magic"])
_STATE = _w(INSTANCE_FIELDS["state"])
_ENTRY_FUNC = _w(INSTANCE_FIELDS["entry_func"])
_ENTRY_GPR = _w(INSTANCE_FIELDS["entry_gpr"])
_ENTRY_XMM = _w(INSTANCE_FIELDS["entry_xmm"])
_ENTRY_NSTACK = _w(INSTANCE_FIELDS["entry_nstack"])
_ENTRY_STACK = _w(INSTANCE_FIELDS["entry_stack"])
_STACK_TOP = _w(INSTANCE_FIELDS["stack_top"])
_RET_RAX = _w(INSTANCE_FIELDS["ret_rax"])
_RET_RDX = _w(INSTANCE_FIELDS["ret_rdx"])
_RET_XMM0 = _w(INSTANCE_FIELDS["ret_xmm0"])
_RET_XMM1 = _w(INSTANCE_FIELDS["ret_xmm1"])
_FAULT_SIGNO = _w(INSTANCE_FIELDS["fault_signo"])
_FAULT_CODE = _w(INSTANCE_FIELDS["fault_code"])
_FAULT_ADDR = _w(INSTANCE_FIELDS["fault_addr"])
_FAULT_RIP = _w(INSTANCE_FIELDS["fault_rip"])
_FAULT_RSP = _w(INSTANCE_FIELDS["fault_rsp"])


def _vw(offset: int) -> int:
    return _w(INSTANCE_PAGE_SIZE + offset)


_VM_STACK_LIMIT = _vw(VMCTX_STACK_LIMIT)
_VM_GLOBALS = _vw(VMCTX_GLOBALS)
_VM_MEMORY_SIZE = _vw(VMCTX_MEMORY_SIZE)
_VM_MEMORY_MAX = _vw(VMCTX_MEMORY_MAX)
_VM_TABLES = _vw(VMCTX_TABLES)
_VM_IMPORTS = _vw(VMCTX_IMPORTS)
_VM_INTERRUPT = _vw(VMCTX_INTERRUPT)
_HC_ENTRY = _w(INSTANCE_FIELDS["hc_entry"])
_HC_STACK = _w(INSTANCE_FIELDS["hc_stack"])
_HC_GPR = _w(INSTANCE_FIELDS["hc_gpr"])

_WORDS = INSTANCE_PAGE_SIZE // 8

_RETURNED, _FAULTED = ExitReason.RETURNED, ExitReason.FAULTED
_HOSTCALL, _INTERRUPTED = ExitReason.HOSTCALL, ExitReason.INTERRUPTED
_GENERATOR = types.GeneratorType
_IMPORT_WORDS = IMPORT_ENTRY_SIZE // 8


def _plan(module: "LoadedModule", func: Union[str, int]) -> CallPlan:
    """The plan for an export name or a function index (cached on the module; index plans in
    a cache of their own, which ``run``'s fast path by name never looks in)."""
    cache = module._plans if isinstance(func, str) else module._index_plans
    plan = cache.get(func)
    if plan is None:
        if isinstance(func, str):
            index = module.export_index(func)
            if index is None:
                raise UnknownExport(func, module.export_names)
            name = func
        else:
            index = func
            total = module.data.num_imported_funcs + len(module.data.functions)
            if not 0 <= index < total:
                raise IndexError(f"function index {index} out of range (module has {total})")
            name = _func_name(module, index)
        plan = CallPlan(name, index, module.data.func_type(index), module.function_address(index))
        cache[func] = plan
    return plan


def _func_name(module: "LoadedModule", index: int) -> str:
    nimp = module.data.num_imported_funcs
    return module.data.functions[index - nimp].name if index >= nimp else str(index)


# --- the instance -------------------------------------------------------------------------------

_stubs: Any = None
_ensure_altstack: Any = None
_libcall_words: List[Tuple[int, int]] = []   # (instance page word, libcall address)


def _native() -> Any:
    """The native stubs, and the fault handler installed, on the first instantiation."""
    global _stubs, _ensure_altstack
    if _stubs is None:
        from . import signals, stubs
        signals.install()
        _ensure_altstack = signals.ensure_altstack
        _libcall_words[:] = [(_vw(vmctx_libcall(call)), stubs.STUBS.libcall_address(call))
                             for call in Libcall]
        _stubs = stubs.STUBS
    return _stubs


class Instance:
    """One instantiation of a module in a region slot. Create with
    :meth:`MmapRegion.new_instance`; close (or use as a context manager) to free the slot.

    Closing wipes the slot. A view from :attr:`heap` that is still alive then reads zeros, and
    its slot is not reused until the view is dropped. A view keeps the size the heap had when it
    was taken: after a ``memory.grow``, take a new one to see the new pages.
    """

    def __init__(self, region: "MmapRegion", slot: "Slot", module: "LoadedModule", fit: "Fit",
                 imports: Sequence["HostFunc"] = (), ctx: Any = None):
        """Set up a committed, zeroed slot for ``module``, its function imports resolved to
        ``imports``. Called by the region only."""
        _native()
        self._region = region
        self._slot = slot
        self._module = module
        self._fit = fit
        self._name = module.name
        self.ctx = ctx
        """The embedder's object, for host functions (``vmctx.ctx``)."""
        self._state = State.CLOSED
        self._kill_state = KillState()
        self._hosts = tuple(imports)
        self._vmctx = Vmctx(self)
        self._in_hostcall = False
        self._suspended: Optional[Tuple[Any, "HostFunc"]] = None   # (generator, its function)
        self._current: Optional[Tuple[CallPlan, Words, bool]] = None  # the call in progress
        self._deadline: Optional[_Deadline] = None   # the timeout of the call in progress
        self._imports = _import_entries(self._hosts, slot.vmctx)
        self._imports_base = ctypes.addressof(self._imports) if self._hosts else 0
        self._stack_args: Optional[Words] = None
        self._return_area: Optional[Words] = None
        self._heap_end = slot.vmctx + region.limits.heap_address_space_size
        page = region._slot_cache.get(slot.index)
        if page is None:   # the views depend only on the address: build them once per slot
            page = region._slot_cache[slot.index] = Words(slot.base, _WORDS)
        self._page = page
        self._initialise()

    def _initialise(self) -> None:
        """Fill the committed, zeroed slot: runtime data, tables, globals, the initial heap."""
        slot, module, fit = self._slot, self._module, self._fit
        _native()
        u = self._page.u64
        u[_MAGIC] = INSTANCE_MAGIC
        u[_STACK_TOP] = slot.stack_top & ~15
        u[_VM_STACK_LIMIT] = slot.stack_limit
        u[_VM_GLOBALS] = slot.globals
        u[_VM_MEMORY_SIZE] = fit.initial_heap
        u[_VM_MEMORY_MAX] = fit.memory_max
        u[_VM_TABLES] = slot.table_descs
        u[_VM_IMPORTS] = self._imports_base
        for word, address in _libcall_words:
            u[word] = address

        globals_image, table_images = module._instance_images()
        if globals_image:
            ctypes.memmove(slot.globals, globals_image, len(globals_image))
        for i, (place, image) in enumerate(zip(fit.tables, table_images)):
            desc = slot.table_descs + i * TABLE_DESC_SIZE
            d = (ctypes.c_uint64 * (TABLE_DESC_SIZE // 8)).from_address(desc)
            d[_w(TABLE_DESC["base"])] = slot.tables + place.offset
            d[_w(TABLE_DESC["length"])] = place.length
            d[_w(TABLE_DESC["max"])] = place.capacity
            ctypes.memmove(slot.tables + place.offset, image, len(image))
        data = module.data
        for page_index, content in data.sparse_data.items():
            offset = page_index * PAGE_SIZE
            if offset + len(content) > fit.initial_heap:
                raise InstantiationError(f"module {self._name!r}: initial data at {offset:#x} "
                                         "lies outside the initial heap")
            ctypes.memmove(slot.vmctx + offset, content, len(content))
        self._set_state(State.READY)

    def _start(self) -> None:
        """Finish instantiating as wasm does: fail on a data or element segment that did not fit
        (after applying the ones before it, as wasm 2.0 says), then run the start function.
        Either failure closes the instance, freeing its slot."""
        data = self._module.data
        try:
            if data.data_error is not None:
                raise InstantiationError(f"module {self._name!r}: {data.data_error}")
            if data.start is not None:
                outcome = self._call(_plan(self._module, data.start), ())
                if isinstance(outcome, Yielded):
                    raise InstantiationError(f"module {self._name!r}: the start function "
                                             "yielded, which instantiation cannot wait for")
        except BaseException:
            self.close()
            raise

    # --- running ------------------------------------------------------------------------------

    def run(self, name: str, *args: Value, timeout: Optional[float] = None) -> Any:
        """Call exported function ``name`` with ``args``.

        Returns None, a value, or a tuple for several results: i32/i64 as signed ints, f32/f64
        as floats. Integer arguments may be given signed or unsigned. A guest fault raises
        :class:`~pylucet.Trap` and leaves the instance usable; a fault no trap table explains
        raises :class:`~pylucet.FatalFault` and the instance refuses to run again. If a host
        function yields, returns :class:`Yielded` (see :meth:`resume`).

        ``timeout`` (seconds): terminate the guest if the call takes longer; it raises
        :class:`~pylucet.Terminated` with reason "timeout". It needs code compiled with
        interrupt checks (the default) to stop a guest that never calls out.
        """
        plan = self._module._plans.get(name)
        if plan is None:
            if not isinstance(name, str):
                raise TypeError(f"run() takes an export name, got {name!r} "
                                "(run_func_index takes a function index)")
            self._check_usable()
            plan = _plan(self._module, name)
        if timeout is None:
            return self._call(plan, args)
        return self._with_timeout(timeout, self._call, plan, args)

    def run_func_index(self, func_index: int, *args: Value) -> Any:
        """Like :meth:`run`, for function ``func_index`` of the wasm index space."""
        if isinstance(func_index, bool) or not isinstance(func_index, int):
            raise TypeError(f"run_func_index takes an int function index, got {func_index!r}")
        self._check_usable()
        return self._call(_plan(self._module, func_index), args)

    def run_bits(self, func: Union[str, int], *bits: int) -> Tuple[int, ...]:
        """Like :meth:`run` (by export name or function index), with every argument and result
        as its raw bit pattern: an unsigned int of the value type's width.

        Python floats cannot carry every f32 NaN (a signalling NaN turns quiet on the way
        through a double), so exact float bits, as the spec tests check them, need this form.
        """
        self._check_usable()
        return self._call(_plan(self._module, func), bits, raw=True)

    def _call(self, plan: CallPlan, args: Sequence[Value], raw: bool = False) -> Any:
        kill = self._kill_state
        with kill.lock:
            if self._state != _READY:
                self._check_usable()
            if len(args) != len(plan.params):
                raise TypeError(f"{plan.name}() takes {len(plan.params)} argument"
                                f"{'' if len(plan.params) == 1 else 's'} {plan.type}, "
                                f"{len(args)} given")
            out = self._load_args(plan, args, raw)
            self._state = self._page.u64[_STATE] = _RUNNING
        page = self._page
        u = page.u64
        u[_ENTRY_FUNC] = plan.address
        u[_ENTRY_NSTACK] = plan.nstack
        self._current = (plan, out, raw)
        if kill.requested:           # terminated before it started (KillOutcome.CANCELLED)
            return self._drive(_INTERRUPTED)
        _ensure_altstack()   # the handler needs a signal stack on whatever thread this is
        return self._drive(_stubs.enter(page.address))

    def _drive(self, reason: int) -> Any:
        """Carry a call on, from the exit reason the stub gave, until it returns, traps,
        yields or ends; the loop every call and every resume goes through."""
        final = _READY
        try:
            while True:
                if reason == _RETURNED:
                    return self._results(*self._current)  # type: ignore[misc]
                if reason == _HOSTCALL:
                    yielded = self._hostcall()
                    if yielded is not None:
                        final = State.YIELDED
                        return yielded
                elif reason == _FAULTED:
                    raise self._explain_fault()
                elif reason == _INTERRUPTED:
                    if self._kill_state.requested:
                        raise Terminated(self._kill_state.reason)
                    # a stale flag from a request the last call finished before seeing: carry on
                else:
                    raise StateError(f"the entry stub refused the call to "
                                     f"{self._current[0].name} ({_exit_name(reason)})")
                if self._kill_state.requested:   # asked for during the host call (PENDING)
                    raise Terminated(self._kill_state.reason)
                reason = _stubs.resume(self._page.address)
        except Terminated:
            final = State.TERMINATED
            raise
        except FatalFault:
            final = State.FAULTED
            raise
        except (Trap, StateError):
            raise                         # the call is over and the guest may run again
        except BaseException:
            final = State.TERMINATED      # Ctrl-C, SystemExit... from a host function: the
            raise                         # guest was left mid-call and cannot continue
        finally:
            self._finish(final)

    def _finish(self, final: State) -> None:
        """Leave RUNNING for ``final``; a termination nobody delivered dies with the call, so
        that it cannot hit the next one."""
        kill = self._kill_state
        abandoned = None
        with kill.lock:
            if self._deadline is not None:   # the call a timeout was for is over
                self._deadline.live = False
                self._deadline = None
            if final != State.YIELDED:
                self._current = None
                abandoned, self._suspended = self._suspended, None
                if kill.requested and final != State.TERMINATED:
                    kill.requested = False
                    self._page.u64[_VM_INTERRUPT] = 0
            self._state = self._page.u64[_STATE] = final
        if abandoned is not None:    # (the call is ending with its own exception: keep that)
            with contextlib.suppress(Exception):
                _abandon(abandoned)

    def _hostcall(self) -> Optional[Yielded]:
        """Run the host function the guest called; None once its result is in place for
        ``resume``, or the Yielded it suspended with. Whatever goes wrong becomes
        Terminated, with the host function's exception as the cause."""
        page = self._page
        u = page.u64
        index = (u[_HC_ENTRY] - self._imports_base) // IMPORT_ENTRY_SIZE
        if not 0 <= index < len(self._hosts):
            raise FatalFault(f"instance {self._name!r} called import entry {index}, which "
                             "does not exist")
        host = self._hosts[index]
        plan = host.plan
        stack = Words(u[_HC_STACK], plan.nstack) if plan.nstack else None
        args = plan.read_args(page, stack)
        return self._host_step(host, lambda: host.fn(self._vmctx, *args) if host.access_vmctx
                               else host.fn(*args))

    def _host_step(self, host: "HostFunc", step: Any,
                   resuming: bool = False) -> Optional[Yielded]:
        """Run ``step`` (the host function, or, ``resuming``, the next step of its generator)
        and store the result it ends with; a generator that yields suspends the call instead."""
        self._in_hostcall = True
        try:
            value = step()
            if resuming:        # send() came back with a value: the generator yielded again
                return Yielded(value)
            if type(value) is _GENERATOR:
                self._suspended = (value, host)
                value = next(value)
                return Yielded(value)
        except StopIteration as done:     # a generator host function finished
            value = done.value
            self._suspended = None
        except Terminate as t:
            self._suspended = None
            raise Terminated(f"host function {host.name} terminated the instance",
                             t.details) from None
        except Exception as e:
            self._suspended = None
            raise Terminated(f"host function {host.name} raised {type(e).__name__}: {e}") from e
        finally:
            self._in_hostcall = False
        area = None
        if host.plan.return_area:
            area = Words(self._page.u64[_HC_GPR], len(host.plan.results))
        try:
            host.plan.write_results(self._page, area, value)
        except (TypeError, ValueError, OverflowError) as e:
            raise Terminated(f"host function {host.name} {e}") from None
        return None

    def resume(self, value: object = None, *, timeout: Optional[float] = None) -> Any:
        """Continue a guest that a host function suspended (state YIELDED): inside the host
        function, the ``yield`` evaluates to ``value``. Returns like :meth:`run`: the call's
        result, or another :class:`Yielded`. Works from any thread."""
        if timeout is not None:
            return self._with_timeout(timeout, self.resume, value)
        kill = self._kill_state
        with kill.lock:
            if self._state != State.YIELDED:
                self._check_open()
                raise StateError(f"{self!r} is not yielded: nothing to resume")
            self._state = self._page.u64[_STATE] = _RUNNING
        generator, host = self._suspended  # type: ignore[misc]
        _ensure_altstack()
        final = State.YIELDED
        try:
            if kill.requested:
                raise Terminated(kill.reason)
            yielded = self._host_step(host, lambda: generator.send(value), resuming=True)
            if yielded is not None:
                return yielded
            final = _RUNNING
        except BaseException:
            # Terminated, or Ctrl-C / SystemExit out of the host function: either way its
            # generator is finished and the guest cannot continue
            final = State.TERMINATED
            raise
        finally:
            if final != _RUNNING:
                self._finish(final)
        if kill.requested:
            return self._drive(_INTERRUPTED)
        return self._drive(_stubs.resume(self._page.address))

    # --- stopping it from outside ------------------------------------------------------------

    def kill_switch(self) -> KillSwitch:
        """A handle that terminates this instance from any thread (see ``runtime.killswitch``
        for the outcomes). It stays bound to this generation: after ``reset`` or ``close`` it
        reports INVALID."""
        self._check_open()
        return KillSwitch(self, self._kill_state)

    def _kill(self, kill: KillState, reason: str) -> KillOutcome:
        """KillSwitch.terminate, with ``kill.lock`` held."""
        state = self._state
        if state in (State.TERMINATED, State.TERMINATING, State.FAULTED) or kill.requested:
            return KillOutcome.NOT_TERMINABLE
        kill.requested = True
        kill.reason = reason
        self._page.u64[_VM_INTERRUPT] = 1
        if state == _RUNNING:
            return KillOutcome.PENDING if self._in_hostcall else KillOutcome.SIGNALLED
        if state == State.YIELDED:
            return KillOutcome.PENDING
        return KillOutcome.CANCELLED

    def _with_timeout(self, timeout: float, call: Any, *args: Any) -> Any:
        """``call(*args)``, terminated by the watchdog if it takes longer than ``timeout``.

        The watchdog may fire late, after the call has ended (it takes a deadline off its heap
        before it runs the callback, and ``cancel`` cannot stop that), and a kill then would
        be CANCELLED and end the *next* call. So the deadline is only live until the call
        finishes: ``_finish`` retires it, under the kill lock the callback also takes.
        """
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout < 0:
            raise ValueError(f"timeout must be a non-negative number of seconds, got {timeout!r}")
        self._check_open()
        kill = self._kill_state
        deadline = _Deadline()
        reason = f"timeout: the call took longer than {timeout:g} s"
        ref = weakref.ref(self)   # a cancelled deadline stays on the heap until it is due

        def expire() -> None:
            with kill.lock:
                instance = ref()
                if deadline.live and kill.valid and instance is not None:
                    instance._kill(kill, reason)
        with kill.lock:
            self._deadline = deadline
        token = WATCHDOG.schedule(timeout, expire)
        try:
            return call(*args)
        finally:
            with kill.lock:
                deadline.live = False
                if self._deadline is deadline:
                    self._deadline = None
            WATCHDOG.cancel(token)

    def _load_args(self, plan: CallPlan, args: Sequence[Value], raw: bool) -> Words:
        """Put ``args`` where ``plan`` says; returns where the results will be."""
        page = self._page
        stack = self._stack_words(plan.nstack) if plan.nstack else page
        k = 0
        try:
            for (t, on_stack, i), v in zip(plan.params, args):
                if raw:
                    (stack if on_stack else page).u64[i] = bits_arg(t, v)
                else:
                    write_value(stack if on_stack else page, t, i, v)
                k += 1
        except (TypeError, OverflowError) as e:
            raise type(e)(f"{plan.name}: argument {k}: {e}") from None
        if plan.return_area:
            out = self._return_words()
            page.u64[_ENTRY_GPR] = out.address
            return out
        return page

    def _results(self, plan: CallPlan, out: Words, raw: bool) -> Any:
        results = plan.results
        if raw:
            return tuple(out.u64[i] & BITS_MASK[t] for t, i in results)
        if len(results) == 1:
            t, i = results[0]
            return read_value(out, t, i)
        if not results:
            return None
        return tuple(read_value(out, t, i) for t, i in results)

    def _stack_words(self, n: int) -> Words:
        if self._stack_args is None:
            self._buffer = (ctypes.c_uint64 * ENTRY_MAX_STACK_ARGS)()
            self._stack_args = Words(ctypes.addressof(self._buffer), ENTRY_MAX_STACK_ARGS)
        self._page.u64[_ENTRY_STACK] = self._stack_args.address   # (a reset wipes the page)
        return self._stack_args

    def _return_words(self) -> Words:
        """The return area for functions with several results: one buffer per instance, big
        enough for any function type (wasm allows at most 1000 results)."""
        if self._return_area is None:
            self._return_buffer = (ctypes.c_uint64 * ENTRY_MAX_STACK_ARGS)()
            self._return_area = Words(ctypes.addressof(self._return_buffer),
                                       ENTRY_MAX_STACK_ARGS)
        return self._return_area

    def _explain_fault(self) -> Error:
        """Turn the fault the signal handler recorded into a Trap, or a FatalFault that
        poisons the instance when nothing explains it."""
        u = self._page.u64
        signo, si_code, addr, rip = u[_FAULT_SIGNO], u[_FAULT_CODE], u[_FAULT_ADDR], u[_FAULT_RIP]
        module = self._module
        func = module.function_at(rip)
        if func is not None:
            offset = rip - module.text_base - func.code_offset
            site = func.traps.lookup(offset)
            memory_fault = signo in (signal.SIGSEGV, signal.SIGBUS)
            if site is not None:
                code = site.code
                if code != TrapCode.HeapOutOfBounds or self._in_heap_space(addr):
                    return Trap(code, func=func.name, wasm_offset=site.wasm_offset,
                                code_offset=offset, fault_address=addr if memory_fault else None)
            elif memory_fault and self._in_stack_guard(addr):
                # a frame too big for what the prologue's limit check left: still an overflow
                return Trap(TrapCode.StackOverflow, func=func.name, code_offset=offset,
                            fault_address=addr)
        self._set_state(State.FAULTED)
        where = (f"in {func.name} at code offset {rip - module.text_base - func.code_offset:#x}"
                 if func is not None else "outside any guest function")
        return FatalFault(f"{_signame(signo)} (si_code {si_code}) {where} (rip {rip:#x}, "
                          f"address {addr:#x}, rsp {u[_FAULT_RSP]:#x}) in instance "
                          f"{self._name!r}: no trap site explains it; the instance is poisoned")

    def _in_heap_space(self, addr: int) -> bool:
        # an access straddling the end of the reserved space faults on the page after it
        return self._slot.vmctx <= addr < self._heap_end + PAGE_SIZE

    def _in_stack_guard(self, addr: int) -> bool:
        return self._slot.stack_base - PAGE_SIZE <= addr < self._slot.stack_base

    # --- inspection ---------------------------------------------------------------------------

    @property
    def module(self) -> "LoadedModule":
        return self._module

    @property
    def state(self) -> State:
        return self._state

    @property
    def slot_index(self) -> int:
        return self._slot.index

    @property
    def memory_size(self) -> int:
        """Current heap size in bytes (compiled ``memory.grow`` updates it too)."""
        self._check_open()
        return self._page.u64[_VM_MEMORY_SIZE]

    @property
    def memory_pages(self) -> int:
        return self.memory_size // WASM_PAGE_SIZE

    @property
    def memory_max(self) -> int:
        """The size in bytes the heap may grow to."""
        self._check_open()
        return self._page.u64[_VM_MEMORY_MAX]

    @property
    def heap(self) -> memoryview:
        """The linear memory, writable, as it is now (see the class docstring on lifetime)."""
        return self._region._heap_view(self._slot, self.memory_size)

    def grow_memory(self, pages: int) -> int:
        """Grow the heap by ``pages`` wasm pages; returns the old size in pages.

        Raises :class:`~pylucet.LimitsExceeded` past the module's maximum or the region's limits,
        as ``memory.grow`` returns -1 there.
        """
        self._check_usable()
        return self._grow(pages)

    def _grow(self, pages: int) -> int:
        """grow_memory without the state check: a host function grows the heap of the
        instance that called it, which is RUNNING then (``Vmctx.grow_memory``)."""
        self._check_open()
        if isinstance(pages, bool) or not isinstance(pages, int) or pages < 0:
            raise ValueError(f"grow_memory takes a non-negative number of pages, got {pages!r}")
        u = self._page.u64
        old = u[_VM_MEMORY_SIZE]
        new = old + pages * WASM_PAGE_SIZE
        if new > u[_VM_MEMORY_MAX]:
            raise LimitsExceeded(f"cannot grow the heap of {self._name!r} from "
                                 f"{old // WASM_PAGE_SIZE} by {pages} pages: the maximum is "
                                 f"{u[_VM_MEMORY_MAX] // WASM_PAGE_SIZE} pages")
        if pages:
            self._region._grow_heap(self._slot, old, new)
            u[_VM_MEMORY_SIZE] = new
        return old // WASM_PAGE_SIZE

    @property
    def globals(self) -> "Globals":
        """The module's globals, by index or export name: ``inst.globals["counter"] += 1``."""
        self._check_open()
        return Globals(self)

    # --- lifetime -----------------------------------------------------------------------------

    def reset(self) -> None:
        """Start over in the same slot: memory, globals and tables as at instantiation, then the
        start function again. Also the way back to READY after a :class:`~pylucet.FatalFault`.

        Cheaper than close + ``new_instance`` only by the Python objects; the slot is wiped the
        same way. If the start function traps, the instance is closed, as instantiation would
        fail.
        """
        self._check_open()
        kill = self._kill_state
        with kill.lock:
            if self._state == _RUNNING:
                raise StateError(f"cannot reset {self!r} while it runs")
            self._vmctx._view = None
            region = self._region
            if region._viewed_extent(self._slot.index) > self._fit.initial_heap:
                # keeping those pages accessible would let the guest reach past its memory
                raise StateError(f"cannot reset {self!r}: a heap view larger than the initial "
                                 "heap is still alive (drop it, or close the instance)")
            kill.valid = False                     # old kill switches now report INVALID
            self._state = State.CLOSED   # until initialised again: a failure leaves it closed
            abandoned, self._suspended, self._current = self._suspended, None, None
            region._wipe(self._slot, keep_heap=region._viewed_extent(self._slot.index))
        _abandon(abandoned)
        self._kill_state = KillState()
        try:
            region._commit(self._slot, self._fit)
            self._initialise()
        except BaseException:
            region._release(self._slot)
            raise
        self._start()

    def close(self) -> None:
        """Wipes the slot and returns it to the region. Further use raises ValueError."""
        if self._state == State.CLOSED:
            return
        kill = self._kill_state
        with kill.lock:
            if self._state == _RUNNING:
                raise StateError(f"cannot close {self!r} while it runs")
            if self._state == State.CLOSED:
                return
            kill.valid = False
            self._state = State.CLOSED
            abandoned, self._suspended, self._current = self._suspended, None, None
            self._vmctx._view = None
            self._region._release(self._slot)
        _abandon(abandoned)

    def __enter__(self) -> "Instance":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_state", State.CLOSED) != State.CLOSED:
            try:
                self.close()
            except Exception:  # pragma: no cover - interpreter shutdown
                pass

    def __repr__(self) -> str:
        if self._state == State.CLOSED:
            heap = ""
        else:
            heap = f", heap {self.memory_pages} pages"
        return (f"<Instance of {self._name!r} in slot {self._slot.index}{heap}, "
                f"{self._state.name.lower()}>")

    # --- helpers ------------------------------------------------------------------------------

    def _set_state(self, state: State) -> None:
        self._state = state
        self._page.u64[_STATE] = state

    def _check_open(self) -> None:
        if self._state == State.CLOSED:
            raise ValueError(f"instance of {self._name!r} is closed")

    def _check_usable(self) -> None:
        self._check_open()
        if self._state == State.FAULTED:
            raise FatalFault(f"instance of {self._name!r} was poisoned by an earlier fatal "
                             "fault; close it and create a new one")
        state = self._state
        if state == State.RUNNING:
            raise StateError(f"instance of {self._name!r} is running: run() cannot be "
                             "re-entered (from a host function, call another instance)")
        if state == State.YIELDED:
            raise StateError(f"instance of {self._name!r} is yielded: resume() it, or reset()")
        if state == State.TERMINATED:
            raise StateError(f"instance of {self._name!r} was terminated; reset() it to run "
                             "again")


def _abandon(suspended: Optional[Tuple[Any, "HostFunc"]]) -> None:
    """Close the generator of a host function whose guest call is given up (by reset, close,
    or a termination while it was suspended). Called with the kill lock released: its
    ``finally`` blocks are host code, which may well use the instance's kill switch."""
    if suspended is not None:
        suspended[0].close()


def _import_entries(hosts: Sequence["HostFunc"], vmctx: int) -> Any:
    """The instance's import entries (``abi.IMPORT_ENTRY``): every host function's code is the
    hostcall stub, which leaves for the host; ``index`` says which function it was."""
    entries = (ctypes.c_uint64 * max(1, _IMPORT_WORDS * len(hosts)))()
    for i in range(len(hosts)):
        base = _IMPORT_WORDS * i
        entries[base + _w(IMPORT_ENTRY["func"])] = _stubs.hostcall
        entries[base + _w(IMPORT_ENTRY["vmctx"])] = vmctx
        entries[base + _w(IMPORT_ENTRY["index"])] = i
    return entries


def _exit_name(reason: int) -> str:
    try:
        return ExitReason(reason).name.lower()
    except ValueError:
        return f"exit reason {reason}"


def _signame(signo: int) -> str:
    try:
        return signal.Signals(signo).name
    except ValueError:
        return f"signal {signo}"


_GLOBAL_CTYPES = {ValType.I32: ctypes.c_int32, ValType.I64: ctypes.c_int64,
                  ValType.F32: ctypes.c_float, ValType.F64: ctypes.c_double}


class Globals:
    """An instance's globals, addressed by index (defined globals, in order) or export name."""

    def __init__(self, instance: Instance):
        self._instance = instance
        data = instance._module.data
        self._specs = data.globals
        self._names = {e.name: e.index for e in data.exports if e.kind == ExternKind.GLOBAL}

    def _locate(self, key: Union[int, str]) -> Tuple[str, Any]:
        if isinstance(key, str):
            if key not in self._names:
                raise KeyError(f"no exported global {key!r} (exported globals: "
                               f"{', '.join(self._names) or 'none'})")
            index = self._names[key]
        elif isinstance(key, int) and not isinstance(key, bool):
            index = key
        else:
            raise TypeError(f"globals are indexed by int or export name, not {key!r}")
        if not 0 <= index < len(self._specs):
            raise IndexError(f"global index {index} out of range ({len(self._specs)} globals)")
        self._instance._check_open()
        spec = self._specs[index]
        return (f"global {key!r}", spec)

    def _cell(self, spec: Any) -> Any:
        ctype = _GLOBAL_CTYPES.get(spec.valtype)
        if ctype is None:
            raise NotImplementedError(f"globals of type {spec.valtype.text} are not supported")
        return ctype.from_address(self._instance._slot.globals + spec.offset)

    def __getitem__(self, key: Union[int, str]) -> Value:
        _, spec = self._locate(key)
        return self._cell(spec).value

    def __setitem__(self, key: Union[int, str], value: Value) -> None:
        what, spec = self._locate(key)
        if not spec.mutable:
            raise ValueError(f"{what} is immutable")
        t = spec.valtype
        cell = self._cell(spec)
        slot_word = ctypes.c_uint64.from_address(ctypes.addressof(cell))
        try:
            if t in (ValType.I32, ValType.I64):
                # masked to the type's width, so an i32's upper half stays zero as at instantiation
                slot_word.value = int_arg(t, value)
            else:
                value = float_arg(t, value)
                slot_word.value = 0
                cell.value = value
        except (TypeError, OverflowError) as e:
            raise type(e)(f"{what}: {e}") from None

    def __len__(self) -> int:
        return len(self._specs)

    def __repr__(self) -> str:
        parts = []
        names = {i: n for n, i in self._names.items()}
        for i, spec in enumerate(self._specs):
            label = names.get(i, str(i))
            parts.append(f"{label}: {spec.valtype.text} = {self._cell(spec).value!r}")
        return "{" + ", ".join(parts) + "}"
