"""ELF64 shared objects for compiled modules: written without a linker, read without dlopen.

``writer`` turns machine code plus module data into a ``.so`` that glibc's ``dlopen`` and the
binutils/gdb/perf tool chain accept; ``reader`` reads one back for tools and tests; ``structs``
holds the gABI record layouts both share.
"""

from .reader import ELFFile, read_module_data
from .writer import SharedObjectBuilder, write_shared_object

__all__ = ["ELFFile", "SharedObjectBuilder", "read_module_data", "write_shared_object"]
