"""Single-pass code generation: one validated function body in, x86-64 machine code out.

The design follows V8's Liftoff and wasmtime's Winch: one walk over the instructions, no IR, a
dispatch table from opcode to handler, and an *abstract* operand stack: constants, lazy local
reads, registers, spill slots and compare results in the flags. So constants fold into
immediates, values stay in registers, compare (or its ``eqz``) + ``br_if``/``if``/``select``
fuse into ``cmp; jcc``/``cmov``, and ``x = x op y`` on a register local updates that register in
place. Handlers may peek at the next instruction for these fusions; besides, only the pre-scans
of the locals (their uses, and ``remap``'s accesses in long straight-line stretches) look ahead.

Split by concern, as Winch's ``codegen/`` is:

============== =====================================================================================
``function``   ``FunctionCompiler``: the main loop, prologue, epilogue, frame patching, trap stubs
``context``    ``CodeGenContext``: the value stack, the register allocator and the frame it holds,
               and their combined operations; the value representation (from ``module.abi``)
``dispatch``   the explicit opcode -> (handler, argument) table
``control``    blocks, loops, ifs, branches, the merges at labels, the interrupt polls
``call``       direct, indirect and imported calls; argument and result placement
``memory``     heap addressing, loads and stores, ``memory.*``
``tables``     table descriptors and entries, ``table.size``
``variables``  locals, globals, ``drop``, ``select``
``remap``      the home registers traded between locals inside long straight-line stretches
``int_ops``    integer arithmetic, compares, conversions, constant folds
``float_ops``  floating-point arithmetic, compares, conversions
============== =====================================================================================

Locals: a cheap pre-scan counts each local's uses (a use inside loops counts more) and the
busiest i32/i64 locals get registers for the whole function: the callee-saved ones in
``context.LOCAL_REGS`` (so calls never disturb them), then ``context.CALLER_SAVED_LOCAL_REGS``,
stored to the frame before each call and loaded after it, for locals used far more often than
calls are made; a leaf function (one that calls nothing) takes the caller-saved ones first,
which cost no push and pop. The other locals live in frame slots; unused ones get nothing.
Inside a long stretch of straight-line code the home registers go to the locals busy there,
back to the whole-function homes before the next branch, label or call (``remap``).
The busiest f32/f64 locals get xmm8..xmm14 (``context.FLOAT_LOCAL_REGS``) by the rule of the
caller-saved integer homes, since the convention saves no xmm register.

Frame (``rsp``-relative, 16-byte aligned at calls)::

    [incoming stack arguments]  [return address]  [pushed callee-saved registers]
    [operand stack slots, one per stack position] [return-area pointer, if several results]
    [locals living in the frame]   <- rsp

Its size is only known after the body, so the prologue's ``sub rsp``, the epilogue's ``add rsp``
and the stack limit check are patched at the end. Outgoing stack arguments are pushed below it
for the duration of a call (``Frame.rsp_adjust``).

Traps: heap accesses and divisions fault on purpose and get a trap site at their own offset;
explicit checks jump to out-of-line ``ud2`` stubs at the end of the function, one per check so
each trap names its wasm instruction.
"""

from .function import CompiledFunction, FunctionCompiler, compile_function

__all__ = ["CompiledFunction", "FunctionCompiler", "compile_function"]
