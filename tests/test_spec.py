"""The WebAssembly 2.0 core spec suite, script by script, through the whole of pylucet.

Every non-SIMD script must run whole: a script fails if any command disagrees with it, if any
command is skipped, or if it passes fewer commands than `tests/spec_baseline.json` records for
it, so that a regression that turns passes into skips (a conversion removed from the code
generator, say) cannot stay green. When a change legitimately adds commands (a new suite), refresh
the baseline with `python3 tools/spec_report.py --update-baseline` and commit it with the change.

`simd_*` scripts are expected failures until SIMD lands: their modules are refused as
`pylucet.UnsupportedProposal`, which `test_simd_is_refused_by_name` holds to.
"""

from __future__ import annotations

import json

import pytest

from .conftest import suite_path
from .spec_runner import BASELINE, ScriptRunner, spec_scripts

SCRIPTS = spec_scripts(suite_path()) if suite_path().is_dir() else []
EXPECTED = json.loads(BASELINE.read_text(encoding="utf-8"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_spec_script(script, testsuite):
    outcome = ScriptRunner(script).run()
    assert not outcome.failed, (f"{len(outcome.failed)} of {outcome.ran} commands failed:\n"
                                + "\n".join(outcome.failed[:30]))
    assert script.name in EXPECTED, (f"{script.name} has no baseline: run "
                                     "tools/spec_report.py --update-baseline")
    want = EXPECTED[script.name]
    skipped = sum(outcome.skipped.values())
    reasons = "; ".join(f"{n}x {r}" for r, n in outcome.skipped.most_common(5))
    assert skipped == 0, f"{skipped} commands skipped: {reasons}"
    assert outcome.passed >= want["passed"], (
        f"{outcome.passed} commands passed, the baseline has {want['passed']}")


def test_spec_suite_present(testsuite):
    """CI must have the suite: an empty parametrization would otherwise pass silently."""
    assert len(SCRIPTS) > 80, f"expected the spec scripts under {testsuite}/spec"


def test_baseline_covers_the_suite(testsuite):
    """A script dropped from the run (renamed, or newly excluded) must not vanish silently."""
    missing = sorted(set(EXPECTED) - {p.name for p in SCRIPTS})
    assert not missing, f"baseline scripts no longer run: {missing}"


def test_simd_is_refused_by_name(testsuite):
    """The expected failure of the simd_* scripts: their modules say what is missing."""
    import pylucet
    from pylucet.wasm import wast
    script = suite_path() / "spec" / "simd_address.wast"
    module = next(c for c in wast.parse_wast(script.read_text(encoding="utf-8"))
                  if isinstance(c, wast.Module))
    with pytest.raises(pylucet.UnsupportedProposal, match="SIMD"):
        pylucet.compile(module.wasm())
