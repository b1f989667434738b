"""Calls naming a path beneath a directory descriptor (``path_*``): every path resolves through
``wasi.sandbox``, and the final operation gets a parent descriptor and a single name."""

from __future__ import annotations

import os
import stat as _stat

from ..errno import Errno, WasiError
from ..fdtable import Descriptor, filetype_of
from ..memory import M32, check, put, string
from ..sandbox import ESCAPE
from ..types import (DIR_RIGHTS, FILE_RIGHTS, LOOKUP_SYMLINK_FOLLOW, U32, Fdflags, Filetype,
                     Oflags, Rights)
from . import Calls, wasi
from .fd import check_times, put_filestat, set_times


class PathCalls(Calls):
    """The ``path_*`` functions."""

    def _dir(self, fd: int, rights: Rights) -> Descriptor:
        d = self.fds.get(fd, rights)
        if d.filetype != Filetype.DIRECTORY:
            raise WasiError(Errno.NOTDIR)
        return d

    @wasi("(i32, i32, i32) -> i32")
    def path_create_directory(self, mem: memoryview, fd: int, path: int, n: int) -> int:
        d = self._dir(fd, Rights.PATH_CREATE_DIRECTORY)
        parent, name = self.resolver.parent(d.fd, string(mem, path, n), keep_slash=True)
        try:
            os.mkdir(name, 0o777, dir_fd=parent)
        finally:
            os.close(parent)
        return 0

    @wasi("(i32, i32, i32, i32, i32) -> i32")
    def path_filestat_get(self, mem: memoryview, fd: int, flags: int, path: int, n: int,
                          out: int) -> int:
        d = self._dir(fd, Rights.PATH_FILESTAT_GET)
        target = self.resolver.open(d.fd, string(mem, path, n), os.O_PATH,
                                    follow=bool(flags & LOOKUP_SYMLINK_FOLLOW))
        try:
            put_filestat(mem, out, os.fstat(target))
        finally:
            os.close(target)
        return 0

    @wasi("(i32, i32, i32, i32, i64, i64, i32) -> i32")
    def path_filestat_set_times(self, mem: memoryview, fd: int, flags: int, path: int, n: int,
                                atim: int, mtim: int, st_flags: int) -> int:
        d = self._dir(fd, Rights.PATH_FILESTAT_SET_TIMES)
        check_times(st_flags, atim, mtim)
        follow = bool(flags & LOOKUP_SYMLINK_FOLLOW)
        parent, name = self.resolver.parent(d.fd, string(mem, path, n))
        try:
            if follow and name != ".":
                target = self.resolver.open(parent, name, os.O_PATH, follow=True)
                try:
                    set_times(f"/proc/self/fd/{target}", st_flags, atim, mtim)
                finally:
                    os.close(target)
            else:
                set_times(name, st_flags, atim, mtim, dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(parent)
        return 0

    @wasi("(i32, i32, i32, i32, i32, i32, i32) -> i32")
    def path_link(self, mem: memoryview, old_fd: int, old_flags: int, old_path: int,
                  old_n: int, new_fd: int, new_path: int, new_n: int) -> int:
        src = self._dir(old_fd, Rights.PATH_LINK_SOURCE)
        dst = self._dir(new_fd, Rights.PATH_LINK_TARGET)
        sp, sn = self.resolver.parent(src.fd, string(mem, old_path, old_n))
        try:
            dp, dn = self.resolver.parent(dst.fd, string(mem, new_path, new_n))
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
        check(mem, out, 4)
        name = string(mem, path, n)
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
        put(mem, U32, out, self.fds.insert(desc))
        return 0

    @wasi("(i32, i32, i32, i32, i32, i32) -> i32")
    def path_readlink(self, mem: memoryview, fd: int, path: int, n: int, buf: int, size: int,
                      used: int) -> int:
        d = self._dir(fd, Rights.PATH_READLINK)
        parent, name = self.resolver.parent(d.fd, string(mem, path, n))
        try:
            target = os.readlink(name, dir_fd=parent).encode("utf-8", "surrogateescape")
        finally:
            os.close(parent)
        size &= M32
        buf = check(mem, buf, size)
        data = target[:size]
        mem[buf:buf + len(data)] = data
        put(mem, U32, used, len(data))
        return 0

    @wasi("(i32, i32, i32) -> i32")
    def path_remove_directory(self, mem: memoryview, fd: int, path: int, n: int) -> int:
        d = self._dir(fd, Rights.PATH_REMOVE_DIRECTORY)
        parent, name = self.resolver.parent(d.fd, string(mem, path, n), keep_slash=True)
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
        sp, sn = self.resolver.parent(src.fd, string(mem, old_path, old_n), keep_slash=True)
        try:
            dp, dn = self.resolver.parent(dst.fd, string(mem, new_path, new_n), keep_slash=True)
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
        target = string(mem, old_path, old_n)
        if target.startswith("/"):
            # never followed beneath a preopen anyway; refuse it as wasmtime does
            return ESCAPE
        parent, name = self.resolver.parent(d.fd, string(mem, new_path, new_n))
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
        parent, name = self.resolver.parent(d.fd, string(mem, path, n))
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
