"""How ``dropkit bench`` times a call: a warm-up, samples long enough to time, medians, turns.

A sample of a run shorter than :data:`SAMPLE_SECONDS` repeats it (a 64x64 layer's call takes about
20 µs, so one call per sample would let the timer and single preemptions decide the median), and
methods compared with each other take their samples in turns, so the load phases of a shared machine
fall on them alike rather than on whichever ran during them.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["MAX_CALLS", "SAMPLE_SECONDS", "Timed", "median_ms", "medians_ms"]

SAMPLE_SECONDS = 2e-3  # a shorter run repeats within a sample until the sample lasts about this long
MAX_CALLS = 10_000

Timed = tuple[Callable[[], Any], Callable[[], Any] | None]  # (run, setup run untimed before each run)


def _once(timed: Timed) -> float:
    run, setup = timed
    if setup is not None:
        setup()
    begin = time.perf_counter()
    run()
    return time.perf_counter() - begin


def medians_ms(runs: Mapping[str, Timed], repeats: int) -> dict[str, float]:
    """Median wall time of one run of each ``(run, setup)`` in ms over ``repeats`` samples, in turns.

    Each run is warmed up once untimed first (the warm-up pays for first-touch page faults,
    compilation, loading a kernel and thread start-up), then timed once more to size its samples
    (the warm-up's own time would say nothing: loading a numba kernel alone takes 0.5 s). Then
    round ``r`` takes sample ``r`` of every run, one after another. ``setup()`` runs untimed before
    each run (torch's backward needs a fresh forward graph).

    >>> sorted(medians_ms({"a": (lambda: None, None), "b": (lambda: None, None)}, 3))
    ['a', 'b']
    """
    calls = {}
    for name, timed in runs.items():
        _once(timed)
        calls[name] = min(MAX_CALLS, max(1, int(SAMPLE_SECONDS / max(_once(timed), 1e-9))))
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, timed in runs.items():
            samples[name].append(sum(_once(timed) for _ in range(calls[name])) / calls[name])
    return {name: 1e3 * statistics.median(times) for name, times in samples.items()}


def median_ms(run: Callable[[], Any], repeats: int, setup: Callable[[], Any] | None = None) -> float:
    """:func:`medians_ms` of one run."""
    return medians_ms({"": (run, setup)}, repeats)[""]
