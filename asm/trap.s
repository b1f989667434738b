# trap.s -- the signal handlers: a guest's SIGSEGV/SIGBUS/SIGFPE/SIGILL becomes a return, and a
# SIGINT that interrupts a guest makes it stop at its next interrupt check.
#
# void pylucet_signal_handler(int signo, siginfo_t *info, ucontext_t *uc)
#
# Installed by pylucet/runtime/signals.py with SA_SIGINFO | SA_ONSTACK, so it runs on the thread's
# alternate signal stack (the guest's own stack may be the thing that overflowed). Two cases:
#
#  * The faulting instruction is guest code (a range registered in the data page's code table,
#    which also holds libcalls.s) and the faulting context's r14 leads to a live instance page.
#    Record what happened in the instance page's INST_FAULT_* fields and edit the saved context
#    so that, when this handler returns, the kernel's sigreturn resumes the thread in
#    pylucet_fault_return (context.s) on the host stack instead of at the faulting instruction.
#
#  * Anything else is not ours: a bug in the host, a fault in Python itself. Pass it on to the
#    handler that was installed before us (under pytest: faulthandler's), as if we were not here.
#
# The handler must be async-signal-safe: it calls no libc, allocates nothing and only reads memory
# it has checked is readable. Layout numbers come as .equ lines from abi.py (INST_*), libc.py
# (UC_*, SIGINFO_*, SYS_*) and stubs.py (DATA_* for the data page, the address of
# pylucet_fault_return).

.globl pylucet_signal_handler
.globl pylucet_sigint_handler

pylucet_signal_handler:
    push rbx                                  # SysV callee-saved registers we use below ...
    push r12
    push r13
    push r14
    push r15                                  # ... 5 pushes + return address: rsp is 16-aligned again
    mov r12d, edi                             # r12 = signo
    mov r13, rsi                              # r13 = siginfo_t *
    mov r15, rdx                              # r15 = ucontext_t *
    call guest_page                           # rbx = the running guest's instance page, or 0
    test rbx, rbx
    jz chain                                  # -> not a guest fault
    # The page is ours (compiled code cannot write instance pages), so its root can be trusted:
    # the page holding the host context, the faulting one's own unless it was called by another
    # instance. A page with no root is not running at all.
    mov rax, [r13 + SIGINFO_ADDR]             # the address that faulted
    mov rcx, rbx                              # the guest's poll page is just below its page:
    sub rcx, PAGE_SIZE                        # [rbx - PAGE_SIZE, rbx)
    cmp rax, rcx
    jb not_a_poll
    cmp rax, rbx
    jb poll_fault                             # -> an interruption, not a trap
not_a_poll:
    mov rbx, [rbx + INST_ROOT]
    test rbx, rbx
    jz chain
    jmp record_fault

    # An interrupt poll read the revoked poll page: make the guest call pylucet_interrupt from
    # the instruction after the poll, as compiled code would, and let sigreturn go there.
poll_fault:
    mov rcx, [r15 + UC_RSP]                   # the guest's stack (its reservation has room)
    sub rcx, 8
    mov [r15 + UC_RSP], rcx
    mov rax, [r15 + UC_RIP]                   # the poll ...
    add rax, POLL_INSN_SIZE                   # ... and the instruction after it
    mov [rcx], rax                            # is the return address
    movabs rax, pylucet_interrupt
    mov [r15 + UC_RIP], rax
    jmp handler_done

# --- void pylucet_sigint_handler(int signo, siginfo_t *info, ucontext_t *uc) ---------------------
# Ctrl-C while a guest runs: Python's own SIGINT handler only notes the signal for the next
# bytecode, which never comes while compiled code spins. So if the interrupted code is a guest's,
# revoke its poll page (it leaves at its next poll, and the host then raises KeyboardInterrupt),
# and in every case pass the signal on to the previous handler (Python's).
pylucet_sigint_handler:
    push rbx
    push r12
    push r13
    push r14
    push r15
    mov r12d, edi                             # r12 = signo
    mov r13, rsi                              # r13 = siginfo_t *
    mov r15, rdx                              # r15 = ucontext_t *
    call guest_page                           # rbx = the running guest's instance page, or 0
    test rbx, rbx
    jz chain                                  # not in guest code: Python's handler is enough
    mov rdi, rbx                              # revoke its poll page: mprotect(page - PAGE_SIZE,
    sub rdi, PAGE_SIZE                        #   PAGE_SIZE, PROT_NONE), async-signal-safe
    mov esi, PAGE_SIZE
    xor edx, edx                              # PROT_NONE
    mov eax, SYS_MPROTECT
    syscall
    jmp chain

# --- guest_page: r15 = ucontext_t *; returns rbx = instance page of the interrupted guest, or 0 ---
# The interrupted code counts as a guest's when its RIP lies in registered guest code (the data
# page's code table, which also holds libcalls.s) and its r14 leads to a live instance page.
# Clobbers rax, rcx, rdx, rsi, rdi, r8-r11.
guest_page:
    # --- 1. Is the RIP inside registered guest code? ----------------------------------------------
    mov rax, [r15 + UC_RIP]                   # rax = interrupted instruction address
    movabs rbx, DATA_PAGE                     # rbx = our data page (absolute address)
    mov rcx, [rbx + DATA_RANGE_COUNT]         # rcx = entries in use in the range table
    lea rdx, [rbx + DATA_RANGES]              # rdx = first entry: {start, end}
scan_ranges:
    test rcx, rcx                             # no entries left?
    jz no_guest                               # -> not guest code
    cmp rax, [rdx]                            # rip < start?
    jb next_range                             # -> not this one
    cmp rax, [rdx + 8]                        # rip < end? (a free entry has end = 0: never matches)
    jb in_guest_code                          # -> found
next_range:
    add rdx, 16                               # next entry
    dec rcx
    jmp scan_ranges

    # --- 2. Does r14 lead to a live instance page? ------------------------------------------------
    # Compiled code keeps vmctx in r14, so the instance page is r14 - INSTANCE_PAGE_SIZE. A bug
    # could leave anything in r14, and dereferencing a bad pointer here would kill the process
    # (the signal is blocked while we run), so read the magic word with process_vm_readv on our
    # own pid: the kernel copies it for us, or returns -EFAULT if the page is not readable.
in_guest_code:
    mov rbx, [r15 + UC_R14]                   # the interrupted context's r14 = vmctx (we hope)
    sub rbx, INSTANCE_PAGE_SIZE               # rbx = candidate instance page
    sub rsp, 40                               # scratch: 8-byte buffer, local iovec, remote iovec
    mov qword ptr [rsp], 0                    # buffer = 0 (never the magic)
    mov [rsp + 8], rsp                        # local iovec base = &buffer
    mov qword ptr [rsp + 16], 8               # local iovec length = 8
    lea rax, [rbx + INST_MAGIC]               # remote iovec base = &page->magic
    mov [rsp + 24], rax
    mov qword ptr [rsp + 32], 8               # remote iovec length = 8
    mov eax, SYS_GETPID                       # our own pid, for process_vm_readv
    syscall
    mov edi, eax                              # arg 1: pid
    lea rsi, [rsp + 8]                        # arg 2: local iovec
    mov edx, 1                                # arg 3: one local iovec
    lea r10, [rsp + 24]                       # arg 4: remote iovec (4th syscall arg is r10)
    mov r8d, 1                                # arg 5: one remote iovec
    xor r9d, r9d                              # arg 6: flags = 0
    mov eax, SYS_PROCESS_VM_READV
    syscall                                   # rax = bytes copied, or -errno
    cmp rax, 8                                # copied the whole word?
    je probed                                 # -> compare it
    cmp rax, NEG_EFAULT                       # -EFAULT: the address is not readable ...
    je probe_failed                           # ... so r14 is not a vmctx
    mov rax, [rbx + INST_MAGIC]               # the syscall is unavailable (seccomp): trust r14
    mov [rsp], rax                            # and read the word directly
probed:
    mov rax, [rsp]                            # the word at page->magic
    add rsp, 40                               # drop the scratch area
    movabs rcx, INSTANCE_MAGIC                # "pylucet\0"
    cmp rax, rcx                              # a live instance page?
    jne no_guest                              # -> no: not a guest after all
    ret                                       # rbx = the page
probe_failed:
    add rsp, 40                               # drop the scratch area
no_guest:
    xor ebx, ebx
    ret

    # --- 3. Record the fault and send the thread to pylucet_fault_return ---------------------------
record_fault:
    mov [rbx + INST_FAULT_SIGNO], r12         # which signal
    movsxd rax, dword ptr [r13 + SIGINFO_CODE]  # si_code (an int), e.g. SEGV_ACCERR, FPE_INTDIV
    mov [rbx + INST_FAULT_CODE], rax
    mov rax, [r13 + SIGINFO_ADDR]             # si_addr: the bad address (or the instruction)
    mov [rbx + INST_FAULT_ADDR], rax
    mov rax, [r15 + UC_RIP]                   # where the guest was
    mov [rbx + INST_FAULT_RIP], rax
    mov rax, [r15 + UC_RSP]                   # and its stack pointer
    mov [rbx + INST_FAULT_RSP], rax
    mov rax, [r15 + UC_R14]                   # and which instance's code it was
    mov [rbx + INST_FAULT_VMCTX], rax
    movabs rax, pylucet_fault_return          # resume there ...
    mov [r15 + UC_RIP], rax
    mov [r15 + UC_RDI], rbx                   # ... with rdi = instance page
    mov rax, [rbx + INST_HOST_RSP]            # and already on the host stack, so nothing runs
    mov [r15 + UC_RSP], rax                   # on a stack that may have overflowed
    jmp handler_done                          # sigreturn does the rest (and restores the mask)

    # --- 4. Not ours: chain to the previous handler ----------------------------------------------
    # The data page holds, for each signal number, the handler that was installed before ours
    # (DATA_PREV_HANDLER + (signo << DATA_PREV_HANDLER_SHIFT): the address, then its sa_flags).
chain:
    mov eax, r12d                             # signo
    and eax, DATA_SIGNALS - 1                 # stay inside the table whatever the kernel says
    shl eax, DATA_PREV_HANDLER_SHIFT          # 16 bytes per entry
    movabs rbx, DATA_PAGE                     # data page
    mov rax, [rbx + rax + DATA_PREV_HANDLER]  # previous handler
    cmp rax, SIG_IGN                          # SIG_DFL (0) or SIG_IGN (1)?
    jbe chain_default                         # -> let the kernel's default action happen
    # A handler. SysV makes the SA_SIGINFO form f(signo, info, uc) and the plain form f(signo)
    # the same call: the plain one simply ignores rsi and rdx. So one call serves both.
    mov edi, r12d                             # signo
    mov rsi, r13                              # siginfo_t *
    mov rdx, r15                              # ucontext_t * (the handler may edit it, as we do)
    call rax                                  # rsp is 16-aligned here, as SysV wants
    jmp handler_done

    # SIG_DFL, or SIG_IGN (which the kernel does not honour for a fault anyway): put the default
    # action back with a raw rt_sigaction and return. The faulting instruction runs again, faults
    # again, and this time the kernel kills the process exactly as it would have without us.
chain_default:
    sub rsp, KERNEL_SIGACTION_SIZE            # a kernel struct sigaction on the stack ...
    xor eax, eax
    mov [rsp + 0], rax                        # ... handler = SIG_DFL
    mov [rsp + 8], rax                        # ... flags = 0
    mov [rsp + 16], rax                       # ... restorer = none
    mov [rsp + 24], rax                       # ... mask = empty
    mov edi, r12d                             # arg 1: signo
    mov rsi, rsp                              # arg 2: new action
    xor edx, edx                              # arg 3: old action not wanted
    mov r10d, KERNEL_SIGSET_SIZE              # arg 4: sizeof(kernel sigset_t)
    mov eax, SYS_RT_SIGACTION
    syscall
    add rsp, KERNEL_SIGACTION_SIZE

handler_done:
    pop r15                                   # restore what we saved, in reverse order
    pop r14
    pop r13
    pop r12
    pop rbx
    ret                                       # into the kernel's restorer: rt_sigreturn
