"""Import cost: `import pylucet` (compiler side only) and the runtime, whose import assembles the
asm/ stubs with keystone and maps them. Each measured in a fresh interpreter, median of 5."""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = {
    "import keystone": "import keystone",
    "import pylucet": "import pylucet",
    "import pylucet.runtime.stubs": "import pylucet.runtime.stubs",
    "import pylucet.runtime": "import pylucet.runtime",
    # what the stubs alone cost: assembling asm/ with keystone and mapping it, once more
    "assemble + map asm/ stubs": "from pylucet.runtime.stubs import Stubs; "
                                 "t = time.perf_counter(); Stubs()",
}
PROBE = "import time; t = time.perf_counter(); {0}; print(time.perf_counter() - t)"


def main() -> int:
    for label, stmt in CASES.items():
        times = []
        for _ in range(5):
            out = subprocess.run([sys.executable, "-c", PROBE.format(stmt)], cwd=ROOT,
                                 capture_output=True, text=True, check=True)
            times.append(float(out.stdout) * 1e3)
        med = statistics.median(times)
        print(f"{label:<32}{med:8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
