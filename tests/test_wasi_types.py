"""WASI's numbers as the witx defines them: checked against the spec's own order of errno
names (always), and against every constant and record size of wasi-libc's generated
``wasi/api.h`` where it is installed (Debian's wasi-libc). A guest sees only these numbers:
an enum one off (as errno once was past ``pipe``) turns every error after it into another."""

from __future__ import annotations

import errno as host
import re
from pathlib import Path

import pytest

from pylucet.wasi import types
from pylucet.wasi.errno import Errno, from_host
from pylucet.wasi.types import (DIRENT, EVENT, FDSTAT, FILESTAT, IOVEC, PRESTAT, SUBSCRIPTION,
                                Clock, Eventtype, Fdflags, Filetype, Fstflags, Oflags, Rights,
                                Whence)

# the witx's `(typename $errno (enum (@witx tag u16) ...))`, in its order
WITX_ERRNO = """success 2big acces addrinuse addrnotavail afnosupport again already badf badmsg
busy canceled child connaborted connrefused connreset deadlk destaddrreq dom dquot exist fault
fbig hostunreach idrm ilseq inprogress intr inval io isconn isdir loop mfile mlink msgsize
multihop nametoolong netdown netreset netunreach nfile nobufs nodev noent noexec nolck nolink
nomem nomsg noprotoopt nospc nosys notconn notdir notempty notrecoverable notsock notsup notty
nxio overflow ownerdead perm pipe proto protonosupport prototype range rofs spipe srch stale
timedout txtbsy xdev notcapable""".split()

API_H = Path("/usr/include/wasm32-wasi/wasi/api.h")


def test_errno_follows_the_witx_order():
    assert [e.name.lower() for e in Errno] == [w.replace("2big", "toobig") for w in WITX_ERRNO]
    assert [int(e) for e in Errno] == list(range(len(WITX_ERRNO)))
    assert (Errno.PIPE, Errno.XDEV, Errno.NOTCAPABLE) == (64, 75, 76)


@pytest.mark.parametrize("code, want", [(host.EPIPE, Errno.PIPE), (host.EXDEV, Errno.XDEV),
                                        (host.ENOENT, Errno.NOENT), (host.EPERM, Errno.PERM),
                                        (host.EOPNOTSUPP, Errno.NOTSUP),
                                        (host.EWOULDBLOCK, Errno.AGAIN),
                                        (host.ESRCH, Errno.SRCH), (host.ESPIPE, Errno.SPIPE),
                                        (host.ENOTRECOVERABLE, Errno.NOTRECOVERABLE),
                                        (host.ENOKEY, Errno.IO)])
def test_host_errno_maps_exactly(code, want):
    assert from_host(code) == want


def api_h():
    if not API_H.exists():
        pytest.skip(f"{API_H} (wasi-libc) is not installed")
    text = API_H.read_text()
    values = {}
    for m in re.finditer(r"#define __WASI_(\w+) \((?:UINT\d+_C\((?P<n>\d+)\)"
                         r"|\(\w+\)\(1 << (?P<bit>\d+)\))\)", text):
        values[m.group(1)] = int(m["n"]) if m["n"] is not None else 1 << int(m["bit"])
    sizes = {m[1]: int(m[2]) for m in re.finditer(
        r"_Static_assert\(sizeof\(__wasi_(\w+)_t\) == (\d+)", text)}
    return values, sizes


GROUPS = [("ERRNO_", Errno), ("RIGHTS_", Rights), ("FILETYPE_", Filetype),
          ("OFLAGS_", Oflags), ("FDFLAGS_", Fdflags), ("WHENCE_", Whence), ("CLOCKID_", Clock),
          ("EVENTTYPE_", Eventtype), ("FSTFLAGS_", Fstflags)]


@pytest.mark.parametrize("prefix, enum", GROUPS, ids=[g[0].rstrip("_") for g in GROUPS])
def test_every_constant_matches_wasi_libc(prefix, enum):
    values, _ = api_h()
    theirs = {k[len(prefix):].replace("2BIG", "TOOBIG"): v for k, v in values.items()
              if k.startswith(prefix)}
    assert theirs, prefix
    assert {m.name: int(m) for m in enum} == theirs


def test_single_flags_match_wasi_libc():
    values, _ = api_h()
    assert values["LOOKUPFLAGS_SYMLINK_FOLLOW"] == types.LOOKUP_SYMLINK_FOLLOW
    assert values["SUBCLOCKFLAGS_SUBSCRIPTION_CLOCK_ABSTIME"] == types.SUBCLOCK_ABSTIME
    assert values["EVENTRWFLAGS_FD_READWRITE_HANGUP"] == types.EVENT_FD_READWRITE_HANGUP
    assert (values["SDFLAGS_RD"], values["SDFLAGS_WR"]) == (types.SDFLAGS_RD, types.SDFLAGS_WR)
    assert (values["RIFLAGS_RECV_PEEK"], values["RIFLAGS_RECV_WAITALL"]) == (
        types.RIFLAGS_RECV_PEEK, types.RIFLAGS_RECV_WAITALL)
    assert values["ROFLAGS_RECV_DATA_TRUNCATED"] == types.ROFLAGS_RECV_DATA_TRUNCATED
    assert values["PREOPENTYPE_DIR"] == types.PREOPENTYPE_DIR
    assert [values[f"ADVICE_{a}"] for a in ("NORMAL", "SEQUENTIAL", "RANDOM", "WILLNEED",
                                             "DONTNEED", "NOREUSE")] == list(range(6))


def test_record_sizes_match_wasi_libc():
    _, sizes = api_h()
    ours = {"iovec": IOVEC, "ciovec": IOVEC, "dirent": DIRENT, "fdstat": FDSTAT,
            "filestat": FILESTAT, "event": EVENT, "subscription": SUBSCRIPTION,
            "prestat": PRESTAT}
    assert {k: v.size for k, v in ours.items()} == {k: sizes[k] for k in ours}


def test_every_function_has_the_type_wasmtime_links():
    """All 46 preview1 functions, with the wasm types pylucet defines, imported by one module
    that wasmtime-py's own WASI linker must accept (a wrong type is a link error there)."""
    wasmtime = pytest.importorskip("wasmtime")
    from pylucet.wasi.preview1 import FUNCTIONS
    imports = []
    for name, (signature, _) in sorted(FUNCTIONS.items()):
        params, results = (part.strip(" ()") for part in signature.split("->"))
        imports.append(f'(import "wasi_snapshot_preview1" "{name}" (func (param {params}) '
                       f'(result {results})))'.replace(",", ""))
    assert len(imports) == 46
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    store.set_wasi(wasmtime.WasiConfig())
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    linker.instantiate(store, wasmtime.Module(engine, "(module " + "\n".join(imports) + ")"))
