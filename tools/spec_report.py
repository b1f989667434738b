"""Spec-suite conformance table: per script, commands passed, failed and skipped (by reason),
and the totals. Reads the suite from $PYLUCET_TESTSUITE (default ../shared/testsuite)."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import suite_path  # noqa: E402
from tests.spec_runner import ScriptRunner, spec_scripts  # noqa: E402


def main(argv=None) -> int:
    argparse.ArgumentParser(description=__doc__).parse_args(argv)
    suite = suite_path()
    if not suite.is_dir():
        print(f"no test suite at {suite}", file=sys.stderr)
        return 1
    totals, reasons, failed = Counter(), Counter(), []
    started = time.perf_counter()
    print(f"{'script':<34}{'passed':>8}{'failed':>8}{'skipped':>9}")
    for script in spec_scripts(suite):
        o = ScriptRunner(script).run()
        skipped = sum(o.skipped.values())
        totals.update(passed=o.passed, failed=len(o.failed), skipped=skipped)
        reasons.update(o.skipped)
        failed.extend(o.failed)
        print(f"{script.name:<34}{o.passed:>8}{len(o.failed):>8}{skipped:>9}")
    print(f"{'TOTAL':<34}{totals['passed']:>8}{totals['failed']:>8}{totals['skipped']:>9}"
          f"   ({time.perf_counter() - started:.1f} s)")
    print("\nskipped, by reason:")
    for reason, n in reasons.most_common(15):
        print(f"{n:>8}  {reason}")
    for line in failed[:50]:
        print("FAIL", line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
