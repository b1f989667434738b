"""Spec-suite conformance: runs .wast scripts through the whole of pylucet and prints one line per
script (commands passed, failed, skipped), the skip reasons, the failures, then a final line
``N passed, M failed, K skipped``. Exits 1 when any command failed.

With no paths it runs every non-SIMD script of $PYLUCET_TESTSUITE/spec (default
../shared/testsuite). ``--update-baseline`` rewrites tests/spec_baseline.json, the per-script
counts that tests/test_spec.py holds the suite to (so that passes turning into skips fail CI).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import suite_path  # noqa: E402
from tests.spec_runner import BASELINE, ScriptRunner, spec_scripts  # noqa: E402


def _scripts(paths: List[str]) -> List[Path]:
    if not paths:
        return spec_scripts(suite_path())
    out: List[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(p.glob("*.wast")))
        elif p.is_file():
            out.append(p)
        else:
            raise SystemExit(f"spec_report: no such file or directory: {p}")
    return out


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*", help=".wast files or directories of them "
                    "(default: the suite's non-SIMD scripts)")
    ap.add_argument("--json", action="store_true", help="print the per-script results as JSON")
    ap.add_argument("--update-baseline", action="store_true",
                    help="write the per-script passed/skipped counts to "
                    f"{BASELINE.relative_to(ROOT)}")
    args = ap.parse_args(argv)
    if not args.paths and not suite_path().is_dir():
        print(f"no test suite at {suite_path()}", file=sys.stderr)
        return 2
    scripts = _scripts(args.paths)
    per_script: Dict[str, dict] = {}
    reasons: Counter = Counter()
    failures: List[str] = []
    started = time.perf_counter()
    if not args.json:
        print(f"{'script':<34}{'passed':>8}{'failed':>8}{'skipped':>9}")
    for script in scripts:
        o = ScriptRunner(script).run()
        skipped = sum(o.skipped.values())
        per_script[script.name] = {"passed": o.passed, "failed": len(o.failed),
                                   "skipped": skipped, "skip_reasons": dict(o.skipped),
                                   "failures": o.failed}
        reasons.update(o.skipped)
        failures.extend(o.failed)
        if not args.json:
            print(f"{script.name:<34}{o.passed:>8}{len(o.failed):>8}{skipped:>9}", flush=True)
    elapsed = time.perf_counter() - started
    totals = {k: sum(s[k] for s in per_script.values()) for k in ("passed", "failed", "skipped")}
    if args.json:
        json.dump({"scripts": per_script, "totals": totals, "seconds": round(elapsed, 1)},
                  sys.stdout, indent=1)
        print()
    else:
        print(f"\n({elapsed:.1f} s) skipped, by reason:")
        for reason, n in reasons.most_common(20):
            print(f"{n:>8}  {reason}")
        for line in failures[:50]:
            print("FAIL", line)
        print(f"{totals['passed']} passed, {totals['failed']} failed, {totals['skipped']} skipped")
    if args.update_baseline:
        if args.paths:
            old = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}
        else:
            old = {}
        old.update({name: {"passed": s["passed"], "skipped": s["skipped"]}
                    for name, s in per_script.items()})
        BASELINE.write_text(json.dumps(dict(sorted(old.items())), indent=1) + "\n")
        print(f"baseline written: {BASELINE}", file=sys.stderr)
    return 1 if totals["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
