# libcalls.s -- runtime functions compiled guest code calls through the vmctx libcall array.
#
# Convention (pylucet/module/abi.py, Libcall): SysV arguments and result, r14 = vmctx on entry and
# preserved; the caller treats every SysV caller-saved register as clobbered. These run on the
# guest's stack with the guest's r14, so they use no stack and call nothing but the kernel.

.globl pylucet_memory_grow
.globl pylucet_memory_grow_shared

# --- u32 memory_grow(u32 delta_pages) -> old size in pages, or 0xFFFFFFFF ---------------------------
# Pages past the current size are already reserved, inaccessible and zero (the region zeroes a
# slot on teardown), so growing is one mprotect to make them read-write: no copy, no memset.
pylucet_memory_grow:
    mov eax, edi                              # delta in wasm pages, zero-extended to 64 bits
    shl rax, 16                               # delta in bytes (WASM_PAGE_SIZE = 1 << 16); < 2^48, no overflow
    mov r8, [r14 + VMCTX_MEMORY_SIZE]         # r8 = old size in bytes (syscall leaves r8 alone)
    lea r9, [r8 + rax]                        # r9 = new size in bytes
    cmp r9, [r14 + VMCTX_MEMORY_MAX]          # beyond what this instance may reach?
    ja grow_fail                              # -> failure, nothing changed
    movabs rcx, WASM_PAGE_SIZE * WASM_MAX_PAGES   # 4 GiB, the most a 32-bit memory can address
    cmp r9, rcx                               # beyond what a page count in a u32 can say?
    ja grow_fail                              # -> failure
    test rax, rax                             # growing by 0 pages only asks the size ...
    jz grow_done                              # ... so skip the syscall

    lea rdi, [r14 + r8]                       # mprotect arg 1: first new byte (vmctx + old size)
    mov rsi, rax                              # mprotect arg 2: length = delta bytes
    mov edx, PROT_READ | PROT_WRITE           # mprotect arg 3: read-write
    mov eax, SYS_MPROTECT                     # raw system call: no libc, no errno, no stack
    syscall                                   # clobbers rax (result), rcx and r11
    test rax, rax                             # 0 on success, -errno on failure
    jnz grow_fail                             # e.g. ENOMEM: report failure, size unchanged
    mov [r14 + VMCTX_MEMORY_SIZE], r9         # publish the new size to compiled code

grow_done:
    mov rax, r8                               # old size in bytes ...
    shr rax, 16                               # ... in wasm pages: the result
    ret

grow_fail:
    mov eax, 0xFFFFFFFF                       # -1 as a u32: memory.grow's failure value
    ret

# --- u32 memory_grow_shared(u32 delta_pages): memory.grow of a shared memory ----------------------
# A memory that other instances or the host also map (pylucet/runtime/memories.py) must grow in
# every mapping at once, under the lock that its Python side holds, so the host does it: this
# leaves through the hostcall stub as a builtin (abi.Builtin.MEMORY_GROW), and the host's result
# comes back in eax. The instance's libcall slot points here instead of at
# pylucet_memory_grow while its memory is shared.
pylucet_memory_grow_shared:
    test edi, edi                             # growing by 0 pages only asks the size ...
    jz shared_size                            # ... which needs no trip to the host
    mov r10d, BUILTIN_MEMORY_GROW             # r10 = which builtin (abi.Builtin), edi = the delta
    jmp qword ptr [r14 + LIBCALL_BUILTIN]     # pylucet_hostcall; returns to our caller

shared_size:
    mov rax, [r14 + VMCTX_MEMORY_SIZE]        # the size in bytes, as the host last published it
    shr rax, 16                               # ... in wasm pages: the result
    ret
