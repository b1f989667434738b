# cpuid.s -- CPU feature detection for pylucet/runtime/cpu.py.
#
# A module compiled with, say, lzcnt or AVX must not be loaded on a CPU (or under an OS) that
# lacks it, and Python has no portable way to ask. These two tiny functions do.

.globl pylucet_cpuid
.globl pylucet_xgetbv

# --- void pylucet_cpuid(u32 leaf, u32 subleaf, u32 out[4]) -- out = eax, ebx, ecx, edx ---------------
pylucet_cpuid:
    push rbx                                  # cpuid writes rbx, which SysV says we must preserve
    mov r8, rdx                               # keep the output pointer: cpuid overwrites rdx
    mov eax, edi                              # leaf
    mov ecx, esi                              # subleaf (for the leaves that have them, e.g. 7)
    cpuid                                     # -> eax, ebx, ecx, edx
    mov [r8 + 0], eax                         # out[0] = eax
    mov [r8 + 4], ebx                         # out[1] = ebx
    mov [r8 + 8], ecx                         # out[2] = ecx
    mov [r8 + 12], edx                        # out[3] = edx
    pop rbx                                   # give rbx back
    ret

# --- u64 pylucet_xgetbv(u32 xcr) -- which register states the OS saves (XCR0 for xcr = 0) ------------
# Only call this when cpuid says OSXSAVE (leaf 1, ecx bit 27): otherwise xgetbv is #UD.
pylucet_xgetbv:
    mov ecx, edi                              # which extended control register
    xgetbv                                    # -> edx:eax
    shl rdx, 32                               # high half ...
    or rax, rdx                               # ... joined with the low half into rax
    ret
