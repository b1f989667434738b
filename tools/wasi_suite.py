"""Run the WASI test programs under the sidecar rules of the test suite's README.

Every ``X.wasm`` in ``${PYLUCET_TESTSUITE:-../shared/testsuite}/wasi/{c,assemblyscript}`` runs on a
temporary copy of its folder, with ``X.json``'s ``args`` (after argv[0], the program's name),
``env`` (nothing else inherited), ``dirs`` (preopened under their own names), and must exit with
``exit_code`` (default 0) and print exactly ``stdout`` when given. Prints a line per program and
``N passed, M failed``; exits non-zero when any failed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SUITES = ("c", "assemblyscript")


def suite_dir() -> Path:
    return Path(os.environ.get("PYLUCET_TESTSUITE", ROOT.parent / "shared" / "testsuite")) / "wasi"


def programs(base: Optional[Path] = None) -> List[Path]:
    base = base or suite_dir()
    return sorted(p for s in SUITES if (base / s).is_dir() for p in (base / s).glob("*.wasm"))


def run_one(wasm: Path) -> Tuple[bool, str]:
    """(passed, why not) for one program."""
    import pylucet
    from pylucet import wasi
    spec = json.loads(wasm.with_suffix(".json").read_text()) if wasm.with_suffix(".json").exists() \
        else {}
    with tempfile.TemporaryDirectory(prefix="pylucet-wasi-") as tmp:
        work = Path(tmp) / "t"
        shutil.copytree(wasm.parent, work, symlinks=True)
        config = wasi.WasiConfig()
        config.argv = [wasm.name] + list(spec.get("args", []))
        config.env = dict(spec.get("env", {}))
        out = io.BytesIO()
        config.stdout_file = out
        config.stderr_file = io.BytesIO()
        for d in spec.get("dirs", []):
            config.preopen_dir(work / d, d)
        cwd = os.getcwd()
        os.chdir(work)
        try:
            code = wasi.run(pylucet.load(pylucet.compile(wasm.read_bytes())), config)
        except pylucet.Error as e:
            return False, f"{type(e).__name__}: {e}"
        finally:
            os.chdir(cwd)
    want = spec.get("exit_code", 0)
    if code != want:
        return False, f"exit code {code}, expected {want}"
    if "stdout" in spec and out.getvalue().decode("utf-8", "replace") != spec["stdout"]:
        return False, f"stdout {out.getvalue()!r}, expected {spec['stdout']!r}"
    return True, ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("programs", nargs="*", type=Path, help="programs to run (default: all)")
    args = ap.parse_args(argv)
    todo = args.programs or programs()
    if not todo:
        print(f"no WASI test programs under {suite_dir()}", file=sys.stderr)
        return 1
    passed = failed = 0
    for wasm in todo:
        ok, why = run_one(wasm)
        passed += ok
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {wasm.parent.name}/{wasm.name}" + (f": {why}" if why
                                                                          else ""))
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
