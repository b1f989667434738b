"""Control flow: blocks, loops and ifs, branches and the merges at their labels, and the
interrupt polls at function entry and loop headers.

Merge strategy (the canonical state at every label). On entry to ``block``/``loop``/``if``,
every entry on the operand stack that is a register or a lazy local is spilled to its slot;
constants stay. The block's params (the entries on top at entry) belong to the block; the
entries under them cannot be touched by code inside, so at every label they are the same
constants and slots on every path, and every scratch register is free. A label's values sit on
top: a single one in ``rax`` (``xmm0`` for a float), so a branch only moves it there and jumps
and ``br_table`` needs no per-target code; several values in the slots of their stack positions
(from the block's height up), where a branch stores them. A loop's label takes its params, and
always in their slots, which its entry fills. A branch stores into slots that values still live
on the fall-through path may occupy, so ``br_if`` does that only on its taken path, and a
``br_table`` with such a target gets a small stub per target. An ``if``'s params are constants
and slots after the entry spill, so its else arm starts from the same entries; an ``if`` with
params and no ``else`` gets an empty else arm that passes them on. Registers are also spilled
at calls (they are caller-saved) and when the allocator runs out.

The function body is the outermost frame: its end has the results in rax/xmm0 or, with several
results, in slots 0..n-1 like any multi-value label, and copies them to the return area.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Tuple

from ...module.abi import POLL_INSN_SIZE, RESULT_SLOT_SIZE, VMCTX_POLL, call_layout
from ...module.traps import TrapCode
from ..x86_64 import encoding as X
from ..x86_64.encoding import NO_INDEX
from ..x86_64.registers import CC_AE, R11, R14, RAX, RSP
from .context import CONST, REG, SLOT, require_num, result_reg, width

if TYPE_CHECKING:
    from .function import FunctionCompiler

# control frame kinds
K_BLOCK, K_LOOP, K_IF, K_ELSE, K_FUNC = range(5)


class Ctrl:
    """One entry of the control stack: a block, loop, if/else or the function body."""

    __slots__ = ("kind", "label", "else_label", "height", "params", "results", "branched",
                 "param_entries")

    def __init__(self, kind: int, label: int, height: int, results: tuple, else_label: int = -1,
                 params: tuple = ()):
        self.kind = kind
        self.label = label            # where a branch to this frame goes
        self.else_label = else_label
        self.height = height          # operand stack height at entry, below the params
        self.params = params
        self.results = results
        self.branched = False         # some branch targets the end label
        self.param_entries: List[tuple] = []   # an if's params as at entry, for its else arm

    def label_types(self, at_end: bool = False) -> tuple:
        """Types of the values a branch to this frame carries (a loop's label takes its
        parameters), or, ``at_end``, that its end leaves."""
        return self.params if self.kind == K_LOOP and not at_end else self.results

    def in_slots(self, at_end: bool = False) -> bool:
        """Whether the branch label (or the end) wants its values in their stack-position
        slots rather than in rax/xmm0: several values always do, and so does a loop's
        parameter, because the loop head was entered with its params in their slots."""
        if self.kind == K_LOOP and not at_end:
            return bool(self.params)
        return len(self.results) > 1


def interrupt_check(cg: FunctionCompiler) -> None:
    """Poll for an interruption (kill switch, timeout, Ctrl-C): a load from the slot's poll
    page, which faults once the host revokes it (``abi.VMCTX_POLL``). Only at function
    entry and loop headers, where every live value sits in a local's register or the frame
    (pylucet_interrupt keeps the callee-saved registers and ``context.CALLER_SAVED_LOCAL_REGS``, and
    the guest may be resumed right here) and r11 and the flags are dead."""
    if not cg.env.interrupt_checks:
        return
    start = len(cg.asm.code)
    cg.asm.mov_rm(32, R11, (R14, NO_INDEX, 1, VMCTX_POLL))
    assert len(cg.asm.code) - start == POLL_INSN_SIZE


def _block_type(cg: FunctionCompiler, blocktype) -> Tuple[tuple, tuple]:
    params, results = cg.env.block_type(blocktype)
    require_num(params, "block parameters")
    require_num(results, "block results")
    return params, results


def op_block(cg: FunctionCompiler, kind, blocktype, off):
    ctx = cg.ctx
    params, results = _block_type(cg, blocktype)
    ctx.spill_all()
    height = len(cg.stack) - len(params)
    label = cg.asm.new_label()
    frame = Ctrl(kind, label, height, results, params=params)
    cg.ctrl.append(frame)
    if kind == K_LOOP:
        # a branch back carries the params into their slots, so they start there too
        for k in range(len(params)):
            ctx.store_slot(cg.stack[height + k], height + k)
            cg.stack[height + k] = (SLOT, height + k, params[k])
        cg.asm.bind(label)
        interrupt_check(cg)


def op_if(cg: FunctionCompiler, _, blocktype, off):
    ctx = cg.ctx
    params, results = _block_type(cg, blocktype)
    c = cg.stack.pop()
    asm = cg.asm
    frame = Ctrl(K_IF, asm.new_label(), len(cg.stack) - len(params), results,
                 asm.new_label(), params)
    if c[0] == CONST:
        ctx.spill_all()
        if not c[1]:
            asm.jmp(frame.else_label)
    else:
        cc = ctx.test(c)
        ctx.spill_all()            # movs only: the flags survive
        asm.jcc(cc ^ 1, frame.else_label)
    # constants and slots only: still valid where the else arm starts, whatever the then
    # arm does to the slots (that code is not on the path to the else arm)
    frame.param_entries = cg.stack[frame.height:]
    cg.ctrl.append(frame)


def _values_to_slots(cg: FunctionCompiler, frame: Ctrl, n: int, below: int = 0) -> None:
    """Store the ``n`` values ``below`` entries down the stack into the slots of the
    positions where ``frame``'s label keeps them. The sources are at those positions or
    higher, so storing in ascending order never overwrites a value not yet read."""
    ctx = cg.ctx
    stack = cg.stack
    first = len(stack) - below - n
    for k in range(n):
        ctx.store_slot(stack[first + k], frame.height + k)


def _to_label(cg: FunctionCompiler, frame: Ctrl, at_end: bool = False, below: int = 0) -> None:
    """Put the values a label of ``frame`` (its branch label, or ``at_end`` its end) takes,
    ``below`` entries down the stack, where the label expects them: their slots, or
    rax/xmm0 for a single value."""
    ctx = cg.ctx
    types = frame.label_types(at_end)
    if frame.in_slots(at_end):
        _values_to_slots(cg, frame, len(types), below)
    elif types:
        i = len(cg.stack) - 1 - below
        ctx.move_to(i, result_reg(cg.stack[i][2]))


def _reset_to(cg: FunctionCompiler, frame: Ctrl, with_results: bool) -> None:
    """The canonical state at a label of ``frame``: the entries below it, plus its results
    in their slots or rax/xmm0."""
    ctx = cg.ctx
    del cg.stack[frame.height:]
    ctx.regs.reset()
    results = frame.results
    if not with_results or not results:
        return
    if frame.in_slots(True):
        for k, t in enumerate(results):
            ctx.slot_mem(frame.height + k)
            cg.stack.append((SLOT, frame.height + k, t))
    else:
        t = results[0]
        ctx.claim(result_reg(t), t)
        cg.stack.append((REG, result_reg(t), t))


def op_else(cg: FunctionCompiler, _, imm, off):
    frame = cg.ctrl[-1]
    asm = cg.asm
    if not cg.unreachable:
        _to_label(cg, frame, True)
        asm.jmp(frame.label)
        frame.branched = True
    asm.bind(frame.else_label)
    frame.kind = K_ELSE
    _reset_to(cg, frame, False)
    cg.stack.extend(frame.param_entries)
    cg.unreachable = False


def op_end(cg: FunctionCompiler, _, imm, off):
    ctx = cg.ctx
    if cg.ctrl[-1].kind == K_IF and cg.ctrl[-1].params:
        # an if without else passes its params on as results: an empty else arm does that
        op_else(cg, None, None, off)
    frame = cg.ctrl.pop()
    asm = cg.asm
    reachable = not cg.unreachable
    if reachable:
        _to_label(cg, frame, True)
    if frame.kind == K_IF:
        asm.bind(frame.else_label)    # if without else: the false edge lands here
        reachable = True
    if frame.kind != K_LOOP:
        asm.bind(frame.label)
        reachable = reachable or frame.branched
    _reset_to(cg, frame, reachable)
    cg.unreachable = not reachable
    if frame.kind == K_FUNC:
        if reachable and cg.return_area:
            asm.mov_rm(64, R11, (RSP, NO_INDEX, 1, ctx.frame.ret_disp))
            area = call_layout(cg.ftype.params, cg.ftype.results).results
            for e, loc in zip(cg.stack, area):
                asm.mov_rm(width(e[2]), RAX, ctx.mem_of(e))   # i32 zero-extended
                asm.mov_mr(64, (R11, NO_INDEX, 1, RESULT_SLOT_SIZE * loc.index), RAX)
        cg.epilogue()


def _branch_target(cg: FunctionCompiler, depth: int) -> Ctrl:
    frame = cg.ctrl[-1 - depth]
    if frame.kind != K_LOOP:
        frame.branched = True
    return frame


def op_br(cg: FunctionCompiler, _, depth, off):
    frame = _branch_target(cg, depth)
    _to_label(cg, frame)
    cg.asm.jmp(frame.label)
    cg.unreachable = True


def op_return(cg: FunctionCompiler, _, imm, off):
    op_br(cg, None, len(cg.ctrl) - 1, off)


def op_br_if(cg: FunctionCompiler, _, depth, off):
    ctx = cg.ctx
    frame = _branch_target(cg, depth)
    stack = cg.stack
    c = stack[-1]
    if c[0] == CONST:
        stack.pop()
        if c[1]:
            op_br(cg, None, depth, off)
        return
    types = frame.label_types()
    if frame.in_slots():
        # the target slots may hold values the fall-through path still needs: store only
        # on the taken path
        cc = ctx.test(stack.pop())
        skip = cg.asm.new_label()
        cg.asm.jcc(cc ^ 1, skip)
        _values_to_slots(cg, frame, len(types))
        cg.asm.jmp(frame.label)
        cg.asm.bind(skip)
        return
    if types:
        _to_label(cg, frame, below=1)   # movs only: flags survive
    cc = ctx.test(stack.pop())
    cg.asm.jcc(cc, frame.label)


def op_br_table(cg: FunctionCompiler, _, imm, off):
    ctx = cg.ctx
    depths, default = imm
    frames = [_branch_target(cg, d) for d in depths]
    dflt = _branch_target(cg, default)
    stack = cg.stack
    if any(f.in_slots() for f in frames + [dflt]):
        _br_table_stubs(cg, frames, dflt)
        return
    if dflt.label_types():
        _to_label(cg, dflt, below=1)
    idx = stack.pop()
    asm = cg.asm
    if idx[0] == CONST:
        target = frames[idx[1]] if idx[1] < len(frames) else dflt
        asm.jmp(target.label)
        cg.unreachable = True
        return
    if frames:
        _indexed_jump(cg, ctx.take(idx), [f.label for f in frames], dflt.label)
    else:
        asm.jmp(dflt.label)
    cg.unreachable = True


def _br_table_stubs(cg: FunctionCompiler, frames: List[Ctrl], dflt: Ctrl) -> None:
    """br_table when some target keeps its values in slots: the targets' heights differ,
    so each distinct target gets a stub that puts the values in place and jumps on."""
    ctx = cg.ctx
    asm = cg.asm
    stack = cg.stack
    idx = stack.pop()
    if idx[0] == CONST:
        target = frames[idx[1]] if idx[1] < len(frames) else dflt
        _to_label(cg, target)
        asm.jmp(target.label)
        cg.unreachable = True
        return
    reg = ctx.take(idx)
    ctx.free(reg)
    stubs: Dict[int, int] = {}
    for f in frames + [dflt]:
        if id(f) not in stubs:
            stubs[id(f)] = asm.new_label()
    if frames:
        _indexed_jump(cg, reg, [stubs[id(f)] for f in frames], stubs[id(dflt)])
    else:
        asm.jmp(stubs[id(dflt)])
    done = set()
    for f in frames + [dflt]:
        if id(f) in done:
            continue
        done.add(id(f))
        asm.bind(stubs[id(f)])
        types = f.label_types()
        if f.in_slots():
            _values_to_slots(cg, f, len(types))
        elif types:   # a copy into rax/xmm0 on this path only: the state stays as it is
            e = stack[-1]
            dst = result_reg(e[2])
            if e[0] == REG:
                ctx.mov_reg(e[2], dst, e[1])
            else:
                ctx.load(e, dst)
        asm.jmp(f.label)
    cg.unreachable = True


def _indexed_jump(cg: FunctionCompiler, reg: int, targets: List[int], default: int) -> None:
    """Jump to label ``targets[reg]``, or to ``default`` when ``reg`` (an i32, clobbered) is
    out of range, through a table of 32-bit offsets emitted after the function's code."""
    asm = cg.asm
    asm.alu_ri(X.CMP, 32, reg, len(targets))
    asm.jcc(CC_AE, default)
    table = asm.new_label()
    asm.lea_label(R11, table)
    asm.movsx_rm(64, 32, reg, (R11, reg, 4, 0))
    asm.alu_rr(X.ADD, 64, reg, R11)
    asm.jmp_r(reg)
    cg.jump_tables.append((table, targets))


def op_unreachable(cg: FunctionCompiler, _, imm, off):
    cg.trap_here(TrapCode.Unreachable, off)
    cg.asm.ud2()
    cg.unreachable = True


def op_nop(cg: FunctionCompiler, _, imm, off):
    pass
