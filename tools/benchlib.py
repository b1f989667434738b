"""A small criterion-like measuring harness for the benchmarks in ``tools/``.

Why not ``timeit``: a single number hides noise. Each measurement here warms up, then takes many
*samples* (each the mean of a batch of iterations, the batch sized so one sample lasts long
enough for the clock to resolve it), and reports the median, the mean, a 95% bootstrap interval
of the median, and how many samples lie outside Tukey's fences, so a reader can tell a real
difference from a noisy machine. Two shapes of measurement, as in criterion:

* :func:`iterate` -- a cheap operation called in a loop, timed per batch (sub-microsecond calls
  would drown in the cost of reading the clock);
* :func:`batched` -- an operation that needs fresh input made by an untimed ``setup`` and
  consumed by an untimed ``cleanup`` (instantiate needs a free slot, teardown needs a live
  instance): each routine call is timed on its own.
"""

from __future__ import annotations

import dataclasses
import gc
import random
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union


@dataclasses.dataclass(frozen=True)
class Budget:
    """How long to warm up and measure, and how many samples to take."""

    warmup_s: float
    measure_s: float
    samples: int
    max_iterations: Optional[int] = None
    """Caps the iterations of a whole measurement (for costly routines such as a subprocess)."""


FULL = Budget(warmup_s=0.3, measure_s=1.0, samples=50)
QUICK = Budget(warmup_s=0.03, measure_s=0.12, samples=15)
SMOKE = Budget(warmup_s=0.0, measure_s=0.0, samples=2, max_iterations=4)


@dataclasses.dataclass
class Stats:
    """Per-iteration times of one measurement, in seconds, summarised."""

    samples: List[float]
    iterations: int
    median: float
    mean: float
    low: float           # 95% bootstrap interval of the median
    high: float
    mild_outliers: int   # beyond 1.5 IQR of the quartiles
    severe_outliers: int  # beyond 3 IQR

    def to_json(self) -> Dict[str, Any]:
        return {"median_s": self.median, "mean_s": self.mean, "ci95_s": [self.low, self.high],
                "outliers": {"mild": self.mild_outliers, "severe": self.severe_outliers},
                "samples": len(self.samples), "iterations": self.iterations,
                "sample_means_s": self.samples}


def summarise(samples: Sequence[float], iterations: int, resamples: int = 1000,
              seed: int = 0) -> Stats:
    """Median, mean, a percentile-bootstrap 95% interval of the median, Tukey outliers."""
    if not samples:
        raise ValueError("no samples to summarise")
    xs = sorted(samples)
    med = statistics.median(xs)
    rng = random.Random(seed)
    n = len(xs)
    boot = sorted(statistics.median(rng.choices(xs, k=n)) for _ in range(resamples))
    low, high = boot[int(0.025 * (resamples - 1))], boot[int(0.975 * (resamples - 1))]
    mild = severe = 0
    if n >= 4:
        q1, _, q3 = statistics.quantiles(xs, n=4)
        iqr = q3 - q1
        for x in xs:
            if x < q1 - 3 * iqr or x > q3 + 3 * iqr:
                severe += 1
            elif x < q1 - 1.5 * iqr or x > q3 + 1.5 * iqr:
                mild += 1
    return Stats(list(samples), iterations, med, statistics.fmean(xs), low, high, mild, severe)


def _batch_size(one_iteration_s: float, budget: Budget) -> int:
    per_sample = budget.measure_s / max(budget.samples, 1)
    size = max(1, int(per_sample / max(one_iteration_s, 1e-9)))
    if budget.max_iterations is not None:
        size = max(1, min(size, budget.max_iterations // max(budget.samples, 1)))
    return size


def _warm_up(run_once: Callable[[], float], budget: Budget) -> float:
    """Run until the warm-up time has passed (at least once); the mean wall time of one run,
    setup and cleanup included, so that a cheap routine behind a costly setup (teardown after
    touching 4 MiB) cannot stretch the measurement far beyond its budget."""
    runs = 0
    start = time.perf_counter()
    deadline = start + budget.warmup_s
    while True:
        run_once()
        runs += 1
        now = time.perf_counter()
        if now >= deadline:
            return (now - start) / runs


def iterate(fn: Callable[[], Any], budget: Budget) -> Stats:
    """Time ``fn()`` called in batches; each sample is a batch's mean time per call."""
    def once() -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    size = _batch_size(_warm_up(once, budget), budget)
    samples = []
    gc_was = gc.isenabled()
    gc.disable()   # a collection in the middle of a batch is an outlier we caused ourselves
    try:
        for _ in range(budget.samples):
            t = time.perf_counter()
            for _ in range(size):
                fn()
            samples.append((time.perf_counter() - t) / size)
    finally:
        if gc_was:
            gc.enable()
    return summarise(samples, size * budget.samples)


def batched(setup: Callable[[], Any], routine: Callable[[Any], Any],
            cleanup: Callable[[Any], Any] = lambda _: None, budget: Budget = FULL) -> Stats:
    """Time ``routine(setup())`` alone, per call; ``cleanup`` gets what ``routine`` returned
    (or, if it returned None, what ``setup`` made). Neither setup nor cleanup is timed."""
    def once() -> float:
        x = setup()
        t = time.perf_counter()
        y = routine(x)
        dt = time.perf_counter() - t
        cleanup(x if y is None else y)
        return dt

    size = _batch_size(_warm_up(once, budget), budget)
    samples = []
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(budget.samples):
            samples.append(sum(once() for _ in range(size)) / size)
    finally:
        if gc_was:
            gc.enable()
    return summarise(samples, size * budget.samples)


def per(stats: Stats, n: int) -> Stats:
    """The same measurement divided by ``n`` (a loop of ``n`` calls reported per call)."""
    return Stats([s / n for s in stats.samples], stats.iterations * n, stats.median / n,
                 stats.mean / n, stats.low / n, stats.high / n, stats.mild_outliers,
                 stats.severe_outliers)


def fmt_time(seconds: Optional[float]) -> str:
    """A time with a unit that keeps three significant digits readable."""
    if seconds is None or seconds != seconds:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def fmt_stats(s: Stats) -> str:
    out = f"{fmt_time(s.median):>9} [{fmt_time(s.low)} .. {fmt_time(s.high)}]"
    outliers = s.mild_outliers + s.severe_outliers
    return out + (f" ({outliers} outliers)" if outliers else "")


STRATEGY_COLOURS = {"copy": "tab:blue", "cow": "tab:orange"}


def plot_lines(path: str, title: str, xs_label: str, series: Dict[str, List[Tuple[int, float]]],
               note: str = "") -> None:
    """One line per series (x in bytes, y in seconds), log-x, as a small PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    for name, points in series.items():
        pts = [(x, y) for x, y in points if x > 0 and y == y]
        if not pts:
            continue
        # one colour per heap strategy, solid for pylucet and dashed for a peer, so the eye
        # pairs pylucet's copy curve with the peer's copy curve
        colour = next((c for key, c in STRATEGY_COLOURS.items() if key in name), "tab:gray")
        style = "-" if name.startswith("pylucet") else "--"
        ax.plot([x for x, _ in pts], [y * 1e6 for _, y in pts], style, color=colour,
                marker="o", markersize=3, linewidth=2 if style == "-" else 1, label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ticks = sorted({x for pts in series.values() for x, _ in pts if x > 0})
    ax.set_xticks(ticks)
    ax.set_xticklabels([size_label(x) for x in ticks], rotation=45, fontsize=7)
    ax.set_xlabel(xs_label)
    ax.set_ylabel("median time (µs, log)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    if note:
        fig.text(0.01, 0.01, note, fontsize=6, alpha=0.7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def size_label(n: int) -> str:
    if n >= 1 << 20:
        return f"{n >> 20} MiB"
    return f"{n >> 10} KiB"


Result = Union[Stats, str]   # a measurement, or why it could not be made


class Results:
    """Rows in the order they were measured: our figure, Lucet's, and each peer's."""

    def __init__(self) -> None:
        self.rows: Dict[str, Dict[str, Any]] = {}

    def add(self, key: str, label: str, who: str, result: Result, lucet: Any = None,
            x: Optional[int] = None, curve: Optional[str] = None) -> None:
        row = self.rows.setdefault(key, {"label": label, "lucet_us": lucet, "x": x,
                                         "curve": curve, "by": {}})
        row["by"][who] = result

    def curve(self, curve: str, who: str) -> List[Tuple[int, float]]:
        return [(r["x"], r["by"][who].median) for r in self.rows.values()
                if r["curve"] == curve and isinstance(r["by"].get(who), Stats)]

    def to_json(self) -> Dict[str, Any]:
        return {k: {"label": r["label"], "lucet_us": r["lucet_us"], "heap_bytes": r["x"],
                    "results": {w: (v.to_json() if isinstance(v, Stats) else {"n/a": v})
                                for w, v in r["by"].items()}}
                for k, r in self.rows.items()}
