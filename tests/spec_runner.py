"""Runs WebAssembly spec-suite scripts (.wast) through the whole of pylucet: text or binary in,
compiled to a shared object, dlopen'd, instantiated in a region, invoked, results compared bit
for bit.

What pylucet does not translate yet (it raises :class:`~pylucet.Unsupported`, or a module needs
imports that nothing can provide yet) is *skipped*, counted by reason, together with every
command that depends on it; it never counts as passed. Anything else that disagrees with the
script is a failure.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pylucet
from pylucet.wasm import wast
from pylucet.wasm.wast import NanPattern

CANONICAL_NAN = {"f32": 0x7FC0_0000, "f64": 0x7FF8_0000_0000_0000}
QUIET_BIT = {"f32": 0x0040_0000, "f64": 0x0008_0000_0000_0000}
EXP_MASK = {"f32": 0x7F80_0000, "f64": 0x7FF0_0000_0000_0000}
SIGN_BIT = {"f32": 1 << 31, "f64": 1 << 63}
WIDTH = {"i32": 32, "i64": 64, "f32": 32, "f64": 64}
REFS = ("funcref", "externref")

BASELINE = Path(__file__).resolve().parent / "spec_baseline.json"
"""Per script, the commands that passed and were skipped when the baseline was last refreshed
(``tools/spec_report.py --update-baseline``); tests/test_spec.py fails a script that falls below."""


@dataclass
class Outcome:
    """What happened to one script's commands."""

    passed: int = 0
    failed: List[str] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)

    @property
    def ran(self) -> int:
        return self.passed + len(self.failed)


class Skip(Exception):
    """A command that depends on something pylucet does not do yet."""


class _Skipped:
    """Stands in for a module that could not be compiled or instantiated for a known reason."""

    def __init__(self, reason: str):
        self.reason = reason


def _skip_reason(exc: BaseException) -> str:
    text = str(exc)
    return text.split(":")[-1].strip()[:80] if text else type(exc).__name__


def spectest_linker() -> pylucet.Linker:
    """The ``spectest`` host module the scripts import (../shared/testsuite/README.md), and the
    modules they ``register``, which may shadow earlier ones."""
    linker = pylucet.Linker()
    linker.allow_shadowing = True
    nothing = lambda *args: None  # noqa: E731 (the print functions print nothing)
    for name, params in (("print", ""), ("print_i32", "i32"), ("print_i64", "i64"),
                         ("print_f32", "f32"), ("print_f64", "f64"),
                         ("print_i32_f32", "i32, f32"), ("print_f64_f64", "f64, f64")):
        linker.define_func("spectest", name, nothing, f"({params}) -> ()")
    V = pylucet.ValType
    linker.define_table("spectest", "table", pylucet.Table(V.FUNCREF, 10, 20))
    linker.define_memory("spectest", "memory", pylucet.Memory(1, 2))
    for t, value in ((V.I32, 666), (V.I64, 666), (V.F32, 666.6), (V.F64, 666.6)):
        linker.define_global("spectest", f"global_{t.text}", pylucet.Global(t, value))
    return linker


class ScriptRunner:
    def __init__(self, path: Path, region_capacity: int = 64):
        self.path = path
        self.outcome = Outcome()
        self.region = pylucet.MmapRegion(region_capacity)
        self.current = None            # Instance or _Skipped or None
        self.named: Dict[str, object] = {}
        self.registered: List[object] = []   # instances other modules could import from
        self.externs: Dict[int, object] = {}  # ref.extern N -> the host object standing for it
        self.linker = spectest_linker()

    # --- driving ----------------------------------------------------------------------------
    def run(self) -> Outcome:
        try:
            commands = wast.parse_wast(self.path.read_text(encoding="utf-8"))
            for cmd in commands:
                handler = getattr(self, "do_" + type(cmd).__name__)
                try:
                    handler(cmd)
                except Skip as s:
                    self.outcome.skipped[str(s)] += 1
                except AssertionError as e:
                    self.outcome.failed.append(f"{self.path.name}:{cmd.line}: {e}")
                except pylucet.Error as e:
                    self.outcome.failed.append(f"{self.path.name}:{cmd.line}: unexpected {e!r}")
                else:
                    if not isinstance(cmd, (wast.Module, wast.Register, wast.ActionCommand)):
                        self.outcome.passed += 1
        finally:
            self.region.close()
        return self.outcome

    def _instantiate(self, module: wast.Module):
        so = pylucet.compile(module.wasm())
        return self.region.new_instance(pylucet.load(so), self.linker)

    def _target(self, name: Optional[str]):
        inst = self.named.get(name) if name else self.current
        if inst is None:
            raise AssertionError(f"no module {name or '(current)'} to act on")
        if isinstance(inst, _Skipped):
            raise Skip(inst.reason)
        return inst

    # --- commands ---------------------------------------------------------------------------
    def do_Module(self, cmd: wast.Module) -> None:
        current = self.current
        if (current is not None and not isinstance(current, _Skipped)
                and not any(current is i for i in (*self.named.values(), *self.registered))):
            current.close()
        try:
            inst = self._instantiate(cmd)
        except (pylucet.Unsupported, pylucet.LinkError) as e:
            inst = _Skipped(self._skipped_module(e))
        except pylucet.Error as e:
            self.current = _Skipped("module failed")   # its commands can't run
            raise AssertionError(f"module failed to compile or instantiate: {e}") from e
        self.current = inst
        if cmd.name:
            self.named[cmd.name] = inst

    def do_Register(self, cmd: wast.Register) -> None:
        inst = self.named.get(cmd.name) if cmd.name else self.current
        if inst is None:
            raise AssertionError(f"register: no module {cmd.name or '(current)'}")
        if isinstance(inst, _Skipped):
            raise Skip(inst.reason)
        self.registered.append(inst)
        self.linker.define_instance(cmd.as_name, inst)

    def _skipped_module(self, e: Exception) -> str:
        """Why a module cannot be instantiated; taints registered modules if it imports."""
        if isinstance(e, pylucet.LinkError) or "import" in str(e):
            self._taint_registered()
        return _skip_reason(e)

    def _taint_registered(self) -> None:
        """A module that imports could not be linked; had it been, it might have changed the
        tables, memories or globals of the modules it imports from, so what the script expects
        of those no longer holds: their commands are skipped from here on."""
        taint = _Skipped("state shared with a module that could not be linked")
        for name, inst in list(self.named.items()):
            if any(inst is r for r in self.registered):
                self.named[name] = taint
        if any(self.current is r for r in self.registered):
            self.current = taint

    def do_ActionCommand(self, cmd: wast.ActionCommand) -> None:
        self._perform(cmd.action)

    def do_AssertReturn(self, cmd: wast.AssertReturn) -> None:
        results = self._perform(cmd.action)
        expected = cmd.expected
        assert len(results) == len(expected), f"{len(results)} results, expected {len(expected)}"
        for got, want in zip(results, expected):
            if want.type in REFS:
                assert self._ref_matches(got, want), (
                    f"{_describe(cmd.action)} returned {got!r}, expected {want.type} {_fmt(want)}")
                continue
            assert _matches(got, want), (f"{_describe(cmd.action)} returned {got:#x}, expected "
                                         f"{want.type} {_fmt(want)}")

    def _ref_matches(self, got: object, want: wast.Value) -> bool:
        if want.value is None:
            return got is None
        if want.value is wast.ANY:
            return got is not None and (want.type == "externref") == (
                not isinstance(got, pylucet.runtime.Func))
        return got is self.externs.get(want.value)  # type: ignore[call-overload]

    def do_AssertTrap(self, cmd: wast.AssertTrap) -> None:
        if isinstance(cmd.action, wast.Module):
            try:
                inst = self._instantiate(cmd.action)
            except (pylucet.Unsupported, pylucet.LinkError) as e:
                raise Skip(self._skipped_module(e))
            except (pylucet.Trap, pylucet.InstantiationError) as e:
                _check_trap_message(e, cmd.message)
                return
            inst.close()
            raise AssertionError(f"instantiation did not trap (expected {cmd.message!r})")
        try:
            results = self._perform(cmd.action)
        except pylucet.Trap as e:
            _check_trap_message(e, cmd.message)
            return
        raise AssertionError(f"{_describe(cmd.action)} returned {results}, expected trap "
                             f"{cmd.message!r}")

    def do_AssertExhaustion(self, cmd: wast.AssertExhaustion) -> None:
        try:
            self._perform(cmd.action)
        except pylucet.Trap as e:
            assert e.code == pylucet.TrapCode.StackOverflow, f"trapped with {e.code.name}"
            return
        raise AssertionError(f"{_describe(cmd.action)} did not exhaust the stack")

    def do_AssertInvalid(self, cmd: wast.AssertInvalid) -> None:
        self._expect_compile_error(cmd.module, pylucet.InvalidModule, cmd.message)

    def do_AssertMalformed(self, cmd: wast.AssertMalformed) -> None:
        self._expect_compile_error(cmd.module, pylucet.MalformedModule, cmd.message)

    def do_AssertUnlinkable(self, cmd: wast.AssertUnlinkable) -> None:
        try:
            inst = self._instantiate(cmd.module)
        except pylucet.Unsupported as e:
            raise Skip(_skip_reason(e))
        except pylucet.LinkError:
            return
        inst.close()
        raise AssertionError(f"module linked, expected LinkError {cmd.message!r}")

    def do_AssertUninstantiable(self, cmd: wast.AssertUninstantiable) -> None:
        try:
            inst = self._instantiate(cmd.module)
        except (pylucet.Unsupported, pylucet.LinkError) as e:
            raise Skip(self._skipped_module(e))
        except (pylucet.Trap, pylucet.InstantiationError):
            return
        inst.close()
        raise AssertionError("module instantiated, expected it to fail")

    def _expect_compile_error(self, module: wast.Module, kind: type, message: str) -> None:
        try:
            pylucet.compile(module.wasm())
        except kind as e:
            reason = getattr(e, "reason", str(e))
            assert reason.startswith(message) or message.startswith(reason), (
                f"{kind.__name__} says {reason!r}, expected {message!r}")
            return
        except pylucet.Unsupported as e:
            raise Skip(_skip_reason(e))
        except pylucet.CompileError as e:
            raise AssertionError(f"{type(e).__name__} ({e}), expected {kind.__name__} {message!r}")
        raise AssertionError(f"compiled, expected {kind.__name__} {message!r}")

    # --- actions ----------------------------------------------------------------------------
    def _extern(self, n: int) -> object:
        """The host object for ``ref.extern n``: one per n, so identity says which."""
        return self.externs.setdefault(n, ExternObject(n))

    def _perform(self, action) -> Tuple[int, ...]:
        inst = self._target(action.module)
        if isinstance(action, wast.Get):
            return (inst.exports[action.field].bits,)
        args = []
        for v in action.args:
            if v.type in REFS:
                args.append(None if v.value is None else self._extern(v.value))
            elif v.type not in WIDTH:
                raise Skip(f"{v.type} arguments")
            else:
                args.append(v.value)
        try:
            return tuple(inst.run_bits(action.field, *args))
        except pylucet.Unsupported as e:
            raise Skip(str(e)[:80])


class ExternObject:
    """What the runner passes for ``ref.extern N``."""

    def __init__(self, n: int):
        self.n = n

    def __repr__(self) -> str:
        return f"ref.extern {self.n}"


def _check_trap_message(e: Exception, expected: str) -> None:
    # the reference interpreter's messages may say more ("uninitialized element 2")
    text = e.code.message if isinstance(e, pylucet.Trap) else str(e)
    assert text.startswith(expected) or expected in text or expected.startswith(text), (
        f"trapped with {text!r}, expected {expected!r}")


def _matches(got: int, want: wast.Value) -> bool:
    t = want.type
    if t not in WIDTH:
        raise Skip(f"{t} results")
    mask = (1 << WIDTH[t]) - 1
    if isinstance(want.value, NanPattern):
        is_nan = (got & EXP_MASK[t]) == EXP_MASK[t] and got & (EXP_MASK[t] ^ mask ^ SIGN_BIT[t])
        if want.value is NanPattern.CANONICAL:
            return (got & ~SIGN_BIT[t] & mask) == CANONICAL_NAN[t]
        return bool(is_nan) and bool(got & QUIET_BIT[t])
    return (got & mask) == (want.value & mask)  # type: ignore[operator]


def _fmt(v: wast.Value) -> str:
    if isinstance(v.value, int):
        if v.type == "f32":
            return f"{struct.unpack('<f', struct.pack('<I', v.value))[0]!r} ({v.value:#x})"
        if v.type == "f64":
            return f"{struct.unpack('<d', struct.pack('<Q', v.value))[0]!r} ({v.value:#x})"
        return f"{v.value:#x}"
    return repr(v.value)


def _describe(action) -> str:
    args = ", ".join(f"{a.type} {_fmt(a)}" for a in getattr(action, "args", ()))
    return f"{action.field}({args})"


def spec_scripts(suite: Path) -> List[Path]:
    """The non-SIMD core scripts (SIMD is a later issue)."""
    return sorted(p for p in (suite / "spec").glob("*.wast") if not p.name.startswith("simd_"))
