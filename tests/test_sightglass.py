"""Each Sightglass benchmark program (``$PYLUCET_BENCHMARKS/sightglass``: C, Rust, TinyGo, sqlite3,
...) runs once through the whole of pylucet with Sightglass's harness rules, and its stdout and
stderr must be exactly what Sightglass expects: correctness on real code, whatever the figures
(``tools/sightglass.py --compare`` measures those)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

sys.path.insert(0, str(ROOT))
from tools.sightglass import benchmarks_dir, check, programs, run_pylucet  # noqa: E402

PROGRAMS = programs() if benchmarks_dir().is_dir() else []


@pytest.fixture(scope="session")
def benchmarks() -> Path:
    if not benchmarks_dir().is_dir():
        pytest.skip(f"Sightglass programs not found at {benchmarks_dir()} "
                    "(set PYLUCET_BENCHMARKS to run these)")
    return benchmarks_dir()


@pytest.mark.parametrize("wasm", PROGRAMS,
                         ids=[str(p.relative_to(benchmarks_dir())) for p in PROGRAMS])
def test_sightglass_program(wasm, benchmarks):
    problem = check(wasm, run_pylucet(wasm))
    assert problem is None, problem


def test_sightglass_programs_present(benchmarks):
    assert len(PROGRAMS) >= 35, f"expected the Sightglass programs under {benchmarks}"
