"""WASI preview1's numbers and records, as the witx defines them (``wasi_snapshot_preview1``).

Every constant, flag set and struct layout the calls use is defined here once: rights, flags,
file types, and the records a call reads from or writes to guest memory as ``struct.Struct``
objects. Errors are in ``wasi.errno``.
"""

from __future__ import annotations

import enum
import struct


class Filetype(enum.IntEnum):
    UNKNOWN = 0
    BLOCK_DEVICE = 1
    CHARACTER_DEVICE = 2
    DIRECTORY = 3
    REGULAR_FILE = 4
    SOCKET_DGRAM = 5
    SOCKET_STREAM = 6
    SYMBOLIC_LINK = 7


class Rights(enum.IntFlag):
    FD_DATASYNC = 1 << 0
    FD_READ = 1 << 1
    FD_SEEK = 1 << 2
    FD_FDSTAT_SET_FLAGS = 1 << 3
    FD_SYNC = 1 << 4
    FD_TELL = 1 << 5
    FD_WRITE = 1 << 6
    FD_ADVISE = 1 << 7
    FD_ALLOCATE = 1 << 8
    PATH_CREATE_DIRECTORY = 1 << 9
    PATH_CREATE_FILE = 1 << 10
    PATH_LINK_SOURCE = 1 << 11
    PATH_LINK_TARGET = 1 << 12
    PATH_OPEN = 1 << 13
    FD_READDIR = 1 << 14
    PATH_READLINK = 1 << 15
    PATH_RENAME_SOURCE = 1 << 16
    PATH_RENAME_TARGET = 1 << 17
    PATH_FILESTAT_GET = 1 << 18
    PATH_FILESTAT_SET_SIZE = 1 << 19
    PATH_FILESTAT_SET_TIMES = 1 << 20
    FD_FILESTAT_GET = 1 << 21
    FD_FILESTAT_SET_SIZE = 1 << 22
    FD_FILESTAT_SET_TIMES = 1 << 23
    PATH_SYMLINK = 1 << 24
    PATH_REMOVE_DIRECTORY = 1 << 25
    PATH_UNLINK_FILE = 1 << 26
    POLL_FD_READWRITE = 1 << 27
    SOCK_SHUTDOWN = 1 << 28
    SOCK_ACCEPT = 1 << 29


ALL_RIGHTS = Rights((1 << 30) - 1)
FILE_RIGHTS = (Rights.FD_DATASYNC | Rights.FD_READ | Rights.FD_SEEK | Rights.FD_FDSTAT_SET_FLAGS
               | Rights.FD_SYNC | Rights.FD_TELL | Rights.FD_WRITE | Rights.FD_ADVISE
               | Rights.FD_ALLOCATE | Rights.FD_FILESTAT_GET | Rights.FD_FILESTAT_SET_SIZE
               | Rights.FD_FILESTAT_SET_TIMES | Rights.POLL_FD_READWRITE)
"""What a regular file's descriptor can do."""
DIR_RIGHTS = (Rights.FD_FDSTAT_SET_FLAGS | Rights.FD_SYNC | Rights.FD_ADVISE
              | Rights.PATH_CREATE_DIRECTORY | Rights.PATH_CREATE_FILE | Rights.PATH_LINK_SOURCE
              | Rights.PATH_LINK_TARGET | Rights.PATH_OPEN | Rights.FD_READDIR
              | Rights.PATH_READLINK | Rights.PATH_RENAME_SOURCE | Rights.PATH_RENAME_TARGET
              | Rights.PATH_FILESTAT_GET | Rights.PATH_FILESTAT_SET_SIZE
              | Rights.PATH_FILESTAT_SET_TIMES | Rights.FD_FILESTAT_GET
              | Rights.FD_FILESTAT_SET_TIMES | Rights.PATH_SYMLINK | Rights.PATH_REMOVE_DIRECTORY
              | Rights.PATH_UNLINK_FILE | Rights.POLL_FD_READWRITE)
"""What a directory's descriptor can do; files opened beneath it inherit FILE_RIGHTS | this."""
STREAM_RIGHTS = (Rights.FD_READ | Rights.FD_WRITE | Rights.FD_FDSTAT_SET_FLAGS
                 | Rights.FD_FILESTAT_GET | Rights.POLL_FD_READWRITE)
"""What stdio can do (no seek, tell or sync on a terminal or a pipe)."""
SOCKET_RIGHTS = STREAM_RIGHTS | Rights.SOCK_SHUTDOWN | Rights.SOCK_ACCEPT


class Oflags(enum.IntFlag):
    CREAT = 1
    DIRECTORY = 2
    EXCL = 4
    TRUNC = 8


class Fdflags(enum.IntFlag):
    APPEND = 1
    DSYNC = 2
    NONBLOCK = 4
    RSYNC = 8
    SYNC = 16


LOOKUP_SYMLINK_FOLLOW = 1


class Whence(enum.IntEnum):
    SET = 0
    CUR = 1
    END = 2


class Fstflags(enum.IntFlag):
    ATIM = 1
    ATIM_NOW = 2
    MTIM = 4
    MTIM_NOW = 8


class Clock(enum.IntEnum):
    REALTIME = 0
    MONOTONIC = 1
    PROCESS_CPUTIME_ID = 2
    THREAD_CPUTIME_ID = 3


class Eventtype(enum.IntEnum):
    CLOCK = 0
    FD_READ = 1
    FD_WRITE = 2


SUBCLOCK_ABSTIME = 1
EVENT_FD_READWRITE_HANGUP = 1
SDFLAGS_RD, SDFLAGS_WR = 1, 2
RIFLAGS_RECV_PEEK, RIFLAGS_RECV_WAITALL = 1, 2
ROFLAGS_RECV_DATA_TRUNCATED = 1
PREOPENTYPE_DIR = 0

# --- records in guest memory (little-endian, the witx alignment) ----------------------------------
IOVEC = struct.Struct("<II")                       # buf, buf_len
FDSTAT = struct.Struct("<BxHxxxxQQ")               # filetype, flags, rights_base, inheriting
FILESTAT = struct.Struct("<QQB7xQQQQQ")            # dev, ino, filetype, nlink, size, a/m/ctim
DIRENT = struct.Struct("<QQIB3x")                  # d_next, d_ino, d_namlen, d_type
PRESTAT = struct.Struct("<B3xI")                   # tag, pr_name_len
SUBSCRIPTION = struct.Struct("<QB7xQQQH6x")        # userdata, tag, (clock id | fd), timeout,
                                                   # precision, flags (the clock variant)
EVENT = struct.Struct("<QHB5xQH6x")                # userdata, error, type, nbytes, flags
U16 = struct.Struct("<H")
U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")
assert (FDSTAT.size, FILESTAT.size, DIRENT.size, PRESTAT.size, SUBSCRIPTION.size, EVENT.size) \
    == (24, 64, 24, 8, 48, 32)
