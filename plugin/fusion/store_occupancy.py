"""Store occupancy: people in the store, fused from the in/out counts of several entrance lines on any cameras.

Each crossing of a named line_crossing rule adds one ("in") or takes one ("out"). Counting drifts: a person missed
on the way in and seen on the way out would take the count below zero, so an "out" at zero is not applied but
recorded as drift; people missed on the way out stay counted, so the count goes back to zero at closing
(`reset_at`) and what it still held is recorded with the reset. The count, the last reset and the drift are saved
in the store after every change, so a restart carries on from them; a closing that passed while StoreSight was down
resets the count at the first time seen after the restart (live: at start; `run --once`: the first crossing).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from plugin.config.occupancy import StoreOccupancyConfig
from plugin.incidents.database import AsyncDatabase
from plugin.incidents.manager import IncidentManager
from plugin.insights.rollups import STORE_COUNTERS, STORE_PEOPLE, InsightsRecorder
from plugin.rules.base import Measurement, RuleHit, RuleOutput
from plugin.types import Frame

log = logging.getLogger(__name__)

STORE_KEY = "store_occupancy"  # the incidents' type and the explanation macro
STORE_CAMERA = ""  # the camera of store-level insights rows (gauge, resets): the store, not one camera
TICK_S = 5.0  # live runs: how often the closing reset and the overcrowding duration are checked without crossings
ONCE_TICK_S = 0.5  # `run --once` goes faster than real time: tick more often (each tick is a few dict lookups)
# insights metrics (summed up by plugin.insights.summarise): the count's gauge, sampled at every change; outs not
# applied because the count was already zero (drift, keyed by the line); closing resets; people still counted at
# closing, removed by the reset (drift the other way)
METRIC_PEOPLE, METRIC_OUT_AT_ZERO, METRIC_RESETS, METRIC_REMOVED = (
    STORE_PEOPLE,
    "out_at_zero",
    "resets",
    "reset_removed",
)
assert {METRIC_OUT_AT_ZERO, METRIC_RESETS, METRIC_REMOVED} == set(STORE_COUNTERS)


@dataclass
class OccupancyState:
    """What survives a restart."""

    people: int = 0
    last_reset: datetime | None = None  # the closing the count was last reset at
    out_at_zero: int = 0  # drift since that reset
    last_t: datetime | None = None  # the latest time applied (time never goes back for the judgements)

    def to_row(self, occupancy_id: str) -> dict[str, Any]:
        """The store's row."""
        return {
            "id": occupancy_id,
            "people": self.people,
            "last_reset": None if self.last_reset is None else self.last_reset.astimezone(UTC).isoformat(),
            "out_at_zero": self.out_at_zero,
            "last_t": "" if self.last_t is None else self.last_t.astimezone(UTC).isoformat(),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any] | None) -> OccupancyState:
        """Back from the store's row (a fresh state without one)."""
        if row is None:
            return cls()
        # last_t stays behind (it is saved for people reading the table): the clock of a new run starts from its
        # own first time, so footage older than the last run's (a second `--once` review) is judged on its own times
        return cls(
            people=int(row["people"]),
            last_reset=datetime.fromisoformat(row["last_reset"]) if row["last_reset"] else None,
            out_at_zero=int(row["out_at_zero"]),
        )


@dataclass(frozen=True)
class Reset:
    """One closing reset and the drift it removed."""

    at: datetime
    removed: int  # people still counted at closing
    out_at_zero: int  # outs at zero since the previous reset

    def to_row(self, occupancy_id: str) -> dict[str, Any]:
        """The store's row."""
        return {
            "id": occupancy_id,
            "at": self.at.astimezone(UTC).isoformat(),
            "removed": self.removed,
            "out_at_zero": self.out_at_zero,
        }


@dataclass
class _Crowd:
    """An overcrowding spell: over the limit since `since`, pushed over by a crossing on `camera`."""

    since: datetime
    camera: str
    peak: int
    opened: RuleHit | None = None


class StoreOccupancy:
    """Pure and synchronous: crossings and clock ticks in, measurements and overcrowding hits out."""

    def __init__(self, config: StoreOccupancyConfig, timezone: str, state: OccupancyState | None = None) -> None:
        self.config = config
        self.tz = ZoneInfo(config.timezone or timezone)
        self.lines = frozenset(config.lines)
        self.state = state or OccupancyState()
        self.resets: list[Reset] = []  # made since the caller last took them (to store)
        self.pushed_over = False  # the last crossing took the count over the limit (its frame is the snapshot)
        self._crowd: _Crowd | None = None

    def feeds(self, m: Measurement) -> bool:
        """Whether `m` is a crossing of one of this count's lines."""
        return m.rule_id in self.lines and m.metric in ("in", "out")

    def last_closing(self, t: datetime) -> datetime | None:
        """The latest closing time at or before `t` (UTC), none without `reset_at`."""
        closing = self.config.closing()
        if closing is None:
            return None
        local = t.astimezone(self.tz)
        at = datetime.combine(local.date(), closing, tzinfo=self.tz)
        if at > local:
            at = datetime.combine(local.date() - timedelta(days=1), closing, tzinfo=self.tz)
        return at.astimezone(UTC)

    def crossing(self, m: Measurement) -> list[RuleOutput]:
        """Apply one crossing: in adds one, out takes one unless the count is zero (then it is drift)."""
        self.pushed_over = False
        out = self.advance(m.t)
        if self.state.last_reset is not None and m.t < self.state.last_reset:
            # a camera that lags behind (several files in `run --once`) reporting from before the closing reset
            log.info("%s: %s crossing on %s at %s is before the closing reset: not counted", m.camera, m.metric,
                     m.rule_id, m.t.isoformat())  # fmt: skip
            return out
        was_over = self._over()
        if m.metric == "in":
            self.state.people += 1
        elif self.state.people > 0:
            self.state.people -= 1
        else:
            self.state.out_at_zero += 1
            out.append(Measurement(self.config.id, m.camera, m.t, METRIC_OUT_AT_ZERO, 1.0, "count", m.rule_id))
            log.info("%s: out on %s while %s counted nobody: drift (%d since the last reset)", m.camera, m.rule_id,
                     self.config.id, self.state.out_at_zero)  # fmt: skip
        out.append(self._gauge(m.t))
        self.pushed_over = not was_over and self._over()
        out.extend(self._judge(m.camera))
        return out

    def advance(self, t: datetime) -> list[RuleOutput]:
        """Move the clock to `t`: reset at a closing passed since the last reset, open a crowd that lasted."""
        out: list[RuleOutput] = []
        closing = self.last_closing(t)
        if closing is not None:
            if self.state.last_reset is None:
                self.state.last_reset = closing  # first start: the day began at the last closing, nothing to record
            elif closing > self.state.last_reset:
                out.extend(self._reset(closing))
        if self.state.last_t is None or t > self.state.last_t:
            self.state.last_t = t
        out.extend(self._judge(None))
        return out

    def finish(self, t: datetime | None = None) -> list[RuleOutput]:
        """Judge up to `t` (a crowd that lasted opens), then close an open overcrowding incident (end of the
        footage, shutdown); the count itself is kept."""
        out = [] if t is None else self.advance(t)
        if self.state.last_t is None:
            return out  # never saw a crossing or a tick: nothing can be open
        return out + self._close(self.state.last_t)

    def _over(self) -> bool:
        return self.config.max_people is not None and self.state.people > self.config.max_people

    def _gauge(self, t: datetime) -> Measurement:
        return Measurement(self.config.id, STORE_CAMERA, t, METRIC_PEOPLE, float(self.state.people), "gauge")

    def _reset(self, closing: datetime) -> list[RuleOutput]:
        """Back to zero at closing; the people still counted and the outs at zero are the day's drift."""
        reset = Reset(closing, self.state.people, self.state.out_at_zero)
        self.resets.append(reset)
        log.info("%s: closing reset at %s removed %d people (outs at zero since the last reset: %d)",
                 self.config.id, closing.isoformat(), reset.removed, reset.out_at_zero)  # fmt: skip
        out: list[RuleOutput] = list(self._close(closing))
        self.state.people, self.state.out_at_zero, self.state.last_reset = 0, 0, closing
        cid = self.config.id
        out.append(Measurement(cid, STORE_CAMERA, closing, METRIC_RESETS, 1.0))
        out.append(Measurement(cid, STORE_CAMERA, closing, METRIC_REMOVED, float(reset.removed)))
        out.append(self._gauge(closing))
        return out

    def _judge(self, camera: str | None) -> list[RuleOutput]:
        """Overcrowding: open once over the limit for `min_duration_s`, close when back at or under it."""
        now = self.state.last_t
        if now is None or self.config.max_people is None:
            return []
        if not self._over():
            return self._close(now)
        crowd = self._crowd
        if crowd is None:
            crowd = self._crowd = _Crowd(since=now, camera=camera or STORE_CAMERA, peak=self.state.people)
        crowd.peak = max(crowd.peak, self.state.people)
        lasted = (now - crowd.since).total_seconds() >= self.config.min_duration_s
        if crowd.opened is None and lasted:
            crowd.opened = self._hit("start", crowd, now)
            return [crowd.opened]
        return []

    def _close(self, at: datetime) -> list[RuleOutput]:
        crowd, self._crowd = self._crowd, None
        if crowd is None or crowd.opened is None:
            return []
        return [self._hit("end", crowd, max(at, crowd.since))]

    def _hit(self, state: str, crowd: _Crowd, at: datetime) -> RuleHit:
        return RuleHit(
            rule_id=self.config.id,
            type=STORE_KEY,
            key="crowd",
            state=state,  # type: ignore[arg-type]
            camera=crowd.camera,
            zone=None,
            track_ids=(),  # a count, not a person: the crossing's track is one of many in the store
            started_at=crowd.since,
            at=at,
            severity=self.config.severity,
            facts={
                "store": self.config.id,
                "people": self.state.people,
                "peak": crowd.peak,
                "max_people": self.config.max_people,
                "duration_s": (at - crowd.since).total_seconds(),
                "lines": ", ".join(self.config.lines),
            },
        )


@dataclass
class StoreOccupancyService:
    """The counts of a config, fed by the pipelines' line crossings: saves their state, records insights and hands
    overcrowding hits to the incident manager. One per process; crossings from concurrent cameras are serialised."""

    configs: Sequence[StoreOccupancyConfig]
    timezone: str
    db: AsyncDatabase
    incidents: IncidentManager
    insights: InsightsRecorder | None = None
    counts: list[StoreOccupancy] = field(default_factory=list)
    _frames: dict[str, Frame | None] = field(default_factory=dict)  # the frame of the crossing that pushed it over
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _unsaved: set[str] = field(default_factory=set)  # counts whose state the database refused: saved at the next go

    async def load(self) -> None:
        """Build each count from its saved state (a fresh one the first time)."""
        self.counts = []
        for config in self.configs:
            row = await self.db.call(self.db.sync.occupancy_state, config.id)
            state = OccupancyState.from_row(row)
            if row is not None:
                log.info("%s: carrying on from %d people (saved at %s, last reset %s)", config.id, state.people,
                         row["updated"], row["last_reset"] or "never")  # fmt: skip
            self.counts.append(StoreOccupancy(config, self.timezone, state))

    async def on_measurement(self, m: Measurement, frame: Frame | None) -> None:
        """A pipeline's measurement: applied to every count whose lines include it."""
        async with self._lock:
            for occ in self.counts:
                if occ.feeds(m):
                    outs = occ.crossing(m)
                    if occ.pushed_over:
                        self._frames[occ.config.id] = frame
                    await self._emit(occ, outs, changed=True)

    async def tick(self, t: datetime) -> None:
        """Advance every count's clock (closing reset, overcrowding duration) without a crossing."""
        async with self._lock:
            for occ in self.counts:
                outs = occ.advance(t)
                await self._emit(occ, outs, changed=bool(outs))

    async def finish(self, t: datetime | None = None) -> None:
        """Close open overcrowding incidents (end of the footage, shutdown) and save the counts."""
        async with self._lock:
            for occ in self.counts:
                await self._emit(occ, occ.finish(t), changed=True)

    async def run(self, clock: Callable[[], datetime | None], every_s: float = TICK_S) -> None:
        """Tick with `clock` (live: the wall clock, so the first tick resets after a closing missed while down;
        `run --once`: the media time all files have reached) until cancelled; None from it skips the tick."""
        while True:
            now = clock()
            if now is not None:
                await self.tick(now)
            await asyncio.sleep(every_s)

    async def _emit(self, occ: StoreOccupancy, outs: Sequence[RuleOutput], changed: bool) -> None:
        """Save the state first (what a restart sees), then record the insights and the incidents. A database that
        refuses the save (disk full, locked) does not stop the count nor the camera that fed it: the state and its
        resets are saved at the next crossing or tick."""
        resets, occ.resets = occ.resets, []
        row = occ.state.to_row(occ.config.id)
        cid = occ.config.id
        saved = False
        try:
            while resets:  # each with the state, in one transaction
                await self.db.call(self.db.sync.save_occupancy, row, resets[0].to_row(cid))
                resets.pop(0)
                saved = True
            if (changed or cid in self._unsaved) and not saved:
                await self.db.call(self.db.sync.save_occupancy, row, None)
                saved = True
            if saved and cid in self._unsaved:
                log.warning("store occupancy %s: state saved again", cid)
                self._unsaved.discard(cid)
        except sqlite3.Error as exc:
            if cid not in self._unsaved:
                log.error("store occupancy %s: state kept in memory, saved again at the next change: %s", cid, exc)
            self._unsaved.add(cid)
            occ.resets = resets + occ.resets
        for out in outs:
            if isinstance(out, Measurement):
                if self.insights is not None:
                    self.insights.add(out)
                continue
            frame = self._frames.get(occ.config.id) if out.state == "start" else None
            await self.incidents.handle(out, frame, None)
            if out.state == "end":
                self._frames.pop(occ.config.id, None)
