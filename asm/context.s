# context.s -- switching between the host (Python, through ctypes) and a guest.
#
# The host calls pylucet_enter(instance page) as an ordinary C function. It saves what SysV says
# a callee must preserve, moves onto the guest's own stack inside the sandbox slot, calls the
# guest function with the arguments the runtime stored in the instance page, stores the results
# back there and returns 0. If the guest faults instead, the signal handler (trap.s) makes the
# thread resume at pylucet_fault_return, which restores the same saved host state and returns 1
# from pylucet_enter's frame: to Python a trap looks like an ordinary return.
#
# Offsets (INST_*, INSTANCE_PAGE_SIZE, ...) come from pylucet/module/abi.py as .equ lines that
# pylucet/runtime/stubs.py prepends; this file holds no layout numbers of its own.

.globl pylucet_enter
.globl pylucet_fault_return

# --- int pylucet_enter(u64 instance_page) -----------------------------------------------------------
pylucet_enter:
    # Save the host's callee-saved registers: the guest may clobber any of them on a fault.
    mov [rdi + INST_HOST_RBX], rbx            # rbx
    mov [rdi + INST_HOST_RBP], rbp            # rbp
    mov [rdi + INST_HOST_R12], r12            # r12
    mov [rdi + INST_HOST_R13], r13            # r13
    mov [rdi + INST_HOST_R14], r14            # r14 (about to become vmctx)
    mov [rdi + INST_HOST_R15], r15            # r15
    stmxcsr dword ptr [rdi + INST_HOST_MXCSR] # SSE rounding/exception state, restored on the way out
    mov [rdi + INST_HOST_RSP], rsp            # rsp points at our return address into ctypes

    # Enter the sandbox's world: r14 = vmctx (the heap base, just past the instance page) is the
    # one register compiled code relies on; rbx keeps the instance page for after the call.
    lea r14, [rdi + INSTANCE_PAGE_SIZE]       # vmctx = instance page + INSTANCE_PAGE_SIZE
    mov rbx, rdi                              # callee-saved, so the guest hands it back

    # Refuse a stack argument count that could run off the guest stack.
    mov rcx, [rbx + INST_ENTRY_NSTACK]        # number of 8-byte stack arguments
    cmp rcx, ENTRY_MAX_STACK_ARGS             # unsigned compare: huge values are rejected too
    ja bad_entry                              # -> status 2 without touching the guest

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

    # Load the register arguments: integers in rdi, rsi, rdx, rcx, r8, r9; floats in xmm0..xmm7.
    mov rdi, [rbx + INST_ENTRY_GPR + 0]       # 1st integer argument
    mov rsi, [rbx + INST_ENTRY_GPR + 8]       # 2nd
    mov rdx, [rbx + INST_ENTRY_GPR + 16]      # 3rd
    mov rcx, [rbx + INST_ENTRY_GPR + 24]      # 4th
    mov r8, [rbx + INST_ENTRY_GPR + 32]       # 5th
    mov r9, [rbx + INST_ENTRY_GPR + 40]       # 6th
    movq xmm0, qword ptr [rbx + INST_ENTRY_XMM + 0]    # 1st float argument (low 64 bits)
    movq xmm1, qword ptr [rbx + INST_ENTRY_XMM + 8]    # 2nd
    movq xmm2, qword ptr [rbx + INST_ENTRY_XMM + 16]   # 3rd
    movq xmm3, qword ptr [rbx + INST_ENTRY_XMM + 24]   # 4th
    movq xmm4, qword ptr [rbx + INST_ENTRY_XMM + 32]   # 5th
    movq xmm5, qword ptr [rbx + INST_ENTRY_XMM + 40]   # 6th
    movq xmm6, qword ptr [rbx + INST_ENTRY_XMM + 48]   # 7th
    movq xmm7, qword ptr [rbx + INST_ENTRY_XMM + 56]   # 8th

    # Run the guest. A fault inside never comes back here: it lands in pylucet_fault_return.
    call qword ptr [rbx + INST_ENTRY_FUNC]    # the guest function's absolute address

    # The guest returned: keep every result register a wasm signature can use.
    mov [rbx + INST_RET_RAX], rax             # first integer result
    mov [rbx + INST_RET_RDX], rdx             # second integer result
    movq qword ptr [rbx + INST_RET_XMM0], xmm0  # first float result
    movq qword ptr [rbx + INST_RET_XMM1], xmm1  # second float result
    mov rdi, rbx                              # restore_host wants the instance page in rdi
    xor eax, eax                              # status 0: returned normally
    jmp restore_host

bad_entry:
    mov eax, 2                                # status 2: the entry request was malformed
    jmp restore_host

# --- pylucet_fault_return: rdi = instance page ------------------------------------------------------
# Reached from the signal handler's sigreturn, not by a call. Nothing about the guest's registers
# or stack can be trusted here (the fault may have been a stack overflow), so the very first thing
# is to take rsp back from the instance page.
pylucet_fault_return:
    mov eax, 1                                # status 1: the guest faulted (see INST_FAULT_*)

# --- shared exit: rdi = instance page, eax = status -------------------------------------------------
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
    ret                                       # to pylucet_enter's caller, with eax = status
