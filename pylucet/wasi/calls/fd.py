"""Calls on an open descriptor (``fd_*``): reading and writing with iovecs, positions, flags and
rights, file status and times, directory listings by cookie, preopens."""

from __future__ import annotations

import fcntl
import os
import time
from typing import Any

from ..errno import Errno, WasiError
from ..fdtable import Descriptor, filetype_of
from ..memory import M32, M64, check, gather, put, scatter
from ..types import (ALL_RIGHTS, DIRENT, FDSTAT, FILESTAT, IOVEC, PREOPENTYPE_DIR, PRESTAT, U32,
                     U64, Fdflags, Filetype, Fstflags, Rights, Whence)
from . import Calls, wasi


_WHENCE = {Whence.SET: os.SEEK_SET, Whence.CUR: os.SEEK_CUR, Whence.END: os.SEEK_END}
_ADVICE = [os.POSIX_FADV_NORMAL, os.POSIX_FADV_SEQUENTIAL, os.POSIX_FADV_RANDOM,
           os.POSIX_FADV_WILLNEED, os.POSIX_FADV_DONTNEED, os.POSIX_FADV_NOREUSE]

_FD_WRITE = int(Rights.FD_WRITE)


def _entry_type(e: "os.DirEntry[str]") -> Filetype:
    """From the directory entry's own type where the file system gives one (no stat for the
    usual kinds: a listing of 1,000 files costs no 1,000 syscalls)."""
    try:
        if e.is_symlink():
            return Filetype.SYMBOLIC_LINK
        if e.is_dir(follow_symlinks=False):
            return Filetype.DIRECTORY
        if e.is_file(follow_symlinks=False):
            return Filetype.REGULAR_FILE
        return filetype_of(e.stat(follow_symlinks=False).st_mode)
    except OSError:
        return Filetype.UNKNOWN


def _seekable(d: Descriptor) -> Descriptor:
    """A stream (stdio, a pipe, a socket) is ESPIPE before any question of rights, as the
    host and wasmtime say: programs test for ESPIPE to tell a pipe from a file."""
    if d.filetype not in (Filetype.REGULAR_FILE, Filetype.BLOCK_DEVICE):
        raise WasiError(Errno.BADF if d.filetype == Filetype.DIRECTORY else Errno.SPIPE)
    return d


def _filesize(value: int) -> int:
    """A u64 offset or length, which arrives as a signed i64: one of 2**63 or more is past
    anything the host's ``off_t`` holds, EINVAL (not an OverflowError out of ``os``)."""
    if value < 0:
        raise WasiError(Errno.INVAL)
    return value


def put_filestat(mem: memoryview, out: int, st: os.stat_result,
                 filetype: "Filetype | None" = None) -> None:
    """A ``filestat`` record of ``st`` at ``out``; ``filetype`` is what a descriptor says it
    is, where that differs from the host's (stdio redirected from a file is a stream)."""
    put(mem, FILESTAT, out, st.st_dev, st.st_ino,
        filetype_of(st.st_mode) if filetype is None else filetype, st.st_nlink,
        st.st_size, st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns)


def check_times(st_flags: int, atim: int, mtim: int) -> Any:
    """``fstflags`` asking for a time and "now" at once, or unknown bits, are EINVAL."""
    if (st_flags & Fstflags.ATIM and st_flags & Fstflags.ATIM_NOW) or \
            (st_flags & Fstflags.MTIM and st_flags & Fstflags.MTIM_NOW) or st_flags & ~0xF:
        raise WasiError(Errno.INVAL)
    return st_flags, atim & M64, mtim & M64

def set_times(target: Any, st_flags: int, atim: int, mtim: int, **kw: Any) -> None:
    """``utime`` as ``fstflags`` say: each time given, now, or left as it is."""
    st_flags, atim, mtim = check_times(st_flags, atim, mtim)
    now = time.time_ns()
    st = os.stat(target, **kw)
    a = now if st_flags & Fstflags.ATIM_NOW else atim if st_flags & Fstflags.ATIM \
        else st.st_atime_ns
    m = now if st_flags & Fstflags.MTIM_NOW else mtim if st_flags & Fstflags.MTIM \
        else st.st_mtime_ns
    os.utime(target, ns=(a, m), **kw)


class FdCalls(Calls):
    """The ``fd_*`` functions."""

    @wasi("(i32, i64, i64, i32) -> i32")
    def fd_advise(self, mem: memoryview, fd: int, offset: int, length: int, advice: int) -> int:
        d = self.fds.get(fd, Rights.FD_ADVISE)
        if not 0 <= advice < len(_ADVICE):
            return Errno.INVAL
        if d.filetype == Filetype.REGULAR_FILE:
            os.posix_fadvise(d.fd, _filesize(offset), _filesize(length), _ADVICE[advice])
        return 0

    @wasi("(i32, i64, i64) -> i32")
    def fd_allocate(self, mem: memoryview, fd: int, offset: int, length: int) -> int:
        d = self.fds.get(fd, Rights.FD_ALLOCATE)
        if d.filetype != Filetype.REGULAR_FILE:
            return Errno.BADF if d.filetype == Filetype.DIRECTORY else Errno.NOTSUP
        os.posix_fallocate(d.fd, _filesize(offset), _filesize(length))
        return 0

    @wasi("(i32) -> i32")
    def fd_close(self, mem: memoryview, fd: int) -> int:
        self.fds.close(fd)
        return 0

    @wasi("(i32) -> i32")
    def fd_datasync(self, mem: memoryview, fd: int) -> int:
        os.fdatasync(self.fds.get(fd, Rights.FD_DATASYNC).fd)
        return 0

    @wasi("(i32) -> i32")
    def fd_sync(self, mem: memoryview, fd: int) -> int:
        os.fsync(self.fds.get(fd, Rights.FD_SYNC).fd)
        return 0

    @wasi("(i32, i32) -> i32")
    def fd_fdstat_get(self, mem: memoryview, fd: int, out: int) -> int:
        d = self.fds.get(fd)
        put(mem, FDSTAT, out, d.filetype, d.flags, d.rights, d.inheriting)
        return 0

    @wasi("(i32, i32) -> i32")
    def fd_fdstat_set_flags(self, mem: memoryview, fd: int, flags: int) -> int:
        d = self.fds.get(fd, Rights.FD_FDSTAT_SET_FLAGS)
        if flags & ~int(Fdflags.APPEND | Fdflags.NONBLOCK):
            # the sync flags cannot be changed on an open file (Linux ignores them in
            # F_SETFL): refused, as wasmtime does, rather than reported set and not applied
            return Errno.INVAL
        if d.fd >= 0:
            now = fcntl.fcntl(d.fd, fcntl.F_GETFL)
            now &= ~(os.O_APPEND | os.O_NONBLOCK)
            if flags & Fdflags.APPEND:
                now |= os.O_APPEND
            if flags & Fdflags.NONBLOCK:
                now |= os.O_NONBLOCK
            fcntl.fcntl(d.fd, fcntl.F_SETFL, now)
        d.flags = Fdflags(flags) | (d.flags & ~(Fdflags.APPEND | Fdflags.NONBLOCK))
        return 0

    @wasi("(i32, i64, i64) -> i32")
    def fd_fdstat_set_rights(self, mem: memoryview, fd: int, base: int, inheriting: int) -> int:
        d = self.fds.get(fd)
        base, inheriting = base & int(ALL_RIGHTS), inheriting & int(ALL_RIGHTS)
        if base & ~d.rights or inheriting & ~d.inheriting:
            return Errno.NOTCAPABLE            # rights only ever shrink
        d.rights, d.inheriting = base, inheriting
        return 0

    @wasi("(i32, i32) -> i32")
    def fd_filestat_get(self, mem: memoryview, fd: int, out: int) -> int:
        d = self.fds.get(fd, Rights.FD_FILESTAT_GET)
        if d.fd < 0:   # a Python stream as stdio
            put(mem, FILESTAT, out, 0, 0, d.filetype, 1, 0, 0, 0, 0)
            return 0
        put_filestat(mem, out, os.fstat(d.fd), d.filetype)
        return 0

    @wasi("(i32, i64) -> i32")
    def fd_filestat_set_size(self, mem: memoryview, fd: int, size: int) -> int:
        d = self.fds.get(fd, Rights.FD_FILESTAT_SET_SIZE)
        if size < 0:
            return Errno.INVAL
        os.ftruncate(d.fd, size)
        return 0

    @wasi("(i32, i64, i64, i32) -> i32")
    def fd_filestat_set_times(self, mem: memoryview, fd: int, atim: int, mtim: int,
                              st_flags: int) -> int:
        d = self.fds.get(fd, Rights.FD_FILESTAT_SET_TIMES)
        set_times(d.fd, st_flags, atim, mtim)
        return 0

    @wasi("(i32, i32, i32, i32) -> i32")
    def fd_read(self, mem: memoryview, fd: int, iovs: int, count: int, nread: int) -> int:
        d = self.fds.get(fd, Rights.FD_READ)
        if d.filetype == Filetype.DIRECTORY:
            return Errno.ISDIR
        check(mem, nread, 4)
        put(mem, U32, nread, scatter(mem, iovs, count, d.read))
        return 0

    @wasi("(i32, i32, i32, i64, i32) -> i32")
    def fd_pread(self, mem: memoryview, fd: int, iovs: int, count: int, offset: int,
                 nread: int) -> int:
        d = self.fds.get(fd, Rights.FD_READ | Rights.FD_SEEK)
        if d.filetype == Filetype.DIRECTORY:
            return Errno.ISDIR
        if offset < 0:
            return Errno.INVAL
        check(mem, nread, 4)
        at = [offset]

        def read(n: int) -> bytes:
            data = os.pread(d.fd, n, at[0])
            at[0] += len(data)
            return data
        put(mem, U32, nread, scatter(mem, iovs, count, read))
        return 0

    @wasi("(i32, i32, i32, i32) -> i32")
    def fd_write(self, mem: memoryview, fd: int, iovs: int, count: int, nwritten: int) -> int:
        # the hottest call of most programs (printf): one iovec is written from guest memory
        # as it lies, with no copy
        d = self.fds.get(fd, _FD_WRITE)
        nwritten &= M32
        if nwritten + 4 > len(mem):
            return Errno.FAULT
        if count == 1:
            buf, n = IOVEC.unpack_from(mem, check(mem, iovs, IOVEC.size))
            if buf + n > len(mem):
                return Errno.FAULT
            data: Any = mem[buf:buf + n]
        else:
            data = gather(mem, iovs, count)
        U32.pack_into(mem, nwritten, d.write(data) if len(data) else 0)
        return 0

    @wasi("(i32, i32, i32, i64, i32) -> i32")
    def fd_pwrite(self, mem: memoryview, fd: int, iovs: int, count: int, offset: int,
                  nwritten: int) -> int:
        d = self.fds.get(fd, Rights.FD_WRITE | Rights.FD_SEEK)
        if d.filetype == Filetype.DIRECTORY:
            return Errno.ISDIR
        if offset < 0:
            return Errno.INVAL
        data = gather(mem, iovs, count)
        check(mem, nwritten, 4)
        if d.flags & Fdflags.APPEND:
            # POSIX pwrite on an O_APPEND file appends on Linux; WASI says write at offset
            # without moving the file position, as wasmtime does: go around O_APPEND
            written = self._pwrite_unappended(d, data, offset)
        else:
            written = os.pwrite(d.fd, data, offset)
        put(mem, U32, nwritten, written)
        return 0

    @staticmethod
    def _pwrite_unappended(d: Descriptor, data: bytes, offset: int) -> int:
        fd = os.open(f"/proc/self/fd/{d.fd}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            return os.pwrite(fd, data, offset)
        finally:
            os.close(fd)

    @wasi("(i32, i64, i32, i32) -> i32")
    def fd_seek(self, mem: memoryview, fd: int, offset: int, whence: int, out: int) -> int:
        d = _seekable(self.fds.get(fd))
        d.require(Rights.FD_SEEK if (offset or whence != Whence.CUR) else Rights.FD_TELL)
        if whence not in _WHENCE:
            return Errno.INVAL
        check(mem, out, 8)
        put(mem, U64, out, os.lseek(d.fd, offset, _WHENCE[whence]))
        return 0

    @wasi("(i32, i32) -> i32")
    def fd_tell(self, mem: memoryview, fd: int, out: int) -> int:
        d = _seekable(self.fds.get(fd))
        d.require(Rights.FD_TELL)
        put(mem, U64, out, os.lseek(d.fd, 0, os.SEEK_CUR))
        return 0

    @wasi("(i32, i32) -> i32")
    def fd_prestat_get(self, mem: memoryview, fd: int, out: int) -> int:
        d = self.fds.get(fd)
        if d.preopen is None:
            return Errno.BADF
        put(mem, PRESTAT, out, PREOPENTYPE_DIR, len(d.preopen.encode()))
        return 0

    @wasi("(i32, i32, i32) -> i32")
    def fd_prestat_dir_name(self, mem: memoryview, fd: int, path: int, n: int) -> int:
        d = self.fds.get(fd)
        if d.preopen is None:
            return Errno.BADF
        name = d.preopen.encode()
        n &= M32
        if n < len(name):
            return Errno.NAMETOOLONG
        path = check(mem, path, len(name))
        mem[path:path + len(name)] = name
        return 0

    @wasi("(i32, i32) -> i32")
    def fd_renumber(self, mem: memoryview, fd: int, to: int) -> int:
        self.fds.renumber(fd, to)
        return 0

    @wasi("(i32, i32, i32, i64, i32) -> i32")
    def fd_readdir(self, mem: memoryview, fd: int, buf: int, size: int, cookie: int,
                   used: int) -> int:
        d = self.fds.get(fd, Rights.FD_READDIR)
        if d.filetype != Filetype.DIRECTORY:
            return Errno.NOTDIR
        size &= M32
        buf = check(mem, buf, size)
        check(mem, used, 4)
        cookie &= M64
        if d.dir_entries is None or cookie == 0:
            # a snapshot per pass, "." and ".." first, so cookies stay stable across calls
            entries = [(".", os.fstat(d.fd).st_ino, Filetype.DIRECTORY),
                       ("..", 0, Filetype.DIRECTORY)]
            with os.scandir(d.fd) as it:
                for e in it:
                    entries.append((e.name, e.inode(), _entry_type(e)))
            d.dir_entries = entries
        out = bytearray()
        for k in range(cookie, len(d.dir_entries)):
            name, ino, ftype = d.dir_entries[k]
            raw = name.encode("utf-8", "surrogateescape")
            out += DIRENT.pack(k + 1, ino, len(raw), ftype) + raw
            if len(out) >= size:
                break
        out = out[:size]
        mem[buf:buf + len(out)] = out
        put(mem, U32, used, len(out))
        return 0
