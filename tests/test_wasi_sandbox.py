"""Nothing a guest names escapes its preopened directory: ``..``, absolute paths, symlinks it
made itself (pointing out, or out and back in), renames and links with a target outside. Each
escape is attempted through the WASI calls themselves, on both ways of resolving paths: the
kernel's ``openat2(RESOLVE_BENEATH)`` and the component walk used where the kernel lacks it."""

from __future__ import annotations

import os

import pytest

from pylucet.wasi import WasiConfig
from pylucet.wasi.sandbox import kernel_has_openat2
from pylucet.wasi.errno import Errno
from pylucet.wasi.types import Rights

from .wasi_guest import Guest

MODES = [pytest.param(True, id="openat2"), pytest.param(False, id="walk")]


@pytest.fixture(params=MODES)
def guest(request, tmp_path):
    if request.param and not kernel_has_openat2():
        pytest.skip("this kernel has no openat2")
    (tmp_path / "outside.txt").write_text("secret")
    (tmp_path / "outdir").mkdir()
    box = tmp_path / "box"
    (box / "sub").mkdir(parents=True)
    (box / "inside.txt").write_text("fine")
    config = WasiConfig()
    config.preopen_dir(box, "box")
    config.use_openat2 = request.param
    ctx = config.build()
    g = Guest(ctx)
    g.root, g.box = tmp_path, box
    yield g
    ctx.fds.close_all()


def test_inside_paths_work(guest):
    assert guest.open("inside.txt")[0] == Errno.SUCCESS
    assert guest.open("sub/../inside.txt")[0] == Errno.SUCCESS
    assert guest.open("./sub/./../inside.txt")[0] == Errno.SUCCESS
    p, n = guest.s("good")
    t, tn = guest.s("inside.txt")
    assert guest.path_symlink(t, tn, 3, p, n) == Errno.SUCCESS
    assert guest.open("good")[0] == Errno.SUCCESS                   # a link that stays inside
    p, n = guest.s("sub/up")
    t, tn = guest.s("../inside.txt")
    assert guest.path_symlink(t, tn, 3, p, n) == Errno.SUCCESS
    assert guest.open("sub/up")[0] == Errno.SUCCESS


@pytest.mark.parametrize("path", ["../outside.txt", "sub/../../outside.txt", "/etc/passwd",
                                  "..", "sub/../..", "../box/inside.txt"])
def test_dotdot_and_absolute_paths_do_not_escape(guest, path):
    err, _ = guest.open(path)
    assert err == Errno.PERM, err


@pytest.mark.parametrize("target", ["../outside.txt", "/etc/passwd", "../box/inside.txt",
                                    "sub/../../outside.txt"])
def test_symlinks_the_guest_makes_do_not_escape(guest, target):
    """Pointing out, absolute, and out and back in: refused when followed (an absolute target
    is refused already when made)."""
    p, n = guest.s("link")
    t, tn = guest.s(target)
    made = guest.path_symlink(t, tn, 3, p, n)
    if made == Errno.SUCCESS:
        err, _ = guest.open("link")
        assert err == Errno.PERM, err
        sub_p, sub_n = guest.s("link")
        assert guest.path_filestat_get(3, 1, sub_p, sub_n, 64) == Errno.PERM
    else:
        assert made == Errno.PERM


def test_a_host_made_symlink_out_is_refused_too(guest):
    os.symlink(guest.root / "outside.txt", guest.box / "planted")
    os.symlink("../../outdir", guest.box / "sub" / "planted_dir")
    assert guest.open("planted")[0] == Errno.PERM
    assert guest.open("sub/planted_dir/x", oflags=1,
                      rights=int(Rights.FD_WRITE))[0] == Errno.PERM
    assert not (guest.root / "outdir" / "x").exists()


def test_renames_and_links_cannot_target_outside(guest):
    src_p, src_n = guest.s("inside.txt")
    for bad in ("../stolen.txt", "sub/../../stolen.txt", "/tmp/stolen.txt"):
        dst_p, dst_n = guest.s(bad)
        assert guest.path_rename(3, src_p, src_n, 3, dst_p, dst_n) == Errno.PERM
        assert guest.path_link(3, 0, src_p, src_n, 3, dst_p, dst_n) == Errno.PERM
    out_p, out_n = guest.s("../outside.txt")
    in_p, in_n = guest.s("copy.txt")
    assert guest.path_rename(3, out_p, out_n, 3, in_p, in_n) == Errno.PERM
    assert guest.path_link(3, 0, out_p, out_n, 3, in_p, in_n) == Errno.PERM
    assert not (guest.root / "stolen.txt").exists() and not (guest.box / "copy.txt").exists()
    assert (guest.root / "outside.txt").read_text() == "secret"


def test_a_link_through_a_symlink_that_points_out_is_refused(guest):
    os.symlink(guest.root / "outside.txt", guest.box / "sneaky")
    src_p, src_n = guest.s("sneaky")
    dst_p, dst_n = guest.s("hardlink")
    assert guest.path_link(3, 1, src_p, src_n, 3, dst_p, dst_n) == Errno.PERM
    assert not (guest.box / "hardlink").exists()


def test_removal_and_creation_stay_inside(guest):
    for call in ("path_unlink_file", "path_remove_directory", "path_create_directory"):
        p, n = guest.s("../outdir" if call != "path_unlink_file" else "../outside.txt")
        assert getattr(guest, call)(3, p, n) == Errno.PERM, call
    assert (guest.root / "outdir").is_dir() and (guest.root / "outside.txt").exists()
    p, n = guest.s("sub/newdir")
    assert guest.path_create_directory(3, p, n) == Errno.SUCCESS
    assert (guest.box / "sub" / "newdir").is_dir()


def test_a_symlink_loop_is_eloop(guest):
    os.symlink("b", guest.box / "a")
    os.symlink("a", guest.box / "b")
    assert guest.open("a")[0] == Errno.LOOP


def test_bad_guest_pointers_are_efault(guest):
    assert guest.path_open(3, 0, 65530, 100, 0, 0, 0, 0, 16) == Errno.FAULT
    assert guest.fd_write(1, 65535, 4, 8) == Errno.FAULT
    assert guest.fd_prestat_get(3, 70000) == Errno.FAULT
    assert guest.args_sizes_get(-4, 0) == Errno.FAULT     # a negative i32 is a huge pointer


def test_both_ways_agree_on_empty_paths_and_trailing_slashes(guest):
    """The walk once opened the directory itself for "" and the file for "inside.txt/"."""
    assert guest.open("")[0] == Errno.NOENT
    assert guest.open("inside.txt/")[0] == Errno.NOTDIR
    assert guest.open("sub/")[0] == Errno.SUCCESS
    assert guest.open("new/", oflags=1, rights=int(Rights.FD_WRITE))[0] == Errno.ISDIR
    for call, path, want in [("path_create_directory", "made/", Errno.SUCCESS),
                             ("path_remove_directory", "made/", Errno.SUCCESS),
                             ("path_create_directory", "", Errno.NOENT),
                             ("path_unlink_file", "inside.txt/", Errno.NOTDIR),
                             ("path_unlink_file", "sub/", Errno.ISDIR),
                             ("path_remove_directory", "inside.txt/", Errno.NOTDIR)]:
        p, n = guest.s(path)
        assert getattr(guest, call)(3, p, n) == want, (call, path)
    a_p, a_n = guest.s("sub/")
    b_p, b_n = guest.s("moved/")
    assert guest.path_rename(3, a_p, a_n, 3, b_p, b_n) == Errno.SUCCESS
    assert (guest.box / "moved").is_dir() and (guest.box / "inside.txt").is_file()


def test_a_trailing_slash_on_a_symlink_out_is_refused(guest):
    """"name/" makes the kernel follow a symlink; it must still not leave the box."""
    os.symlink(guest.root / "outdir", guest.box / "away")
    assert guest.open("away/")[0] == Errno.PERM
    p, n = guest.s("away/")
    assert guest.path_filestat_set_times(3, 0, p, n, 0, 0, 2 | 8) == Errno.PERM
    assert guest.path_remove_directory(3, p, n) == Errno.NOTDIR
    assert (guest.root / "outdir").is_dir()


def test_nothing_lands_outside_through_a_symlinked_directory(guest):
    """A directory symlink pointing out, in the middle of a target path: rename, link,
    symlink and mkdir into it all refuse, and the outside directory stays empty."""
    os.symlink("../../outdir", guest.box / "sub" / "door")
    src_p, src_n = guest.s("inside.txt")
    t_p, t_n = guest.s("anything")
    for name in ("sub/door/x", "sub/door/../x"):
        p, n = guest.s(name)
        assert guest.path_rename(3, src_p, src_n, 3, p, n) == Errno.PERM, name
        assert guest.path_link(3, 0, src_p, src_n, 3, p, n) == Errno.PERM, name
        assert guest.path_symlink(t_p, t_n, 3, p, n) == Errno.PERM, name
        assert guest.path_create_directory(3, p, n) == Errno.PERM, name
    # "door/" names the link itself, as the kernel's rename and mkdir take it: they fail
    # on a symlink, and do not go through it
    p, n = guest.s("sub/door/")
    sub_p, sub_n = guest.s("sub2")
    assert guest.path_create_directory(3, sub_p, sub_n) == Errno.SUCCESS
    assert guest.path_rename(3, src_p, src_n, 3, p, n) == Errno.NOTDIR
    assert guest.path_rename(3, sub_p, sub_n, 3, p, n) == Errno.NOTDIR
    assert guest.path_create_directory(3, p, n) == Errno.EXIST
    assert guest.path_remove_directory(3, p, n) == Errno.NOTDIR
    assert guest.path_symlink(t_p, t_n, 3, p, n) == Errno.PERM
    assert (guest.box / "sub" / "door").is_symlink()
    assert list((guest.root / "outdir").iterdir()) == []
    assert (guest.box / "inside.txt").read_text() == "fine"
