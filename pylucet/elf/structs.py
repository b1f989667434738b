"""ELF64 little-endian constants and record layouts: the one place both writer and reader use.

References: the System V gABI ("ELF-64 Object File Format", chapter 4, "Object Files", and
chapter 5, "Program Loading and Dynamic Linking"), the x86-64 psABI (section 4, "Object Files",
for EM_X86_64 and the ELFOSABI/page size conventions), and the GNU extensions glibc reads
(PT_GNU_STACK, DT_GNU_HASH, NT_GNU_BUILD_ID) as documented in binutils' ``include/elf/common.h``.

Only what pylucet's artifacts use is here. Each record is a :class:`Record`: a named tuple type
and a ``struct.Struct`` built from one ordered field list, so a layout is written once and
packing and unpacking cannot disagree.
"""

from __future__ import annotations

import enum
import struct
from collections import namedtuple
from typing import Any, Sequence, Tuple

# --- e_ident (gABI 4, "ELF Identification") -------------------------------------------------------

ELFMAG = b"\x7fELF"
ELFCLASS64 = 2
ELFDATA2LSB = 1
EV_CURRENT = 1
ELFOSABI_SYSV = 0
EI_NIDENT = 16


class ET(enum.IntEnum):
    NONE = 0
    REL = 1
    EXEC = 2
    DYN = 3
    CORE = 4


EM_X86_64 = 62


class PT(enum.IntEnum):
    """Segment types (gABI 5, "Program Header"; GNU_STACK from the GNU extensions)."""

    NULL = 0
    LOAD = 1
    DYNAMIC = 2
    INTERP = 3
    NOTE = 4
    SHLIB = 5
    PHDR = 6
    TLS = 7
    GNU_EH_FRAME = 0x6474E550
    GNU_STACK = 0x6474E551
    GNU_RELRO = 0x6474E552
    GNU_PROPERTY = 0x6474E553


class PF(enum.IntFlag):
    X = 1
    W = 2
    R = 4


class SHT(enum.IntEnum):
    """Section types (gABI 4, "Sections"; GNU_HASH from the GNU extensions)."""

    NULL = 0
    PROGBITS = 1
    SYMTAB = 2
    STRTAB = 3
    RELA = 4
    HASH = 5
    DYNAMIC = 6
    NOTE = 7
    NOBITS = 8
    REL = 9
    DYNSYM = 11
    GNU_HASH = 0x6FFFFFF6


class SHF(enum.IntFlag):
    WRITE = 0x1
    ALLOC = 0x2
    EXECINSTR = 0x4
    MERGE = 0x10
    STRINGS = 0x20
    INFO_LINK = 0x40


SHN_UNDEF = 0
SHN_ABS = 0xFFF1


class STB(enum.IntEnum):
    LOCAL = 0
    GLOBAL = 1
    WEAK = 2


class STT(enum.IntEnum):
    NOTYPE = 0
    OBJECT = 1
    FUNC = 2
    SECTION = 3
    FILE = 4


STV_DEFAULT = 0


def st_info(bind: int, type_: int) -> int:
    """gABI 4, "Symbol Table": ``ELF64_ST_INFO(b, t) = (b << 4) + (t & 0xf)``."""
    return (bind << 4) | (type_ & 0xF)


class DT(enum.IntEnum):
    """Dynamic array tags (gABI 5, "Dynamic Section"; GNU_HASH from the GNU extensions)."""

    NULL = 0
    NEEDED = 1
    HASH = 4
    STRTAB = 5
    SYMTAB = 6
    STRSZ = 10
    SYMENT = 11
    SONAME = 14
    FLAGS = 30
    GNU_HASH = 0x6FFFFEF5
    FLAGS_1 = 0x6FFFFFFB


NT_GNU_BUILD_ID = 3

PAGE_SIZE = 0x1000
"""x86-64 psABI 5.1 ("Program Loading"): segments are page aligned with 4 KiB pages; a larger
p_align (ld uses 2 MiB by default in old binutils) would only waste address space here."""


# --- Records --------------------------------------------------------------------------------------

class Record:
    """One fixed-size ELF record: a struct format and a named tuple with the gABI field names."""

    def __init__(self, name: str, fields: Sequence[Tuple[str, str]]):
        self.struct = struct.Struct("<" + "".join(fmt for _, fmt in fields))
        self.type = namedtuple(name, [n for n, _ in fields])  # type: ignore[misc]
        self.size = self.struct.size

    def pack(self, *args: Any, **kwargs: Any) -> bytes:
        return self.struct.pack(*self.type(*args, **kwargs))

    def unpack_from(self, buf: Any, offset: int = 0) -> Any:
        return self.type._make(self.struct.unpack_from(buf, offset))

    def iter_unpack(self, buf: Any) -> Any:
        return map(self.type._make, self.struct.iter_unpack(buf))


# gABI 4, "ELF Header"
Ehdr = Record("Elf64_Ehdr", [
    ("e_ident", "16s"), ("e_type", "H"), ("e_machine", "H"), ("e_version", "I"),
    ("e_entry", "Q"), ("e_phoff", "Q"), ("e_shoff", "Q"), ("e_flags", "I"),
    ("e_ehsize", "H"), ("e_phentsize", "H"), ("e_phnum", "H"), ("e_shentsize", "H"),
    ("e_shnum", "H"), ("e_shstrndx", "H"),
])

# gABI 5, "Program Header"
Phdr = Record("Elf64_Phdr", [
    ("p_type", "I"), ("p_flags", "I"), ("p_offset", "Q"), ("p_vaddr", "Q"),
    ("p_paddr", "Q"), ("p_filesz", "Q"), ("p_memsz", "Q"), ("p_align", "Q"),
])

# gABI 4, "Sections"
Shdr = Record("Elf64_Shdr", [
    ("sh_name", "I"), ("sh_type", "I"), ("sh_flags", "Q"), ("sh_addr", "Q"),
    ("sh_offset", "Q"), ("sh_size", "Q"), ("sh_link", "I"), ("sh_info", "I"),
    ("sh_addralign", "Q"), ("sh_entsize", "Q"),
])

# gABI 4, "Symbol Table"
Sym = Record("Elf64_Sym", [
    ("st_name", "I"), ("st_info", "B"), ("st_other", "B"), ("st_shndx", "H"),
    ("st_value", "Q"), ("st_size", "Q"),
])

# gABI 5, "Dynamic Section"
Dyn = Record("Elf64_Dyn", [("d_tag", "q"), ("d_val", "Q")])

# gABI 4, "Note Section": name and descriptor follow, each padded to 4 bytes
Nhdr = Record("Elf64_Nhdr", [("n_namesz", "I"), ("n_descsz", "I"), ("n_type", "I")])


def elf_ident() -> bytes:
    """e_ident for a 64-bit little-endian System V object; the padding bytes must be zero
    (glibc's ``open_verify`` compares the whole array)."""
    return (ELFMAG + bytes([ELFCLASS64, ELFDATA2LSB, EV_CURRENT, ELFOSABI_SYSV, 0])).ljust(
        EI_NIDENT, b"\0")


# --- Hash functions (gABI 5, "Hash Table"; GNU hash as implemented by glibc's dl-lookup.c) --------

def sysv_hash(name: bytes) -> int:
    h = 0
    for c in name:
        h = ((h << 4) + c) & 0xFFFFFFFF
        g = h & 0xF0000000
        if g:
            h ^= g >> 24
        h &= ~g
    return h


def gnu_hash(name: bytes) -> int:
    h = 5381
    for c in name:
        h = (h * 33 + c) & 0xFFFFFFFF
    return h
