"""WebAssembly 2.0 validation: the module-level rules and the type checker for function bodies.

The compiler trusts whatever passes here, so every rule of the spec is checked before a single
instruction is translated; error reasons use the spec test suite's wording so conformance tests
can compare them by prefix.

The function checker is the spec's appendix algorithm (an operand stack plus a control stack,
with an "unknown" type that makes the stack polymorphic after ``unreachable``/``br``/...). It
runs on every instruction of every function before compilation, so it is written for
throughput: instructions whose stack effect the opcode table fixes go through one inlined
generic path, and everything else dispatches through a dict to a handler. Adding table rows
(e.g. SIMD) needs no code here unless the new immediate kind itself must be checked.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

from ..errors import InvalidModule, UnsupportedProposal
from .opcodes import OPS, Op, OpInfo, proposal_of_code
from .types import (ConstExpr, ExternKind, GlobalType, Module, SegmentMode, SizeLimits,
                    ValType)

UNKNOWN = 0
"""The type of a value popped from an empty stack in unreachable code: it matches anything."""

I32 = int(ValType.I32)
FUNCREF = int(ValType.FUNCREF)
_REF_TYPES = (int(ValType.FUNCREF), int(ValType.EXTERNREF))

LOCAL_GET = int(Op.LOCAL_GET)
LOCAL_SET = int(Op.LOCAL_SET)
LOCAL_TEE = int(Op.LOCAL_TEE)
_INLINED = (LOCAL_GET, LOCAL_SET, LOCAL_TEE)
"""Opcodes handled inside validate_function's loop rather than by an ``_op_`` method."""

MAX_PAGES = 65536
MAX_TABLE = 2 ** 32 - 1

_CONST_OPS = {Op.I32_CONST: ValType.I32, Op.I64_CONST: ValType.I64,
              Op.F32_CONST: ValType.F32, Op.F64_CONST: ValType.F64}
"""Constant instructions allowed in constant expressions, with the type each pushes."""


# Shared block types, so entering a block allocates nothing; type lists are never mutated.
_NO_TYPES: Tuple[List[int], List[int]] = ([], [])
_ONE_TYPE = {t: ([], [int(t)]) for t in ValType}


class _Invalid(Exception):
    """Raised deep in the checker; turned into InvalidModule where the instruction is known, so
    the hot path never has to carry an offset around."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _Frame:
    """One entry of the control stack."""

    __slots__ = ("op", "params", "results", "label_types", "height", "unreachable")

    def __init__(self, op: int, params: List[int], results: List[int], height: int):
        self.op = op
        self.params = params
        self.results = results
        # A branch to a loop re-enters it (takes its params); to anything else, leaves it.
        self.label_types = params if op == Op.LOOP else results
        self.height = height
        self.unreachable = False


def _types(seq: Sequence[ValType]) -> List[int]:
    return [int(t) for t in seq]


class Validator:
    """Validates one module; build it once, then check the module and each function body.

    Nothing is raised by the constructor: it only precomputes the index spaces the checks look
    things up in, so ``validate_function`` works even for a caller that streams functions.
    """

    def __init__(self, module: Module):
        self.module = module
        m = module
        self._types = [(_types(t.params), _types(t.results)) for t in m.types]
        self._func_type_index: List[int] = (
            [i.desc for i in m.imports if i.kind == ExternKind.FUNC]  # type: ignore[misc]
            + list(m.funcs))
        self._num_imported_funcs = m.num_imported_funcs
        self._tables = m.all_tables()
        self._memories = m.all_memories()
        self._globals: List[GlobalType] = m.all_globals()
        self._num_imported_globals = sum(1 for i in m.imports if i.kind == ExternKind.GLOBAL)
        self._num_datas = m.data_count if m.data_count is not None else len(m.datas)
        self._declared_refs = set(module.declared_funcrefs())
        self._vals: List[int] = []
        self._ctrls: List[_Frame] = []
        self._generic: Dict[int, Tuple[List[int], List[int], int, int]] = {}
        self._special: Dict[int, Callable[[object], None]] = {}
        self._build_dispatch()

    # --- module ----------------------------------------------------------------------------------

    def validate_module(self) -> None:
        """Check everything outside function bodies; raise InvalidModule on the first error."""
        m = self.module
        for tidx in self._func_type_index:
            self._check_type_index(tidx)
        for imp in m.imports:
            if imp.kind == ExternKind.TABLE:
                self._check_table_limits(imp.desc.limits)  # type: ignore[union-attr]
            elif imp.kind == ExternKind.MEMORY:
                self._check_memory_limits(imp.desc.limits)  # type: ignore[union-attr]
        for table in m.tables:
            self._check_table_limits(table.limits)
        for mem in m.memories:
            self._check_memory_limits(mem.limits)
        if len(self._memories) > 1:
            raise InvalidModule("multiple memories")
        for g in m.globals:
            self._check_const_expr(g.init, int(g.type.valtype))
        self._check_exports()
        if m.start is not None:
            self._check_func_index(m.start)
            if self._func_type(m.start) != ([], []):
                raise InvalidModule("start function")
        for seg in m.elems:
            if seg.mode == SegmentMode.ACTIVE:
                self._check_index(seg.table, self._tables, "table")
                self._check_const_expr(seg.offset or (), I32)
                if self._tables[seg.table].elem != seg.elem_type:
                    raise InvalidModule("type mismatch")
            for expr in seg.init:
                self._check_const_expr(expr, int(seg.elem_type))
        for seg in m.datas:
            if seg.mode == SegmentMode.ACTIVE:
                self._check_index(seg.memory, self._memories, "memory")
                self._check_const_expr(seg.offset or (), I32)

    def _check_type_index(self, tidx: int) -> None:
        if not 0 <= tidx < len(self._types):
            raise InvalidModule(f"unknown type {tidx}")

    def _check_func_index(self, fidx: int) -> None:
        if not 0 <= fidx < len(self._func_type_index):
            raise InvalidModule(f"unknown function {fidx}")

    @staticmethod
    def _check_index(idx: int, space: Sequence[object], what: str) -> None:
        if not 0 <= idx < len(space):
            raise InvalidModule(f"unknown {what} {idx}")

    def _func_type(self, fidx: int) -> Tuple[List[int], List[int]]:
        return self._types[self._func_type_index[fidx]]

    @staticmethod
    def _check_limits(limits: SizeLimits, bound: int, too_big: str) -> None:
        if limits.min > bound or (limits.max is not None and limits.max > bound):
            raise InvalidModule(too_big)
        if limits.max is not None and limits.min > limits.max:
            raise InvalidModule("size minimum must not be greater than maximum")

    def _check_table_limits(self, limits: SizeLimits) -> None:
        self._check_limits(limits, MAX_TABLE, "table size must be at most 2^32-1")

    def _check_memory_limits(self, limits: SizeLimits) -> None:
        self._check_limits(limits, MAX_PAGES, "memory size must be at most 65536 pages (4GiB)")

    def _check_exports(self) -> None:
        spaces = {ExternKind.FUNC: (self._func_type_index, "function"),
                  ExternKind.TABLE: (self._tables, "table"),
                  ExternKind.MEMORY: (self._memories, "memory"),
                  ExternKind.GLOBAL: (self._globals, "global")}
        names: Set[str] = set()
        for e in self.module.exports:
            if e.name in names:
                raise InvalidModule("duplicate export name")
            names.add(e.name)
            space, what = spaces[e.kind]
            self._check_index(e.index, space, what)

    def _check_const_expr(self, expr: ConstExpr, expected: int) -> None:
        """Wasm 2.0 constant expressions: one constant, ``ref.null``, ``ref.func``, or
        ``global.get`` of an imported immutable global (defined globals are not yet
        initialised when these run, hence invisible: "unknown global")."""
        stack: List[int] = []
        for op, imm, offset in expr:
            if op in _CONST_OPS:
                stack.append(int(_CONST_OPS[op]))
            elif op == Op.REF_NULL:
                stack.append(int(imm))  # type: ignore[call-overload]
            elif op == Op.REF_FUNC:
                if not 0 <= imm < len(self._func_type_index):  # type: ignore[operator]
                    raise InvalidModule(f"unknown function {imm}", offset=offset)
                stack.append(FUNCREF)
            elif op == Op.GLOBAL_GET:
                if not 0 <= imm < self._num_imported_globals:  # type: ignore[operator]
                    raise InvalidModule(f"unknown global {imm}", offset=offset)
                g = self._globals[imm]  # type: ignore[index]
                if g.mutable:
                    raise InvalidModule("constant expression required", offset=offset)
                stack.append(int(g.valtype))
            else:
                raise InvalidModule("constant expression required", offset=offset)
        if stack != [expected]:
            raise InvalidModule("type mismatch")

    # --- function bodies -------------------------------------------------------------------------

    def validate_function(self, func_index: int, instrs: Sequence[Tuple[int, object, int]]) -> int:
        """Type-check one defined function's instructions (ending with its final ``end``).

        Returns the largest number of operands ever on the stack at once (all blocks
        together), so a code generator can size its value stack without a second pass.
        """
        m = self.module
        if not self._num_imported_funcs <= func_index < len(self._func_type_index):
            raise ValueError(f"function {func_index} is not a defined function of this module")
        params, results = self._func_type(func_index)   # validate_module vouched for the index
        body = m.codes[func_index - self._num_imported_funcs]
        locals_ = params + _types(body.locals)
        nlocals = len(locals_)
        vals = self._vals = []
        ctrls = self._ctrls = [_Frame(Op.BLOCK, [], results, 0)]
        generic = self._generic
        special = self._special
        height = 0
        max_height = 0
        offset = body.start
        it = iter(instrs)
        try:
            for op, imm, offset in it:
                sig = generic.get(op)
                if sig is not None:
                    pops, pushes, n, result = sig
                    # Most operators take one or two operands and give one result: rewrite
                    # the top of the stack in place when it already holds the right types.
                    if result:
                        if n == 2:
                            if len(vals) - 2 >= height and vals[-1] == pops[1] \
                                    and vals[-2] == pops[0]:
                                vals.pop()
                                vals[-1] = result
                                continue
                        elif n == 1:
                            if len(vals) > height and vals[-1] == pops[0]:
                                vals[-1] = result
                                continue
                    if n:
                        if len(vals) - n >= height and vals[-n:] == pops:
                            del vals[-n:]
                        else:
                            self._pop_vals(pops)
                    if pushes:
                        vals += pushes
                        if len(vals) > max_height:
                            max_height = len(vals)
                    continue
                # Local instructions are a third of real code: inline them too.
                if op == LOCAL_GET:
                    if imm >= nlocals:
                        raise _Invalid(f"unknown local {imm}")
                    vals.append(locals_[imm])
                    if len(vals) > max_height:
                        max_height = len(vals)
                    continue
                if op == LOCAL_SET:
                    if imm >= nlocals:
                        raise _Invalid(f"unknown local {imm}")
                    if len(vals) > height and vals[-1] == locals_[imm]:
                        vals.pop()
                    else:
                        self._pop(locals_[imm])
                    continue
                if op == LOCAL_TEE:
                    if imm >= nlocals:
                        raise _Invalid(f"unknown local {imm}")
                    if not (len(vals) > height and vals[-1] == locals_[imm]):
                        self._pop(locals_[imm])
                        vals.append(locals_[imm])
                    continue
                handler = special.get(op)
                if handler is None:
                    known = proposal_of_code(op)
                    if known is not None:
                        raise UnsupportedProposal(known[0], known[1].value)
                    raise _Invalid(f"unknown operator {op:#x}")
                handler(imm)
                if len(vals) > max_height:
                    max_height = len(vals)
                if not ctrls:
                    break
                height = ctrls[-1].height
            else:
                raise _Invalid("unexpected end of function body")
            if next(it, None) is not None:
                raise _Invalid("operators remaining after end of function")
        except _Invalid as e:
            raise InvalidModule(e.reason, func=m.func_name(func_index), offset=offset) from None
        return max_height

    # The operand stack, as in the spec appendix. UNKNOWN (0) is falsy, hence ``actual and``.

    def _pop(self, expect: int) -> int:
        vals = self._vals
        frame = self._ctrls[-1]
        if len(vals) == frame.height:
            if frame.unreachable:
                return UNKNOWN
            raise _Invalid("type mismatch")
        actual = vals.pop()
        if actual != expect and actual and expect:
            raise _Invalid("type mismatch")
        return actual

    def _pop_vals(self, types: List[int]) -> None:
        n = len(types)
        if not n:
            return
        vals = self._vals
        if len(vals) - n >= self._ctrls[-1].height and vals[-n:] == types:
            del vals[-n:]
            return
        for t in reversed(types):
            self._pop(t)

    def _apply(self, pops: List[int], pushes: List[int]) -> None:
        self._pop_vals(pops)
        self._vals += pushes

    def _push_ctrl(self, op: int, params: List[int], results: List[int]) -> None:
        self._ctrls.append(_Frame(op, params, results, len(self._vals)))
        self._vals += params

    def _pop_ctrl(self) -> _Frame:
        frame = self._ctrls[-1]
        self._pop_vals(frame.results)
        if len(self._vals) != frame.height:
            raise _Invalid("type mismatch")
        self._ctrls.pop()
        return frame

    def _set_unreachable(self) -> None:
        frame = self._ctrls[-1]
        del self._vals[frame.height:]
        frame.unreachable = True

    def _label(self, depth: int) -> _Frame:
        if not 0 <= depth < len(self._ctrls):
            raise _Invalid(f"unknown label {depth}")
        return self._ctrls[-1 - depth]

    def _block_type(self, imm: object) -> Tuple[List[int], List[int]]:
        if imm is None:
            return _NO_TYPES
        if isinstance(imm, ValType):
            return _ONE_TYPE[imm]
        if not 0 <= imm < len(self._types):  # type: ignore[operator]
            raise _Invalid(f"unknown type {imm}")
        return self._types[imm]  # type: ignore[index]

    def _table(self, idx: int) -> int:
        """The element type of table ``idx``."""
        if not 0 <= idx < len(self._tables):
            raise _Invalid(f"unknown table {idx}")
        return int(self._tables[idx].elem)

    def _memory(self, idx: int) -> None:
        if not 0 <= idx < len(self._memories):
            raise _Invalid(f"unknown memory {idx}")

    def _data(self, idx: int) -> None:
        if not 0 <= idx < self._num_datas:
            raise _Invalid(f"unknown data segment {idx}")

    def _elem(self, idx: int) -> int:
        """The element type of segment ``idx``."""
        if not 0 <= idx < len(self.module.elems):
            raise _Invalid(f"unknown elem segment {idx}")
        return int(self.module.elems[idx].elem_type)

    def _global(self, idx: int) -> GlobalType:
        if not 0 <= idx < len(self._globals):
            raise _Invalid(f"unknown global {idx}")
        return self._globals[idx]

    # --- dispatch --------------------------------------------------------------------------------

    def _build_dispatch(self) -> None:
        """Route each opcode: rows whose signature is the whole rule to the inline generic path;
        rows with a signature and an immediate to check to a handler made from both; the rest
        (signature ``-``) to the hand-written handler of the same name."""
        for code, info in OPS.items():
            if info.params is None:
                if code in _INLINED:
                    continue
                handler = getattr(self, "_op_" + Op(code).name.lower(), None)
                if handler is None:   # a new row without a rule must not validate as anything
                    raise RuntimeError(f"validator has no rule for {info.name!r}; add "
                                       f"Validator._op_{Op(code).name.lower()}")
                self._special[code] = handler
                continue
            pops, pushes = _types(info.params), _types(info.results or ())
            check = self._immediate_check(info)
            if check is None:   # constants and plain operators: no immediate can be wrong
                result = pushes[0] if len(pushes) == 1 else 0
                self._generic[code] = (pops, pushes, len(pops), result)
            else:
                self._special[code] = self._checked_handler(check, pops, pushes)

    def _immediate_check(self, info: OpInfo) -> Optional[Callable[[object], None]]:
        """What must hold of the immediate of a row with a fixed signature, or None.

        Keyed by the immediate kind's name, like the decoder's readers, so that the SIMD kinds
        (``lane``, ``memarg_lane``) are ready before their ``Imm`` members and rows exist."""
        kind = info.imm.value
        if kind == "memarg":
            return self._memarg_check(info.access_size)
        if kind == "memarg_lane":   # ((align, offset), lane) of v128.loadN_lane/storeN_lane
            memarg = self._memarg_check(info.access_size)
            lane = self._lane_check(16 // info.access_size)
            return lambda imm: (memarg(imm[0]), lane(imm[1]))  # type: ignore

        if kind == "lane":          # the shape prefix counts the lanes: i16x8.extract_lane_s
            return self._lane_check(int(info.name.split(".")[0].split("x")[1]))
        return {
            "memory": self._memory,
            "data": self._data,
            "elem": self._elem,
            "table": self._table,
            "memory_init": self._check_memory_init,
            "memory_copy": self._check_memory_copy,
            "table_init": self._check_table_init,
            "table_copy": self._check_table_copy,
        }.get(kind)

    def _checked_handler(self, check: Callable[[object], None], pops: List[int],
                         pushes: List[int]) -> Callable[[object], None]:
        apply = self._apply

        def handler(imm: object) -> None:
            check(imm)
            apply(pops, pushes)
        return handler

    def _memarg_check(self, access_size: int) -> Callable[[object], None]:
        max_align = access_size.bit_length() - 1
        has_memory = bool(self._memories)

        def check(memarg: object) -> None:
            if not has_memory:
                raise _Invalid("unknown memory 0")
            if memarg[0] > max_align:  # type: ignore[index]
                raise _Invalid("alignment must not be larger than natural")
        return check

    @staticmethod
    def _lane_check(lanes: int) -> Callable[[object], None]:
        def check(lane: object) -> None:
            if lane >= lanes:  # type: ignore[operator]
                raise _Invalid("invalid lane index")
        return check

    def _check_memory_init(self, imm: object) -> None:
        data, mem = imm  # type: ignore[misc]
        self._memory(mem)
        self._data(data)

    def _check_memory_copy(self, imm: object) -> None:
        for mem in imm:  # type: ignore[attr-defined]
            self._memory(mem)

    def _check_table_init(self, imm: object) -> None:
        elem, table = imm  # type: ignore[misc]
        if self._table(table) != self._elem(elem):
            raise _Invalid("type mismatch")

    def _check_table_copy(self, imm: object) -> None:
        dst, src = imm  # type: ignore[misc]
        if self._table(dst) != self._table(src):
            raise _Invalid("type mismatch")

    # --- hand-written rules, one per opcode whose table signature is "-" -------------------------
    # Named _op_<Op name in lower case> so _build_dispatch finds them; imm is the instruction's.

    def _op_unreachable(self, imm: object) -> None:
        self._set_unreachable()

    def _op_block(self, imm: object) -> None:
        params, results = self._block_type(imm)
        self._pop_vals(params)
        self._push_ctrl(Op.BLOCK, params, results)

    def _op_loop(self, imm: object) -> None:
        params, results = self._block_type(imm)
        self._pop_vals(params)
        self._push_ctrl(Op.LOOP, params, results)

    def _op_if(self, imm: object) -> None:
        params, results = self._block_type(imm)
        self._pop(I32)
        self._pop_vals(params)
        self._push_ctrl(Op.IF, params, results)

    def _op_else(self, imm: object) -> None:
        frame = self._pop_ctrl()
        if frame.op != Op.IF:
            raise _Invalid("else without matching if")
        self._push_ctrl(Op.ELSE, frame.params, frame.results)

    def _op_end(self, imm: object) -> None:
        frame = self._pop_ctrl()
        if frame.op == Op.IF and frame.params != frame.results:
            raise _Invalid("type mismatch")   # the missing else would pass params through
        self._vals += frame.results

    def _op_br(self, imm: object) -> None:
        self._pop_vals(self._label(imm).label_types)  # type: ignore[arg-type]
        self._set_unreachable()

    def _op_br_if(self, imm: object) -> None:
        types = self._label(imm).label_types  # type: ignore[arg-type]
        self._pop(I32)
        self._pop_vals(types)
        self._vals += types

    def _op_br_table(self, imm: object) -> None:
        depths, default = imm  # type: ignore[misc]
        self._pop(I32)
        arity = len(self._label(default).label_types)
        for depth in depths:
            types = self._label(depth).label_types
            if len(types) != arity:
                raise _Invalid("type mismatch")
            popped = [self._pop(t) for t in reversed(types)]
            self._vals += reversed(popped)
        self._pop_vals(self._label(default).label_types)
        self._set_unreachable()

    def _op_return(self, imm: object) -> None:
        self._pop_vals(self._ctrls[0].results)
        self._set_unreachable()

    def _op_call(self, imm: object) -> None:
        if not 0 <= imm < len(self._func_type_index):  # type: ignore[operator]
            raise _Invalid(f"unknown function {imm}")
        self._apply(*self._func_type(imm))  # type: ignore[arg-type]

    def _op_call_indirect(self, imm: object) -> None:
        tidx, table = imm  # type: ignore[misc]
        if self._table(table) != FUNCREF:
            raise _Invalid("type mismatch")
        if not 0 <= tidx < len(self._types):
            raise _Invalid(f"unknown type {tidx}")
        self._pop(I32)
        self._apply(*self._types[tidx])

    def _op_drop(self, imm: object) -> None:
        self._pop(UNKNOWN)

    def _op_select(self, imm: object) -> None:
        """Untyped select only works on numeric (and vector) operands: a reference operand
        needs the typed form, so that consumers always know its reference type."""
        self._pop(I32)
        t1 = self._pop(UNKNOWN)
        t2 = self._pop(UNKNOWN)
        if t1 in _REF_TYPES or t2 in _REF_TYPES:
            raise _Invalid("type mismatch")
        if t1 != t2 and t1 and t2:
            raise _Invalid("type mismatch")
        self._vals.append(t1 or t2)

    def _op_select_t(self, imm: object) -> None:
        if len(imm) != 1:  # type: ignore[arg-type]
            raise _Invalid("invalid result arity")
        t = int(imm[0])  # type: ignore[index]
        self._pop(I32)
        self._pop(t)
        self._pop(t)
        self._vals.append(t)

    # local.get, local.set and local.tee are inlined in validate_function.

    def _op_global_get(self, imm: object) -> None:
        self._vals.append(int(self._global(imm).valtype))  # type: ignore[arg-type]

    def _op_global_set(self, imm: object) -> None:
        g = self._global(imm)  # type: ignore[arg-type]
        if not g.mutable:
            raise _Invalid("global is immutable")
        self._pop(int(g.valtype))

    def _op_table_get(self, imm: object) -> None:
        t = self._table(imm)  # type: ignore[arg-type]
        self._pop(I32)
        self._vals.append(t)

    def _op_table_set(self, imm: object) -> None:
        self._apply([I32, self._table(imm)], [])  # type: ignore[arg-type]

    def _op_table_grow(self, imm: object) -> None:
        self._apply([self._table(imm), I32], [I32])  # type: ignore[arg-type]

    def _op_table_fill(self, imm: object) -> None:
        self._apply([I32, self._table(imm), I32], [])  # type: ignore[arg-type]

    def _op_ref_null(self, imm: object) -> None:
        self._vals.append(int(imm))  # type: ignore[call-overload]

    def _op_ref_is_null(self, imm: object) -> None:
        t = self._pop(UNKNOWN)
        if t and t not in _REF_TYPES:
            raise _Invalid("type mismatch")
        self._vals.append(I32)

    def _op_ref_func(self, imm: object) -> None:
        if not 0 <= imm < len(self._func_type_index):  # type: ignore[operator]
            raise _Invalid(f"unknown function {imm}")
        if imm not in self._declared_refs:
            raise _Invalid("undeclared function reference")
        self._vals.append(FUNCREF)


def validate(module: Module) -> None:
    """Validate a whole module: the module-level rules, then every function body."""
    from .decoder import decode_body   # the decoder imports nothing of ours; keep startup lazy
    validator = Validator(module)
    validator.validate_module()
    nimp = module.num_imported_funcs
    for i, body in enumerate(module.codes):
        validator.validate_function(nimp + i, decode_body(module, body))
