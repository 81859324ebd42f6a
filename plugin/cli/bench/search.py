"""`bench --find-max`: the most cameras that hold the target, decided by a majority of trials next to the boundary.

One trial on a shared or busy machine can pass or fail by chance (24 cameras held at 4.95 fps in one run and failed
at 4.70 in the next), and a search that trusts single trials moves its answer by a quarter. So the search runs in
two phases:
  1. coarse, one trial per count: double from the start until a count fails (or halve until one holds), then
     bisect, as before;
  2. at the boundary, every decision takes the majority of `repeats` trials: the largest count that held and the
     smallest that failed are each run until `repeats // 2 + 1` trials agree; a held count that now fails by
     majority, or a failed one that now holds, moves the boundary and the bisection goes on with majorities.
The result says how many trials decided it and how they spread (each trial's slowest camera fps and p95 latency).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

TrialFn = Callable[[int], Awaitable[dict[str, Any]]]


@dataclass
class SearchResult:
    """The largest camera count that held by majority, with every trial on the way."""

    max_cameras: int
    trials: dict[int, list[dict[str, Any]]]
    bounded: bool  # the time budget ran out: a lower bound
    repeats: int
    failed_at: int | None = None  # the smallest count that failed by majority (None: none failed)
    notes: list[str] = field(default_factory=list)

    def tally(self, n: int) -> tuple[int, int]:
        """(held, failed) trials at `n` cameras."""
        runs = self.trials.get(n, [])
        held = sum(1 for r in runs if r["held"])
        return held, len(runs) - held

    @property
    def best(self) -> dict[str, Any] | None:
        """A held trial at the maximum: the one with the median p95 latency among those that held."""
        held = [r for r in self.trials.get(self.max_cameras, []) if r["held"]]
        if not held:
            return None
        held.sort(key=lambda r: r["latency_ms"]["p95"] or 0.0)
        return held[(len(held) - 1) // 2]

    def count_summary(self, n: int) -> dict[str, Any]:
        """The trials at `n`: how many held, and the spread of the slowest camera's fps and of p95 latency."""
        runs = self.trials.get(n, [])
        held, _ = self.tally(n)
        fps = [r["achieved_fps"]["min"] for r in runs]
        p95 = [r["latency_ms"]["p95"] for r in runs if r["latency_ms"]["p95"] is not None]
        return {
            "cameras": n,
            "trials": len(runs),
            "held": held,
            "min_fps": fps,
            "p95_ms": p95,
            "min_fps_spread": round(max(fps) - min(fps), 2) if fps else None,
            "p95_ms_median": round(statistics.median(p95), 1) if p95 else None,
        }

    def summary(self) -> dict[str, Any]:
        """What the JSON report says about the search: the boundary, how many trials decided it, every count."""
        decided = [self.count_summary(self.max_cameras)] if self.max_cameras in self.trials else []
        if self.failed_at is not None:
            decided.append(self.count_summary(self.failed_at))
        return {
            "repeats": self.repeats,
            "decided_by": decided,
            "decided_by_trials": sum(d["trials"] for d in decided),
            "by_count": [self.count_summary(n) for n in sorted(self.trials)],
            "notes": self.notes,
        }


async def find_max(
    run: TrialFn,
    start: int,
    max_cameras: int,
    repeats: int,
    trial_cost_s: float,
    deadline: float,
    clock: Callable[[], float] = time.monotonic,
) -> SearchResult:
    """Search the most cameras that hold; `run(n)` runs one trial of n cameras and returns its summary."""
    result = SearchResult(0, {}, False, max(1, repeats))

    async def one(n: int) -> bool | None:
        if clock() + trial_cost_s > deadline:
            result.bounded = True
            return None
        trial = await run(n)
        result.trials.setdefault(n, []).append(trial)
        return bool(trial["held"])

    async def decide(n: int, k: int) -> bool | None:
        """Whether `n` holds by a majority of k trials (runs only as many as it takes)."""
        need = k // 2 + 1
        while True:
            held, failed = result.tally(n)
            if held >= need:
                return True
            if failed >= need:
                return False
            if await one(n) is None:  # out of time: what the trials so far say, a tie counting as a failure
                return held > failed if held + failed else None

    def majority(n: int) -> bool:
        held, failed = result.tally(n)
        return held > failed

    # phase 1: coarse, one trial per count
    lo, hi = 0, max_cameras + 1  # lo held (0: none yet), hi failed
    n = max(1, min(start, max_cameras))
    ok = await decide(n, 1)
    while ok is not None:
        if ok:
            lo = n
            if n >= max_cameras:
                break
            n = min(n * 2, max_cameras)
        else:
            hi = n
            if n == 1 or lo > 0:
                break
            n = max(1, n // 2)
        if hi - lo <= 1:
            break
        ok = await decide(n, 1)
    # phase 2: every decision by majority, until a count that holds sits next to one that fails
    k = result.repeats
    while not result.bounded:
        if hi - lo > 1:
            mid = (lo + hi) // 2
            ok = await decide(mid, k)
            if ok is None:
                break
            lo, hi = (mid, hi) if ok else (lo, mid)
            continue
        if lo > 0:
            ok = await decide(lo, k)
            if ok is None:
                break
            if not ok:  # it had held by chance: the boundary is lower
                result.notes.append(f"{lo} cameras held once but failed by majority")
                hi = lo
                lo = max((c for c in result.trials if c < hi and majority(c)), default=0)
                continue
        if hi <= max_cameras:
            ok = await decide(hi, k)
            if ok is None:
                break
            if ok:  # it had failed by chance: the boundary is higher
                result.notes.append(f"{hi} cameras failed once but held by majority")
                lo = hi
                hi = min((c for c in result.trials if c > lo and not majority(c)), default=max_cameras + 1)
                continue
        break
    result.max_cameras = lo
    result.failed_at = hi if hi <= max_cameras and hi in result.trials else None
    return result
