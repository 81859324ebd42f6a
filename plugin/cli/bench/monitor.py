"""CPU and memory of StoreSight and Triton, read from /proc during a trial."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

# Memory sampling: often enough to catch a peak that lasts a second, rarely enough to cost nothing measurable;
# the process trees (Triton's stubs) are rebuilt from /proc every few samples, the costly part.
MONITOR_INTERVAL_S = 0.5
TREE_REFRESH_SAMPLES = 6

# --- CPU and memory from /proc -------------------------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(path: Path) -> tuple[int, float, str] | None:
    """(parent pid, CPU seconds user+system, command name) from a /proc stat file, None when it is gone."""
    try:
        raw = path.read_text()
    except OSError:
        return None
    # the command name may hold spaces and parentheses: the fields start after the last ')'
    fields = raw[raw.rfind(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _CLK_TCK, raw[raw.find("(") + 1 : raw.rfind(")")]


def _machine_busy_s() -> float:
    """CPU seconds every process on the machine has used since boot (all cores), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return 0.0
    ticks = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / _CLK_TCK


def _thread_group(name: str | None, comm: str) -> str:
    """What a thread of this process does, from its Python name (native threads have none)."""
    if name is None:
        # gRPC's C core names its threads; the rest are FFmpeg's and onnxruntime's pools
        return "grpc" if comm.startswith(("grpc", "event_engine", "lifeguard")) else "native"
    if name == "MainThread":
        return "event_loop"
    prefixes = {"decode-": "decode", "naive-": "naive_detect", "database": "database", "bench-": "benchmark"}
    return next((g for p, g in prefixes.items() if name.startswith(p)), "other_python")


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's threads, grouped by what they do."""
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        st = _stat(task / "stat")
        if st is not None:
            group = _thread_group(names.get(int(task.name)), st[2])
            out[group] = out.get(group, 0.0) + st[1]
    return out


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _tree(root: int) -> list[int]:
    """`root` and its descendants (Triton's python-backend stubs run as its children)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(entry / "stat")
            if st is not None:
                children.setdefault(st[0], []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


@dataclass
class _Watched:
    pid: int
    tree: bool
    peak_rss: int = 0
    cpu_marks: list[float] = field(default_factory=list)
    _pids: list[int] = field(default_factory=list)
    _age: int = 0

    def pids(self, fresh: bool = True) -> list[int]:
        if not self.tree:
            return [self.pid]
        if fresh or not self._pids or self._age >= TREE_REFRESH_SAMPLES:
            self._pids, self._age = _tree(self.pid), 0
        self._age += 1
        return self._pids

    def cpu_seconds(self) -> float:
        return sum(st[1] for p in self.pids() if (st := _stat(Path(f"/proc/{p}/stat"))) is not None)


class ResourceMonitor:
    """Peak RSS sampled in a thread (nothing of it on the event loop) and CPU seconds at marked instants."""

    def __init__(self, watched: dict[str, tuple[int, bool] | None]) -> None:
        self._watched = {name: _Watched(*spec) for name, spec in watched.items() if spec is not None}
        self.names = list(watched)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="bench-monitor", daemon=True)
        self._mark_times: list[float] = []
        self._thread_marks: list[dict[str, float]] = []
        self._machine_marks: list[float] = []

    def start(self) -> None:
        """Begin sampling memory."""
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            for w in self._watched.values():
                w.peak_rss = max(w.peak_rss, sum(_rss_bytes(p) for p in w.pids(fresh=False)))
            self._stop.wait(MONITOR_INTERVAL_S)

    def mark(self) -> None:
        """Read every process's CPU time now (blocking, a few ms: call it off the loop)."""
        self._mark_times.append(time.monotonic())
        for w in self._watched.values():
            w.cpu_marks.append(w.cpu_seconds())
        self._thread_marks.append(_thread_cpu())
        self._machine_marks.append(_machine_busy_s())

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)

    def cpu_percent(self) -> dict[str, float | None]:
        """CPU between the first two marks, in % of one core (200 = both cores of a 2-core machine)."""
        out: dict[str, float | None] = dict.fromkeys(self.names)
        if len(self._mark_times) < 2:
            return out
        wall = self._mark_times[1] - self._mark_times[0]
        for name, w in self._watched.items():
            out[name] = round(100.0 * (w.cpu_marks[1] - w.cpu_marks[0]) / wall, 1)
        # everything else on the machine over the same window: what makes numbers on a shared box noisy
        busy = 100.0 * (self._machine_marks[1] - self._machine_marks[0]) / wall
        out["others"] = round(max(0.0, busy - sum(v for v in out.values() if v is not None)), 1)
        return out

    def cpu_by_thread(self) -> dict[str, float]:
        """StoreSight's own CPU between the first two marks by kind of thread, in % of one core."""
        if len(self._mark_times) < 2:
            return {}
        wall = self._mark_times[1] - self._mark_times[0]
        first, last = self._thread_marks[0], self._thread_marks[1]
        share = {g: round(100.0 * (last[g] - first.get(g, 0.0)) / wall, 1) for g in last}
        return dict(sorted(share.items(), key=lambda kv: -kv[1]))

    def rss_mb(self) -> dict[str, float | None]:
        """Peak resident memory of each watched process (tree) over the trial, MB."""
        out: dict[str, float | None] = dict.fromkeys(self.names)
        for name, w in self._watched.items():
            out[name] = round(w.peak_rss / 2**20, 1)
        return out
