"""Shared test fixtures: where the conformance data lives, and compiling WAT for a test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def suite_path() -> Path:
    """``$PYLUCET_TESTSUITE``, else ``../shared/testsuite`` beside the project root."""
    return Path(os.environ.get("PYLUCET_TESTSUITE", ROOT.parent / "shared" / "testsuite"))


@pytest.fixture(scope="session")
def testsuite() -> Path:
    path = suite_path()
    if not path.is_dir():
        pytest.skip(f"conformance data not found at {path} (set PYLUCET_TESTSUITE to run these)")
    return path
