"""Writing a file so that readers see the old contents or the new, never a part.

Artifacts are loaded with ``dlopen``: a half-written ``.so`` under the real name would be
loaded (or crash the loader) by whoever comes next, a concurrent compile into the compile cache
included. So the bytes go to a fresh temporary file in the same directory (``os.replace`` is
atomic only within one file system), are flushed to disk, and the file is renamed over the
target.
"""

from __future__ import annotations

import os
import tempfile
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]


def write_atomically(path: PathLike, data: bytes, *, durable: bool = False) -> None:
    """Write ``data`` to ``path`` atomically. ``durable`` also syncs the file and directory,
    so a crash cannot leave an empty entry behind (the compile cache wants that).

    An error names ``path``, not the temporary file the user never asked for."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                   dir=directory)
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise OSError(e.errno, e.strerror, path) from None
        raise
    if durable:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _umask() -> int:
    """The process umask, read without setting it (``os.umask`` would race other threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022
