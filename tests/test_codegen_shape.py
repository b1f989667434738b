"""The shape of the code for what the benchmarks spend their time on, pinned per optimisation
(issue 9), so that a later change cannot undo one silently. What the code computes is checked
elsewhere (test_codegen*.py, test_sightglass.py); here only its form: which instructions, and how
many."""

from __future__ import annotations

from typing import Callable, Tuple

from pylucet.compiler.codegen.context import (CALLER_SAVED_LOCAL_REGS, FLOAT_LOCAL_REGS,
                                              LOCAL_REGS)
from pylucet.module.abi import Libcall, vmctx_libcall

from .conftest import disassemble, instantiate as instance


def _libcall(call: Libcall) -> tuple:
    return ("call", f"qword ptr [r14 - {-vmctx_libcall(call):#x}]")


def test_bulk_memory_calls_libc():
    """memory.copy is libc's memmove and memory.fill its memset, after the range checks: no
    string instructions, no direction flag (a backward ``rep movsb`` was ten times slower than
    Cranelift on shootout-memmove)."""
    insns = disassemble("""(module (memory 1)
      (func (param i32 i32 i32) (memory.copy (local.get 0) (local.get 1) (local.get 2)))
      (func (param i32 i32 i32) (memory.fill (local.get 0) (local.get 1) (local.get 2))))""")
    mnemonics = [m for m, _ in insns]
    assert insns.count(_libcall(Libcall.MEMMOVE)) == 1, insns
    assert insns.count(_libcall(Libcall.MEMSET)) == 1, insns
    assert not {"rep movsb", "rep stosb", "std", "cld"} & set(mnemonics), insns
    # each range is checked before its call: two compares for the copy, one for the fill
    assert mnemonics.count("ja") == 3, insns



def _busy_locals(k: int) -> str:
    """A loop that makes ``k`` locals busier than any other, so they take the registers for
    locals and the others live in the frame."""
    body = "".join(f"(local.set $r{i} (i32.add (local.get $r{i}) (local.get $r{(i + 1) % k})))"
                   for i in range(k))
    return (" ".join(f"(local $r{i} i32)" for i in range(k)),
            f"(loop $l {body} (br_if $l (local.get $r0)))")


def test_tee_of_a_frame_local_keeps_the_value_in_hand():
    """``local.tee`` of a local in the frame stores the value and goes on with the register it
    was in: its user does not reload it from the slot just written (a store-to-load round trip
    on the critical path of every ARX hash round: seqhash, chacha, blake3)."""
    decls, loop = _busy_locals(len(CALLER_SAVED_LOCAL_REGS + LOCAL_REGS))
    insns = disassemble(f"""(module (func (param $p i32) (result i32) {decls} (local $x i32)
      {loop}
      (i32.rotl (local.tee $x (i32.mul (local.get $p) (local.get $p))) (i32.const 7))))""")
    k = [m for m, _ in insns].index("imul")
    store = insns[k + 1]
    assert store[0] == "mov" and store[1].startswith("dword ptr [rsp"), insns
    slot = store[1].split(",")[0]
    assert [i for i in insns if slot in i[1]] == [store], insns   # written once, never read
    assert insns[k + 2][0] == "rol", insns


def test_a_leaf_keeps_its_locals_in_caller_saved_registers():
    """A function that calls nothing keeps its busiest locals in caller-saved registers first
    (``CALLER_SAVED_LOCAL_REGS``): no push or pop for them, no frame, and a parameter whose argument
    register is one of them stays in it. ed25519 spends most of its time in such a leaf
    (``__multi3``), which pushed and popped all five callee-saved registers on every call."""
    body = """(param i64 i64 i64) (result i64) (local i64)
      (local.set 3 (i64.mul (local.get 0) (local.get 1)))
      (i64.add (i64.mul (local.get 2) (local.get 3)) (local.get 3))"""
    assert len(CALLER_SAVED_LOCAL_REGS) >= 4
    leaf = disassemble(f"(module (func {body}))")
    assert not [i for i in leaf if i[0] in ("push", "pop") or "rsp +" in i[1]], leaf
    # the parameters arrive in rdi, rsi and rdx: only rdx, no local's home, is moved
    entry = leaf[:[m for m, _ in leaf].index("xor")]   # up to zeroing the declared local
    assert [ops.split(", ")[1] for m, ops in entry if m == "mov" and "ptr" not in ops] \
        == ["rdx"], leaf
    # with a call in it, the same locals take callee-saved registers, pushed and popped
    caller = disassemble(f"(module (func $f) (func {body} (call $f)))")
    assert [m for m, _ in caller].count("push") == 4, caller


def test_leaf_parameters_move_to_their_registers_at_once(region):
    """Parameters arrive in argument registers that are also a leaf's local homes: the moves
    are one parallel move, so none overwrites a parameter still to be read."""
    with instance(region, """(module (func (export "f")
        (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
      (i32.sub (local.get 7) (i32.sub (local.get 6) (i32.sub (local.get 5) (i32.sub (local.get 4)
        (i32.sub (local.get 3) (i32.sub (local.get 2) (i32.sub (local.get 1)
          (i32.mul (local.get 0) (i32.const 3)))))))))))""") as inst:
        args = [1 << (4 * k) for k in range(8)]
        want = args[0] * 3
        for a in args[1:]:
            want = a - want
        assert inst.run("f", *args) == want & 0xFFFF_FFFF


def test_and_with_the_low_half_mask_is_a_32_bit_move():
    """``i64.and x, 0xFFFFFFFF`` (the 64-bit multiply helpers do it for every partial
    product) zero-extends x's low half with one ``mov r32, r32``, not a 64-bit immediate
    through r11 and an ``and``."""
    insns = disassemble("""(module (func (param i64) (result i64)
      (i64.and (i64.mul (local.get 0) (local.get 0)) (i64.const 0xFFFFFFFF))))""")
    assert not [i for i in insns if i[0] == "and" or "0xffffffff" in i[1]], insns
    k = [m for m, _ in insns].index("imul")
    reg = insns[k][1].split(", ")[0]
    low = {"rax": "eax", "rcx": "ecx", "rdx": "edx", "r10": "r10d"}[reg]
    assert insns[k + 1] == ("mov", f"{low}, {low}"), insns


_CALLER = """(module (memory 1) (table 1 funcref) (elem (i32.const 0) $mix)
  (type $mix_t (func (param i64 i64 i64 i64 i64 i64) (result i64)))
  (func $mix (type $mix_t)
    ;; a leaf: its locals take r8, r9, rsi and rdi, whatever the caller kept there
    (i64.add (i64.mul (local.get 0) (i64.const 3)) (i64.sub (local.get 1) (local.get 5)))
    (i64.xor (i64.add (local.get 2) (local.get 4)) (local.get 3)) (i64.add))
  (func (export "f") (param $n i32) (result i64)
        (local $a i64) (local $b i64) (local $c i64) (local $d i64) (local $e i64) (local $g i64)
        (local $i i32)
    (loop $l
      (local.set $i (i32.const 3))
      (loop $inner   ;; the hot loop: its locals are worth registers that calls cost a save
        (local.set $a (i64.add (local.get $a) (i64.add (local.get $b) (i64.const 1))))
        (local.set $b (i64.add (local.get $b) (i64.add (local.get $c) (i64.const 2))))
        (local.set $c (i64.add (local.get $c) (i64.add (local.get $d) (i64.const 3))))
        (local.set $d (i64.add (local.get $d) (i64.add (local.get $e) (i64.const 4))))
        (local.set $e (i64.add (local.get $e) (i64.add (local.get $g) (i64.const 5))))
        (local.set $g (i64.add (local.get $g) (i64.add (local.get $a) (i64.const 6))))
        (br_if $inner (local.tee $i (i32.sub (local.get $i) (i32.const 1)))))
      ;; the locals as arguments, in the very registers some of them live in
      (local.set $a (i64.add (local.get $a) (call $mix (local.get $g) (local.get $e)
        (local.get $d) (local.get $c) (local.get $b) (local.get $a))))
      (local.set $b (i64.add (local.get $b) (call_indirect (type $mix_t) (local.get $e)
        (local.get $g) (local.get $a) (local.get $b) (local.get $c) (local.get $d)
        (i32.const 0))))
      (local.set $c (i64.add (local.get $c) (i64.extend_i32_u (memory.grow (i32.const 0)))))
      (memory.copy (i32.const 8) (i32.const 0) (i32.const 8))
      (i64.store (i32.const 0) (local.get $g))
      (local.set $d (i64.add (local.get $d) (i64.load (i32.const 8))))
      (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1)))))
    (i64.xor (i64.xor (i64.xor (local.get $a) (local.get $b)) (i64.xor (local.get $c)
      (local.get $d))) (i64.xor (local.get $e) (local.get $g)))))"""


def _caller_model(n: int) -> int:
    m = (1 << 64) - 1
    a = b = c = d = e = g = 0
    heap = [0, 0]

    def mix(p0, p1, p2, p3, p4, p5):
        return (p0 * 3 + (p1 - p5) + ((p2 + p4) ^ p3)) & m
    while True:
        for _ in range(3):
            a = (a + b + 1) & m
            b = (b + c + 2) & m
            c = (c + d + 3) & m
            d = (d + e + 4) & m
            e = (e + g + 5) & m
            g = (g + a + 6) & m
        a = (a + mix(g, e, d, c, b, a)) & m
        b = (b + mix(e, g, a, b, c, d)) & m
        c = (c + 1) & m          # memory.grow 0 answers the size: 1 page
        heap[1] = heap[0]
        heap[0] = g
        d = (d + heap[1]) & m
        n -= 1
        if not n:
            return a ^ b ^ c ^ d ^ e ^ g


def test_locals_in_caller_saved_registers_survive_calls(region):
    """A function that calls keeps its hot loop's locals beyond ``LOCAL_REGS`` in
    ``CALLER_SAVED_LOCAL_REGS``, stored before each call and loaded after it: across direct and
    indirect calls to a leaf that uses those registers itself, libcalls (rdi and rsi are theirs
    too), and with the locals passed as arguments in the registers they live in."""
    for n in (1, 2, 7):
        with instance(region, _CALLER) as inst:      # a fresh heap each time
            assert inst.run("f", n) == _caller_model(n)


def _saved_around_calls(wat: str):
    """(the calls, the caller-saved registers stored to the frame since the call before each,
    those loaded right after each) in the last function of ``wat``; the first call's stores
    include the parameters' at entry."""
    insns = disassemble(wat)
    f = insns[[k for k, i in enumerate(insns) if i[0] == "ret"][-2] + 1:]

    def home(r: str) -> str:
        return r[:-1] if r in ("r8d", "r9d") else {"esi": "rsi", "edi": "rdi"}.get(r, r)
    caller_saved = {"r8", "r9", "rsi", "rdi"}
    calls = [k for k, i in enumerate(f) if i[0] == "call"]
    before, after, prev = [], [], 0
    for k in calls:
        before.append(sorted(home(i[1].split(", ")[1]) for i in f[prev:k] if i[0] == "mov"
                             and "ptr [rsp" in i[1].split(", ")[0]
                             and home(i[1].split(", ")[1]) in caller_saved))
        after.append(sorted(home(i[1].split(", ")[0]) for i in f[k + 1:k + 6] if i[0] == "mov"
                            and "ptr [rsp" in i[1].split(", ")[1]
                            and home(i[1].split(", ")[0]) in caller_saved))
        prev = k
    return calls, before, after


def test_locals_in_caller_saved_registers_pay_only_at_calls():
    """Each such register is stored once before each call and loaded right after it."""
    calls, before, after = _saved_around_calls(_CALLER)
    assert len(calls) == 4   # mix, call_indirect, memory.grow, memmove
    assert len(after[0]) >= 2 and before[1:] == after[1:] == [after[0]] * 3, (before, after)
    assert set(after[0]) <= set(before[0]), (before, after)


def test_a_call_in_the_hot_loop_keeps_locals_out_of_caller_saved_registers():
    """Where calls are about as frequent as a local's uses, a caller-saved home would cost more
    at the calls than it saves: such locals stay in the frame, and the calls save nothing."""
    k = len(LOCAL_REGS) + 2
    body = "".join(f"(local.set $x{i} (i64.add (local.get $x{i}) (local.get $x{(i + 1) % k})))"
                   for i in range(k))
    calls, before, after = _saved_around_calls(f"""(module (func $f)
      (func (local $n i32) {" ".join(f"(local $x{i} i64)" for i in range(k))}
        (loop $l (call $f) {body} (call $f)
          (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1)))))))""")
    assert len(calls) == 2 and before == after == [[], []], (before, after)


def test_tee_of_a_register_local_goes_on_in_the_value_register():
    """``local.tee`` of a local in a register copies the value there and goes on with the
    value's own register, so its user does not copy the home straight back (chacha20's rounds
    had a ``mov home, r; mov r, home`` pair after every rotate)."""
    insns = disassemble("""(module (func (param $p i32) (param $q i32) (result i32) (local $x i32)
      (loop $l
        (local.set $p (i32.add (local.tee $x (i32.rotl (i32.xor (local.get $p) (local.get $q))
                                                       (i32.const 7)))
                               (local.get $q)))
        (br_if $l (local.get $p)))
      (i32.add (local.get $x) (local.get $p))))""")
    k = [m for m, _ in insns].index("rol")
    value = insns[k][1].split(", ")[0]
    assert insns[k + 1][0] == "mov" and insns[k + 1][1].endswith(f", {value}"), insns
    assert insns[k + 2][0] == "add" and insns[k + 2][1].startswith(f"{value}, "), insns


_DIVISORS = (1, 2, 3, 7, 10, 64, 641, 0x222C0, 0x8000_0000, 0x8000_0001, 0xFFFF_FFFE,
             0xFFFF_FFFF)


def test_unsigned_division_by_a_constant_needs_no_div(region):
    """i32 ``div_u``/``rem_u`` by a constant multiply by its reciprocal (shootout-random spends
    its time in ``rem_u`` by 0x222C0), a power of two also for i64 is a shift or a mask; the
    results are exact at the edges."""
    funcs = "".join(f"""
      (func (export "div{d}") (param i32) (result i32) (i32.div_u (local.get 0) (i32.const {d})))
      (func (export "rem{d}") (param i32) (result i32) (i32.rem_u (local.get 0) (i32.const {d})))"""
                    for d in _DIVISORS)
    funcs += """
      (func (export "div_i64") (param i64) (result i64) (i64.div_u (local.get 0) (i64.const 64)))
      (func (export "rem_i64") (param i64) (result i64) (i64.rem_u (local.get 0) (i64.const 64)))"""
    wat = f"(module {funcs})"
    assert not [i for i in disassemble(wat) if i[0] in ("div", "idiv")]
    with instance(region, wat) as inst:
        for d in _DIVISORS:
            for x in {0, 1, d - 1, d, d + 1, 2 * d - 1, 0x7FFF_FFFF, 0xFFFF_FFFE, 0xFFFF_FFFF,
                      0xFFFF_FFFF // d * d, 0xFFFF_FFFF // d * d - 1, 0x1234_5678}:
                x &= 0xFFFF_FFFF
                assert inst.run(f"div{d}", x) & 0xFFFF_FFFF == x // d, (x, d)   # run: signed
                assert inst.run(f"rem{d}", x) & 0xFFFF_FFFF == x % d, (x, d)
        for x in (0, 63, 64, 65, (1 << 64) - 1):
            assert inst.run("div_i64", x) == x // 64 and inst.run("rem_i64", x) == x % 64


_TRIPLE = "(func $triple (param i32) (result i32) (i32.mul (local.get 0) (i32.const 3)))"


def _two_phases(k: int, rounds: int, call: bool = False,
                early: bool = False) -> Tuple[str, Callable[[int], int]]:
    """A function of straight-line code over ``2 * k`` locals: ``rounds`` rounds that mix
    $a0..$a{k-1} among themselves, then (given ``call``) $a0 = $triple($a0), then as many rounds
    mixing $b0..$b{k-1}, which start from the a's; it returns the xor of all. Given ``early``,
    all that twice, the first time inside an ``if`` ending in ``return``. And the same in
    Python."""
    def mix(v: str) -> str:
        return "".join(f"(local.set ${v}{i} (i32.rotl (i32.add (local.get ${v}{i})"
                       f" (local.get ${v}{(i + 1) % k})) (i32.const {i + 1})))" for i in range(k))
    decls = " ".join(f"(local $a{i} i32) (local $b{i} i32)" for i in range(k))
    init_a = "".join(f"(local.set $a{i} (i32.add (local.get $p) (i32.const {i})))"
                     for i in range(k))
    init_b = "".join(f"(local.set $b{i} (i32.xor (local.get $a{i}) (i32.const {3 * i})))"
                     for i in range(k))
    result = "(local.get $a0)" + "".join(f"(i32.xor (local.get $a{i}))" for i in range(1, k)) \
        + "".join(f"(i32.xor (local.get $b{i}))" for i in range(k))
    middle = "(local.set $a0 (call $triple (local.get $a0)))" if call else ""
    code = f"{init_a} {mix('a') * rounds} {middle} {init_b} {mix('b') * rounds}"
    if early:    # the same once more, first in an if that returns (p = 7 takes it)
        code = f"(if (i32.eq (local.get $p) (i32.const 7)) (then {code} (return {result}))) {code}"
    body = f"""(func (export "f") (param $p i32) (result i32) {decls} {code} {result})"""

    def model(p: int) -> int:
        def rounds_of(v):
            for _ in range(rounds):
                for i in range(k):
                    x = (v[i] + v[(i + 1) % k]) & 0xFFFF_FFFF
                    v[i] = ((x << (i + 1)) | (x >> (31 - i))) & 0xFFFF_FFFF
            return v
        a = rounds_of([(p + i) & 0xFFFF_FFFF for i in range(k)])
        if call:
            a[0] = a[0] * 3 & 0xFFFF_FFFF
        b = rounds_of([a[i] ^ (3 * i) for i in range(k)])
        out = 0
        for x in a + b:
            out ^= x
        return out
    return body, model


def test_straight_line_code_trades_the_local_registers(region):
    """In a long stretch of straight-line code the home registers go to the locals busy in
    each part of it (``codegen.remap``): two phases over nine locals each, every local as busy as
    any other over the whole, take the frame only to trade registers between the phases, where
    whole-function homes left one phase's locals in the frame for all their accesses
    (blake3-scalar's compress: 1.3 -> 1.05 x Cranelift). The values survive trades, a call
    between the phases, and a return from traded homes."""
    k = len(CALLER_SAVED_LOCAL_REGS + LOCAL_REGS)
    body, model = _two_phases(k, 4)
    insns = disassemble(f"(module {body})")
    frame = [i for i in insns if "[rsp" in i[1]]
    # per phase 4 rounds of k sets and 2k gets; at most a store and a load per local per phase
    assert len(frame) <= 4 * k, (len(frame), insns)
    called, called_model = _two_phases(k, 4, call=True)
    early, _ = _two_phases(k, 4, early=True)
    for wat, want in ((f"(module {body})", model), (f"(module {_TRIPLE} {called})", called_model),
                      (f"(module {early})", model)):
        with instance(region, wat) as inst:
            for p in (0, 1, 7, 0x7FFF_FFFF, 0xFFFF_FFFF):
                assert inst.run("f", p) & 0xFFFF_FFFF == want(p), p


def test_float_locals_live_in_xmm_registers(region):
    """f32 and f64 locals live in xmm registers (``context.FLOAT_LOCAL_REGS``) as integer locals
    live in theirs: a leaf's float loop touches no frame slot (bench_code's mandel 2.9 -> 1.1 x
    Cranelift, tools/guests/nbody 1.7 -> 1.2), and reads them in place as operands. A function
    that calls keeps a float local that is busy in its loop in a register too, stored before the
    call and loaded after it."""
    leaf = """(func (export "leaf") (param $n i32) (result f64)
        (local $x f64) (local $y f64) (local $i i32)
      (local.set $y (f64.const 3))
      (loop $l
        (local.set $x (f64.add (local.get $x) (local.get $y)))
        (local.set $y (f64.add (f64.mul (local.get $y) (f64.const 0.5)) (f64.const 1)))
        (br_if $l (i32.ne (local.tee $i (i32.add (local.get $i) (i32.const 1)))
                          (local.get $n))))
      (local.get $x))"""
    insns = disassemble(f"(module {leaf})")
    assert not [i for i in insns if "ptr [rsp" in i[1]], insns   # no frame at all
    assert {"xmm8", "xmm9"} <= {r for i in insns for r in i[1].split(", ")}, insns
    # an operand is read in its home, not copied to a scratch register first
    homes = {f"xmm{r}" for r in FLOAT_LOCAL_REGS}
    assert [i for i in insns if i[0] == "addsd" and i[1].split(", ")[1] in homes], insns
    caller = """(func $id (param f64) (result f64) (local.get 0))
      (func (export "caller") (param $n i32) (result f64) (local $x f64) (local $i i32)
      (loop $l
        (local.set $x (f64.add (local.get $x) (f64.const 1.25)))
        (br_if $l (i32.ne (local.tee $i (i32.add (local.get $i) (i32.const 1)))
                          (local.get $n))))
      (f64.add (call $id (local.get $x)) (local.get $x)))"""
    insns = disassemble(f"(module {caller})")
    k = [m for m, _ in insns].index("call")
    assert insns[k - 2][0] == "movsd" and insns[k - 2][1].endswith(", xmm8"), insns[:k + 3]
    assert insns[k + 1][0] == "movsd" and insns[k + 1][1].startswith("xmm8, "), insns[:k + 3]
    with instance(region, f"(module {leaf} {caller})") as inst:
        x, y = 0.0, 3.0
        for _ in range(100):
            x, y = x + y, y * 0.5 + 1
        assert inst.run("leaf", 100) == x
        assert inst.run("caller", 10) == 25.0
