"""Every function of ``wasi_snapshot_preview1``, as host functions over one :class:`WasiCtx`.

Each method below is one WASI function; ``@wasi(type)`` gives its wasm type. A method returns an
errno (or raises :class:`WasiError`, which becomes one); a guest pointer or length outside the
guest's memory is ``EFAULT``, never a read of host memory. Pointers arrive as signed i32 and are
taken as unsigned (``& 0xFFFFFFFF``) before use.
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import stat as _stat
import struct
import termios
import time
from typing import Any, Callable, Dict, List, Tuple

from ..errors import MemoryAccessError, Terminate
from .fdtable import Descriptor, FdTable, filetype_of
from .sandbox import Resolver
from .types import (ALL_RIGHTS, DIR_RIGHTS, DIRENT, EVENT, EVENT_FD_READWRITE_HANGUP, FDSTAT, FILE_RIGHTS, FILESTAT, IOVEC,
                    LOOKUP_SYMLINK_FOLLOW, PREOPENTYPE_DIR, PRESTAT, SDFLAGS_RD, SDFLAGS_WR,
                    SUBCLOCK_ABSTIME, SUBSCRIPTION, U32, U64, Clock, Errno, Eventtype, Fdflags,
                    Filetype, Fstflags, Oflags, Rights, WasiError, Whence, from_host)

MODULE = "wasi_snapshot_preview1"
_M32 = 0xFFFF_FFFF
_FD_WRITE = int(Rights.FD_WRITE)
_M64 = 0xFFFF_FFFF_FFFF_FFFF
_FUNCS: Dict[str, Tuple[str, Callable[..., int]]] = {}


class WasiExit:
    """What ``proc_exit`` terminates the instance with: ``run`` returns ``code``."""

    def __init__(self, code: int):
        self.code = code

    def __repr__(self) -> str:
        return f"WasiExit({self.code})"


def wasi(signature: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    def register(fn: Callable[..., int]) -> Callable[..., int]:
        _FUNCS[fn.__name__] = (signature, fn)
        return fn
    return register


def _check(mem: memoryview, ptr: int, n: int) -> int:
    ptr &= _M32
    if ptr + n > len(mem):
        raise WasiError(Errno.FAULT)
    return ptr


def _put(mem: memoryview, record: struct.Struct, ptr: int, *values: int) -> None:
    record.pack_into(mem, _check(mem, ptr, record.size), *values)


def _string(mem: memoryview, ptr: int, n: int) -> str:
    n &= _M32
    ptr = _check(mem, ptr, n)
    try:
        return bytes(mem[ptr:ptr + n]).decode("utf-8")
    except UnicodeDecodeError:
        raise WasiError(Errno.ILSEQ) from None


def _iovecs(mem: memoryview, iovs: int, count: int) -> List[Tuple[int, int]]:
    count &= _M32
    iovs = _check(mem, iovs, IOVEC.size * count)
    out = []
    for k in range(count):
        buf, n = IOVEC.unpack_from(mem, iovs + IOVEC.size * k)
        out.append((_check(mem, buf, n), n))
    return out


def _ns(t: float) -> int:
    return int(t * 1_000_000_000)


_CLOCKS = {Clock.REALTIME: time.CLOCK_REALTIME, Clock.MONOTONIC: time.CLOCK_MONOTONIC,
           Clock.PROCESS_CPUTIME_ID: time.CLOCK_PROCESS_CPUTIME_ID,
           Clock.THREAD_CPUTIME_ID: time.CLOCK_THREAD_CPUTIME_ID}
_IGNORED_SIGNALS = {0, 16, 17, 22, 27}        # none, chld, cont, urg, winch
_WHENCE = {Whence.SET: os.SEEK_SET, Whence.CUR: os.SEEK_CUR, Whence.END: os.SEEK_END}
_ADVICE = [os.POSIX_FADV_NORMAL, os.POSIX_FADV_SEQUENTIAL, os.POSIX_FADV_RANDOM,
           os.POSIX_FADV_WILLNEED, os.POSIX_FADV_DONTNEED, os.POSIX_FADV_NOREUSE]


def _file_bytes(d: Descriptor, tag: int) -> int:
    """What an always-ready descriptor has to read: the bytes after the file position."""
    if d.fd < 0 or tag != Eventtype.FD_READ or d.filetype != Filetype.REGULAR_FILE:
        return 0
    return max(0, os.fstat(d.fd).st_size - os.lseek(d.fd, 0, os.SEEK_CUR))


def _fd_event(fd: int, revents: int, user: int, tag: int) -> Any:
    """The event of one subscriber to a polled fd, or None if its direction is not ready."""
    hangup = revents & (select.POLLHUP | select.POLLERR)
    if revents & select.POLLNVAL:
        return (user, Errno.BADF, tag, 0, 0)
    if tag == Eventtype.FD_READ:
        if not revents & (select.POLLIN | select.POLLHUP | select.POLLERR):
            return None
        try:
            nbytes = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
        except OSError:
            nbytes = 1
        return (user, 0, tag, nbytes, EVENT_FD_READWRITE_HANGUP if hangup else 0)
    if not revents & (select.POLLOUT | select.POLLHUP | select.POLLERR):
        return None
    return (user, 0, tag, 0, EVENT_FD_READWRITE_HANGUP if hangup else 0)


class WasiCtx:
    """One WASI instance's world: its arguments, environment, descriptors and clocks.

    Defines every preview1 function into a :class:`pylucet.Linker` (:meth:`add_to_linker`);
    each call finds this context as ``vmctx.ctx`` of the calling instance only through the
    closure, so one linker can carry one context (make a linker per WASI instance, or share one
    context between instances that should share descriptors)."""

    def __init__(self, argv: List[str], env: Dict[str, str], fds: FdTable,
                 resolver: Resolver):
        self.argv = [a.encode() for a in argv]
        self.env = [f"{k}={v}".encode() for k, v in env.items()]
        self.fds = fds
        self.resolver = resolver

    def add_to_linker(self, linker: Any) -> None:
        for name, (signature, fn) in _FUNCS.items():
            linker.define_func(MODULE, name, self._host(fn), signature, access_vmctx=True)

    def _host(self, fn: Callable[..., int]) -> Callable[..., int]:
        ctx = self

        def call(vmctx: Any, *args: int) -> int:
            try:
                result = fn(ctx, vmctx.memory, *args)
            except WasiError as e:
                return int(e.errno)
            except MemoryAccessError:
                return int(Errno.FAULT)
            except OSError as e:
                return int(from_host(e.errno or 5))
            return 0 if result is None else result
        call.__name__ = fn.__name__
        return call

    # --- args, environment, clocks, random -----------------------------------------------------

    def _strings(self, mem: memoryview, items: List[bytes], ptrs: int, buf: int) -> None:
        total = sum(len(s) + 1 for s in items)
        buf = _check(mem, buf, total)
        ptrs = _check(mem, ptrs, 4 * len(items))
        for k, s in enumerate(items):
            U32.pack_into(mem, ptrs + 4 * k, buf)
            mem[buf:buf + len(s)] = s
            mem[buf + len(s)] = 0
            buf += len(s) + 1

    @wasi("(i32, i32) -> i32")
    def args_get(self, mem: memoryview, argv: int, buf: int) -> int:
        self._strings(mem, self.argv, argv, buf)
        return 0

    @wasi("(i32, i32) -> i32")
    def args_sizes_get(self, mem: memoryview, argc: int, size: int) -> int:
        _put(mem, U32, argc, len(self.argv))
        _put(mem, U32, size, sum(len(a) + 1 for a in self.argv))
        return 0

    @wasi("(i32, i32) -> i32")
    def environ_get(self, mem: memoryview, environ: int, buf: int) -> int:
        self._strings(mem, self.env, environ, buf)
        return 0

    @wasi("(i32, i32) -> i32")
    def environ_sizes_get(self, mem: memoryview, count: int, size: int) -> int:
        _put(mem, U32, count, len(self.env))
        _put(mem, U32, size, sum(len(e) + 1 for e in self.env))
        return 0

    @wasi("(i32, i32) -> i32")
    def clock_res_get(self, mem: memoryview, clock: int, out: int) -> int:
        if clock not in _CLOCKS:
            return Errno.INVAL
        _put(mem, U64, out, max(1, _ns(time.clock_getres(_CLOCKS[clock]))))
        return 0

    @wasi("(i32, i64, i32) -> i32")
    def clock_time_get(self, mem: memoryview, clock: int, precision: int, out: int) -> int:
        if clock not in _CLOCKS:
            return Errno.INVAL
        _put(mem, U64, out, time.clock_gettime_ns(_CLOCKS[clock]))
        return 0

    @wasi("(i32, i32) -> i32")
    def random_get(self, mem: memoryview, buf: int, n: int) -> int:
        n &= _M32
        buf = _check(mem, buf, n)
        mem[buf:buf + n] = os.urandom(n)
        return 0

    # --- process -------------------------------------------------------------------------------

    @wasi("(i32) -> ()")
    def proc_exit(self, mem: memoryview, code: int) -> None:
        raise Terminate(WasiExit(code & _M32))

    @wasi("(i32) -> i32")
    def proc_raise(self, mem: memoryview, sig: int) -> int:
        # Raising a signal in the host on the guest's behalf would let it kill the host: do
        # what the signal's default action would do to a process of its own. WASI's signal
        # numbers are Linux's (hup=1 ... sys=30); chld, cont, urg and winch are ignored by
        # default, and a stop (which cannot stop a guest alone) ends it like the rest.
        if not 0 <= sig <= 30:
            return Errno.INVAL
        if sig in _IGNORED_SIGNALS:
            return 0
        raise Terminate(WasiExit(128 + sig))

    @wasi("() -> i32")
    def sched_yield(self, mem: memoryview) -> int:
        os.sched_yield()
        return 0

    # --- descriptors ---------------------------------------------------------------------------

    @wasi("(i32, i64, i64, i32) -> i32")
    def fd_advise(self, mem: memoryview, fd: int, offset: int, length: int, advice: int) -> int:
        d = self.fds.get(fd, Rights.FD_ADVISE)
        if not 0 <= advice < len(_ADVICE):
            return Errno.INVAL
        if d.filetype == Filetype.REGULAR_FILE:
            os.posix_fadvise(d.fd, offset & _M64, length & _M64, _ADVICE[advice])
        return 0

    @wasi("(i32, i64, i64) -> i32")
    def fd_allocate(self, mem: memoryview, fd: int, offset: int, length: int) -> int:
        d = self.fds.get(fd, Rights.FD_ALLOCATE)
        if d.filetype != Filetype.REGULAR_FILE:
            return Errno.BADF if d.filetype == Filetype.DIRECTORY else Errno.NOTSUP
        os.posix_fallocate(d.fd, offset & _M64, length & _M64)
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
        _put(mem, FDSTAT, out, d.filetype, d.flags, d.rights, d.inheriting)
        return 0

    @wasi("(i32, i32) -> i32")
    def fd_fdstat_set_flags(self, mem: memoryview, fd: int, flags: int) -> int:
        d = self.fds.get(fd, Rights.FD_FDSTAT_SET_FLAGS)
        if flags & ~0x1F:
            return Errno.INVAL
        if d.fd >= 0:
            now = fcntl.fcntl(d.fd, fcntl.F_GETFL)
            now &= ~(os.O_APPEND | os.O_NONBLOCK)
            if flags & Fdflags.APPEND:
                now |= os.O_APPEND
            if flags & Fdflags.NONBLOCK:
                now |= os.O_NONBLOCK
            fcntl.fcntl(d.fd, fcntl.F_SETFL, now)
        d.flags = Fdflags(flags)
        return 0

    @wasi("(i32, i64, i64) -> i32")
    def fd_fdstat_set_rights(self, mem: memoryview, fd: int, base: int, inheriting: int) -> int:
        d = self.fds.get(fd)
        base, inheriting = base & int(ALL_RIGHTS), inheriting & int(ALL_RIGHTS)
        if base & ~d.rights or inheriting & ~d.inheriting:
            return Errno.NOTCAPABLE            # rights only ever shrink
        d.rights, d.inheriting = base, inheriting
        return 0

    def _filestat(self, mem: memoryview, out: int, st: os.stat_result) -> None:
        _put(mem, FILESTAT, out, st.st_dev, st.st_ino, filetype_of(st.st_mode), st.st_nlink,
             st.st_size, st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns)

    @wasi("(i32, i32) -> i32")
    def fd_filestat_get(self, mem: memoryview, fd: int, out: int) -> int:
        d = self.fds.get(fd, Rights.FD_FILESTAT_GET)
        if d.fd < 0:   # a Python stream as stdio
            _put(mem, FILESTAT, out, 0, 0, d.filetype, 1, 0, 0, 0, 0)
            return 0
        self._filestat(mem, out, os.fstat(d.fd))
        return 0

    @wasi("(i32, i64) -> i32")
    def fd_filestat_set_size(self, mem: memoryview, fd: int, size: int) -> int:
        d = self.fds.get(fd, Rights.FD_FILESTAT_SET_SIZE)
        if size < 0:
            return Errno.INVAL
        os.ftruncate(d.fd, size)
        return 0

    @staticmethod
    def _times(st_flags: int, atim: int, mtim: int) -> Any:
        if (st_flags & Fstflags.ATIM and st_flags & Fstflags.ATIM_NOW) or \
                (st_flags & Fstflags.MTIM and st_flags & Fstflags.MTIM_NOW) or st_flags & ~0xF:
            raise WasiError(Errno.INVAL)
        return st_flags, atim & _M64, mtim & _M64

    def _utime(self, target: Any, st_flags: int, atim: int, mtim: int, **kw: Any) -> None:
        st_flags, atim, mtim = self._times(st_flags, atim, mtim)
        now = time.time_ns()
        st = os.stat(target, **kw)
        a = now if st_flags & Fstflags.ATIM_NOW else atim if st_flags & Fstflags.ATIM \
            else st.st_atime_ns
        m = now if st_flags & Fstflags.MTIM_NOW else mtim if st_flags & Fstflags.MTIM \
            else st.st_mtime_ns
        os.utime(target, ns=(a, m), **kw)

    @wasi("(i32, i64, i64, i32) -> i32")
    def fd_filestat_set_times(self, mem: memoryview, fd: int, atim: int, mtim: int,
                              st_flags: int) -> int:
        d = self.fds.get(fd, Rights.FD_FILESTAT_SET_TIMES)
        self._utime(d.fd, st_flags, atim, mtim)
        return 0

    def _gather(self, mem: memoryview, iovs: int, count: int) -> bytes:
        return b"".join(mem[p:p + n] for p, n in _iovecs(mem, iovs, count))

    def _scatter(self, mem: memoryview, iovs: int, count: int,
                 read: Callable[[int], bytes]) -> int:
        total = 0
        for p, n in _iovecs(mem, iovs, count):
            if not n:
                continue
            data = read(n)
            mem[p:p + len(data)] = data
            total += len(data)
            if len(data) < n:
                break
        return total

    @wasi("(i32, i32, i32, i32) -> i32")
    def fd_read(self, mem: memoryview, fd: int, iovs: int, count: int, nread: int) -> int:
        d = self.fds.get(fd, Rights.FD_READ)
        if d.filetype == Filetype.DIRECTORY:
            return Errno.ISDIR
        _check(mem, nread, 4)
        _put(mem, U32, nread, self._scatter(mem, iovs, count, d.read))
        return 0

    @wasi("(i32, i32, i32, i64, i32) -> i32")
    def fd_pread(self, mem: memoryview, fd: int, iovs: int, count: int, offset: int,
                 nread: int) -> int:
        d = self.fds.get(fd, Rights.FD_READ | Rights.FD_SEEK)
        if d.filetype == Filetype.DIRECTORY:
            return Errno.ISDIR
        if offset < 0:
            return Errno.INVAL
        _check(mem, nread, 4)
        at = [offset]

        def read(n: int) -> bytes:
            data = os.pread(d.fd, n, at[0])
            at[0] += len(data)
            return data
        _put(mem, U32, nread, self._scatter(mem, iovs, count, read))
        return 0

    @wasi("(i32, i32, i32, i32) -> i32")
    def fd_write(self, mem: memoryview, fd: int, iovs: int, count: int, nwritten: int) -> int:
        # the hottest call of most programs (printf): one iovec is written from guest memory
        # as it lies, with no copy
        d = self.fds.get(fd, _FD_WRITE)
        nwritten &= _M32
        if nwritten + 4 > len(mem):
            return Errno.FAULT
        if count == 1:
            buf, n = IOVEC.unpack_from(mem, _check(mem, iovs, IOVEC.size))
            if buf + n > len(mem):
                return Errno.FAULT
            data: Any = mem[buf:buf + n]
        else:
            data = self._gather(mem, iovs, count)
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
        data = self._gather(mem, iovs, count)
        _check(mem, nwritten, 4)
        if d.flags & Fdflags.APPEND:
            # POSIX pwrite on an O_APPEND file appends on Linux; WASI says write at offset
            # without moving the file position, as wasmtime does: go around O_APPEND
            written = self._pwrite_unappended(d, data, offset)
        else:
            written = os.pwrite(d.fd, data, offset)
        _put(mem, U32, nwritten, written)
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
        d = self.fds.get(fd, Rights.FD_SEEK if (offset or whence != Whence.CUR)
                         else Rights.FD_TELL)
        if whence not in _WHENCE:
            return Errno.INVAL
        if d.filetype not in (Filetype.REGULAR_FILE, Filetype.BLOCK_DEVICE):
            return Errno.SPIPE if d.filetype != Filetype.DIRECTORY else Errno.BADF
        _check(mem, out, 8)
        _put(mem, U64, out, os.lseek(d.fd, offset, _WHENCE[whence]))
        return 0

    @wasi("(i32, i32) -> i32")
    def fd_tell(self, mem: memoryview, fd: int, out: int) -> int:
        d = self.fds.get(fd, Rights.FD_TELL)
        if d.filetype not in (Filetype.REGULAR_FILE, Filetype.BLOCK_DEVICE):
            return Errno.SPIPE if d.filetype != Filetype.DIRECTORY else Errno.BADF
        _put(mem, U64, out, os.lseek(d.fd, 0, os.SEEK_CUR))
        return 0

    @wasi("(i32, i32) -> i32")
    def fd_prestat_get(self, mem: memoryview, fd: int, out: int) -> int:
        d = self.fds.get(fd)
        if d.preopen is None:
            return Errno.BADF
        _put(mem, PRESTAT, out, PREOPENTYPE_DIR, len(d.preopen.encode()))
        return 0

    @wasi("(i32, i32, i32) -> i32")
    def fd_prestat_dir_name(self, mem: memoryview, fd: int, path: int, n: int) -> int:
        d = self.fds.get(fd)
        if d.preopen is None:
            return Errno.BADF
        name = d.preopen.encode()
        n &= _M32
        if n < len(name):
            return Errno.NAMETOOLONG
        path = _check(mem, path, len(name))
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
        size &= _M32
        buf = _check(mem, buf, size)
        _check(mem, used, 4)
        cookie &= _M64
        if d.dir_entries is None or cookie == 0:
            # a snapshot per pass, "." and ".." first, so cookies stay stable across calls
            entries = [(".", os.fstat(d.fd).st_ino, Filetype.DIRECTORY),
                       ("..", 0, Filetype.DIRECTORY)]
            with os.scandir(d.fd) as it:
                for e in it:
                    try:
                        st = e.stat(follow_symlinks=False)
                        entries.append((e.name, st.st_ino, filetype_of(st.st_mode)))
                    except OSError:
                        entries.append((e.name, e.inode(), Filetype.UNKNOWN))
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
        _put(mem, U32, used, len(out))
        return 0

    # --- paths ---------------------------------------------------------------------------------

    def _dir(self, fd: int, rights: Rights) -> Descriptor:
        d = self.fds.get(fd, rights)
        if d.filetype != Filetype.DIRECTORY:
            raise WasiError(Errno.NOTDIR)
        return d

    @wasi("(i32, i32, i32) -> i32")
    def path_create_directory(self, mem: memoryview, fd: int, path: int, n: int) -> int:
        d = self._dir(fd, Rights.PATH_CREATE_DIRECTORY)
        parent, name = self.resolver.parent(d.fd, _string(mem, path, n), keep_slash=True)
        try:
            os.mkdir(name, 0o777, dir_fd=parent)
        finally:
            os.close(parent)
        return 0

    @wasi("(i32, i32, i32, i32, i32) -> i32")
    def path_filestat_get(self, mem: memoryview, fd: int, flags: int, path: int, n: int,
                          out: int) -> int:
        d = self._dir(fd, Rights.PATH_FILESTAT_GET)
        target = self.resolver.open(d.fd, _string(mem, path, n), os.O_PATH,
                                    follow=bool(flags & LOOKUP_SYMLINK_FOLLOW))
        try:
            self._filestat(mem, out, os.fstat(target))
        finally:
            os.close(target)
        return 0

    @wasi("(i32, i32, i32, i32, i64, i64, i32) -> i32")
    def path_filestat_set_times(self, mem: memoryview, fd: int, flags: int, path: int, n: int,
                                atim: int, mtim: int, st_flags: int) -> int:
        d = self._dir(fd, Rights.PATH_FILESTAT_SET_TIMES)
        self._times(st_flags, atim, mtim)
        follow = bool(flags & LOOKUP_SYMLINK_FOLLOW)
        parent, name = self.resolver.parent(d.fd, _string(mem, path, n))
        try:
            if follow and name != ".":
                target = self.resolver.open(parent, name, os.O_PATH, follow=True)
                try:
                    self._utime(f"/proc/self/fd/{target}", st_flags, atim, mtim)
                finally:
                    os.close(target)
            else:
                self._utime(name, st_flags, atim, mtim, dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(parent)
        return 0

    @wasi("(i32, i32, i32, i32, i32, i32, i32) -> i32")
    def path_link(self, mem: memoryview, old_fd: int, old_flags: int, old_path: int,
                  old_n: int, new_fd: int, new_path: int, new_n: int) -> int:
        src = self._dir(old_fd, Rights.PATH_LINK_SOURCE)
        dst = self._dir(new_fd, Rights.PATH_LINK_TARGET)
        sp, sn = self.resolver.parent(src.fd, _string(mem, old_path, old_n))
        try:
            dp, dn = self.resolver.parent(dst.fd, _string(mem, new_path, new_n))
            try:
                if old_flags & LOOKUP_SYMLINK_FOLLOW:
                    # link what the symlink names, resolved beneath the directory
                    target = self.resolver.open(sp, sn, os.O_PATH, follow=True)
                    try:
                        os.link(f"/proc/self/fd/{target}", dn, dst_dir_fd=dp,
                                follow_symlinks=True)
                    finally:
                        os.close(target)
                else:
                    os.link(sn, dn, src_dir_fd=sp, dst_dir_fd=dp, follow_symlinks=False)
            finally:
                os.close(dp)
        finally:
            os.close(sp)
        return 0

    @wasi("(i32, i32, i32, i32, i32, i64, i64, i32, i32) -> i32")
    def path_open(self, mem: memoryview, fd: int, dirflags: int, path: int, n: int,
                  oflags: int, base: int, inheriting: int, fdflags: int, out: int) -> int:
        d = self._dir(fd, Rights.PATH_OPEN)
        _check(mem, out, 4)
        name = _string(mem, path, n)
        base &= (1 << 30) - 1
        inheriting &= (1 << 30) - 1
        flags = os.O_CLOEXEC | os.O_NOCTTY
        if oflags & Oflags.CREAT:
            d.require(Rights.PATH_CREATE_FILE)
            flags |= os.O_CREAT
        if oflags & Oflags.DIRECTORY:
            flags |= os.O_DIRECTORY
        if oflags & Oflags.EXCL:
            flags |= os.O_EXCL
        if oflags & Oflags.TRUNC:
            d.require(Rights.PATH_FILESTAT_SET_SIZE)
            flags |= os.O_TRUNC
        wants_write = bool(base & (Rights.FD_WRITE | Rights.FD_ALLOCATE
                                   | Rights.FD_FILESTAT_SET_SIZE)) or oflags & Oflags.TRUNC
        wants_read = bool(base & (Rights.FD_READ | Rights.FD_READDIR))
        if fdflags & Fdflags.APPEND:
            flags |= os.O_APPEND
            wants_write = True
        if fdflags & Fdflags.NONBLOCK:
            flags |= os.O_NONBLOCK
        if fdflags & (Fdflags.DSYNC | Fdflags.RSYNC | Fdflags.SYNC):
            flags |= os.O_SYNC if fdflags & Fdflags.SYNC else os.O_DSYNC
        flags |= os.O_RDWR if wants_write and wants_read else os.O_WRONLY if wants_write \
            else os.O_RDONLY
        try:
            host = self.resolver.open(d.fd, name, flags, 0o666,
                                      follow=bool(dirflags & LOOKUP_SYMLINK_FOLLOW))
        except WasiError as e:
            if e.errno == Errno.ISDIR and not wants_write:
                raise
            if e.errno == Errno.ISDIR:   # a directory asked for writing: open it to read
                host = self.resolver.open(d.fd, name, (flags & ~(os.O_WRONLY | os.O_RDWR))
                                          | os.O_RDONLY,
                                          follow=bool(dirflags & LOOKUP_SYMLINK_FOLLOW))
                if base & Rights.FD_WRITE:
                    os.close(host)
                    raise
            else:
                raise
        ftype = filetype_of(os.fstat(host).st_mode)
        allowed = (DIR_RIGHTS | FILE_RIGHTS) & d.inheriting
        allowed &= DIR_RIGHTS if ftype == Filetype.DIRECTORY else FILE_RIGHTS
        desc = Descriptor(host, ftype, Rights(base) & allowed, Rights(inheriting) & d.inheriting,
                          Fdflags(fdflags & 0x1F))
        _put(mem, U32, out, self.fds.insert(desc))
        return 0

    @wasi("(i32, i32, i32, i32, i32, i32) -> i32")
    def path_readlink(self, mem: memoryview, fd: int, path: int, n: int, buf: int, size: int,
                      used: int) -> int:
        d = self._dir(fd, Rights.PATH_READLINK)
        parent, name = self.resolver.parent(d.fd, _string(mem, path, n))
        try:
            target = os.readlink(name, dir_fd=parent).encode("utf-8", "surrogateescape")
        finally:
            os.close(parent)
        size &= _M32
        buf = _check(mem, buf, size)
        data = target[:size]
        mem[buf:buf + len(data)] = data
        _put(mem, U32, used, len(data))
        return 0

    @wasi("(i32, i32, i32) -> i32")
    def path_remove_directory(self, mem: memoryview, fd: int, path: int, n: int) -> int:
        d = self._dir(fd, Rights.PATH_REMOVE_DIRECTORY)
        parent, name = self.resolver.parent(d.fd, _string(mem, path, n), keep_slash=True)
        try:
            if name == ".":
                return Errno.INVAL
            os.rmdir(name, dir_fd=parent)
        finally:
            os.close(parent)
        return 0

    @wasi("(i32, i32, i32, i32, i32, i32) -> i32")
    def path_rename(self, mem: memoryview, fd: int, old_path: int, old_n: int, new_fd: int,
                    new_path: int, new_n: int) -> int:
        src = self._dir(fd, Rights.PATH_RENAME_SOURCE)
        dst = self._dir(new_fd, Rights.PATH_RENAME_TARGET)
        sp, sn = self.resolver.parent(src.fd, _string(mem, old_path, old_n), keep_slash=True)
        try:
            dp, dn = self.resolver.parent(dst.fd, _string(mem, new_path, new_n), keep_slash=True)
            try:
                if "." in (sn, dn):
                    return Errno.BUSY
                os.rename(sn, dn, src_dir_fd=sp, dst_dir_fd=dp)
            finally:
                os.close(dp)
        finally:
            os.close(sp)
        return 0

    @wasi("(i32, i32, i32, i32, i32) -> i32")
    def path_symlink(self, mem: memoryview, old_path: int, old_n: int, fd: int, new_path: int,
                     new_n: int) -> int:
        d = self._dir(fd, Rights.PATH_SYMLINK)
        target = _string(mem, old_path, old_n)
        if target.startswith("/"):
            # never followed beneath a preopen anyway; refuse it as wasmtime does
            return Errno.NOTCAPABLE
        parent, name = self.resolver.parent(d.fd, _string(mem, new_path, new_n))
        try:
            if name == ".":
                return Errno.EXIST
            os.symlink(target, name, dir_fd=parent)
        finally:
            os.close(parent)
        return 0

    @wasi("(i32, i32, i32) -> i32")
    def path_unlink_file(self, mem: memoryview, fd: int, path: int, n: int) -> int:
        d = self._dir(fd, Rights.PATH_UNLINK_FILE)
        parent, name = self.resolver.parent(d.fd, _string(mem, path, n))
        try:
            if name == ".":
                return Errno.ISDIR
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if _stat.S_ISDIR(st.st_mode):
                return Errno.ISDIR
            os.unlink(name, dir_fd=parent)
        finally:
            os.close(parent)
        return 0

    # --- poll ----------------------------------------------------------------------------------

    @wasi("(i32, i32, i32, i32) -> i32")
    def poll_oneoff(self, mem: memoryview, subs: int, events: int, count: int,
                    nevents: int) -> int:
        """Waits until a clock fires or a descriptor is ready. Regular files and Python
        streams are always ready; pipes, terminals and sockets are polled (``poll(2)``, so
        any fd number works). A clock fires only if its time has come when the wait ends, so
        an fd ready early does not also report the timeout."""
        count &= _M32
        if count == 0:
            return Errno.INVAL
        subs = _check(mem, subs, SUBSCRIPTION.size * count)
        events = _check(mem, events, EVENT.size * count)
        _check(mem, nevents, 4)
        out: List[Tuple[int, int, int, int, int]] = []
        waiting: Dict[int, List[Tuple[int, int]]] = {}    # host fd -> [(userdata, tag)]
        clocks: List[Tuple[float, int]] = []              # (seconds from now, userdata)
        for k in range(count):
            user, tag, ident, deadline, _precision, flags = SUBSCRIPTION.unpack_from(
                mem, subs + SUBSCRIPTION.size * k)
            if tag == Eventtype.CLOCK:
                clock = ident & _M32
                if clock not in _CLOCKS:
                    out.append((user, Errno.INVAL, tag, 0, 0))
                    continue
                if flags & SUBCLOCK_ABSTIME:
                    deadline -= time.clock_gettime_ns(_CLOCKS[clock])
                clocks.append((max(0, deadline) / 1e9, user))
            elif tag in (Eventtype.FD_READ, Eventtype.FD_WRITE):
                try:
                    d = self.fds.get(ident & _M32, Rights.POLL_FD_READWRITE)
                except WasiError as e:
                    out.append((user, e.errno, tag, 0, 0))
                    continue
                if d.fd < 0 or d.filetype in (Filetype.REGULAR_FILE, Filetype.DIRECTORY):
                    out.append((user, 0, tag, _file_bytes(d, tag), 0))
                else:
                    waiting.setdefault(d.fd, []).append((user, tag))
            else:
                out.append((user, Errno.INVAL, tag, 0, 0))
        timeout = 0.0 if out else min((w for w, _ in clocks), default=None)
        start = time.monotonic()
        if waiting:
            poller = select.poll()
            for fd, subscribers in waiting.items():
                mask = 0
                for _, tag in subscribers:
                    mask |= select.POLLIN if tag == Eventtype.FD_READ else select.POLLOUT
                poller.register(fd, mask)
            ready = poller.poll(None if timeout is None else max(0, int(timeout * 1000 + 0.999)))
            for fd, revents in ready:
                out.extend(_fd_event(fd, revents, user, tag) for user, tag in waiting[fd])
            elapsed = time.monotonic() - start if ready else timeout or 0.0
        else:
            if timeout:
                time.sleep(timeout)
            elapsed = timeout or 0.0
        out = [e for e in out if e is not None]
        out.extend((u, 0, Eventtype.CLOCK, 0, 0) for w, u in clocks if w <= elapsed)
        for k, event in enumerate(out[:count]):
            EVENT.pack_into(mem, events + EVENT.size * k, *event)
        _put(mem, U32, nevents, min(len(out), count))
        return 0

    # --- sockets -------------------------------------------------------------------------------

    def _socket(self, fd: int, rights: Rights) -> socket.socket:
        d = self.fds.get(fd)
        if d.filetype not in (Filetype.SOCKET_STREAM, Filetype.SOCKET_DGRAM) or d.fd < 0:
            raise WasiError(Errno.NOTSOCK)     # before rights: a file has no socket rights
        d.require(rights)
        return socket.socket(fileno=os.dup(d.fd))

    @wasi("(i32, i32, i32) -> i32")
    def sock_accept(self, mem: memoryview, fd: int, flags: int, out: int) -> int:
        _check(mem, out, 4)
        s = self._socket(fd, Rights.SOCK_ACCEPT)
        try:
            conn, _ = s.accept()
        finally:
            s.close()
        if flags & Fdflags.NONBLOCK:
            conn.setblocking(False)
        host = conn.detach()
        _put(mem, U32, out, self.fds.insert(Descriptor.for_host_fd(host)))
        return 0

    @wasi("(i32, i32, i32, i32, i32, i32) -> i32")
    def sock_recv(self, mem: memoryview, fd: int, iovs: int, count: int, flags: int,
                  n_out: int, flags_out: int) -> int:
        s = self._socket(fd, Rights.FD_READ)
        try:
            peek = socket.MSG_PEEK if flags & 1 else 0
            waitall = socket.MSG_WAITALL if flags & 2 else 0
            total = self._scatter(mem, iovs, count, lambda n: s.recv(n, peek | waitall))
        finally:
            s.close()
        _put(mem, U32, n_out, total)
        _put(mem, struct.Struct("<H"), flags_out, 0)
        return 0

    @wasi("(i32, i32, i32, i32, i32) -> i32")
    def sock_send(self, mem: memoryview, fd: int, iovs: int, count: int, flags: int,
                  n_out: int) -> int:
        s = self._socket(fd, Rights.FD_WRITE)
        try:
            sent = s.send(self._gather(mem, iovs, count))
        finally:
            s.close()
        _put(mem, U32, n_out, sent)
        return 0

    @wasi("(i32, i32) -> i32")
    def sock_shutdown(self, mem: memoryview, fd: int, how: int) -> int:
        if how & ~(SDFLAGS_RD | SDFLAGS_WR) or not how:
            return Errno.INVAL
        s = self._socket(fd, Rights.SOCK_SHUTDOWN)
        try:
            s.shutdown({SDFLAGS_RD: socket.SHUT_RD, SDFLAGS_WR: socket.SHUT_WR}.get(
                how, socket.SHUT_RDWR))
        finally:
            s.close()
        return 0


FUNCTIONS = _FUNCS
"""name -> (wasm type, implementation) of every preview1 function."""
