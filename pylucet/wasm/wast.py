"""The .wast script format of the spec test suite, read into a list of commands.

Reading a script does not compile its modules: a text module is compiled when a runner asks
(:meth:`Module.wasm`), so a script whose ``assert_malformed`` modules fail to parse still reads,
and a runner decides per command what a failure means. Text modules compile from the script's own
tokens, so their errors give lines and columns in the .wast file.

Values are bit patterns, the form a runner compares: ``i32``/``i64``/``f32``/``f64`` are the
unsigned integer of their bits (so NaN payloads and -0.0 compare exactly); an expected NaN result
may instead be :data:`NAN_CANONICAL` or :data:`NAN_ARITHMETIC`. References are ``None`` for null,
an ``int`` for ``ref.extern N``, or :data:`ANY` where an expected result only says "some non-null
reference" (``(ref.extern)``, ``(ref.func)``).
"""

from __future__ import annotations

import bisect
import enum
import re
from dataclasses import dataclass, field
from typing import List, Optional, Tuple, Union

from .sexpr import ATOM, EOF, LPAR, STRING, Cursor, Tokens
from .wat import F32, F64, ConstantOutOfRange, compile_tokens, decode_source, float_bits, parse_int, \
    parse_wat

__all__ = [
    "parse_wast", "Value", "NanPattern", "NAN_CANONICAL", "NAN_ARITHMETIC", "ANY",
    "Module", "Register", "Invoke", "Get", "Action", "AssertReturn", "AssertTrap",
    "AssertExhaustion", "AssertInvalid", "AssertMalformed", "AssertUnlinkable",
    "AssertUninstantiable", "Command",
]


class NanPattern(enum.Enum):
    CANONICAL = "nan:canonical"
    ARITHMETIC = "nan:arithmetic"


NAN_CANONICAL = NanPattern.CANONICAL
NAN_ARITHMETIC = NanPattern.ARITHMETIC


class _Any:
    def __repr__(self) -> str:
        return "ANY"


ANY = _Any()
"""An expected reference result that matches any non-null reference of its type."""


@dataclass(frozen=True)
class Value:
    """An argument or expected result: ``type`` is the WAT type name (``i32``... ``funcref``,
    ``externref``); ``value`` as the module docstring describes."""

    type: str
    value: object


@dataclass
class Module:
    """A module definition. ``kind`` says how it was written: ``"text"`` (compiled on demand),
    ``"binary"`` (``source`` is the bytes) or ``"quote"`` (``source`` is the UTF-8 bytes of the
    quoted text, parsed on demand: its parse errors are what ``assert_malformed`` checks)."""

    line: int
    name: Optional[str]
    kind: str
    source: Union[bytes, str]
    _tokens: Optional[Tokens] = field(default=None, repr=False, compare=False)
    _start: int = field(default=0, repr=False, compare=False)

    def wasm(self) -> bytes:
        """The module's binary; raises :class:`~pylucet.errors.MalformedModule` if the text is
        not well-formed."""
        if self.kind == "binary":
            return self.source  # type: ignore[return-value]
        if self.kind == "quote":
            return parse_wat(decode_source(self.source))  # type: ignore[arg-type]
        assert self._tokens is not None
        return compile_tokens(self._tokens, self._start)[0]

    @property
    def text(self) -> Optional[str]:
        """The module's source text (for text and quote modules)."""
        if self.kind == "quote":
            return self.source.decode("utf-8", "replace")  # type: ignore[union-attr]
        return self.source if self.kind == "text" else None  # type: ignore[return-value]


@dataclass
class Register:
    line: int
    as_name: str
    name: Optional[str]   # the module's $id; None for the most recent module


@dataclass
class Invoke:
    line: int
    module: Optional[str]
    field: str
    args: Tuple[Value, ...]


@dataclass
class Get:
    line: int
    module: Optional[str]
    field: str


Action = Union[Invoke, Get]


@dataclass
class ActionCommand:
    """An action performed for its effect, outside any assertion."""

    line: int
    action: Action


@dataclass
class AssertReturn:
    line: int
    action: Action
    expected: Tuple[Value, ...]


@dataclass
class AssertTrap:
    """An action that must trap, or (``action`` a :class:`Module`) a module whose start function
    must."""

    line: int
    action: Union[Action, Module]
    message: str


@dataclass
class AssertExhaustion:
    line: int
    action: Action
    message: str


@dataclass
class AssertInvalid:
    line: int
    module: Module
    message: str


@dataclass
class AssertMalformed:
    line: int
    module: Module
    message: str


@dataclass
class AssertUnlinkable:
    line: int
    module: Module
    message: str


@dataclass
class AssertUninstantiable:
    line: int
    module: Module
    message: str


Command = Union[Module, Register, ActionCommand, AssertReturn, AssertTrap, AssertExhaustion,
                AssertInvalid, AssertMalformed, AssertUnlinkable, AssertUninstantiable]

_MODULE_FIELDS = {"type", "import", "func", "table", "memory", "global", "export", "start", "elem",
                  "data"}
_NUMERIC = {"i32.const": 32, "i64.const": 64, "f32.const": F32, "f64.const": F64}


class _ScriptReader(Cursor):
    def __init__(self, text: str):
        super().__init__(Tokens(text))
        self.newlines = [m.start() for m in re.finditer("\n", text)]

    def line(self, i: int) -> int:
        return bisect.bisect_left(self.newlines, self.toks.offs[i]) + 1

    def open(self) -> str:
        if self.k[self.i] != LPAR or self.k[self.i + 1] != ATOM:
            self.unexpected()
        self.i += 2
        return self.v[self.i - 1]

    def text_string(self) -> str:
        """A string token as text (names, messages): what a script compares, not raw bytes."""
        return self.string().decode("utf-8", "surrogateescape")

    def message(self) -> str:
        return self.text_string()

    def commands(self) -> List[Command]:
        if self.k[0] == LPAR and self.v[1] in _MODULE_FIELDS:
            # a script may be nothing but the fields of one module
            return [Module(1, None, "text", self.toks.text, self.toks, 0)]
        out: List[Command] = []
        while self.k[self.i] != EOF:
            out.append(self.command())
        return out

    def command(self) -> Command:
        start = self.i
        line = self.line(start)
        kw = self.v[start + 1] if self.k[start] == LPAR else ""
        if kw == "module":
            return self.module()
        if kw in ("invoke", "get"):
            return ActionCommand(line, self.action())
        self.open()
        if kw == "register":
            as_name = self.text_string()
            cmd: Command = Register(line, as_name, self.id_opt())
        elif kw == "assert_return":
            action = self.action()
            expected = []
            while self.k[self.i] == LPAR:
                expected.append(self.value(result=True))
            cmd = AssertReturn(line, action, tuple(expected))
        elif kw == "assert_trap":
            target = self.module() if self.v[self.i + 1] == "module" else self.action()
            cmd = AssertTrap(line, target, self.message())
        elif kw == "assert_exhaustion":
            cmd = AssertExhaustion(line, self.action(), self.message())
        elif kw in _MODULE_ASSERTIONS:
            cmd = _MODULE_ASSERTIONS[kw](line, self.module(), self.message())
        else:
            self.i = start + 1
            self.unexpected()
        self.close()
        return cmd

    def module(self) -> Module:
        start = self.i
        line = self.line(start)
        if self.open() != "module":
            self.i = start + 1
            self.unexpected()
        name = self.id_opt()
        end = self.toks.close[start]
        kind = self.v[self.i] if self.k[self.i] == ATOM else ""
        if kind in ("binary", "quote"):
            self.i += 1
            parts = []
            while self.k[self.i] == STRING:
                parts.append(self.toks.string(self.i))
                self.i += 1
            self.close()
            return Module(line, name, kind, (b"" if kind == "binary" else b" ").join(parts))
        self.i = end + 1
        text = self.toks.text[self.toks.offs[start]:self.toks.offs[end] + 1]
        return Module(line, name, "text", text, self.toks, start)

    def action(self) -> Action:
        line = self.line(self.i)
        kw = self.open()
        module = self.id_opt()
        name = self.text_string()
        if kw == "invoke":
            args = []
            while self.k[self.i] == LPAR:
                args.append(self.value(result=False))
            self.close()
            return Invoke(line, module, name, tuple(args))
        if kw != "get":
            self.i -= 1
            self.unexpected()
        self.close()
        return Get(line, module, name)

    def value(self, result: bool) -> Value:
        """A constant ``(t.const x)`` or reference; results may also be NaN patterns and
        "any reference"."""
        kw = self.open()
        tok = self.v[self.i] if self.k[self.i] == ATOM else None
        if kw in _NUMERIC:
            vtype = kw[:3]
            if tok is None:
                self.unexpected()
            fmt = _NUMERIC[kw]
            if result and tok in ("nan:canonical", "nan:arithmetic"):
                value: object = NanPattern(tok)
            elif isinstance(fmt, int):
                n = parse_int(tok)
                if n is None:
                    self.unexpected()
                if not -(1 << (fmt - 1)) <= n < 1 << fmt:
                    self.error("constant out of range")
                value = n & ((1 << fmt) - 1)
            else:
                try:
                    value = float_bits(tok, fmt)
                except ConstantOutOfRange:
                    self.error("constant out of range")
                if value is None:
                    self.unexpected()
            self.i += 1
        elif kw == "ref.null":
            if tok not in ("func", "extern"):
                self.unexpected()
            vtype, value = tok + "ref", None
            self.i += 1
        elif kw == "ref.extern" or (kw == "ref.func" and result):
            vtype = "externref" if kw == "ref.extern" else "funcref"
            if tok is not None:
                value = parse_int(tok)
                if value is None:
                    self.unexpected()
                self.i += 1
            elif result:
                value = ANY
            else:
                self.unexpected()
        elif kw == "v128.const":
            vtype = "v128"
            lanes = []
            while self.k[self.i] == ATOM:
                lanes.append(self.v[self.i])
                self.i += 1
            value = tuple(lanes)   # SIMD is out of scope: kept as tokens for a later reader
        else:
            self.i -= 1
            self.unexpected()
        self.close()
        return Value(vtype, value)


_MODULE_ASSERTIONS = {
    "assert_invalid": AssertInvalid,
    "assert_malformed": AssertMalformed,
    "assert_unlinkable": AssertUnlinkable,
    "assert_uninstantiable": AssertUninstantiable,
}


def parse_wast(text: str) -> List[Command]:
    """Read a .wast script into commands, each carrying its line number.

    Raises :class:`~pylucet.errors.MalformedModule` (with line and column) if the script itself
    is not well-formed; modules inside it are compiled only by :meth:`Module.wasm`.
    """
    return _ScriptReader(text).commands()
