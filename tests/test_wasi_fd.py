"""WASI fd_* calls against a fake guest memory and real files in a temporary directory."""

from __future__ import annotations

import io
import os

import pytest

from pylucet.wasi import WasiConfig
from pylucet.wasi.errno import Errno
from pylucet.wasi.types import (DIRENT, FDSTAT, FILESTAT, Fdflags, Filetype, Fstflags, Oflags,
                                Rights, Whence)

from .wasi_guest import MEMORY_SIZE, guest_for

RW = int(Rights.FD_READ | Rights.FD_WRITE | Rights.FD_SEEK | Rights.FD_TELL
         | Rights.FD_FILESTAT_GET | Rights.FD_FILESTAT_SET_SIZE | Rights.FD_FILESTAT_SET_TIMES
         | Rights.FD_ADVISE | Rights.FD_ALLOCATE | Rights.FD_SYNC | Rights.FD_DATASYNC
         | Rights.FD_FDSTAT_SET_FLAGS)


@pytest.fixture
def guest(tmp_path):
    (tmp_path / "data.txt").write_bytes(b"0123456789")
    (tmp_path / "sub").mkdir()
    config = WasiConfig()
    config.preopen_dir(tmp_path, "/sandbox")
    config.stdout_file = io.BytesIO()
    config.stdin_file = io.BytesIO(b"typed input")
    g = guest_for(config)
    g.dir, g.stdout = tmp_path, config.stdout_file
    yield g
    g.ctx.fds.close_all()


def opened(guest, path="data.txt", rights=RW, oflags=0, fdflags=0):
    err, fd = guest.open(path, oflags=oflags, rights=rights, fdflags=fdflags)
    assert err == Errno.SUCCESS, err
    return fd


def test_write_gathers_every_iovec(guest):
    a, an = guest.s("Hello, ")
    b, bn = guest.s("world\n")
    iovs, count = guest.iovecs((a, an), (b, 0), (b, bn))
    assert guest.fd_write(1, iovs, count, 8) == Errno.SUCCESS
    assert guest.u32(8) == 13 and guest.stdout.getvalue() == b"Hello, world\n"
    iovs, count = guest.iovecs((a, an))
    assert guest.fd_write(1, iovs, count, 8) == Errno.SUCCESS     # the one-iovec fast path
    assert guest.stdout.getvalue() == b"Hello, world\nHello, "


def test_read_scatters_and_stops_short_at_the_end(guest):
    fd = opened(guest)
    a, b = guest.alloc(4), guest.alloc(100)
    iovs, count = guest.iovecs((a, 4), (b, 100))
    assert guest.fd_read(fd, iovs, count, 8) == Errno.SUCCESS
    assert guest.u32(8) == 10
    assert guest.vm.read(a, 4) == b"0123" and guest.vm.read(b, 6) == b"456789"
    assert guest.fd_read(fd, iovs, count, 8) == Errno.SUCCESS and guest.u32(8) == 0
    iovs, count = guest.iovecs((a, 5))
    assert guest.fd_read(0, iovs, count, 8) == Errno.SUCCESS          # stdin from the host
    assert guest.vm.read(a, guest.u32(8)) == b"typed"


def test_bad_pointers_are_efault_and_write_nothing(guest):
    fd = opened(guest)
    iovs, count = guest.iovecs((MEMORY_SIZE - 2, 4))
    assert guest.fd_read(fd, iovs, count, 8) == Errno.FAULT
    assert guest.fd_write(1, iovs, count, 8) == Errno.FAULT
    assert guest.fd_write(1, MEMORY_SIZE - 4, 1, 8) == Errno.FAULT    # the iovec itself
    good, n = guest.s("x")
    iovs, count = guest.iovecs((good, n))
    assert guest.fd_write(1, iovs, count, MEMORY_SIZE - 3) == Errno.FAULT
    assert guest.fd_write(1, iovs, 1 << 30, 8) == Errno.FAULT          # count past memory
    assert guest.fd_pread(fd, iovs, count, 0, -1) == Errno.FAULT
    assert guest.stdout.getvalue() == b""


def test_pread_and_pwrite_leave_the_position(guest):
    fd = opened(guest)
    buf = guest.alloc(4)
    iovs, count = guest.iovecs((buf, 4))
    assert guest.fd_pread(fd, iovs, count, 6, 8) == Errno.SUCCESS
    assert guest.u32(8) == 4 and guest.vm.read(buf, 4) == b"6789"
    guest.vm.write(buf, b"abcd")
    assert guest.fd_pwrite(fd, iovs, count, 2, 8) == Errno.SUCCESS and guest.u32(8) == 4
    assert guest.fd_tell(fd, 8) == Errno.SUCCESS and guest.u64(8) == 0
    assert (guest.dir / "data.txt").read_bytes() == b"01abcd6789"
    assert guest.fd_pread(fd, iovs, count, -1, 8) == Errno.INVAL


def test_pwrite_on_an_append_descriptor_writes_at_the_offset(guest):
    fd = opened(guest, fdflags=int(Fdflags.APPEND))
    x, n = guest.s("XY")
    iovs, count = guest.iovecs((x, n))
    assert guest.fd_pwrite(fd, iovs, count, 1, 8) == Errno.SUCCESS
    assert guest.fd_write(fd, iovs, count, 8) == Errno.SUCCESS
    assert (guest.dir / "data.txt").read_bytes() == b"0XY3456789XY"


def test_seek_and_tell(guest):
    fd = opened(guest)
    assert guest.fd_seek(fd, 3, Whence.SET, 8) == Errno.SUCCESS and guest.u64(8) == 3
    assert guest.fd_seek(fd, 2, Whence.CUR, 8) == Errno.SUCCESS and guest.u64(8) == 5
    assert guest.fd_seek(fd, -1, Whence.END, 8) == Errno.SUCCESS and guest.u64(8) == 9
    assert guest.fd_tell(fd, 16) == Errno.SUCCESS and guest.u64(16) == 9
    assert guest.fd_seek(fd, -20, Whence.CUR, 8) == Errno.INVAL
    assert guest.fd_seek(fd, 0, 3, 8) == Errno.INVAL
    assert guest.fd_seek(1, 0, Whence.CUR, 8) == Errno.SPIPE     # a stream, before rights
    assert guest.fd_tell(0, 8) == Errno.SPIPE
    assert guest.fd_seek(3, 0, Whence.SET, 8) == Errno.BADF      # a directory
    assert guest.fd_seek(fd, 0, Whence.SET, MEMORY_SIZE - 4) == Errno.FAULT


def test_rights_are_checked_and_only_shrink(guest):
    fd = opened(guest, rights=int(Rights.FD_READ))
    x, n = guest.s("no")
    iovs, count = guest.iovecs((x, n))
    assert guest.fd_write(fd, iovs, count, 8) == Errno.NOTCAPABLE
    assert guest.fd_seek(fd, 1, Whence.SET, 8) == Errno.NOTCAPABLE
    assert guest.fd_tell(fd, 8) == Errno.NOTCAPABLE
    assert guest.fd_filestat_set_size(fd, 0) == Errno.NOTCAPABLE
    fd = opened(guest)
    assert guest.fd_fdstat_set_rights(fd, int(Rights.FD_READ), 0) == Errno.SUCCESS
    assert guest.fd_fdstat_get(fd, 64) == Errno.SUCCESS
    assert FDSTAT.unpack_from(guest.vm.memory, 64)[2] == Rights.FD_READ
    assert guest.fd_fdstat_set_rights(fd, RW, 0) == Errno.NOTCAPABLE
    assert guest.fd_write(fd, iovs, count, 8) == Errno.NOTCAPABLE
    assert (guest.dir / "data.txt").read_bytes() == b"0123456789"


def test_fdstat_of_each_kind(guest):
    fd = opened(guest, fdflags=int(Fdflags.APPEND))
    assert guest.fd_fdstat_get(fd, 64) == Errno.SUCCESS
    ftype, flags, base, _ = FDSTAT.unpack_from(guest.vm.memory, 64)
    assert (ftype, flags, base) == (Filetype.REGULAR_FILE, Fdflags.APPEND, RW)
    assert guest.fd_fdstat_get(3, 64) == Errno.SUCCESS
    assert guest.u8(64) == Filetype.DIRECTORY
    assert guest.fd_fdstat_get(1, 64) == Errno.SUCCESS
    # captured output is no terminal: wasi-libc's isatty() says yes to a character device
    # without seek/tell rights
    assert guest.u8(64) == Filetype.UNKNOWN
    assert not guest.u64(72) & int(Rights.FD_SEEK | Rights.FD_TELL)
    assert guest.fd_fdstat_get(99, 64) == Errno.BADF
    assert guest.fd_fdstat_get(fd, MEMORY_SIZE - 8) == Errno.FAULT


def test_fdstat_set_flags(guest):
    fd = opened(guest)
    assert guest.fd_fdstat_set_flags(fd, int(Fdflags.APPEND)) == Errno.SUCCESS
    x, n = guest.s("Z")
    iovs, count = guest.iovecs((x, n))
    assert guest.fd_write(fd, iovs, count, 8) == Errno.SUCCESS
    assert (guest.dir / "data.txt").read_bytes() == b"0123456789Z"
    assert guest.fd_fdstat_get(fd, 64) == Errno.SUCCESS and guest.u16(66) == Fdflags.APPEND
    assert guest.fd_fdstat_set_flags(fd, 0x40) == Errno.INVAL


def test_filestat_get_set_size_set_times(guest):
    fd = opened(guest)
    assert guest.fd_filestat_get(fd, 64) == Errno.SUCCESS
    dev, ino, ftype, nlink, size, atim, mtim, ctim = FILESTAT.unpack_from(guest.vm.memory, 64)
    st = os.stat(guest.dir / "data.txt")
    assert (dev, ino, ftype, nlink, size, mtim) == (st.st_dev, st.st_ino,
                                                    Filetype.REGULAR_FILE, 1, 10,
                                                    st.st_mtime_ns)
    assert guest.fd_filestat_set_size(fd, 4) == Errno.SUCCESS
    assert (guest.dir / "data.txt").read_bytes() == b"0123"
    assert guest.fd_filestat_set_size(fd, -1) == Errno.INVAL
    assert guest.fd_filestat_set_times(fd, 5_000_000_000, 7_000_000_000,
                                       int(Fstflags.ATIM | Fstflags.MTIM)) == Errno.SUCCESS
    st = os.stat(guest.dir / "data.txt")
    assert (st.st_atime_ns, st.st_mtime_ns) == (5_000_000_000, 7_000_000_000)
    assert guest.fd_filestat_set_times(fd, 0, 9_000_000_000, int(Fstflags.MTIM)) == 0
    assert os.stat(guest.dir / "data.txt").st_atime_ns == 5_000_000_000
    assert guest.fd_filestat_set_times(fd, 0, 0, int(Fstflags.ATIM | Fstflags.ATIM_NOW)) \
        == Errno.INVAL
    assert guest.fd_filestat_get(3, 64) == Errno.SUCCESS and guest.u8(80) == Filetype.DIRECTORY


def test_advise_allocate_sync(guest):
    fd = opened(guest)
    assert guest.fd_advise(fd, 0, 10, 1) == Errno.SUCCESS
    assert guest.fd_advise(fd, 0, 10, 6) == Errno.INVAL
    assert guest.fd_allocate(fd, 0, 100) == Errno.SUCCESS
    assert guest.fd_allocate(fd, -1, 1) == Errno.INVAL          # 2**64 - 1: no host off_t
    assert guest.fd_advise(fd, 0, -1, 0) == Errno.INVAL
    assert os.path.getsize(guest.dir / "data.txt") == 100
    assert guest.fd_sync(fd) == Errno.SUCCESS and guest.fd_datasync(fd) == Errno.SUCCESS
    ro = opened(guest, rights=int(Rights.FD_READ))
    assert guest.fd_allocate(ro, 0, 1000) == Errno.NOTCAPABLE
    assert guest.fd_sync(ro) == Errno.NOTCAPABLE


def test_close_and_renumber(guest):
    a, b = opened(guest), opened(guest, "sub", rights=int(Rights.FD_READDIR))
    assert guest.fd_renumber(a, b) == Errno.SUCCESS
    assert guest.fd_fdstat_get(b, 64) == Errno.SUCCESS and guest.u8(64) == Filetype.REGULAR_FILE
    assert guest.fd_fdstat_get(a, 64) == Errno.BADF
    assert guest.fd_renumber(b, 77) == Errno.BADF
    assert guest.fd_close(b) == Errno.SUCCESS and guest.fd_close(b) == Errno.BADF
    assert opened(guest) == a                         # the lowest free number again


def test_prestat(guest):
    assert guest.fd_prestat_get(3, 8) == Errno.SUCCESS
    assert (guest.u8(8), guest.u32(12)) == (0, len("/sandbox"))
    buf = guest.alloc(16)
    assert guest.fd_prestat_dir_name(3, buf, 8) == Errno.SUCCESS
    assert guest.vm.read(buf, 8) == b"/sandbox"
    assert guest.fd_prestat_dir_name(3, buf, 3) == Errno.NAMETOOLONG
    assert guest.fd_prestat_get(4, 8) == Errno.BADF
    assert guest.fd_prestat_get(1, 8) == Errno.BADF
    assert guest.fd_prestat_dir_name(3, MEMORY_SIZE - 2, 8) == Errno.FAULT


def read_dir(guest, fd, bufsize):
    """Every entry of fd_readdir, in calls of ``bufsize`` bytes, resumed at the last
    whole entry's cookie as wasi-libc does: [(name, type, ino)]."""
    entries, cookie, buf = [], 0, guest.alloc(bufsize)
    while True:
        assert guest.fd_readdir(fd, buf, bufsize, cookie, 8) == Errno.SUCCESS
        used, at = guest.u32(8), 0
        while at + DIRENT.size <= used:
            d_next, ino, namlen, ftype = DIRENT.unpack_from(guest.vm.memory, buf + at)
            if at + DIRENT.size + namlen > used:
                break
            name = guest.vm.read(buf + at + DIRENT.size, namlen).decode()
            entries.append((name, ftype, ino))
            cookie, at = d_next, at + DIRENT.size + namlen
        if used < bufsize:
            return entries
        assert at, "the buffer holds not even one entry"


@pytest.mark.parametrize("bufsize", [4096, 64, 40])
def test_readdir_across_calls_with_cookies(guest, bufsize):
    for k in range(30):
        (guest.dir / "sub" / f"file{k:02}").write_text("x")
    (guest.dir / "sub" / "inner").mkdir()
    os.symlink("file00", guest.dir / "sub" / "link")
    fd = opened(guest, "sub", rights=int(Rights.FD_READDIR))
    entries = read_dir(guest, fd, bufsize)
    names = [e[0] for e in entries]
    assert sorted(names) == sorted([".", ".."] + [f"file{k:02}" for k in range(30)]
                                   + ["inner", "link"])
    kinds = {name: ftype for name, ftype, _ in entries}
    assert kinds["inner"] == Filetype.DIRECTORY and kinds["link"] == Filetype.SYMBOLIC_LINK
    assert kinds["file07"] == Filetype.REGULAR_FILE
    ino = {name: i for name, _, i in entries}
    assert ino["file03"] == os.stat(guest.dir / "sub" / "file03").st_ino
    assert read_dir(guest, fd, bufsize) == entries    # cookie 0 starts over


def test_readdir_errors(guest):
    fd = opened(guest)
    assert guest.fd_readdir(fd, 100, 100, 0, 8) in (Errno.NOTCAPABLE, Errno.NOTDIR)
    assert guest.fd_readdir(3, MEMORY_SIZE - 10, 100, 0, 8) == Errno.FAULT
    assert guest.fd_readdir(3, 100, 100, 1 << 40, 8) == Errno.SUCCESS and guest.u32(8) == 0


def test_directories_refuse_reads(guest):
    fd = opened(guest, "sub", rights=int(Rights.FD_READ | Rights.FD_READDIR))
    buf = guest.alloc(8)
    iovs, count = guest.iovecs((buf, 8))
    assert guest.fd_read(fd, iovs, count, 8) in (Errno.ISDIR, Errno.NOTCAPABLE)


def test_stdio_written_to_a_path(tmp_path):
    config = WasiConfig()
    config.stdout_file = tmp_path / "out.txt"
    g = guest_for(config)
    x, n = g.s("to a file\n")
    iovs, count = g.iovecs((x, n))
    assert g.fd_write(1, iovs, count, 8) == Errno.SUCCESS
    assert g.fd_write(2, iovs, count, 8) == Errno.SUCCESS          # discarded
    g.ctx.fds.close_all()
    assert (tmp_path / "out.txt").read_text() == "to a file\n"


def test_create_truncate_exclusive(guest):
    fd = opened(guest, "new.txt", oflags=int(Oflags.CREAT | Oflags.EXCL))
    assert (guest.dir / "new.txt").exists()
    assert guest.open("new.txt", oflags=int(Oflags.CREAT | Oflags.EXCL), rights=RW)[0] \
        == Errno.EXIST
    opened(guest, "data.txt", oflags=int(Oflags.TRUNC))
    assert (guest.dir / "data.txt").read_bytes() == b""
    assert guest.open("data.txt", oflags=int(Oflags.DIRECTORY))[0] == Errno.NOTDIR
    assert guest.open("missing")[0] == Errno.NOENT
    assert guest.fd_close(fd) == Errno.SUCCESS


def test_a_text_stdin_never_gives_more_bytes_than_asked():
    """n characters of a text stream can be more than n bytes: the rest waits for the next
    read instead of spilling past the guest's buffer."""
    config = WasiConfig()
    config.stdin_file = io.StringIO("ééx")
    g = guest_for(config)
    guard = g.alloc(8)
    g.vm.write(guard, b"\xAA" * 8)
    got = b""
    for _ in range(10):
        iovs, count = g.iovecs((guard, 1))
        assert g.fd_read(0, iovs, count, 8) == Errno.SUCCESS
        if not g.u32(8):
            break
        got += g.vm.read(guard, 1)
        assert g.vm.read(guard + 1, 7) == b"\xAA" * 7
    assert got.decode() == "ééx"


def test_stdio_is_a_stream_even_when_the_host_gives_a_file(tmp_path):
    """As wasmtime shows it: not seekable, of unknown type, only read or only written."""
    (tmp_path / "in.txt").write_text("input")
    config = WasiConfig()
    config.stdin_file = tmp_path / "in.txt"
    config.stdout_file = tmp_path / "out.txt"
    g = guest_for(config)
    for fd, right in ((0, Rights.FD_READ), (1, Rights.FD_WRITE)):
        assert g.fd_fdstat_get(fd, 64) == Errno.SUCCESS
        ftype, _, base, _ = FDSTAT.unpack_from(g.vm.memory, 64)
        assert ftype == Filetype.UNKNOWN and base & right
        assert not base & int(Rights.FD_SEEK | Rights.FD_TELL | (Rights.FD_READ ^ Rights.FD_WRITE
                                                                  ^ right))
        assert g.fd_seek(fd, 0, Whence.SET, 8) == Errno.SPIPE
        assert g.fd_filestat_get(fd, 64) == Errno.SUCCESS and g.u8(80) == Filetype.UNKNOWN
    assert g.fd_fdstat_set_flags(1, int(Fdflags.APPEND)) == Errno.SUCCESS
    assert g.fd_fdstat_set_flags(1, int(Fdflags.SYNC)) == Errno.INVAL
    g.ctx.fds.close_all()
