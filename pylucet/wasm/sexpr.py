"""The lexer shared by the WAT parser and the .wast script reader.

Text is cut into tokens by one compiled regular expression; only nested block comments, which a
regular expression cannot balance, take a short detour. A module is parsed from a flat token
stream rather than a tree of lists, because the WAT grammar mixes flat and folded instructions and
a cursor reads both the same way.

The token rules follow the spec: a token runs until whitespace or a parenthesis, so ``0drop``,
``$l"a"`` or ``(data"a")`` are single "reserved" tokens, which the parser rejects as an unknown
operator exactly where the reference interpreter does.
"""

from __future__ import annotations

import re
from typing import List, NoReturn, Optional

from ..errors import MalformedModule

# Token kinds.
LPAR, RPAR, ATOM, STRING, RESERVED, EOF = range(6)

_STRING_BODY = r'"(?:[^"\\\x00-\x1f\x7f]|\\[^\x00-\x1f\x7f])*"'
_TOKEN = re.compile(
    r"(?:[ \t\n\r]+|;;[^\n\r]*)*"                        # whitespace; line comments end at LF or CR
    r"(?:(\()(?!;)"                                     # 1 (
    r"|(\))"                                            # 2 )
    r"|((?:[^\s()\";]|" + _STRING_BODY + r")+)"         # 3 atom, string or reserved
    r"|(\(;)"                                           # 4 block comment
    r"|([^ \t\n\r]))",                                  # 5 anything else
    re.S)
_STRING = re.compile(_STRING_BODY)
_BLOCK_COMMENT_TOKEN = re.compile(r"\(;|;\)")
_ESCAPE = re.compile(r"\\(?:([0-9a-fA-F]{2})|u\{([0-9a-fA-F](?:_?[0-9a-fA-F])*)\}|(.))", re.S)
_SIMPLE_ESCAPES = {"t": b"\t", "n": b"\n", "r": b"\r", '"': b'"', "'": b"'", "\\": b"\\"}


class WatError(MalformedModule):
    """A syntax error in WAT or .wast text.

    ``reason`` keeps the spec suite's wording (what ``assert_malformed`` compares); the message
    adds the line and column a person needs to find the mistake.
    """

    def __init__(self, reason: str, offset: int, text: str):
        super().__init__(reason, offset)
        self.line = text.count("\n", 0, offset) + 1
        self.column = offset - (text.rfind("\n", 0, offset) + 1) + 1
        self.args = (f"malformed module at {self.line}:{self.column}: {reason}",)

    def __str__(self) -> str:
        return self.args[0]


def fail(text: str, offset: int, reason: str) -> NoReturn:
    raise WatError(reason, offset, text)


class Tokens:
    """The tokens of one text, as parallel lists (cheaper than one object per token).

    ``vals`` holds the token text; strings stay undecoded until :meth:`string` asks for them.
    ``close[i]`` is the index of the ``)`` matching the ``(`` at ``i``, so a parser can skip a
    whole field or look at it before reading it.
    """

    __slots__ = ("text", "kinds", "vals", "offs", "close")

    def __init__(self, text: str):
        self.text = text
        kinds: List[int] = []
        vals: List[str] = []
        offs: List[int] = []
        close = {}
        stack: List[int] = []
        pos, n = 0, len(text)
        add_kind, add_val, add_off = kinds.append, vals.append, offs.append
        while pos < n:
            for m in _TOKEN.finditer(text, pos):
                g = m.lastindex
                start = m.start(g)
                if g == 3:
                    tok = m.group(3)
                    add_kind(ATOM if '"' not in tok else _classify(tok))
                    add_val(tok)
                elif g == 1:
                    stack.append(len(kinds))
                    add_kind(LPAR)
                    add_val("(")
                elif g == 2:
                    if not stack:
                        fail(text, start, "unexpected token )")
                    close[stack.pop()] = len(kinds)
                    add_kind(RPAR)
                    add_val(")")
                elif g == 4:
                    pos = _skip_block_comment(text, start)
                    break
                elif m.group(5) == '"':
                    fail(text, start, "unclosed string literal")
                else:
                    fail(text, start, "unknown operator")
                add_off(start)
            else:
                pos = n
        if stack:
            fail(text, offs[stack[-1]], "unclosed parenthesis")
        kinds.append(EOF)  # a sentinel, so a parser can always look one token ahead
        vals.append("")
        offs.append(n)
        self.kinds, self.vals, self.offs, self.close = kinds, vals, offs, close

    def string(self, i: int) -> bytes:
        """The bytes a string token denotes."""
        return decode_string(self.vals[i], self.text, self.offs[i])


def _classify(tok: str) -> int:
    """A token with a quote in it is a string only if it is exactly one string literal."""
    return STRING if tok[0] == '"' and _STRING.match(tok).end() == len(tok) else RESERVED


def _skip_block_comment(text: str, start: int) -> int:
    depth = 0
    for m in _BLOCK_COMMENT_TOKEN.finditer(text, start):
        depth += 1 if m.group() == "(;" else -1
        if depth == 0:
            return m.end()
    fail(text, start, "unclosed comment")


def decode_string(tok: str, text: str = "", offset: int = 0) -> bytes:
    """The bytes of a string literal token (quotes included): UTF-8 for characters, raw bytes for
    ``\\hh`` escapes, which is why data segments may hold any byte."""
    body = tok[1:-1]
    if "\\" not in body:
        return body.encode("utf-8")
    out = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(body):
        out += body[pos:m.start()].encode("utf-8")
        pos = m.end()
        hexbyte, uni, simple = m.groups()
        if hexbyte is not None:
            out.append(int(hexbyte, 16))
        elif uni is not None:
            cp = int(uni.replace("_", ""), 16)
            if cp >= 0x110000 or 0xD800 <= cp < 0xE000:
                fail(text or tok, offset + 1 + m.start(), "malformed UTF-8 encoding")
            out += chr(cp).encode("utf-8")
        elif simple in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[simple]
        else:
            fail(text or tok, offset + 1 + m.start(), "illegal escape")
    out += body[pos:].encode("utf-8")
    return bytes(out)


__all__ = ["LPAR", "RPAR", "ATOM", "STRING", "RESERVED", "EOF", "Tokens", "WatError", "fail",
           "decode_string"]



ID_RE = re.compile(r"\$[0-9A-Za-z!#$%&'*+\-./:<=>?@\\^_`|~]+\Z")
"""A valid identifier: '$' and one or more of the spec's idchars."""


class Cursor:
    """A position in a token stream, with the primitives that both the module parser (wat.py)
    and the script reader (wast.py) read tokens with, so they agree on what an id or a string
    is and on how an error is reported."""

    def __init__(self, toks: Tokens):
        self.toks = toks
        self.k = toks.kinds
        self.v = toks.vals
        self.i = 0

    def error(self, reason: str, i: Optional[int] = None) -> NoReturn:
        fail(self.toks.text, self.toks.offs[self.i if i is None else i], reason)

    def unexpected(self, i: Optional[int] = None) -> NoReturn:
        i = self.i if i is None else i
        if self.k[i] == EOF:
            self.error("unexpected end of input", i)
        self.error(f"unexpected token {self.v[i]}", i)

    def close(self) -> None:
        if self.k[self.i] != RPAR:
            self.unexpected()
        self.i += 1

    def id_opt(self) -> Optional[str]:
        tok = self.v[self.i]
        if self.k[self.i] == ATOM and tok[0] == "$":
            if not ID_RE.match(tok):
                self.unexpected()
            self.i += 1
            return tok
        return None

    def string(self) -> bytes:
        if self.k[self.i] != STRING:
            self.unexpected()
        self.i += 1
        return self.toks.string(self.i - 1)
