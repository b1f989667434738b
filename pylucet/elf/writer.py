"""Write a compiled module as an ELF64 x86-64 shared object that ``dlopen`` accepts as is.

There is no linker in the loop, so this file does a linker's job for the one shape of object
pylucet needs: position-independent code that refers to nothing outside itself (every runtime
address arrives through vmctx), plus read-only module data. Hence no relocations, no PLT/GOT,
no DT_NEEDED: the dynamic loader maps the segments, finds the symbol tables and is done.

File and memory layout (file offset == virtual address throughout, so every segment trivially
satisfies ``p_offset % p_align == p_vaddr % p_align``, gABI 5 "Program Header")::

    0x0      ELF header, program headers                      \\
             .note.gnu.build-id  .hash  .gnu.hash  .dynsym     |  PT_LOAD R
             .dynstr                                           |
             .pylucet = [ArtifactHeader | blob]   (blob starts page aligned)  /
    page     .text                                            PT_LOAD R X
    page     .dynamic                                         PT_LOAD R W, PT_DYNAMIC
             .symtab  .strtab  .shstrtab  section headers     (not loaded)

PT_GNU_STACK without PF_X says the object does not need an executable stack: without it glibc
assumes it does and either makes every thread stack executable or refuses the ``dlopen``.
``.dynamic`` is writable because older glibc relocates its d_ptr entries in place.

Both ``.hash`` (gABI 5, "Hash Table") and ``.gnu.hash`` are emitted: glibc's ``dlsym`` needs one
of them and tools differ in which they prefer. Every guest function is a sized, global STT_FUNC
in both ``.dynsym`` (for ``dlsym``) and ``.symtab`` (for gdb, perf and ``objdump -d``, which
label code from the static table).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

from ..module.abi import MODULE_SYMBOL
from ..module.serialize import HEADER_SIZE, ArtifactHeader, dumps, pack_header
from ..module.spec import ModuleData
from .structs import (DT, EM_X86_64, ET, EV_CURRENT, NT_GNU_BUILD_ID, PAGE_SIZE, PF, PT, SHF,
                      SHN_UNDEF, SHT, STB, STT, STV_DEFAULT, Dyn, Ehdr, Nhdr, Phdr, Shdr, Sym,
                      elf_ident, gnu_hash, st_info, sysv_hash)

FunctionSymbol = Tuple[str, int, int]
"""(symbol name, offset in .text, size)"""


def write_shared_object(text: bytes, functions: Sequence[FunctionSymbol],
                        module_data: ModuleData, soname: str = "module.so") -> bytes:
    """The bytes of a shared object holding ``text`` and ``module_data``.

    ``functions`` become sized STT_FUNC symbols at their offsets in ``.text``; the module data
    is serialised behind the exported ``pylucet_module`` symbol (see ``module.serialize``).
    """
    return SharedObjectBuilder(text, functions, dumps(module_data), soname).build()


def _align(n: int, to: int) -> int:
    return (n + to - 1) & -to


@dataclass
class _Section:
    name: str
    type: int
    flags: int = 0
    align: int = 1
    entsize: int = 0
    link: str = ""          # name of the linked section
    info: int = 0
    size: int = 0
    data: bytes = b""
    addr: int = 0           # == file offset for SHF_ALLOC sections
    offset: int = 0
    index: int = 0
    name_index: int = 0     # in .shstrtab


@dataclass
class _Symbol:
    name: str
    type: int
    section: str
    offset: int             # within its section; st_value is the section's address + this
    size: int
    bind: int = STB.GLOBAL


@dataclass
class _StringTable:
    """An ELF string table (gABI 4, "String Table"): index 0 is the empty string."""

    data: bytearray = field(default_factory=lambda: bytearray(b"\0"))
    index: Dict[str, int] = field(default_factory=dict)

    def add(self, s: str) -> int:
        if not s:
            return 0
        i = self.index.get(s)
        if i is None:
            i = self.index[s] = len(self.data)
            self.data += s.encode() + b"\0"
        return i


class SharedObjectBuilder:
    """Lays out and encodes one artifact. Sizes are fixed before addresses, addresses before
    contents, so the layout is computed in a single pass."""

    def __init__(self, text: bytes, functions: Sequence[FunctionSymbol], blob: bytes,
                 soname: str = "module.so"):
        for name, offset, size in functions:
            if offset < 0 or size < 0 or offset + size > len(text):
                raise ValueError(f"function {name} [{offset:#x}, +{size:#x}) lies outside "
                                 f".text ({len(text):#x} bytes)")
        self.text = text or b"\xcc"   # an empty PT_LOAD confuses tools; one int3 is harmless
        self.text_size = len(text)
        self.blob = blob
        self.soname = soname
        self.symbols = [_Symbol(MODULE_SYMBOL, STT.OBJECT, ".pylucet", 0, HEADER_SIZE + len(blob))]
        self.symbols += [_Symbol(name, STT.FUNC, ".text", offset, size)
                         for name, offset, size in functions]

    # --- the pieces -------------------------------------------------------------------------------

    def _dynsym_order(self, nbuckets: int) -> List[_Symbol]:
        """.gnu.hash requires the hashed dynamic symbols sorted by bucket."""
        return sorted(self.symbols, key=lambda s: gnu_hash(s.name.encode()) % nbuckets)

    def _sysv_hash(self, names: List[bytes]) -> bytes:
        """gABI 5 "Hash Table": nbucket, nchain, bucket[], chain[]; symbol 0 is the null one."""
        nchain = len(names) + 1
        nbucket = max(1, nchain // 2)
        bucket = [0] * nbucket
        chain = [0] * nchain
        for i, name in enumerate(names, start=1):
            b = sysv_hash(name) % nbucket
            chain[i] = bucket[b]
            bucket[b] = i
        return _u32s([nbucket, nchain, *bucket, *chain])

    @staticmethod
    def _gnu_hash(names: List[bytes], nbuckets: int) -> bytes:
        """The GNU hash table as glibc's ``_dl_setup_hash``/``do_lookup_x`` read it: header
        (nbuckets, symoffset, bloom_size, bloom_shift), 64-bit bloom words, buckets, then one
        chain word per hashed symbol whose low bit marks the end of its bucket's run.
        ``names`` must already be in bucket order, starting at dynsym index 1."""
        symoffset, shift = 1, 6
        bloom_size = 1 << max(0, (len(names) // 32).bit_length())   # ~1 word per 32 symbols
        bloom = [0] * bloom_size
        buckets = [0] * nbuckets
        hashes = [gnu_hash(n) for n in names]
        chain = []
        for i, h in enumerate(hashes):
            bloom[(h // 64) % bloom_size] |= (1 << (h % 64)) | (1 << ((h >> shift) % 64))
            b = h % nbuckets
            if buckets[b] == 0:
                buckets[b] = i + symoffset
            last = i + 1 == len(hashes) or hashes[i + 1] % nbuckets != b
            chain.append((h & ~1) | int(last))
        return (_u32s([nbuckets, symoffset, bloom_size, shift])
                + b"".join(w.to_bytes(8, "little") for w in bloom)
                + _u32s(buckets) + _u32s(chain))

    def _build_id(self) -> bytes:
        """NT_GNU_BUILD_ID over everything that defines the artifact, so perf and gdb can tell
        two builds apart (gABI 4 "Note Section" layout; 20 bytes like ld's sha1 style)."""
        h = hashlib.sha1()
        h.update(self.text)
        h.update(self.blob)
        for s in self.symbols:
            h.update(f"{s.name}\0{s.offset}\0{s.size}\0".encode())
        desc = h.digest()
        name = b"GNU\0"
        return Nhdr.pack(len(name), len(desc), NT_GNU_BUILD_ID) + name + desc

    # --- layout and encoding ----------------------------------------------------------------------

    def build(self) -> bytes:
        nbuckets = max(1, len(self.symbols) // 4)
        dynsyms = self._dynsym_order(nbuckets)
        dynstr = _StringTable()
        soname_index = dynstr.add(self.soname)
        for sym in dynsyms:
            dynstr.add(sym.name)
        strtab = _StringTable()
        for sym in self.symbols:
            strtab.add(sym.name)

        sections = self._sections(dynsyms, nbuckets, dynstr, strtab)
        sec = {s.name: s for s in sections}
        shoff = _place(sections, Ehdr.size + _PHNUM * Phdr.size)

        # Contents that depend on addresses.
        pylucet, text = sec[".pylucet"], sec[".text"]
        header = ArtifactHeader(blob_size=len(self.blob), self_vaddr=pylucet.addr,
                                text_vaddr=text.addr, text_size=self.text_size)
        pylucet.data = pack_header(header) + self.blob

        def sym_entry(sym: _Symbol, strings: _StringTable) -> bytes:
            where = sec[sym.section]
            return Sym.pack(strings.index[sym.name], st_info(sym.bind, sym.type), STV_DEFAULT,
                            where.index, where.addr + sym.offset, sym.size)

        null_sym = Sym.pack(0, 0, 0, SHN_UNDEF, 0, 0)
        sec[".dynsym"].data = null_sym + b"".join(sym_entry(s, dynstr) for s in dynsyms)
        sec[".symtab"].data = null_sym + b"".join(sym_entry(s, strtab) for s in self.symbols)
        dynamic = {
            DT.SONAME: soname_index, DT.HASH: sec[".hash"].addr,
            DT.GNU_HASH: sec[".gnu.hash"].addr, DT.STRTAB: sec[".dynstr"].addr,
            DT.SYMTAB: sec[".dynsym"].addr, DT.STRSZ: sec[".dynstr"].size, DT.SYMENT: Sym.size,
            DT.NULL: 0,
        }
        assert list(dynamic) == _DYNAMIC_TAGS
        sec[".dynamic"].data = b"".join(Dyn.pack(t, v) for t, v in dynamic.items())
        return _encode(sections, _program_headers(sec), shoff)

    def _sections(self, dynsyms: List[_Symbol], nbuckets: int, dynstr: _StringTable,
                  strtab: _StringTable) -> List[_Section]:
        """Every section in file order, with its final size (contents that depend on addresses
        are filled in after placement)."""
        names = [s.name.encode() for s in dynsyms]
        sections = [
            _Section("", SHT.NULL),
            _Section(".note.gnu.build-id", SHT.NOTE, SHF.ALLOC, 4, data=self._build_id()),
            _Section(".hash", SHT.HASH, SHF.ALLOC, 8, 4, ".dynsym",
                     data=self._sysv_hash(names)),
            _Section(".gnu.hash", SHT.GNU_HASH, SHF.ALLOC, 8, 0, ".dynsym",
                     data=self._gnu_hash(names, nbuckets)),
            _Section(".dynsym", SHT.DYNSYM, SHF.ALLOC, 8, Sym.size, ".dynstr", info=1,
                     size=Sym.size * (len(dynsyms) + 1)),
            _Section(".dynstr", SHT.STRTAB, SHF.ALLOC, 1, data=bytes(dynstr.data)),
            _Section(".pylucet", SHT.PROGBITS, SHF.ALLOC, 16, size=HEADER_SIZE + len(self.blob)),
            _Section(".text", SHT.PROGBITS, SHF.ALLOC | SHF.EXECINSTR, PAGE_SIZE,
                     data=self.text),
            _Section(".dynamic", SHT.DYNAMIC, SHF.ALLOC | SHF.WRITE, PAGE_SIZE, Dyn.size,
                     ".dynstr", size=Dyn.size * len(_DYNAMIC_TAGS)),
            # sh_info of a symbol table = index of its first non-local symbol (gABI 4)
            _Section(".symtab", SHT.SYMTAB, 0, 8, Sym.size, ".strtab", info=1,
                     size=Sym.size * (len(self.symbols) + 1)),
            _Section(".strtab", SHT.STRTAB, 0, 1, data=bytes(strtab.data)),
            _Section(".shstrtab", SHT.STRTAB, 0, 1),
        ]
        shstrtab = _StringTable()
        for i, s in enumerate(sections):
            s.index = i
            s.name_index = shstrtab.add(s.name)
        sections[-1].data = bytes(shstrtab.data)
        for s in sections:
            if s.data:
                s.size = len(s.data)
        return sections


_DYNAMIC_TAGS = [DT.SONAME, DT.HASH, DT.GNU_HASH, DT.STRTAB, DT.SYMTAB, DT.STRSZ, DT.SYMENT,
                 DT.NULL]
_PHNUM = 6


def _place(sections: List[_Section], start: int) -> int:
    """Give each section its file offset (and, if allocated, the same address); return where
    the section header table goes. ``.pylucet`` is placed so that its blob, which follows the
    header, starts on a page; ``.text`` and ``.dynamic`` start segments, hence pages."""
    pos = start
    for s in sections[1:]:
        if s.name == ".pylucet":
            pos = _align(pos + HEADER_SIZE, PAGE_SIZE) - HEADER_SIZE
        pos = _align(pos, s.align)
        s.offset = pos
        if s.flags & SHF.ALLOC:
            s.addr = pos
        pos += s.size
    return _align(pos, 8)


def _program_headers(sec: Dict[str, _Section]) -> List[bytes]:
    """gABI 5 "Program Header": PT_LOAD entries in ascending address order, then the rest."""
    text, dynamic, note = sec[".text"], sec[".dynamic"], sec[".note.gnu.build-id"]
    ro_end = sec[".pylucet"].offset + sec[".pylucet"].size

    def load(start: int, end: int, flags: int) -> bytes:
        return Phdr.pack(PT.LOAD, flags, start, start, start, end - start, end - start,
                         PAGE_SIZE)

    def covering(type_: int, flags: int, s: _Section, align: int) -> bytes:
        return Phdr.pack(type_, flags, s.offset, s.addr, s.addr, s.size, s.size, align)

    phdrs = [
        load(0, ro_end, PF.R),            # ELF and program headers, dynamic symbols, module data
        load(text.offset, text.offset + text.size, PF.R | PF.X),
        load(dynamic.offset, dynamic.offset + dynamic.size, PF.R | PF.W),
        covering(PT.DYNAMIC, PF.R | PF.W, dynamic, 8),
        covering(PT.NOTE, PF.R, note, 4),
        Phdr.pack(PT.GNU_STACK, PF.R | PF.W, 0, 0, 0, 0, 0, 16),
    ]
    assert len(phdrs) == _PHNUM
    return phdrs


def _encode(sections: List[_Section], phdrs: List[bytes], shoff: int) -> bytes:
    shstrndx = len(sections) - 1
    ehdr = Ehdr.pack(elf_ident(), ET.DYN, EM_X86_64, EV_CURRENT, 0, Ehdr.size, shoff, 0,
                     Ehdr.size, Phdr.size, len(phdrs), Shdr.size, len(sections), shstrndx)
    out = bytearray(shoff + Shdr.size * len(sections))
    out[:Ehdr.size] = ehdr
    out[Ehdr.size:Ehdr.size + len(phdrs) * Phdr.size] = b"".join(phdrs)
    index = {s.name: s.index for s in sections}
    shdrs = []
    for s in sections:
        assert len(s.data) == s.size, s.name
        out[s.offset:s.offset + s.size] = s.data
        shdrs.append(Shdr.pack(s.name_index, s.type, s.flags, s.addr, s.offset, s.size,
                               index[s.link] if s.link else 0, s.info,
                               s.align if s.type != SHT.NULL else 0, s.entsize))
    out[shoff:] = b"".join(shdrs)
    return bytes(out)


def _u32s(values: Sequence[int]) -> bytes:
    return struct.pack(f"<{len(values)}I", *values)
