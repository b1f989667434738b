"""The WebAssembly 2.0 core spec suite, script by script, through the whole of pylucet.

A script fails if any command pylucet runs disagrees with it. Commands that need what pylucet
does not do yet (floats, bulk memory, linking...) are skipped by reason; a script of which
nothing can run yet is reported as skipped, never as passed. `python3 tools/spec_report.py`
prints the whole table.
"""

from __future__ import annotations

import pytest

from .conftest import suite_path
from .spec_runner import ScriptRunner, spec_scripts

SCRIPTS = spec_scripts(suite_path()) if suite_path().is_dir() else []


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_spec_script(script, testsuite):
    outcome = ScriptRunner(script).run()
    assert not outcome.failed, (f"{len(outcome.failed)} of {outcome.ran} commands failed:\n"
                                + "\n".join(outcome.failed[:30]))
    if outcome.ran == 0 and outcome.skipped:   # (a script of bare modules has nothing to skip)
        reasons = "; ".join(f"{n}x {r}" for r, n in outcome.skipped.most_common(3))
        pytest.skip(f"nothing in {script.name} runs yet: {reasons}")


def test_spec_suite_present(testsuite):
    """CI must have the suite: an empty parametrization would otherwise pass silently."""
    assert len(SCRIPTS) > 80, f"expected the spec scripts under {testsuite}/spec"
