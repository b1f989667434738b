"""A tampered artifact header is a LoadError, never a crash: each field the loader trusts is under
the header checksum, and a header whose checksum was recomputed is still checked against the
ELF's segments. The loads run in a fresh interpreter, since a header that got through could
point the runtime at unmapped memory."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import pytest

import pylucet
from pylucet.module.serialize import HEADER_SIZE, ArtifactHeader, pack_header, unpack_header

from .conftest import ROOT

FIELDS = {"magic": (0, 8), "version": (8, 4), "header_crc": (12, 4), "blob_size": (16, 8),
          "self_vaddr": (24, 8), "text_vaddr": (32, 8), "text_size": (40, 8)}
TRUSTED = ("blob_size", "self_vaddr", "text_vaddr", "text_size")
SOURCE = '''(module (memory 1) (func (export "f") (result i32) (i32.const 7))
                      (func (export "g") (result i32) (i32.load (i32.const 0))))'''

CHECKER = '''
import json, sys
import pylucet
results = {}
for name, path in json.loads(sys.argv[1]).items():
    try:
        module = pylucet.load(path)
    except pylucet.LoadError as e:
        results[name] = "LoadError: " + str(e)
        continue
    with pylucet.MmapRegion(1) as region, region.new_instance(module) as inst:
        results[name] = "ran: %r" % (inst.run("f"),)
print(json.dumps(results))
'''


def _artifact() -> bytes:
    return pylucet.compile(SOURCE)


def _load_all(paths: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", CHECKER, json.dumps(paths)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"the host crashed (status {r.returncode}): {r.stderr[-2000:]}"
    return json.loads(r.stdout.splitlines()[-1])


def _variants(tmp_path, make) -> dict:
    good = _artifact()
    at = good.index(b"PYLUCET\0")
    paths = {}
    for name, variant in make(good, at):
        path = tmp_path / f"{name}.so"
        path.write_bytes(variant)
        paths[name] = str(path)
    return paths


def test_flipping_any_header_field_is_a_load_error(tmp_path):
    def flips(good, at):
        for field, (offset, size) in FIELDS.items():
            for bit in (0, 8 * size - 1, 12):   # low, high and a middle bit of the field
                bad = bytearray(good)
                bad[at + offset + bit // 8] ^= 1 << bit % 8
                yield f"{field}-bit{bit}", bytes(bad)
        yield "intact", good
    results = _load_all(_variants(tmp_path, flips))
    assert results.pop("intact") == "ran: 7"
    assert results and all(r.startswith("LoadError") for r in results.values()), results


def test_a_header_with_a_forged_checksum_is_checked_against_the_elf(tmp_path):
    deltas = {"blob_size": (1, 4096, 1 << 40), "self_vaddr": (8, 4096, -4096),
              "text_vaddr": (16, 4096, 1 << 32, -0x1000), "text_size": (1, 4096, 1 << 40)}

    def forged(good, at):
        header = unpack_header(good[at:at + HEADER_SIZE])
        for field, steps in deltas.items():
            for step in steps:
                values = {f: getattr(header, f) for f in TRUSTED}
                values[field] = (values[field] + step) % (1 << 64)
                raw = pack_header(ArtifactHeader(**values))
                yield f"{field}{step:+#x}", good[:at] + raw + good[at + HEADER_SIZE:]
    results = _load_all(_variants(tmp_path, forged))
    assert len(results) == sum(map(len, deltas.values()))
    assert all(r.startswith("LoadError") for r in results.values()), results


def test_the_checksum_covers_every_field_the_loader_reads():
    header = ArtifactHeader(blob_size=4096, self_vaddr=0x3000, text_vaddr=0x1000, text_size=64)
    raw = pack_header(header)
    assert unpack_header(raw) == header
    for field, (offset, size) in FIELDS.items():
        if field in ("magic", "version"):
            continue   # refused by name before the checksum is looked at
        bad = bytearray(raw)
        bad[offset] ^= 1
        with pytest.raises(pylucet.LoadError, match="checksum"):
            unpack_header(bytes(bad))


def test_an_older_format_is_refused_with_a_hint():
    raw = bytearray(pack_header(ArtifactHeader(4096, 0x3000, 0x1000, 64)))
    struct.pack_into("<I", raw, 8, 1)
    with pytest.raises(pylucet.LoadError, match="version 1 is not supported.*recompile"):
        unpack_header(bytes(raw))
