"""Resolving a guest's path strictly beneath a preopened directory.

Every path a WASI call names is relative to a directory descriptor, and must never reach outside
it: not by ``..``, not by an absolute path, not through a symlink (one the guest made itself, one
that points out, one that points out and back in), not by a rename or link whose target lies
outside. Two ways, with the same result:

* ``openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`` (Linux 5.6+): the kernel walks the path
  and refuses any step that leaves the directory, including through symlinks, atomically;
* where the kernel lacks it, a careful walk here, component by component: every directory is
  opened with ``O_PATH | O_NOFOLLOW | O_DIRECTORY`` relative to the one before, ``..`` pops a stack
  of those descriptors and is refused at the top, and a symlink is read (``readlinkat``) and its
  target spliced into the rest of the path, refused if absolute, at most 40 times. A component
  swapped for a symlink in between makes the ``O_NOFOLLOW`` open fail rather than follow it.

Operations on the last component (``mkdirat``, ``unlinkat``, ``renameat``, ...) get the resolved
parent's descriptor and a single name that is neither ``.`` nor ``..``, so the kernel never walks
anything itself.
"""

from __future__ import annotations

import errno
import functools
import os
from typing import List, Optional, Tuple

from ..runtime import libc
from .errno import Errno, WasiError, from_host

MAX_SYMLINKS = 40
ESCAPE = Errno.PERM
"""What a path that would leave its directory gets: EPERM, as wasmtime answers (cap-std's
"a path led outside of the filesystem"), on both ways of resolving. ENOTCAPABLE stays what
the spec makes it: a descriptor lacking a right."""


def _openat2(dirfd: int, path: str, flags: int, mode: int) -> int:
    return libc.openat2(dirfd, path, flags | os.O_CLOEXEC, mode if flags & os.O_CREAT else 0,
                        libc.RESOLVE_BENEATH | libc.RESOLVE_NO_MAGICLINKS)


@functools.lru_cache(maxsize=None)
def kernel_has_openat2() -> bool:
    """Asked once per process (a seccomp filter may refuse the call with EPERM)."""
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.close(_openat2(root, ".", os.O_PATH, 0))
    except OSError as e:
        return e.errno not in (errno.ENOSYS, errno.EPERM)
    finally:
        os.close(root)
    return True


def _error(e: OSError) -> WasiError:
    # openat2 reports an escape as EXDEV (an absolute path or symlink, ``..`` past the root)
    if e.errno == errno.EXDEV:
        return WasiError(ESCAPE)
    return WasiError(from_host(e.errno or errno.EIO))


class Resolver:
    """Opens guest paths beneath directory descriptors; ``use_openat2=False`` forces the walk."""

    def __init__(self, use_openat2: Optional[bool] = None):
        self.use_openat2 = kernel_has_openat2() if use_openat2 is None else use_openat2

    # --- the two entry points ------------------------------------------------------------------

    def open(self, dirfd: int, path: str, flags: int, mode: int = 0o666,
             follow: bool = True) -> int:
        """A host descriptor for ``path`` beneath ``dirfd``, opened with ``flags``."""
        _check(path)
        if path.endswith("/"):
            # "name/" names a directory, and follows a symlink there, as the kernel says
            if flags & os.O_CREAT:
                raise WasiError(Errno.ISDIR)
            flags |= os.O_DIRECTORY
            follow = True
        if not follow:
            flags |= os.O_NOFOLLOW
        if self.use_openat2:
            try:
                return _openat2(dirfd, path, flags, mode)
            except OSError as e:
                raise _error(e) from None
        parent, name = self._walk(dirfd, path, follow)
        try:
            if name == ".":
                return os.open(".", flags | os.O_CLOEXEC, mode, dir_fd=parent)
            return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=parent)
        except OSError as e:
            raise _error(e) from None
        finally:
            os.close(parent)

    def parent(self, dirfd: int, path: str, keep_slash: bool = False) -> Tuple[int, str]:
        """(descriptor of the directory holding the last component, its name): for the calls
        that act on a name rather than open it. The caller closes the descriptor. The name is
        a single component; ``.`` means the directory itself (for ``dir/.`` or ``dir/..``, and
        for ``dir/`` unless ``keep_slash``, all resolved whole).

        ``keep_slash`` hands ``dir/`` back as the name ``"dir/"``: for ``mkdirat``,
        ``unlinkat(AT_REMOVEDIR)`` and ``renameat``, where the kernel takes a trailing slash to
        mean "a directory" and never follows a symlink named so. Not for calls where a trailing
        slash would make the kernel follow one (``utimensat``, ``readlinkat``, ``fstatat``)."""
        _check(path)
        stripped = path.rstrip("/")
        head, _, name = stripped.rpartition("/") if stripped else ("", "", ".")
        slash = path.endswith("/")
        if (slash and not keep_slash) or name in (".", ".."):
            return self.open(dirfd, path, os.O_PATH | os.O_DIRECTORY), "."
        suffix = "/" if slash else ""
        if self.use_openat2:
            return self.open(dirfd, head or ".", os.O_PATH | os.O_DIRECTORY), name + suffix
        parent, name = self._walk(dirfd, stripped, follow=False)
        return parent, name + suffix

    # --- the walk, where the kernel cannot do it --------------------------------------------------

    def _walk(self, dirfd: int, path: str, follow: bool) -> Tuple[int, str]:
        """(descriptor of the last component's directory, the last component), resolving every
        symlink on the way (and the last one too if ``follow``), never leaving ``dirfd``."""
        stack: List[int] = [os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC,
                                    dir_fd=dirfd)]
        todo = [c for c in path.split("/") if c not in ("", ".")][::-1]   # a stack, next last
        links = 0
        try:
            while todo:
                comp = todo.pop()
                if comp == "..":
                    if len(stack) == 1:
                        raise WasiError(ESCAPE)
                    os.close(stack.pop())
                    continue
                last = not todo
                try:
                    target = os.readlink(comp, dir_fd=stack[-1])
                except OSError as e:
                    if e.errno not in (errno.EINVAL, errno.ENOENT):
                        raise _error(e) from None
                    target = None        # not a symlink (or not there yet: creating it)
                if target is not None and (follow or not last):
                    links += 1
                    if links > MAX_SYMLINKS:
                        raise WasiError(Errno.LOOP)
                    if target.startswith("/"):
                        raise WasiError(ESCAPE)
                    todo.extend(c for c in target.split("/")[::-1] if c not in ("", "."))
                    continue
                if last:
                    top = stack.pop()
                    return top, comp
                try:
                    stack.append(os.open(comp, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW
                                         | os.O_CLOEXEC, dir_fd=stack[-1]))
                except OSError as e:
                    raise _error(e) from None
            top = stack.pop()
            return top, "."
        finally:
            for fd in stack:
                os.close(fd)


def _check(path: str) -> None:
    if not path:
        raise WasiError(Errno.NOENT)     # as openat2 says of "", so both ways agree
    if path.startswith("/"):
        raise WasiError(ESCAPE)
    if "\0" in path:
        raise WasiError(Errno.ILSEQ)
