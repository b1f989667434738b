"""WASI path_* calls against a fake guest memory and real files, on both ways of resolving
paths (``openat2`` and the component walk)."""

from __future__ import annotations

import os

import pytest

from pylucet.wasi import WasiConfig
from pylucet.wasi.sandbox import kernel_has_openat2
from pylucet.wasi.errno import Errno
from pylucet.wasi.types import FILESTAT, Filetype, Fstflags, Oflags, Rights

from .wasi_guest import MEMORY_SIZE, guest_for

FOLLOW = 1


@pytest.fixture(params=[True, False], ids=["openat2", "walk"])
def guest(request, tmp_path):
    if request.param and not kernel_has_openat2():
        pytest.skip("this kernel has no openat2")
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "e" / "deep.txt").write_text("deep")
    config = WasiConfig()
    config.preopen_dir(tmp_path, ".")
    config.use_openat2 = request.param
    g = guest_for(config)
    g.dir = tmp_path
    yield g
    g.ctx.fds.close_all()


def call(guest, name, *args):
    """A path call with its string arguments placed in memory: each str becomes (ptr, len)."""
    flat = []
    for a in args:
        flat.extend(guest.s(a) if isinstance(a, (str, bytes)) else (a,))
    return getattr(guest, name)(*flat)


def filestat(guest, path, follow=FOLLOW):
    err = call(guest, "path_filestat_get", 3, follow, path, 64)
    return err, FILESTAT.unpack_from(guest.vm.memory, 64) if err == Errno.SUCCESS else None


def test_create_and_remove_directories(guest):
    assert call(guest, "path_create_directory", 3, "d/new") == Errno.SUCCESS
    assert (guest.dir / "d" / "new").is_dir()
    assert call(guest, "path_create_directory", 3, "d/new") == Errno.EXIST
    assert call(guest, "path_create_directory", 3, "nope/x") == Errno.NOENT
    assert call(guest, "path_remove_directory", 3, "d") == Errno.NOTEMPTY
    assert call(guest, "path_remove_directory", 3, "a.txt") == Errno.NOTDIR
    assert call(guest, "path_remove_directory", 3, "d/new") == Errno.SUCCESS
    assert not (guest.dir / "d" / "new").exists()


def test_filestat_follows_only_when_asked(guest):
    assert call(guest, "path_symlink", "a.txt", 3, "ln") == Errno.SUCCESS
    err, st = filestat(guest, "ln")
    assert err == Errno.SUCCESS and st[2] == Filetype.REGULAR_FILE and st[4] == 5
    err, st = filestat(guest, "ln", follow=0)
    assert err == Errno.SUCCESS and st[2] == Filetype.SYMBOLIC_LINK
    err, st = filestat(guest, "d/e")
    assert st[2] == Filetype.DIRECTORY and st[1] == os.stat(guest.dir / "d" / "e").st_ino
    assert filestat(guest, "missing")[0] == Errno.NOENT
    assert call(guest, "path_filestat_get", 3, 1, "a.txt", MEMORY_SIZE - 8) == Errno.FAULT


def test_filestat_set_times_on_the_link_or_its_target(guest):
    assert call(guest, "path_symlink", "a.txt", 3, "ln") == Errno.SUCCESS
    both = int(Fstflags.ATIM | Fstflags.MTIM)
    assert call(guest, "path_filestat_set_times", 3, FOLLOW, "ln", 1_000_000_000,
                2_000_000_000, both) == Errno.SUCCESS
    st = os.stat(guest.dir / "a.txt")
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_000, 2_000_000_000)
    assert call(guest, "path_filestat_set_times", 3, 0, "ln", 3_000_000_000,
                4_000_000_000, both) == Errno.SUCCESS
    assert os.lstat(guest.dir / "ln").st_mtime_ns == 4_000_000_000
    assert os.stat(guest.dir / "a.txt").st_mtime_ns == 2_000_000_000
    assert call(guest, "path_filestat_set_times", 3, 0, "a.txt", 0, 0,
                int(Fstflags.MTIM | Fstflags.MTIM_NOW)) == Errno.INVAL


def test_link(guest):
    assert call(guest, "path_link", 3, 0, "a.txt", 3, "d/hard") == Errno.SUCCESS
    assert os.stat(guest.dir / "d" / "hard").st_ino == os.stat(guest.dir / "a.txt").st_ino
    assert call(guest, "path_link", 3, 0, "a.txt", 3, "d/hard") == Errno.EXIST
    assert call(guest, "path_symlink", "a.txt", 3, "ln") == Errno.SUCCESS
    assert call(guest, "path_link", 3, FOLLOW, "ln", 3, "via") == Errno.SUCCESS
    assert not os.path.islink(guest.dir / "via")
    assert os.stat(guest.dir / "via").st_ino == os.stat(guest.dir / "a.txt").st_ino


def test_readlink(guest):
    assert call(guest, "path_symlink", "d/e/deep.txt", 3, "ln") == Errno.SUCCESS
    buf = guest.alloc(64)
    assert call(guest, "path_readlink", 3, "ln", buf, 64, 8) == Errno.SUCCESS
    assert guest.vm.read(buf, guest.u32(8)) == b"d/e/deep.txt"
    assert call(guest, "path_readlink", 3, "ln", buf, 4, 8) == Errno.SUCCESS
    assert guest.u32(8) == 4 and guest.vm.read(buf, 4) == b"d/e/"      # truncated
    assert call(guest, "path_readlink", 3, "a.txt", buf, 64, 8) == Errno.INVAL
    assert call(guest, "path_readlink", 3, "ln", MEMORY_SIZE - 2, 64, 8) == Errno.FAULT


def test_rename(guest):
    assert call(guest, "path_rename", 3, "a.txt", 3, "d/e/b.txt") == Errno.SUCCESS
    assert (guest.dir / "d" / "e" / "b.txt").read_text() == "alpha"
    assert call(guest, "path_rename", 3, "a.txt", 3, "c.txt") == Errno.NOENT
    assert call(guest, "path_rename", 3, "d/e", 3, "moved") == Errno.SUCCESS
    assert (guest.dir / "moved" / "deep.txt").is_file()
    (guest.dir / "full").mkdir()
    (guest.dir / "full" / "x").write_text("x")
    assert call(guest, "path_rename", 3, "moved", 3, "full") == Errno.NOTEMPTY


def test_symlink_and_unlink(guest):
    assert call(guest, "path_symlink", "nowhere", 3, "dangling") == Errno.SUCCESS
    assert os.readlink(guest.dir / "dangling") == "nowhere"
    assert call(guest, "path_symlink", "x", 3, "dangling") == Errno.EXIST
    assert call(guest, "path_unlink_file", 3, "dangling") == Errno.SUCCESS
    assert not os.path.lexists(guest.dir / "dangling")
    assert call(guest, "path_symlink", "d", 3, "dl") == Errno.SUCCESS
    assert call(guest, "path_unlink_file", 3, "dl") == Errno.SUCCESS    # the link, not d
    assert (guest.dir / "d").is_dir()
    assert call(guest, "path_unlink_file", 3, "d") == Errno.ISDIR
    assert call(guest, "path_unlink_file", 3, "a.txt") == Errno.SUCCESS
    assert call(guest, "path_unlink_file", 3, "a.txt") == Errno.NOENT


def test_open_with_lookupflags_and_oflags(guest):
    assert call(guest, "path_symlink", "a.txt", 3, "ln") == Errno.SUCCESS
    assert guest.open("ln")[0] == Errno.SUCCESS
    assert guest.open("ln", follow=False)[0] == Errno.LOOP
    err, fd = guest.open("d/e", oflags=int(Oflags.DIRECTORY),
                         rights=int(Rights.FD_READDIR | Rights.PATH_OPEN),
                         inheriting=int(Rights.FD_READ))
    assert err == Errno.SUCCESS
    err, deep = guest.open("deep.txt", dirfd=fd)                          # beneath an opened dir
    assert err == Errno.SUCCESS
    assert guest.open("../a.txt", dirfd=fd)[0] == Errno.PERM
    assert guest.open("x", dirfd=deep)[0] in (Errno.NOTDIR, Errno.NOTCAPABLE)
    assert guest.open("d/e/deep.txt", oflags=int(Oflags.CREAT | Oflags.DIRECTORY))[0] in (
        Errno.INVAL, Errno.NOTDIR)


def test_opened_rights_are_bounded_by_the_directory(guest):
    err, fd = guest.open("d", rights=int(Rights.PATH_OPEN | Rights.FD_READDIR),
                         inheriting=int(Rights.FD_READ | Rights.FD_WRITE))
    assert err == Errno.SUCCESS
    assert guest.fd_fdstat_get(fd, 64) == Errno.SUCCESS
    assert guest.u64(80) == Rights.FD_READ | Rights.FD_WRITE
    assert guest.fd_fdstat_set_rights(fd, int(Rights.PATH_OPEN | Rights.FD_READDIR),
                                      int(Rights.FD_READ)) == Errno.SUCCESS
    err, sub = guest.open("e/deep.txt", rights=int(Rights.FD_READ | Rights.FD_WRITE),
                          dirfd=fd)
    assert err == Errno.SUCCESS
    assert guest.fd_fdstat_get(sub, 64) == Errno.SUCCESS
    assert guest.u64(72) & int(Rights.FD_WRITE) == 0                 # not inherited
    assert call(guest, "path_create_directory", fd, "x") == Errno.NOTCAPABLE
    assert guest.open("new", oflags=int(Oflags.CREAT), dirfd=fd)[0] == Errno.NOTCAPABLE


def test_path_calls_want_a_directory(guest):
    err, fd = guest.open("a.txt")
    assert call(guest, "path_create_directory", fd, "x") in (Errno.NOTDIR, Errno.NOTCAPABLE)
    assert call(guest, "path_create_directory", 42, "x") == Errno.BADF


def test_bad_path_pointers_and_encodings(guest):
    assert guest.path_create_directory(3, MEMORY_SIZE - 1, 5) == Errno.FAULT
    assert guest.path_create_directory(3, 100, -1) == Errno.FAULT
    assert call(guest, "path_create_directory", 3, b"bad\xff") == Errno.ILSEQ
    assert call(guest, "path_create_directory", 3, "nul\0x") == Errno.ILSEQ
    assert call(guest, "path_symlink", "nul\0x", 3, "link") == Errno.ILSEQ
