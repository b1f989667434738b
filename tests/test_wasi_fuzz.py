"""Every preview1 function, called with arbitrary arguments (wild pointers and lengths, huge
and negative offsets, paths that try to leave, fds that are closed or renumbered under it),
returns an errno: it never raises into the runtime, never touches host memory, and changes
nothing outside the preopened directory. Seeded, so a failure repeats."""

from __future__ import annotations

import inspect
import io
import os
import random

import pytest

from pylucet.errors import Terminate
from pylucet.wasi import WasiConfig
from pylucet.wasi.preview1 import FUNCTIONS
from pylucet.wasi.sandbox import kernel_has_openat2

from .wasi_guest import Guest

I32 = [0, 1, 2, 3, 4, 5, -1, 0x7FFF_FFFF, -0x8000_0000, 65535, 65536, 65532, 100, 2048, 4096]
I64 = I32 + [0x7FFF_FFFF_FFFF_FFFF, -0x8000_0000_0000_0000, 1 << 40, -(1 << 40)]
PATHS = ["f", "sub", "sub/", "new", "sub/new", "../x", "/etc", "", ".", "..", "f/", "ln",
         "sub/..", "ln2", "d2/", "sub/d3", "../box/f", "sub/../../x"]
FDS = [0, 1, 2, 3, 3, 3, 4, 5, 6, 99, -1]
BLOCKING = {"proc_exit", "poll_oneoff", "sock_accept"}   # may end the guest or wait: tested apart


def arguments(rng, fn, signature, strings):
    """Arguments for one call: a (ptr, len) of a known path where the parameter is one, an fd
    number where it is one, and otherwise values from the edges of each type."""
    names = list(inspect.signature(fn).parameters)[2:]
    types = [t.strip() for t in signature.split("->")[0].strip(" ()").split(",") if t.strip()]
    args, k = [], 0
    while k < len(types):
        name, wasm = names[k], types[k]
        if "path" in name and k + 1 < len(types) and rng.random() < 0.9:
            args.extend(rng.choice(strings))
            k += 2
            continue
        if name in ("fd", "to", "new_fd", "old_fd"):
            args.append(rng.choice(FDS))
        elif name in ("base", "inheriting"):
            args.append(rng.choice([-1, 0, (1 << 30) - 1, 2, 64]))
        elif rng.random() < 0.7:
            args.append(rng.choice(I64 if wasm == "i64" else I32))
        elif wasm == "i64":
            args.append(rng.randrange(-(1 << 63), 1 << 63))
        else:
            args.append(rng.randrange(-(1 << 31), 1 << 31))
        k += 1
    return args


@pytest.mark.parametrize("use_openat2", [True, False], ids=["openat2", "walk"])
def test_arbitrary_calls_return_an_errno_and_stay_inside(tmp_path, use_openat2):
    if use_openat2 and not kernel_has_openat2():
        pytest.skip("this kernel has no openat2")
    rng = random.Random(20261202)
    names = sorted(set(FUNCTIONS) - BLOCKING)
    (tmp_path / "x").write_text("outside")
    for round_ in range(60):
        box = tmp_path / f"box{round_}"
        (box / "sub").mkdir(parents=True)
        (box / "f").write_text("hello")
        os.symlink("f", box / "ln")
        config = WasiConfig()
        config.preopen_dir(box, ".")
        config.use_openat2 = use_openat2
        config.stdout_file, config.stdin_file = io.BytesIO(), io.BytesIO(b"input")
        guest = Guest(config.build())
        strings = [guest.s(p) for p in PATHS]
        try:
            for _ in range(80):
                name = rng.choice(names)
                signature, fn = FUNCTIONS[name]
                args = arguments(rng, fn, signature, strings)
                try:
                    result = guest.calls[name](guest.vm, *args)
                except Terminate:                       # proc_raise of a fatal signal
                    continue
                assert type(result) is int and 0 <= result <= 76, (name, args, result)
        finally:
            guest.ctx.fds.close_all()
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            ["x"] + [f"box{k}" for k in range(round_ + 1)])
        assert (tmp_path / "x").read_text() == "outside"
