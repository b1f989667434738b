"""Read pylucet artifacts (and other ELF64 little-endian objects) without loading them.

Tools and tests need to see what the writer produced without ``dlopen``: a crashing or foreign
artifact must still be inspectable. The shape follows pyelftools, smaller: an :class:`ELFFile`
hands out :class:`Section`, :class:`Segment` and :class:`Symbol` objects, each a thin view over one
record layout from ``structs`` (gABI chapters 4 and 5).
"""

from __future__ import annotations

import os
from typing import Any, Iterator, List, Optional, Tuple, Union

from ..errors import LoadError
from ..module.abi import MODULE_SYMBOL
from ..module.serialize import HEADER_SIZE, ArtifactHeader, loads, unpack_header
from ..module.spec import ModuleData
from .structs import (ELFCLASS64, ELFDATA2LSB, ELFMAG, PF, PT, SHT, STB, STT, Ehdr, Phdr, Shdr,
                      Sym)


def _enum_or_int(cls, value: int):  # type: ignore[no-untyped-def]
    try:
        return cls(value)
    except ValueError:
        return value


class Segment:
    """One program header (gABI 5, "Program Header")."""

    def __init__(self, header: Any):
        self.header = header
        self.type = _enum_or_int(PT, header.p_type)

    def contains_vaddr(self, vaddr: int, size: int = 0) -> bool:
        h = self.header
        return h.p_vaddr <= vaddr and vaddr + size <= h.p_vaddr + h.p_filesz

    def __repr__(self) -> str:
        h = self.header
        return f"<Segment {getattr(self.type, 'name', self.type)} vaddr={h.p_vaddr:#x} " \
               f"filesz={h.p_filesz:#x} flags={h.p_flags:#x}>"


class Section:
    """One section header and its bytes (gABI 4, "Sections")."""

    def __init__(self, elf: "ELFFile", index: int, header: Any, name: str):
        self.elf = elf
        self.index = index
        self.header = header
        self.name = name
        self.type = _enum_or_int(SHT, header.sh_type)

    @property
    def addr(self) -> int:
        return self.header.sh_addr

    @property
    def size(self) -> int:
        return self.header.sh_size

    def data(self) -> bytes:
        if self.type == SHT.NOBITS:
            return b""
        return self.elf._slice(self.header.sh_offset, self.header.sh_size)

    def symbols(self) -> List["Symbol"]:
        """The entries of a SHT_SYMTAB/SHT_DYNSYM section, names resolved via sh_link."""
        if self.type not in (SHT.SYMTAB, SHT.DYNSYM):
            raise ValueError(f"{self.name} is not a symbol table")
        strtab = self.elf.section(self.header.sh_link).data()
        data = self.data()
        data = data[:len(data) - len(data) % Sym.size]
        return [Symbol(i, raw, _cstr(strtab, raw.st_name))
                for i, raw in enumerate(Sym.iter_unpack(data))]

    def __repr__(self) -> str:
        return f"<Section [{self.index}] {self.name} addr={self.addr:#x} size={self.size:#x}>"


class Symbol:
    """One ``Elf64_Sym`` (gABI 4, "Symbol Table")."""

    def __init__(self, index: int, raw: Any, name: str):
        self.index = index
        self.raw = raw
        self.name = name

    value = property(lambda self: self.raw.st_value)
    size = property(lambda self: self.raw.st_size)
    shndx = property(lambda self: self.raw.st_shndx)
    bind = property(lambda self: _enum_or_int(STB, self.raw.st_info >> 4))
    type = property(lambda self: _enum_or_int(STT, self.raw.st_info & 0xF))

    def __repr__(self) -> str:
        return f"<Symbol {self.name} value={self.value:#x} size={self.size}>"


class ELFFile:
    """An ELF64 little-endian file held in memory. Malformed input raises LoadError."""

    def __init__(self, data: bytes):
        self.data = data
        if len(data) < Ehdr.size or data[:4] != ELFMAG:
            raise LoadError("not an ELF file")
        if data[4] != ELFCLASS64 or data[5] != ELFDATA2LSB:
            raise LoadError("not a 64-bit little-endian ELF file")
        self.header = Ehdr.unpack_from(data)
        h = self.header
        self._shdrs = [Shdr.unpack_from(self._slice(h.e_shoff + i * Shdr.size, Shdr.size))
                       for i in range(h.e_shnum)]
        self._phdrs = [Phdr.unpack_from(self._slice(h.e_phoff + i * Phdr.size, Phdr.size))
                       for i in range(h.e_phnum)]
        shstr = (self._slice(self._shdrs[h.e_shstrndx].sh_offset,
                             self._shdrs[h.e_shstrndx].sh_size)
                 if h.e_shstrndx < len(self._shdrs) else b"")
        self._sections = [Section(self, i, sh, _cstr(shstr, sh.sh_name))
                          for i, sh in enumerate(self._shdrs)]

    @classmethod
    def open(cls, path: Union[str, "os.PathLike[str]"]) -> "ELFFile":
        with open(path, "rb") as f:
            return cls(f.read())

    def _slice(self, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0 or offset + size > len(self.data):
            raise LoadError(f"ELF file is truncated: [{offset:#x}, +{size:#x}) is past its end")
        return self.data[offset:offset + size]

    # --- pyelftools-style accessors ---------------------------------------------------------------

    def iter_sections(self) -> Iterator[Section]:
        return iter(self._sections)

    def iter_segments(self) -> Iterator[Segment]:
        return (Segment(p) for p in self._phdrs)

    def section(self, index: int) -> Section:
        if not 0 <= index < len(self._sections):
            raise LoadError(f"ELF file has no section {index}")
        return self._sections[index]

    def get_section_by_name(self, name: str) -> Optional[Section]:
        for s in self._sections:
            if s.name == name:
                return s
        return None

    def symbols(self, table: str = ".symtab") -> List[Symbol]:
        sec = self.get_section_by_name(table)
        return sec.symbols() if sec is not None else []

    def symbol(self, name: str) -> Optional[Symbol]:
        """``name`` from .dynsym (what dlsym sees), else from .symtab."""
        for table in (".dynsym", ".symtab"):
            for sym in self.symbols(table):
                if sym.name == name:
                    return sym
        return None

    def read_vaddr(self, vaddr: int, size: int) -> bytes:
        """``size`` bytes at link-time address ``vaddr``, through the PT_LOAD that maps them."""
        for seg in self.iter_segments():
            if seg.type == PT.LOAD and seg.contains_vaddr(vaddr, size):
                h = seg.header
                return self._slice(h.p_offset + vaddr - h.p_vaddr, size)
        raise LoadError(f"no loadable segment holds [{vaddr:#x}, +{size:#x})")


def _cstr(table: bytes, offset: int) -> str:
    end = table.find(b"\0", offset)
    return table[offset:end if end >= 0 else len(table)].decode("utf-8", "replace")


def read_artifact(elf: ELFFile) -> Tuple[ArtifactHeader, ModuleData]:
    """The header and module data behind ``pylucet_module``, found the way the loader does.

    Every header field the loader trusts is checked against the ELF itself, so that a header
    whose checksum was forged still cannot point the runtime at memory that ``dlopen`` does not
    map: the header sits where the dynamic symbol says, the blob inside a loadable segment, and
    the code inside an executable one (and within ``.text``, when there are section headers).
    """
    sym = elf.symbol(MODULE_SYMBOL)
    if sym is None:
        raise LoadError(f"not a pylucet artifact: no {MODULE_SYMBOL!r} symbol")
    header = unpack_header(elf.read_vaddr(sym.value, HEADER_SIZE))
    if header.self_vaddr != sym.value:
        raise LoadError(f"artifact header says it lives at {header.self_vaddr:#x}, "
                        f"but {MODULE_SYMBOL} is at {sym.value:#x}")
    if sym.size and HEADER_SIZE + header.blob_size != sym.size:
        raise LoadError(f"artifact header says {header.blob_size:#x} bytes of module data, but "
                        f"{MODULE_SYMBOL} holds {sym.size - HEADER_SIZE:#x}")
    blob = elf.read_vaddr(sym.value + HEADER_SIZE, header.blob_size)
    _check_text(elf, header)
    return header, loads(blob)


def _check_text(elf: ELFFile, header: ArtifactHeader) -> None:
    start, size = header.text_vaddr, header.text_size
    where = f"[{start:#x}, +{size:#x})"
    text = elf.get_section_by_name(".text")
    # (the writer gives an empty .text one byte, so that its symbols have somewhere to point)
    if text is not None and (text.addr != start or size > text.size):
        raise LoadError(f"artifact header puts the code at {where}, but .text is at "
                        f"[{text.addr:#x}, +{text.size:#x})")
    if not size:
        return
    if not any(seg.type == PT.LOAD and seg.header.p_flags & PF.X and seg.contains_vaddr(start, size)
               for seg in elf.iter_segments()):
        raise LoadError(f"artifact header puts the code at {where}, which no executable "
                        "segment maps")


def read_module_data(path: Union[str, "os.PathLike[str]"]) -> Tuple[ArtifactHeader, ModuleData]:
    """Read an artifact's header and module data from disk, without dlopen."""
    return read_artifact(ELFFile.open(path))
