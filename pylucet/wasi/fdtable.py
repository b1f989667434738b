"""The guest's file descriptors: what each WASI fd number stands for, and what it may do.

A WASI program sees small integers; each maps to a :class:`Descriptor` holding a host file
descriptor (a file, a directory, a socket, a pipe, inherited stdio) or, for a host that captures
a guest's output, a Python file object (:class:`StreamDescriptor`). Rights are kept per
descriptor as the spec says: a call needs the right it names, and rights can only shrink.
"""

from __future__ import annotations

import os
import stat as _stat
from typing import IO, Any, Dict, Iterator, Optional, Tuple

from .errno import Errno, WasiError
from .types import DIR_RIGHTS, FILE_RIGHTS, SOCKET_RIGHTS, STREAM_RIGHTS, Fdflags, Filetype, Rights


def filetype_of(mode: int) -> Filetype:
    if _stat.S_ISREG(mode):
        return Filetype.REGULAR_FILE
    if _stat.S_ISDIR(mode):
        return Filetype.DIRECTORY
    if _stat.S_ISCHR(mode):
        return Filetype.CHARACTER_DEVICE
    if _stat.S_ISBLK(mode):
        return Filetype.BLOCK_DEVICE
    if _stat.S_ISLNK(mode):
        return Filetype.SYMBOLIC_LINK
    if _stat.S_ISSOCK(mode):
        return Filetype.SOCKET_STREAM
    return Filetype.UNKNOWN


class Descriptor:
    """A host file descriptor the guest reaches by number."""

    def __init__(self, fd: int, filetype: Filetype, rights: Rights, inheriting: Rights,
                 flags: Fdflags = Fdflags(0), *, owned: bool = True,
                 preopen: Optional[str] = None):
        self.fd = fd
        self.filetype = filetype
        self.rights = int(rights)          # plain ints: checked on every call, and IntFlag
        self.inheriting = int(inheriting)  # arithmetic costs microseconds
        self.flags = flags
        self.owned = owned
        """Close the host fd with the descriptor (not for inherited stdio)."""
        self.preopen = preopen
        """The guest's name for a preopened directory."""
        self.dir_entries: Optional[list] = None
        """fd_readdir's snapshot of the directory, indexed by cookie."""

    @classmethod
    def for_host_fd(cls, fd: int, owned: bool = True) -> "Descriptor":
        """Describe an open host fd (stdio, say) by what it is."""
        st = os.fstat(fd)
        ftype = filetype_of(st.st_mode)
        if ftype == Filetype.REGULAR_FILE:
            rights = FILE_RIGHTS
        elif ftype == Filetype.DIRECTORY:
            rights = DIR_RIGHTS
        elif ftype == Filetype.SOCKET_STREAM:
            rights = SOCKET_RIGHTS
        else:
            rights = STREAM_RIGHTS
        flags = Fdflags.APPEND if os.get_blocking(fd) and _appending(fd) else Fdflags(0)
        if not os.get_blocking(fd):
            flags |= Fdflags.NONBLOCK
        return cls(fd, ftype, rights, Rights(0), flags, owned=owned)

    @classmethod
    def for_stdio(cls, fd: int, readable: bool, owned: bool = True) -> "Descriptor":
        """Stdin, stdout or stderr as wasmtime shows them: a stream, whatever the host fd is
        (a file redirected to stdin does not become seekable), a character device only on a
        terminal. The host's own stdio (``owned=False``) keeps its flags: O_NONBLOCK set on
        it would reach the host process's own descriptor."""
        ftype = Filetype.CHARACTER_DEVICE if os.isatty(fd) else Filetype.UNKNOWN
        rights = ((Rights.FD_READ if readable else Rights.FD_WRITE) | Rights.FD_FILESTAT_GET
                  | Rights.POLL_FD_READWRITE)
        if owned:
            rights |= Rights.FD_FDSTAT_SET_FLAGS
        flags = Fdflags.APPEND if _appending(fd) else Fdflags(0)
        if not os.get_blocking(fd):
            flags |= Fdflags.NONBLOCK
        return cls(fd, ftype, rights, Rights(0), flags, owned=owned)

    def require(self, rights: int) -> None:
        if rights & ~self.rights:
            raise WasiError(Errno.NOTCAPABLE)

    # reading and writing, overridden by StreamDescriptor
    def read(self, n: int) -> bytes:
        return os.read(self.fd, n)

    def write(self, data: bytes) -> int:
        return os.write(self.fd, data)

    def close(self) -> None:
        if self.owned:
            os.close(self.fd)


def _appending(fd: int) -> bool:
    import fcntl
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND)


class StreamDescriptor(Descriptor):
    """A Python file object as a guest's stdin, stdout or stderr (a host capturing output)."""

    def __init__(self, stream: IO[Any], readable: bool):
        # UNKNOWN, as wasmtime shows stdio that is not a terminal: a character device without
        # seek rights is what wasi-libc's isatty() takes for a terminal, and a host capturing
        # output must not get colours and line buffering meant for one
        super().__init__(-1, Filetype.UNKNOWN,
                         (Rights.FD_READ if readable else Rights.FD_WRITE)
                         | Rights.FD_FILESTAT_GET | Rights.POLL_FD_READWRITE, Rights(0),
                         owned=False)
        self.stream = stream
        self._pending = b""
        """What a text stream gave beyond the bytes asked for (n characters can be more)."""

    def read(self, n: int) -> bytes:
        if not self._pending:
            data = getattr(self.stream, "buffer", self.stream).read(n)
            if not isinstance(data, str):
                return data
            self._pending = data.encode("utf-8")
        data, self._pending = self._pending[:n], self._pending[n:]
        return data

    def write(self, data: bytes) -> int:
        data = bytes(data)
        target = getattr(self.stream, "buffer", self.stream)
        try:
            target.write(data)
        except TypeError:                    # a text stream without a buffer (io.StringIO)
            self.stream.write(data.decode("utf-8", "replace"))
        flush = getattr(target, "flush", None)
        if flush is not None:
            flush()
        return len(data)


class FdTable:
    """WASI fd number -> Descriptor. New numbers are the lowest free ones, as POSIX does."""

    MAX_FDS = 1024

    def __init__(self) -> None:
        self._fds: Dict[int, Descriptor] = {}

    def get(self, fd: int, rights: int = 0) -> Descriptor:
        d = self._fds.get(fd)
        if d is None:
            raise WasiError(Errno.BADF)
        if rights & ~d.rights:
            raise WasiError(Errno.NOTCAPABLE)
        return d

    def insert(self, d: Descriptor, at: Optional[int] = None) -> int:
        if at is None:
            at = next((i for i in range(self.MAX_FDS) if i not in self._fds), None)
            if at is None:
                d.close()
                raise WasiError(Errno.MFILE)
        self._fds[at] = d
        return at

    def close(self, fd: int) -> None:
        d = self._fds.pop(fd, None)
        if d is None:
            raise WasiError(Errno.BADF)
        d.close()

    def renumber(self, fd: int, to: int) -> None:
        d = self.get(fd)
        if to not in self._fds:
            raise WasiError(Errno.BADF)
        if to == fd:
            return
        self._fds[to].close()
        self._fds[to] = d
        del self._fds[fd]

    def preopens(self) -> Iterator[Tuple[int, Descriptor]]:
        return ((n, d) for n, d in sorted(self._fds.items()) if d.preopen is not None)

    def close_all(self) -> None:
        for d in self._fds.values():
            try:
                d.close()
            except OSError:
                pass
        self._fds.clear()
