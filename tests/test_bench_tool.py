"""tools/bench.py keeps running: every measurement for a couple of samples (no timing checked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_smoke_runs_every_measurement(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "bench.py"), "--quick", "--smoke",
                           "--json", str(out), "--plots", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())["measurements"]
    for key in ("load_region_instantiate", "instantiate_hello", "dense_0", "dense_65536",
                "sparse_65536", "call_nop", "first_run", "drop_hello", "touch_65536", "fib25",
                "many_args", "hello_start", "hostcall_1000"):
        assert key in data, key
        results = data[key]["results"]
        assert results, key
        for who, r in results.items():
            assert "n/a" not in r, (key, who, r)   # pylucet itself measures everything
            assert r["median_s"] > 0 and r["ci95_s"][0] <= r["median_s"] <= r["ci95_s"][1]
    for strategy in ("copy", "cow"):
        assert f"pylucet {strategy}" in data["dense_65536"]["results"]
    assert {p.name for p in tmp_path.glob("*.png")} == {"bench-dense.png", "bench-sparse.png",
                                                        "bench-touch.png"}


def test_bench_help_does_not_run() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "bench.py"), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--compare" in done.stdout and "median" not in done.stdout
