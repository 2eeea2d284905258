"""Timing shared by the benchmarks: the wall-clock of a call between two device drains, repeated after warm-up,
and the spread of the repeats.

Wall-clock between `torch.cuda.synchronize()` calls, not CUDA events: a step's cost on the GPU includes the host
time that launches its kernels (what an eager small-batch step is bound by), which events between kernels miss.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_call(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call of `fn`, the device drained before and after (its queued work counted, others' not)."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def time_call(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of each of `repeats` calls of `fn`, after `warmup` untimed calls (allocator, kernels, compilation)."""
    for _ in range(warmup):
        timed_call(fn, device)
    return [timed_call(fn, device) for _ in range(repeats)]


def time_interleaved(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int,
                     warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of `repeats` calls of each side, interleaved A B, B A, A B, ... so that drifts in machine load (and
    clocks) hit every side equally; `warmup` untimed rounds first. Index i of each list is one pair."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            timed_call(fns[name], device)
    times = {name: [] for name in names}
    for i in range(repeats):
        for name in (names if i % 2 == 0 else names[::-1]):
            times[name].append(timed_call(fns[name], device))
    return times


def summary(values: list[float], scale: float = 1.0, digits: int = 4) -> dict:
    """`{"median", "min", "max", "n"}` of `values` times `scale`, rounded to `digits` significant figures."""
    if not values:
        raise ValueError("no values to summarise")
    scaled = [v * scale for v in values]

    def rounded(x: float) -> float:
        return float(f"{x:.{digits}g}")

    return {"median": rounded(statistics.median(scaled)), "min": rounded(min(scaled)), "max": rounded(max(scaled)),
            "n": len(scaled)}


def spread(values: list[float], digits: int) -> str:
    return (f"median {statistics.median(values):.{digits}f} (min {min(values):.{digits}f}, "
            f"max {max(values):.{digits}f})")
