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
import types
import weakref
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple, Union

from ..errors import (Error, FatalFault, InstantiationError, LimitsExceeded, StateError,
                      Terminate, Terminated, Trap)
from ..module.abi import (BUILTIN_LIMIT, ENTRY_MAX_STACK_ARGS, FUNCREF_SIZE, INSTANCE_FIELDS,
                          INSTANCE_MAGIC, INSTANCE_PAGE_SIZE, VMCTX_DATA_SEGMENTS,
                          VMCTX_FUNCREFS, VMCTX_GLOBALS, VMCTX_MEMORY_MAX, VMCTX_MEMORY_SIZE,
                          VMCTX_STACK_LIMIT, VMCTX_TABLES, VMCTX_TYPE_IDS, WASM_PAGE_SIZE,
                          ExitReason, Libcall, vmctx_libcall)
from .calls import DONE as _DONE
from .calls import (BITS_MASK, REF_TYPES, CallPlan, Value, Words, bits_arg, plan as _plan, read_value,
                    word as _w, write_value)
from . import signals, stubs
from .backtrace import unwinder
from . import links
from .faults import explain_fault
from .hostcalls import builtin_call, host_of_call
from .instance_tables import InstanceTables
from .tables import Table
from .killswitch import WATCHDOG, KillOutcome, KillState, KillSwitch
from .vmctx import Vmctx

if TYPE_CHECKING:  # pragma: no cover
    from .loader import LoadedModule
    from .exports import Exports
    from .globalvars import Global, Globals
    from .linker import HostFunc, Resolution
    from .memories import Memory
    from .alloc import SlotMemory
    from .region import Fit, MmapRegion

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


def _vw(offset: int) -> int:
    return _w(INSTANCE_PAGE_SIZE + offset)


_VM_STACK_LIMIT = _vw(VMCTX_STACK_LIMIT)
_VM_GLOBALS = _vw(VMCTX_GLOBALS)
_VM_MEMORY_SIZE = _vw(VMCTX_MEMORY_SIZE)
_VM_MEMORY_MAX = _vw(VMCTX_MEMORY_MAX)
_VM_TABLES = _vw(VMCTX_TABLES)
_VM_FUNCREFS = _vw(VMCTX_FUNCREFS)
_VM_TYPE_IDS = _vw(VMCTX_TYPE_IDS)
_VM_DATA_SEGMENTS = _vw(VMCTX_DATA_SEGMENTS)
_VM_GROW_LIBCALL = _vw(vmctx_libcall(Libcall.MEMORY_GROW))
_ROOT = _w(INSTANCE_FIELDS["root"])
_GUEST_R14 = _w(INSTANCE_FIELDS["guest_r14"])
_HC_VMCTX = _w(INSTANCE_FIELDS["hc_vmctx"])
_HC_ENTRY = _w(INSTANCE_FIELDS["hc_entry"])
_HC_STACK = _w(INSTANCE_FIELDS["hc_stack"])

_WORDS = INSTANCE_PAGE_SIZE // 8

_RETURNED, _FAULTED = ExitReason.RETURNED, ExitReason.FAULTED
_HOSTCALL, _INTERRUPTED, _BUSY = ExitReason.HOSTCALL, ExitReason.INTERRUPTED, ExitReason.BUSY
_by_vmctx: "weakref.WeakValueDictionary[int, Instance]" = weakref.WeakValueDictionary()
"""Live instances by vmctx: a hostcall or fault in an instance called by another one reaches the
host through the caller's call, naming the callee only by its vmctx."""
_ENTER, _RESUME = -1, -2       # _drive: call the stub first (enter / resume)
_GENERATOR = types.GeneratorType
_NO_HOSTS: dict = {}


# --- the instance -------------------------------------------------------------------------------

_stubs: Any = None
_ensure_altstack: Any = None
_libcall_words: List[Tuple[int, int]] = []   # (instance page word, libcall address)


def _native() -> Any:
    """The native stubs, and the fault handler installed, on the first instantiation; after
    that, a check that it is still ours at every instantiation. (Python-level changes --
    ``faulthandler.enable``, ``signal.signal`` -- put ours back in front at once, for free; the
    check catches native code replacing it, for one system call per instantiation rather than
    per call: ``tools/bench_signals.py``.)"""
    global _stubs, _ensure_altstack
    if _stubs is not None:
        signals.check_installed()
    else:
        signals.install()
        signals.install_sigint()
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

    def __init__(self, region: "MmapRegion", memory: "SlotMemory", module: "LoadedModule",
                 fit: "Fit", imports: "Resolution", ctx: Any = None):
        """Set up a slot whose memory is committed for ``module`` (its heap an alias of
        ``imports.memory`` if it imports one), its imports resolved to ``imports``. Called by
        the region only."""
        stubs_ = _native()
        self._region = region
        self._mem = memory
        slot = self._slot = memory.slot
        self._module = module
        self._fit = fit
        self._name = module.name
        self.ctx = ctx
        """The embedder's object, for host functions (``vmctx.ctx``)."""
        self._state = State.CLOSED
        self._kill_state = KillState()
        self._hosts: Sequence[Any] = imports.funcs
        """What each function import resolved to: a HostFunc, or another instance's Func."""
        self._linked: Tuple[Instance, ...] = ()
        """Instances whose functions or tables this one imports: it may call into them."""
        self._providers: Tuple[Instance, ...] = ()
        """Every instance this one imports from (functions, tables, globals, memory): kept
        alive (and refusing to close) while this one lives, since their slots hold what it
        uses."""
        self._importers: Optional["weakref.WeakSet[Instance]"] = None   # made when imported
        self._global_imports: Tuple["Global", ...] = imports.globals
        """What each imported global is linked to, in order."""
        self._memory: Optional["Memory"] = imports.memory
        """The shared memory the heap is an alias of: imported, or this instance's own once
        exported (``exports["memory"]``); None for a private heap."""
        self._refs = InstanceTables(self, slot, module, fit, imports.funcs, imports.tables,
                                    stubs_)
        self._host_records = ({slot.records + FUNCREF_SIZE * i: f
                               for i, f in enumerate(imports.funcs) if hasattr(f, "plan")}
                              if imports.funcs else _NO_HOSTS)
        """The host functions this instance imports, by the address of their records."""
        self._externs = self._refs.externs
        if imports.funcs or imports.globals or imports.memory is not None or imports.tables:
            links.link(self, imports)
        self._vmctx = Vmctx(self)
        self._in_hostcall = False
        self._suspended: Optional[Tuple[Any, "HostFunc"]] = None   # (generator, its function)
        self._current: Optional[Tuple[CallPlan, Words, bool]] = None  # the call in progress
        self._deadline: Optional[_Deadline] = None   # the timeout of the call in progress
        self._stack_args: Optional[Words] = None
        self._return_area: Optional[Words] = None
        self._page = memory.page
        # this instance's data segment descriptors: data.drop writes them, so each instance
        # (and each reset) starts from a copy of the module's, unless those are shared
        self._data_descs = (None if module._data_descs_shared
                            else ctypes.create_string_buffer(len(module._data_descs)))
        self._initialise()

    def _initialise(self) -> None:
        """Fill the committed, zeroed slot: runtime data, data segment descriptors, tables,
        globals, the initial heap."""
        slot, module, fit = self._slot, self._module, self._fit
        u = self._page.u64
        u[_MAGIC] = INSTANCE_MAGIC
        u[_STACK_TOP] = slot.stack_top & ~15
        u[_VM_STACK_LIMIT] = slot.stack_limit
        u[_VM_GLOBALS] = slot.globals
        u[_VM_MEMORY_SIZE] = fit.initial_heap
        u[_VM_MEMORY_MAX] = fit.memory_max
        u[_VM_TABLES] = slot.table_ptrs
        u[_VM_FUNCREFS] = slot.records
        u[_VM_TYPE_IDS] = module.signature_ids_address or ctypes.addressof(module.signature_ids)
        descs = self._data_descs
        if descs is None:
            u[_VM_DATA_SEGMENTS] = module._data_descs_address
        else:
            u[_VM_DATA_SEGMENTS] = ctypes.addressof(descs)
            ctypes.memmove(descs, module._data_descs, len(module._data_descs))
        for word, address in _libcall_words:
            u[word] = address
        if self._memory is not None:
            links.wire_shared_memory(self)

        globals_image = module._globals_image()
        if globals_image:
            ctypes.memmove(slot.globals, globals_image, len(globals_image))
        if self._global_imports:
            links.link_globals(self)
        self._refs.initialise(u)
        self._set_state(State.READY)

    def _global_address(self, index: int) -> int:
        """Where global ``index``'s value is stored (``runtime.links``)."""
        return links.global_address(self, index)

    def _start(self) -> None:
        """Finish instantiating as wasm does: fail on a data or element segment that did not fit
        (after applying the ones before it, as wasm 2.0 says), then run the start function.
        Either failure closes the instance, freeing its slot -- unless an element segment
        already stored its functions in a table it shares with others: as in the spec, those
        entries persist and stay callable, so the instance lives on, unreachable but through
        them, until the tables' owners close (:meth:`_orphan`)."""
        data = self._module.data
        try:
            if self._refs.elem_error is not None:
                raise InstantiationError(f"module {self._name!r}: {self._refs.elem_error}")
            if data.data_error is not None:
                raise InstantiationError(f"module {self._name!r}: {data.data_error}")
            if data.active_data:
                links.apply_active_data(self)
            if data.start is not None:
                outcome = self._call(_plan(self._module, data.start), ())
                if isinstance(outcome, Yielded):
                    raise InstantiationError(f"module {self._name!r}: the start function "
                                             "yielded, which instantiation cannot wait for")
        except BaseException:
            if not links.keep_as_orphan(self):
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
        return self._drive(_ENTER)

    def _drive(self, reason: int) -> Any:
        """Carry a call on, from the exit reason the stub gave, until it returns, traps,
        yields or ends; the loop every call and every resume goes through."""
        final = _READY
        clean = False
        page, kill, own = self._page, self._kill_state, self._slot.vmctx
        try:
            # the stub is called inside the try, so that even a KeyboardInterrupt raised the
            # moment it returns (Ctrl-C) leaves the instance in a state it can be reset from
            if reason == _ENTER:
                reason = _stubs.enter(page.address)
                if reason == _BUSY:
                    clean = True         # nothing ran, nothing to release
                    raise StateError(f"instance of {self._name!r} is in use by a call from "
                                     "another instance that imports it")
            elif reason == _RESUME:
                reason = _stubs.resume(page.address)
            while True:
                if reason == _RETURNED:
                    clean = True
                    return self._results(*self._current)  # type: ignore[misc]
                if reason == _HOSTCALL:
                    u = page.u64
                    host = self._host_records.get(u[_HC_ENTRY])    # one of ours, from us:
                    if host is not None and u[_HC_VMCTX] == own:   # the usual case, first
                        vmctx = self._vmctx
                    elif u[_HC_ENTRY] < BUILTIN_LIMIT:
                        host = builtin_call(self, _by_vmctx)
                    else:
                        host, vmctx = host_of_call(self, _by_vmctx)
                    if host is not None:      # (inline: a hostcall is mostly Python overhead)
                        self._in_hostcall = True
                        try:
                            value = host.plan.call(page, vmctx)
                        except BaseException as e:
                            self._host_failed(host, e)
                        finally:
                            self._in_hostcall = False
                        if value is not _DONE:
                            if type(value) is _GENERATOR:
                                self._state = State.YIELDING
                                yielded = self._host_step(host, lambda: value)
                                if yielded is not None:
                                    final = State.YIELDED
                                    return yielded
                                self._state = _RUNNING
                            else:
                                self._store(host, value)
                elif reason == _FAULTED:
                    raise self._explain_fault()
                elif reason == _INTERRUPTED:
                    self._interrupted()
                elif reason == _BUSY:
                    raise Terminated("it called into an instance that is in use by another call")
                else:
                    raise StateError(f"the entry stub refused the call to "
                                     f"{self._current[0].name} ({_exit_name(reason)})")
                if kill.requested:   # asked for during the host call (PENDING)
                    raise Terminated(kill.reason)
                reason = _stubs.resume(page.address)
        except Terminated:
            self._state = State.TERMINATING    # (seen by a kill switch while we unwind)
            final = State.TERMINATED
            raise
        except FatalFault:
            final = State.FAULTED
            raise
        except (Trap, StateError):
            raise                         # the call is over and the guest may run again
        except BaseException:
            # Ctrl-C, SystemExit... from a host function: the guest was left mid-call
            self._state = State.TERMINATING
            final = State.TERMINATED
            raise
        finally:
            self._finish(final, clean)

    def _interrupted(self) -> None:
        """The guest saw its interrupt flag. Terminated if its kill switch asked for that;
        else the flag was set by Ctrl-C (Python raises KeyboardInterrupt as soon as this
        returns, unless a handler of the host's says otherwise) or is stale: clear it and carry
        on."""
        kill = self._kill_state
        with kill.lock:
            if kill.requested:
                raise Terminated(kill.reason)
            vm = self._page.u64[_GUEST_R14]      # the instance whose poll fired
            inst = self if vm == self._slot.vmctx else _by_vmctx.get(vm)
            if inst is not None and inst is not self:
                # a callee this call is inside of: its own kill switch ends the call, and is
                # delivered so (it does not wait for the callee's next run as well)
                callee_kill = inst._kill_state
                with callee_kill.lock:
                    if callee_kill.requested:
                        callee_kill.requested = False
                        inst._set_poll(True)
                        raise Terminated(f"{callee_kill.reason} (in instance {inst._name!r}, "
                                         "called from this one)")
            if inst is not None:
                inst._set_poll(True, fired=True)

    def _finish(self, final: State, clean: bool = False) -> None:
        """Leave RUNNING for ``final``; ``clean``: the guest returned (or never ran), so its
        stubs released what they claimed. A termination nobody delivered dies with the call,
        so that it cannot hit the next one."""
        kill = self._kill_state
        abandoned = None
        with kill.lock:
            if self._deadline is not None:   # the call a timeout was for is over
                self._deadline.live = False
                self._deadline = None
            if final != State.YIELDED:
                self._current = None
                abandoned, self._suspended = self._suspended, None
                if kill.requested:
                    # the call is over: give back the poll pages the request revoked
                    for inst in (self, *links.all_linked(self)):
                        if inst._state != State.CLOSED:
                            inst._set_poll(True)
                    if final != State.TERMINATED:
                        kill.requested = False
                if not clean:
                    links.release_abandoned(self)
            self._state = self._page.u64[_STATE] = final
        if abandoned is not None:    # (the call is ending with its own exception: keep that)
            with contextlib.suppress(Exception):
                _abandon(abandoned)

    def _host_failed(self, host: "HostFunc", e: BaseException) -> None:
        """A host function raised ``e``: the guest cannot go on."""
        self._suspended = None
        if isinstance(e, Terminate):
            raise Terminated(f"host function {host.name} terminated the instance",
                             e.details) from None
        if isinstance(e, Exception):
            raise Terminated(f"host function {host.name} raised {type(e).__name__}: {e}") from e
        raise e   # KeyboardInterrupt, SystemExit: theirs to handle; the call is over

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
        except BaseException as e:
            self._host_failed(host, e)
        finally:
            self._in_hostcall = False
        self._store(host, value)
        return None

    def _store(self, host: "HostFunc", value: Any) -> None:
        try:
            host.plan.store(self._page, value, self._externs)
        except (TypeError, ValueError, OverflowError) as e:
            raise Terminated(f"host function {host.name} {e}") from None

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
        return self._drive(_RESUME)

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
        if state == State.YIELDING:
            state = State.YIELDED      # it is about to be: the request waits for resume
        kill.requested = True
        kill.reason = reason
        self._set_poll(False)
        for callee in links.all_linked(self):   # the guest may be inside one of them right now;
            if callee._state != State.CLOSED:   # their pages come back when the call ends
                callee._set_poll(False)
        if state == _RUNNING:
            return KillOutcome.PENDING if self._in_hostcall else KillOutcome.SIGNALLED
        if state == State.YIELDED:
            return KillOutcome.PENDING
        if self._page.u64[_ROOT]:
            # READY, but an importer's call is inside its code: that stops at the next check
            # (the caller's _interrupted delivers it)
            return KillOutcome.SIGNALLED
        return KillOutcome.CANCELLED

    def _set_poll(self, open_: bool, fired: bool = False) -> None:
        self._mem.set_poll(open_, fired)

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
                if raw and t not in REF_TYPES:
                    (stack if on_stack else page).u64[i] = bits_arg(t, v)
                else:
                    write_value(stack if on_stack else page, t, i, v, self._externs)
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
            return tuple(read_value(out, t, i) if t in REF_TYPES else out.u64[i] & BITS_MASK[t]
                         for t, i in results)
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
        poisons the instance when nothing explains it (``runtime.faults``)."""
        error = explain_fault(self._page.u64, self, _by_vmctx)
        if isinstance(error, FatalFault):
            self._set_state(State.FAULTED)
        return error

    def _unwinder(self, innermost: str, rsp: int) -> Any:
        return unwinder(innermost, rsp, self._slot.stack_base, self._slot.stack_top,
                        [self._module] + [i._module for i in links.all_linked(self)])

    # --- inspection ---------------------------------------------------------------------------

    @property
    def module(self) -> "LoadedModule":
        return self._module

    @property
    def exports(self) -> "Exports":
        """The exported functions as typed callables: ``inst.exports["f"](1, 2)``,
        ``inst.exports.f.type``."""
        self._check_open()
        from .exports import Exports
        return Exports(self)

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
        """The linear memory, writable, as it is now (see the class docstring on lifetime; a
        shared memory's view is a mapping of its own, valid as long as it is referenced)."""
        if self._memory is not None:
            self._check_open()
            return self._memory.view()
        return self._mem.heap_view(self.memory_size)

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
        if self._memory is not None:
            return self._memory.grow(pages)
        u = self._page.u64
        old = u[_VM_MEMORY_SIZE]
        new = old + pages * WASM_PAGE_SIZE
        if new > u[_VM_MEMORY_MAX]:
            raise LimitsExceeded(f"cannot grow the heap of {self._name!r} from "
                                 f"{old // WASM_PAGE_SIZE} by {pages} pages: the maximum is "
                                 f"{u[_VM_MEMORY_MAX] // WASM_PAGE_SIZE} pages")
        if pages:
            self._mem.grow_heap(old, new)
            u[_VM_MEMORY_SIZE] = new
        return old // WASM_PAGE_SIZE

    @property
    def tables(self) -> List[Table]:
        """The tables, imported ones first, as :class:`~pylucet.runtime.tables.Table` views:
        ``inst.tables[0][3]`` is entry 3 of table 0 (a Func, an object, or None)."""
        self._check_open()
        return list(self._refs.tables)

    def _record_address(self, func_index: int) -> int:
        self._check_open()
        return self._refs.record_address(func_index)

    def _record_words(self, func_index: int) -> Any:
        return self._refs.record_words(func_index)

    @property
    def globals(self) -> "Globals":
        """The module's globals, by index or export name: ``inst.globals["counter"] += 1``."""
        self._check_open()
        from .globalvars import Globals
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
            if self._state in (_RUNNING, State.YIELDING, State.TERMINATING):
                raise StateError(f"cannot reset {self!r} while it runs")
            links.check_no_importers(self, "reset")
            self._vmctx._view = None
            memory = self._mem
            if memory.viewed_extent() > self._fit.initial_heap:
                # keeping those pages accessible would let the guest reach past its memory
                raise StateError(f"cannot reset {self!r}: a heap view larger than the initial "
                                 "heap is still alive (drop it, or close the instance)")
            kill.valid = False                     # old kill switches now report INVALID
            self._state = State.CLOSED   # until initialised again: a failure leaves it closed
            abandoned, self._suspended, self._current = self._suspended, None, None
            memory.wipe(keep_heap=memory.viewed_extent())
            heap = self._module.data.heap
            if heap is None or not heap.imported:
                # an own memory made shared stays with those who hold it; ours starts afresh
                self._memory = None
        _abandon(abandoned)
        self._kill_state = KillState()
        try:
            memory.commit(self._module, self._fit, self._memory)
            self._initialise()
        except BaseException:
            memory.release()
            raise
        self._start()

    def close(self) -> None:
        """Wipes the slot and returns it to the region. Further use raises ValueError."""
        if self._state == State.CLOSED:
            return
        kill = self._kill_state
        with kill.lock:
            if self._state in (_RUNNING, State.YIELDING, State.TERMINATING):
                raise StateError(f"cannot close {self!r} while it runs")
            if self._state == State.CLOSED:
                return
            links.close_orphans(self)
            links.check_no_importers(self, "close")
            kill.valid = False
            self._state = State.CLOSED
            abandoned, self._suspended, self._current = self._suspended, None, None
            self._vmctx._view = None
            heirs = ([i._externs for i in links.all_linked(self) if i._state != State.CLOSED]
                     if self._externs else [])
            self._refs.scrub(heirs)
            if _by_vmctx.get(self._slot.vmctx) is self:
                del _by_vmctx[self._slot.vmctx]
            for provider in self._providers:
                provider._importers.discard(self)  # type: ignore[union-attr]
            self._mem.release()
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
        if state in (State.RUNNING, State.YIELDING, State.TERMINATING):
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


def _exit_name(reason: int) -> str:
    try:
        return ExitReason(reason).name.lower()
    except ValueError:
        return f"exit reason {reason}"
