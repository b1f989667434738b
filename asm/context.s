# context.s -- switching between the host (Python, through ctypes) and a guest.
#
# The host calls pylucet_enter(instance page) as an ordinary C function. It saves what SysV says
# a callee must preserve, moves onto the guest's own stack inside the sandbox slot, calls the
# guest function with the arguments the runtime stored in the instance page, stores the results
# back there and returns EXIT_RETURNED. Every other way back to the host also ends in
# restore_host, so to Python each of them looks like an ordinary return with a reason in eax
# (pylucet/module/abi.py, ExitReason):
#
#   EXIT_FAULTED      the signal handler (trap.s) sent the thread to pylucet_fault_return;
#   EXIT_HOSTCALL     the guest called a host import: pylucet_hostcall saved the guest's
#                     registers in the instance page and left, so the host runs the import in
#                     Python on its *own* stack, never on the guest's;
#   EXIT_INTERRUPTED  an interrupt poll of compiled code faulted: the host revoked the poll page;
#   EXIT_BUSY         the instance was already in use by another call (see INST_ROOT).
#
# Instances may call each other's functions through imports (pylucet_call_guest): the callee
# then runs on the caller's stack, and everything that must find the host context -- a
# hostcall, an interruption, a fault -- goes to the *root*: the instance page whose
# pylucet_enter is under way (INST_ROOT). Each instance page names its root while it is in use.
#
# After a hostcall or an interruption the host calls pylucet_resume(instance page): it saves the
# host's registers again (possibly on another thread), restores the guest's and returns into the
# guest as if the call it made had just returned, with rax / xmm0 from INST_RET_*.
#
# Offsets (INST_*, EXIT_*, INSTANCE_PAGE_SIZE, ...) come from pylucet/module/abi.py as .equ
# lines that pylucet/runtime/stubs.py prepends; this file holds no layout numbers of its own.

.globl pylucet_enter
.globl pylucet_resume
.globl pylucet_fault_return
.globl pylucet_hostcall
.globl pylucet_interrupt
.globl pylucet_call_guest

# --- int pylucet_enter(u64 instance_page) -----------------------------------------------------------
# --- int pylucet_resume(u64 instance_page) ----------------------------------------------------------
pylucet_enter:
    xor eax, eax                              # eax = 0: a fresh call (see below)
    jmp save_host
pylucet_resume:
    mov eax, 1                                # eax = 1: continue a guest that left mid-call
save_host:
    # Save the host's callee-saved registers: the guest may clobber any of them on a fault.
    mov [rdi + INST_HOST_RBX], rbx            # rbx
    mov [rdi + INST_HOST_RBP], rbp            # rbp
    mov [rdi + INST_HOST_R12], r12            # r12
    mov [rdi + INST_HOST_R13], r13            # r13
    mov [rdi + INST_HOST_R14], r14            # r14 (about to become vmctx)
    mov [rdi + INST_HOST_R15], r15            # r15
    stmxcsr dword ptr [rdi + INST_HOST_MXCSR] # SSE rounding/exception state, restored on the way out
    mov [rdi + INST_HOST_RSP], rsp            # rsp points at our return address into ctypes
    test eax, eax                             # resuming?
    jnz resume_guest                          # -> put the guest's own registers back

    # Claim the instance: it becomes its own root, unless some call already holds it.
    xor eax, eax                              # expect INST_ROOT = 0 (idle) ...
    lock cmpxchg [rdi + INST_ROOT], rdi       # ... and make it this page, atomically
    jne busy_entry                            # -> in use: EXIT_BUSY, nothing ran

    # Enter the sandbox's world: r14 = vmctx (the heap base, just past the instance page) is the
    # one register compiled code relies on; rbx keeps the instance page for after the call.
    lea r14, [rdi + INSTANCE_PAGE_SIZE]       # vmctx = instance page + INSTANCE_PAGE_SIZE
    mov rbx, rdi                              # callee-saved, so the guest hands it back

    # Refuse a stack argument count that could run off the guest stack.
    mov rcx, [rbx + INST_ENTRY_NSTACK]        # number of 8-byte stack arguments
    cmp rcx, ENTRY_MAX_STACK_ARGS             # unsigned compare: huge values are rejected too
    ja bad_entry                              # -> EXIT_BAD_ENTRY without touching the guest

    # Switch to the guest stack and lay the stack arguments out as SysV wants them: the first one
    # at [rsp] when the call instruction executes, with rsp 16-byte aligned at that point.
    mov rsp, [rbx + INST_STACK_TOP]           # guest stack (grows down from here)
    and rsp, -16                              # make sure it is 16-byte aligned

    # Give the guest the float environment wasm specifies, not whatever the host had.
    push GUEST_MXCSR                          # ldmxcsr only takes a memory operand ...
    ldmxcsr dword ptr [rsp]                   # ... so go through the top of the guest stack
    add rsp, 8                                # and drop it again: rsp is aligned as before
    lea rax, [rcx*8 + 15]                     # bytes of arguments, rounded up ...
    and rax, -16                              # ... to a multiple of 16 to keep the alignment
    sub rsp, rax                              # reserve the argument area
    mov rsi, [rbx + INST_ENTRY_STACK]         # source: the runtime's array, first argument first
    mov rdi, rsp                              # destination: the bottom of the reserved area
    cld                                       # copy upwards (SysV guarantees DF=0 anyway)
    rep movsq                                 # copy rcx quadwords from [rsi] to [rdi]

    # Load the register arguments, in the order of abi.GUEST_INT_ARG_REGS / GUEST_FLOAT_ARG_REGS.
    mov rdi, [rbx + INST_ENTRY_RDI]           # 1st integer argument
    mov rsi, [rbx + INST_ENTRY_RSI]           # 2nd
    mov rdx, [rbx + INST_ENTRY_RDX]           # 3rd
    mov rcx, [rbx + INST_ENTRY_RCX]           # 4th
    mov r8, [rbx + INST_ENTRY_R8]             # 5th
    mov r9, [rbx + INST_ENTRY_R9]             # 6th
    movdqu xmm0, xmmword ptr [rbx + INST_ENTRY_XMM0]   # 1st float argument (all 128 bits)
    movdqu xmm1, xmmword ptr [rbx + INST_ENTRY_XMM1]   # 2nd
    movdqu xmm2, xmmword ptr [rbx + INST_ENTRY_XMM2]   # 3rd
    movdqu xmm3, xmmword ptr [rbx + INST_ENTRY_XMM3]   # 4th
    movdqu xmm4, xmmword ptr [rbx + INST_ENTRY_XMM4]   # 5th
    movdqu xmm5, xmmword ptr [rbx + INST_ENTRY_XMM5]   # 6th
    movdqu xmm6, xmmword ptr [rbx + INST_ENTRY_XMM6]   # 7th
    movdqu xmm7, xmmword ptr [rbx + INST_ENTRY_XMM7]   # 8th

    # Run the guest. A fault inside never comes back here: it lands in pylucet_fault_return.
    # A hostcall or an interruption leaves through restore_host and, once resumed, carries on
    # inside the guest, which eventually returns here with rbx intact (it is callee-saved).
    call qword ptr [rbx + INST_ENTRY_FUNC]    # the guest function's absolute address

    # The guest returned: keep every result register a wasm signature can use.
    mov [rbx + INST_RET_RAX], rax             # first integer result
    mov [rbx + INST_RET_RDX], rdx             # second integer result
    movdqu xmmword ptr [rbx + INST_RET_XMM0], xmm0  # first float result
    movdqu xmmword ptr [rbx + INST_RET_XMM1], xmm1  # second float result
    mov qword ptr [rbx + INST_ROOT], 0        # the call is over: release the instance
    mov rdi, rbx                              # restore_host wants the instance page in rdi
    mov eax, EXIT_RETURNED
    jmp restore_host

bad_entry:
    mov qword ptr [rbx + INST_ROOT], 0        # release the claim
    mov rdi, rbx
    mov eax, EXIT_BAD_ENTRY                   # the entry request was malformed
    jmp restore_host

busy_entry:
    mov eax, EXIT_BUSY                        # the host releases nothing: it never had it
    jmp restore_host

# --- resuming: rdi = instance page, host registers saved ------------------------------------------
resume_guest:
    mov rbx, [rdi + INST_GUEST_RBX]           # the guest's callee-saved registers, as it left them
    mov rbp, [rdi + INST_GUEST_RBP]
    mov r12, [rdi + INST_GUEST_R12]
    mov r13, [rdi + INST_GUEST_R13]
    mov r14, [rdi + INST_GUEST_R14]           # its vmctx
    mov r15, [rdi + INST_GUEST_R15]
    ldmxcsr dword ptr [rdi + INST_GUEST_MXCSR]  # its float environment
    mov rsp, [rdi + INST_GUEST_RSP]           # its stack: [rsp] = the return address of its call
    mov rax, [rdi + INST_RET_RAX]             # the call's result, if an integer ...
    movq xmm0, qword ptr [rdi + INST_RET_XMM0]  # ... or a float (whichever the type says)
    ret                                       # back into the guest, after its call

# --- pylucet_hostcall: called by compiled code through a host function's record ----------------
# (or, with r10 = an abi.Builtin, for an instruction the host carries out: Libcall.BUILTIN)
# In: r10 = the FUNCREF record (or the Builtin), r14 = the calling guest's vmctx, arguments as the calling convention
# places them, [rsp] = the return address into the guest. It uses no stack: the guest's own
# (whose last 32 KiB are reserved) only has to hold what the call instruction pushed.
pylucet_hostcall:
    mov r11, [r14 + VMCTX_INST_ROOT]          # r11 = the root instance page (the host context)
    mov [r11 + INST_HC_RDI], rdi              # the integer argument registers ...
    mov [r11 + INST_HC_RSI], rsi
    mov [r11 + INST_HC_RDX], rdx
    mov [r11 + INST_HC_RCX], rcx
    mov [r11 + INST_HC_R8], r8
    mov [r11 + INST_HC_R9], r9
    movdqu xmmword ptr [r11 + INST_HC_XMM0], xmm0   # ... and the float ones, whole
    movdqu xmmword ptr [r11 + INST_HC_XMM1], xmm1
    movdqu xmmword ptr [r11 + INST_HC_XMM2], xmm2
    movdqu xmmword ptr [r11 + INST_HC_XMM3], xmm3
    movdqu xmmword ptr [r11 + INST_HC_XMM4], xmm4
    movdqu xmmword ptr [r11 + INST_HC_XMM5], xmm5
    movdqu xmmword ptr [r11 + INST_HC_XMM6], xmm6
    movdqu xmmword ptr [r11 + INST_HC_XMM7], xmm7
    lea rax, [rsp + 8]                        # stack arguments start past the return address
    mov [r11 + INST_HC_STACK], rax
    mov [r11 + INST_HC_ENTRY], r10            # which host function (or builtin)
    mov [r11 + INST_HC_VMCTX], r14            # called from which instance
    mov eax, EXIT_HOSTCALL
    jmp leave_guest

# --- pylucet_interrupt: an interrupt poll faulted -------------------------------------------------
# Entered as if called from the instruction after the poll (trap.s pushes that return address and
# sends the thread here), at a point where no scratch register holds a live value. Live values
# are in the frame, the callee-saved registers (leave_guest keeps those) and the caller-saved
# registers of compiler/codegen/context.py's CALLER_SAVED_LOCAL_REGS and FLOAT_LOCAL_REGS: those
# wait on the guest's stack (its reservation has room), so the guest can be resumed at the poll.
# An f32 or f64 local takes the low 8 bytes of its xmm register.
pylucet_interrupt:
    push r8                                   # locals may live in r8 ...
    push r9                                   # ... r9
    push rsi                                  # ... rsi
    push rdi                                  # ... rdi
    sub rsp, 64                               # ... and xmm8..xmm14, 8 bytes each (64: rsp keeps
                                              # its alignment mod 16)
    movq [rsp], xmm8
    movq [rsp + 8], xmm9
    movq [rsp + 16], xmm10
    movq [rsp + 24], xmm11
    movq [rsp + 32], xmm12
    movq [rsp + 40], xmm13
    movq [rsp + 48], xmm14
    call interrupt_leave                      # leave for the host; a resume returns here
    movq xmm14, [rsp + 48]                    # those locals back
    movq xmm13, [rsp + 40]
    movq xmm12, [rsp + 32]
    movq xmm11, [rsp + 24]
    movq xmm10, [rsp + 16]
    movq xmm9, [rsp + 8]
    movq xmm8, [rsp]
    add rsp, 64
    pop rdi
    pop rsi
    pop r9
    pop r8
    ret                                       # on after the poll

interrupt_leave:
    mov r11, [r14 + VMCTX_INST_ROOT]          # r11 = the root instance page
    mov eax, EXIT_INTERRUPTED
    jmp leave_guest

# --- pylucet_call_guest: compiled code calls another instance's function ------------------------
# In: r10 = the callee's FUNCREF record {func = here, vmctx = the callee's, target = its code,
# index = its stack-argument words}, r14 = the caller's vmctx, arguments placed by the calling convention,
# [rsp] = the return address, stack arguments above it. The callee runs on this stack with r14 =
# its own vmctx; while it does, its root is the caller's root and its stack limit the caller's
# (the stack it really runs on). The stack arguments are copied below a small frame that keeps
# what must be put back; rax, rdx, xmm0 and xmm1 (the results) pass through untouched.
pylucet_call_guest:
    push r14                                  # the caller's vmctx            (rsp = 8 mod 16 at entry)
    push r12                                  # two callee-saved registers to work with
    push r13
    mov r12, r10                              # r12 = the record (the callee preserves r12)
    mov r13, [r12 + FUNCREF_VMCTX]       # r13 = the callee's vmctx (preserved as well)
    mov r11, [r14 + VMCTX_INST_ROOT]          # r11 = our root
    xor eax, eax                              # claim the callee: idle (0) becomes ours ...
    lock cmpxchg [r13 + VMCTX_INST_ROOT], r11
    je claimed
    cmp rax, r11                              # ... or it is already part of this very call
    jne callee_busy                           # (A calls B calls A): anything else is busy
claimed:
    push rax                                  # its root before (0, or ours when re-entered)
    push qword ptr [r13 + VMCTX_STACK_LIMIT]  # its stack limit before; 5 pushes: rsp 16-aligned
    mov rax, [r14 + VMCTX_STACK_LIMIT]        # it runs on our stack: our limit holds
    mov [r13 + VMCTX_STACK_LIMIT], rax
    mov rax, [r12 + FUNCREF_INDEX]       # rax = stack-argument words
    lea r10, [rax*8 + 15]                     # bytes of them, rounded up to 16
    and r10, -16
    sub rsp, r10                              # room for the copies, alignment kept
    lea r11, [rsp + r10 + 48]                 # r11 = the caller's first stack argument (past our
                                              # 5 pushes and the return address)
copy_args:
    test rax, rax                             # copied them all?
    jz call_callee
    dec rax                                   # last to first
    mov r10, [r11 + rax*8]
    mov [rsp + rax*8], r10
    jmp copy_args
call_callee:
    mov r14, r13                              # the callee's vmctx
    call qword ptr [r12 + FUNCREF_TARGET]  # run it: a fault or hostcall in it goes to the root
    mov r10, [r12 + FUNCREF_INDEX]       # drop the copied arguments again
    lea r10, [r10*8 + 15]
    and r10, -16
    add rsp, r10
    pop qword ptr [r13 + VMCTX_STACK_LIMIT]   # the callee's own stack limit ...
    pop qword ptr [r13 + VMCTX_INST_ROOT]     # ... and root, as they were
    pop r13
    pop r12
    pop r14                                   # our vmctx again
    ret

callee_busy:
    pop r13                                   # back to the state at the call ...
    pop r12
    pop r14
    mov r11, [r14 + VMCTX_INST_ROOT]          # ... and leave for the host, which ends the call
    mov eax, EXIT_BUSY

# --- leave_guest: r11 = instance page, eax = exit reason; [rsp] = return address into the guest --
leave_guest:
    mov [r11 + INST_GUEST_RBX], rbx           # the guest's callee-saved registers ...
    mov [r11 + INST_GUEST_RBP], rbp
    mov [r11 + INST_GUEST_R12], r12
    mov [r11 + INST_GUEST_R13], r13
    mov [r11 + INST_GUEST_R14], r14
    mov [r11 + INST_GUEST_R15], r15
    mov [r11 + INST_GUEST_RSP], rsp           # ... its stack, where resume will `ret` from ...
    stmxcsr dword ptr [r11 + INST_GUEST_MXCSR]  # ... and its float environment
    mov rdi, r11                              # restore_host wants the instance page in rdi
    jmp restore_host

# --- pylucet_fault_return: rdi = instance page ------------------------------------------------------
# Reached from the signal handler's sigreturn, not by a call. Nothing about the guest's registers
# or stack can be trusted here (the fault may have been a stack overflow), so the very first thing
# is to take rsp back from the instance page.
pylucet_fault_return:
    mov qword ptr [rdi + INST_ROOT], 0        # the call is over (the host tidies any callee)
    mov eax, EXIT_FAULTED                     # the guest faulted (see INST_FAULT_*)

# --- shared exit: rdi = instance page, eax = exit reason -------------------------------------------
restore_host:
    mov rsp, [rdi + INST_HOST_RSP]            # back on the host stack, at pylucet_enter's return address
    mov rbx, [rdi + INST_HOST_RBX]            # rbx
    mov rbp, [rdi + INST_HOST_RBP]            # rbp
    mov r12, [rdi + INST_HOST_R12]            # r12
    mov r13, [rdi + INST_HOST_R13]            # r13
    mov r14, [rdi + INST_HOST_R14]            # r14
    mov r15, [rdi + INST_HOST_R15]            # r15
    ldmxcsr dword ptr [rdi + INST_HOST_MXCSR] # the host's rounding mode and exception masks
    cld                                       # a faulting guest may have left DF set
    ret                                       # to the host's caller, with eax = exit reason
