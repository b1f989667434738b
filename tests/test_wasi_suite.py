"""The WASI test programs (``$PYLUCET_TESTSUITE/wasi/{c,assemblyscript}``), each run through
the whole of pylucet by ``tools/wasi_suite.py`` under the suite's sidecar rules: exit code and
stdout exact."""

from __future__ import annotations

import sys

import pytest

from .conftest import ROOT, suite_path

sys.path.insert(0, str(ROOT))
from tools.wasi_suite import programs, run_one  # noqa: E402

PROGRAMS = programs(suite_path() / "wasi") if (suite_path() / "wasi").is_dir() else []


@pytest.mark.parametrize("wasm", PROGRAMS, ids=[f"{p.parent.name}/{p.stem}" for p in PROGRAMS])
def test_wasi_program(wasm, testsuite):
    ok, why = run_one(wasm)
    assert ok, why


def test_wasi_programs_present(testsuite):
    """CI must have them: an empty parametrization would pass silently."""
    assert len(PROGRAMS) >= 26, f"expected the WASI programs under {testsuite}/wasi"
