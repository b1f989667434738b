# sigcheck.s -- is our fault handler still the installed one? For pylucet/runtime/signals.py.
#
# Something native (a C extension, a library's crash reporter) may install its own SIGSEGV
# handler after ours, and guest traps would then reach it instead of us. signals.check_installed
# asks the kernel before each guest run; doing it here, in one ctypes call with one argument,
# costs a few system calls and none of the per-call conversions of a glibc sigaction() binding.
# Python-level changes (signal.signal, faulthandler.enable) never get here: signals.py wraps them.

.globl pylucet_check_handlers

# --- int pylucet_check_handlers(u64 signals) ------------------------------------------------------
# For each signal number whose bit is set in `signals`, ask rt_sigaction for the current handler.
# Returns 0 when every one of them is pylucet_signal_handler, else the first signal number whose
# handler is something else, or -errno if the kernel refused a query.
pylucet_check_handlers:
    push rbx                                  # rbx = the signal numbers still to check
    sub rsp, KERNEL_SIGACTION_SIZE            # the old action lands here; rsp is 16-aligned
    mov rbx, rdi
next_signal:
    xor eax, eax                              # all checked: return 0
    test rbx, rbx
    jz done
    bsf rdi, rbx                              # arg 1: lowest signal number left
    btr rbx, rdi                              # ... and strike it off
    xor esi, esi                              # arg 2: no new action, only a query
    mov rdx, rsp                              # arg 3: the old action
    mov r10d, KERNEL_SIGSET_SIZE              # arg 4: sizeof(kernel sigset_t)
    mov eax, SYS_RT_SIGACTION
    syscall                                   # rdi is preserved by syscall (rcx, r11 are not)
    test rax, rax
    jnz done                                  # -errno
    mov rax, [rsp]                            # the handler installed now
    movabs rcx, pylucet_signal_handler
    cmp rax, rcx
    je next_signal                            # ours: the next one
    mov eax, edi                              # someone else's: say which signal
done:
    add rsp, KERNEL_SIGACTION_SIZE
    pop rbx
    ret
