"""`bench --find-max`'s search: next to the boundary a majority of trials decides, so one noisy trial cannot move
the answer. Trials here are scripted outcomes (the search is pure logic over trial summaries); the real trials are
exercised by tests/system/test_bench.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from plugin.cli.bench.search import find_max


class Machine:
    """Cameras up to `capacity` hold; `flips` lists (cameras, trial number there) whose outcome is the opposite."""

    def __init__(self, capacity: int, flips: set[tuple[int, int]] | None = None) -> None:
        self.capacity = capacity
        self.flips = flips or set()
        self.runs: list[int] = []
        self.t = 0.0

    def clock(self) -> float:
        return self.t

    async def trial(self, n: int) -> dict[str, Any]:
        self.t += 30.0
        nth = self.runs.count(n)
        self.runs.append(n)
        held = (n <= self.capacity) != ((n, nth) in self.flips)
        fps = 5.0 if held else 4.6
        return {"held": held, "achieved_fps": {"min": fps}, "latency_ms": {"p95": 100.0 + n}}


async def _search(machine: Machine, repeats: int = 3, start: int = 4, budget: float = 1e9) -> Any:
    clock: Callable[[], float] = machine.clock
    return await find_max(machine.trial, start, 64, repeats, 30.0, budget, clock=clock)


async def test_a_clean_machine_gives_its_capacity_decided_by_majorities() -> None:
    machine = Machine(capacity=27)
    result = await _search(machine)
    assert result.max_cameras == 27 and result.failed_at == 28
    assert result.tally(27) == (2, 0) and result.tally(28) == (0, 2)
    summary = result.summary()
    assert summary["decided_by_trials"] == 4 and [d["cameras"] for d in summary["decided_by"]] == [27, 28]
    assert result.best is not None and result.best["held"]


async def test_one_noisy_failure_below_the_boundary_does_not_move_the_answer() -> None:
    # the first trial at 24 fails by chance (the 4.70 fps run): single-trial bisection would answer 23
    noisy = Machine(capacity=27, flips={(24, 0)})
    result = await _search(noisy)
    assert result.max_cameras == 27
    assert result.tally(24) == (2, 1)


async def test_a_noisy_failure_in_the_coarse_phase_is_taken_back() -> None:
    # 16 fails by chance while the search still doubles: the boundary check runs it again and the search goes on up
    noisy = Machine(capacity=27, flips={(16, 0)})
    result = await _search(noisy)
    assert result.max_cameras == 27 and result.failed_at == 28
    assert result.tally(16) == (2, 1)
    assert result.notes == ["16 cameras failed once but held by majority"]


async def test_one_lucky_pass_above_the_boundary_does_not_move_the_answer() -> None:
    lucky = Machine(capacity=20, flips={(24, 0)})
    result = await _search(lucky)
    assert result.max_cameras == 20 and result.failed_at == 21
    assert result.tally(24) == (1, 2)


async def test_one_repeat_is_the_single_trial_search() -> None:
    noisy = Machine(capacity=27, flips={(24, 0)})
    result = await _search(noisy, repeats=1)
    assert result.max_cameras == 23  # what one unlucky trial does to a search that trusts it
    assert all(len(runs) == 1 for runs in result.trials.values())


async def test_the_time_budget_bounds_the_search() -> None:
    machine = Machine(capacity=27)
    result = await _search(machine, budget=4 * 30.0 + 10.0)
    assert result.bounded and machine.runs == [4, 8, 16, 32]  # a fifth trial would end past the budget
    assert result.max_cameras == 16  # 4, 8, 16 held and 32 failed: the lower bound it had
