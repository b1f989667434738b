"""Locals trading home registers inside long straight-line code.

``Frame`` gives the home registers to the locals that are busiest over the whole function. In a
long stretch of straight-line code that says little about which locals are busy *here*: the
unrolled rounds of a hash (blake3's ``compress`` is one basic block of 2,100 instructions making
1,044 accesses to 37 locals, which LLVM has reused for value after value) touch every local
about as often over the whole, but each only over a short span. With nine homes, whole-function
homes left half of those accesses in the frame, most of them a store read back a few
instructions later, a store-to-load round trip on the hash's critical path.

Inside a *stretch* (the instructions between two that branch, are a branch target, or call:
``_ENDS`` and ``context._CALLING_OPS``) the home registers are therefore a cache. When a local
that is in the frame is accessed, and will be accessed twice more before the local in some home
register is accessed again, that register's local goes to its frame slot and the new one comes
in (Belady's choice: the register whose local is next accessed farthest ahead, known exactly
since every instruction is in hand; twice, as one access gains nothing over a memory operand). The local leaving is stored only if its slot is stale (``dirty``) and it is read
before it is written again, the one coming in loaded only if this access reads it. Before the
instruction that ends the stretch each local goes back to its whole-function home
(``restore``), so that labels, branches and calls all see the one layout the rest of code
generation assumes, and a stretch that gains nothing costs nothing.

Lazy ``local.get`` entries on the value stack read their local's home where they are used, so
they stay right: a local that has such an entry is always stored on leaving its register and
loaded on coming in. Only moves are emitted, so a compare's flags survive (``context``).
"""

from __future__ import annotations

from bisect import bisect_right
from typing import AbstractSet, Dict, List, Optional, Set

from ...wasm.opcodes import Op

_ENDS = frozenset((Op.UNREACHABLE, Op.BLOCK, Op.LOOP, Op.IF, Op.ELSE, Op.END, Op.BR, Op.BR_IF,
                   Op.BR_TABLE, Op.RETURN))
"""Instructions that end a stretch besides the calling ones: a branch, or a label's place."""
_LEAVES = (Op.RETURN, Op.UNREACHABLE)
"""Stretch ends after which no code reads the locals."""
MIN_ACCESSES = 64
"""Accesses to integer locals a stretch needs before its homes are traded: a short stretch,
often a loop body, would pay the trades and the return to the homes on every pass."""
_NEVER = 1 << 62


class LocalRemap:
    """Which local each home register holds now, against the whole-function homes, for the
    stretches worth trading in. ``pcs`` holds the instruction indices the main loop must call
    ``visit`` at: each access to an integer local in such a stretch, and the stretch's end."""

    __slots__ = ("local_reg", "home", "holder", "dirty", "positions", "end_of",
                 "ends", "last", "pcs", "writes", "stretch_end", "traded")

    def __init__(self, local_reg: List[int], candidates: AbstractSet[int],
                 positions: Dict[int, List[int]],
                 end_of: Dict[int, int], stops: Set[int], writes: Set[int], last: int) -> None:
        self.local_reg = local_reg        # the frame's own list, updated in place
        # register -> local, of the integer locals (``candidates``)
        self.home = {r: i for i, r in enumerate(local_reg) if r >= 0 and i in candidates}
        self.holder = dict(self.home)
        self.dirty: Set[int] = set()      # locals whose frame slot is stale
        self.positions = positions        # local -> its access indices in traded stretches
        self.end_of = end_of              # access index -> index of its stretch's end
        self.writes = writes              # access indices that are local.set or local.tee
        self.ends = stops                 # the traded stretches' ends (and one after a return)
        self.last = last                  # the function's final end
        self.pcs = self.ends | set(end_of)
        self.stretch_end = -1
        self.traded = False

    @classmethod
    def plan(cls, instrs: list, local_reg: List[int], candidates: AbstractSet[int],
             calling: AbstractSet[int]) -> Optional["LocalRemap"]:
        """The trades worth planning for, or None: stretches with at least ``MIN_ACCESSES``
        accesses to ``candidates`` (the used integer locals), some of them to a local in the
        frame."""
        ends = _ENDS | calling
        get, set_, tee = Op.LOCAL_GET, Op.LOCAL_SET, Op.LOCAL_TEE
        positions: Dict[int, List[int]] = {}
        end_of: Dict[int, int] = {}
        writes: Set[int] = set()
        stretch: List[int] = []
        in_frame = False
        after_return = False
        stops: Set[int] = set()
        for pc, (op, imm, _) in enumerate(instrs):
            if op == get or op == set_ or op == tee:
                if imm in candidates:
                    stretch.append(pc)
                    in_frame = in_frame or local_reg[imm] < 0
            elif op in ends:
                if after_return:      # the dead code after a traded stretch's return
                    stops.add(pc)
                    after_return = False
                if len(stretch) >= MIN_ACCESSES and in_frame:
                    stops.add(pc)
                    after_return = op in _LEAVES
                    for k in stretch:
                        idx = instrs[k][1]
                        positions.setdefault(idx, []).append(k)
                        end_of[k] = pc
                        if instrs[k][0] != get:
                            writes.add(k)
                stretch = []
                in_frame = False
        if not end_of:
            return None
        return cls(local_reg, candidates, positions, end_of, stops, writes, len(instrs) - 1)

    def _next(self, idx: int, pc: int, nth: int = 1) -> int:
        """The index of local ``idx``'s ``nth`` access after ``pc`` in this stretch, or
        ``_NEVER``."""
        p = self.positions.get(idx)
        if p is None:
            return _NEVER
        j = bisect_right(p, pc) + nth - 1
        if j < len(p) and p[j] < self.stretch_end:
            return p[j]
        return _NEVER

    def visit(self, ctx, pc: int, op: int, idx: int, dead: bool) -> None:
        """Before instruction ``pc`` (one in ``pcs``) is translated; ``dead``: in unreachable
        code (only a stretch's end is visited there)."""
        if pc in self.ends:
            if dead:       # after a return: no code reaches here, the homes are just reset
                self.restore(None)
            elif op not in _LEAVES and pc != self.last:
                self.restore(ctx)
            # a return reads its results where they are now, and leaves the locals behind (as a
            # trap does): the next stretch's end, in the dead code after it, resets the homes
            return
        if dead:
            return
        end = self.end_of[pc]
        if end != self.stretch_end:    # a new stretch: every local is at home
            self.stretch_end = end
            self.dirty = set(self.home.values())
        reg = self.local_reg[idx]
        if reg >= 0:
            if op != Op.LOCAL_GET:
                self.dirty.add(idx)
            return
        again = self._next(idx, pc, 2)
        if again == _NEVER:
            return
        victim, far = -1, -1
        for r, held in self.holder.items():
            n = self._next(held, pc - 1)
            if n > far:
                victim, far = r, n
        if again >= far:
            return
        self._trade(ctx, pc, op, idx, victim, far)

    def _trade(self, ctx, pc: int, op: int, idx: int, reg: int, out_next: int) -> None:
        out = self.holder[reg]
        lazy = ctx.lazy_locals()
        if out in self.dirty and (out in lazy or out_next not in self.writes):
            ctx.local_to_slot(out, reg)
        self.dirty.discard(out)
        self.local_reg[out] = -1
        if op == Op.LOCAL_GET or idx in lazy:
            ctx.local_from_slot(idx, reg)
        if op != Op.LOCAL_GET:
            self.dirty.add(idx)
        self.local_reg[idx] = reg
        self.holder[reg] = idx
        self.traded = True

    def restore(self, ctx) -> None:
        """Every local back to its whole-function home (moves only; none without ``ctx``)."""
        if not self.traded:
            return
        if ctx is None:
            for reg, idx in self.home.items():
                self.local_reg[self.holder[reg]] = -1
            for reg, idx in self.home.items():
                self.local_reg[idx] = reg
            self.holder = dict(self.home)
            self.traded = False
            self.stretch_end = -1
            return
        for reg, idx in self.home.items():
            held = self.holder[reg]
            if held != idx:
                if held in self.dirty:
                    ctx.local_to_slot(held, reg)
                self.local_reg[held] = -1
        for reg, idx in self.home.items():
            if self.holder[reg] != idx:
                ctx.local_from_slot(idx, reg)
                self.local_reg[idx] = reg
                self.holder[reg] = idx
        self.traded = False
        self.stretch_end = -1

