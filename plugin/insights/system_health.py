"""StoreSight's own health, raised as system incidents so operators learn in their VMS that the analytics are down.

Every `interval_s` the monitor checks:
- `inference_down`: Triton answers and the detector model is ready (through the Runtime's inference client);
- `sink_dead_letters` (per sink): the sink has dead-lettered deliveries (they wait for `storesight outbox retry`);
- `sink_auth_failed` (per sink): the sink refused StoreSight's credentials, so its deliveries are held;
- `storage_low`: free space on the storage directory's file system is under `storage.min_free_mb` (or
  `storage.min_free_percent`).
A condition that lasts `debounce_s` opens an incident of type `system_<kind>` on camera "system" (no track, no zone,
the site id in its details), which ends once the condition has been gone for `debounce_s`. The incidents go through
the normal IncidentManager and outbox, so every sink delivers them (durably, with retries) as its VMS can show a
server-level event. An incident about a sink is not delivered to that sink: it is the one sink that cannot take it,
and each failure there would only feed the condition it reports.

Incidents left open by an earlier run are taken over at start: a condition that outlived a restart goes on as the
same incident (no second "analytics down" in the VMS), and one that cleared while StoreSight was away ends.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from plugin.config.service import StorageConfig, SystemHealthConfig
from plugin.incidents.database import AsyncDatabase
from plugin.incidents.documents import incident_from_json
from plugin.incidents.manager import IncidentManager
from plugin.inference.triton import TritonInferenceClient
from plugin.metrics import Metrics
from plugin.protocols import IncidentSink
from plugin.redact import redact_url
from plugin.rules.base import RuleHit
from plugin.types import SYSTEM_CAMERA, Incident

log = logging.getLogger(__name__)

Kind = Literal["inference_down", "sink_dead_letters", "sink_auth_failed", "storage_low"]
KINDS: tuple[Kind, ...] = ("inference_down", "sink_dead_letters", "sink_auth_failed", "storage_low")
TYPE_PREFIX = "system_"
_KIND_OF_TYPE: dict[str, Kind] = {TYPE_PREFIX + k: k for k in KINDS}
# The short title each VMS shows (Nx generic event caption, Milestone alarm name), as the condition starts and as
# it ends. VMS rules match captions by their words, so the end's shares no phrase with the start's: a rule on
# "StoreSight analytics down" must not raise an alarm when the analytics come back.
CAPTIONS: dict[str, tuple[str, str]] = {
    "inference_down": ("StoreSight analytics down", "StoreSight analytics back"),
    "sink_dead_letters": ("StoreSight deliveries failing", "StoreSight deliveries recovered"),
    "sink_auth_failed": ("StoreSight credentials refused", "StoreSight credentials accepted"),
    "storage_low": ("StoreSight storage low", "StoreSight storage recovered"),
}
# Analytics down and a sink that refuses every delivery lose incidents now; the other two warn before they do.
SEVERITY: dict[str, str] = {
    "inference_down": "critical",
    "sink_dead_letters": "warning",
    "sink_auth_failed": "critical",
    "storage_low": "warning",
}
RESTART_START_S = 2.0
RESTART_MAX_S = 60.0
ERROR_TEXT_MAX = 200
# Enough of the newest dead letters to find each sink's latest reason without reading the whole outbox.
DEAD_SCAN = 200
MIB = 1024 * 1024


def _now() -> datetime:
    return datetime.now(UTC)


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= ERROR_TEXT_MAX else text[: ERROR_TEXT_MAX - 1] + "…"


def _number(value: float) -> str:
    """1024.0 as 1024, 2.5 as 2.5, 1e9 as 1000000000 (a threshold as the config wrote it)."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def label(kind: str, subject: str) -> str:
    """How a condition is named in lists (`/readyz`, the incident's `open_conditions`): kind, or kind:sink."""
    return f"{kind}:{subject}" if subject else kind


@dataclass(frozen=True)
class Check:
    """One check's result: whether the condition holds now, and the facts its explanation needs either way."""

    kind: Kind
    subject: str  # the sink id for per-sink kinds, else ""
    bad: bool
    facts: Mapping[str, Any] = field(default_factory=dict)
    exclude_sinks: tuple[str, ...] = ()  # sinks that must not be told (the sink the condition is about)


@dataclass
class _Condition:
    """What the monitor knows of one (kind, subject): debounce timers, latest facts, the open incident."""

    kind: Kind
    subject: str
    facts: dict[str, Any] = field(default_factory=dict)
    exclude_sinks: tuple[str, ...] = ()
    bad_since: tuple[float, datetime] | None = None  # first bad check of the current spell (monotonic, wall)
    good_since: tuple[float, datetime] | None = None  # first good check while the incident is open
    incident: Incident | None = None
    opened_facts: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """kind or kind:subject."""
        return label(self.kind, self.subject)


@dataclass(frozen=True)
class Transition:
    """A condition that opens or ends now: the hit for the incident manager, and who must not hear of it."""

    key: tuple[str, str]
    hit: RuleHit
    exclude_sinks: tuple[str, ...]


class SystemHealthMonitor:
    """Runs the checks, debounces them and opens or ends the system incidents; see the module docstring."""

    def __init__(
        self,
        config: SystemHealthConfig,
        storage: StorageConfig,
        site_id: str,
        incidents: IncidentManager,
        db: AsyncDatabase,
        sinks: Mapping[str, IncidentSink],
        metrics: Metrics,
        client: TritonInferenceClient | None = None,
        triton_url: str = "",
        model: str = "",
        cameras: Callable[[], int] = lambda: 0,
        request_timeout_s: float = 10.0,
    ) -> None:
        self.config = config
        self.storage = storage
        self.site_id = site_id
        self.incidents = incidents
        self.db = db
        self.sinks = dict(sinks)
        self.metrics = metrics
        self.client = client
        self.triton_url = redact_url(triton_url)
        self.model = model
        self.cameras = cameras
        self.request_timeout_s = request_timeout_s
        self._storage_path = Path(os.path.abspath(storage.path))  # absolute without touching the disk
        self.error: str | None = None  # the last failure of a check pass, until one succeeds
        self.last_check: datetime | None = None
        self._conditions: dict[tuple[str, str], _Condition] = {}
        self._adopted = False
        for kind in KINDS:
            metrics.system_condition.labels(kind=kind).set(0)

    # -- checks ---------------------------------------------------------------------------------------------------

    async def checks(self) -> list[Check]:
        """Every check, now."""
        out: list[Check] = []
        if self.client is not None:
            out.append(await self._inference())
        out.extend(await self._sinks())
        storage = await self._storage()
        if storage is not None:
            out.append(storage)
        return out

    async def _inference(self) -> Check:
        assert self.client is not None
        try:
            # bounded: a Triton host that swallows packets must not stall the other checks
            async with asyncio.timeout(max(self.request_timeout_s, self.config.interval_s)):
                ready = await self.client.ready()
            reason = self.client.last_error
        except TimeoutError:
            ready, reason = False, "no answer in time"
        facts = {
            "url": self.triton_url,
            "model": self.model,
            "cameras": self.cameras(),
            "reason": "" if ready or not reason else redact_url(_clip(str(reason))),
        }
        return Check("inference_down", "", not ready, facts)

    async def _sinks(self) -> list[Check]:
        if not self.sinks:
            return []
        counts = await self.db.call(self.db.sync.outbox_counts)
        last: dict[str, str] = {}
        if any(counts.get(sid, {}).get("dead", 0) for sid in self.sinks):
            for row in await self.db.call(self.db.sync.deliveries, "dead", DEAD_SCAN):
                last.setdefault(row["sink"], row["last_error"] or "")
        out = []
        for sid, sink in self.sinks.items():
            kind_of_sink = sink.kind
            dead = int(counts.get(sid, {}).get("dead", 0))
            facts = {
                "sink": sid,
                "sink_kind": kind_of_sink,
                "dead": dead,
                "last_error": redact_url(_clip(last.get(sid, ""))),
            }
            out.append(Check("sink_dead_letters", sid, dead > 0, facts, (sid,)))
            health = sink.health
            error = redact_url(_clip(health.last_error or "")) if health.auth_failed else ""
            facts = {"sink": sid, "sink_kind": kind_of_sink, "error": error}
            out.append(Check("sink_auth_failed", sid, health.auth_failed, facts, (sid,)))
        return out

    async def _storage(self) -> Check | None:
        min_mb, min_pct = self.storage.min_free_mb, self.storage.min_free_percent
        if min_mb <= 0 and min_pct <= 0:
            return None
        path = self._storage_path
        usage = await asyncio.to_thread(shutil.disk_usage, path)  # a stat of the file system: off the loop
        free_mb = usage.free / MIB
        percent = 100.0 * usage.free / usage.total if usage.total else 0.0
        bad = (min_mb > 0 and free_mb < min_mb) or (min_pct > 0 and percent < min_pct)
        parts = [f"{_number(min_mb)} MiB" if min_mb > 0 else "", f"{_number(min_pct)} %" if min_pct > 0 else ""]
        threshold = " or ".join(p for p in parts if p)
        facts = {
            "path": str(path),
            "free_mb": round(free_mb, 1),
            "total_mb": round(usage.total / MIB, 1),
            "free_percent": round(percent, 1),
            "threshold": threshold,
        }
        return Check("storage_low", "", bad, facts)

    # -- debounce -------------------------------------------------------------------------------------------------

    def evaluate(self, checks: Sequence[Check], now: float, wall: datetime) -> list[Transition]:
        """Feed one pass of checks (monotonic `now`, UTC `wall`); the conditions that open or end now.

        Nothing is marked open or ended here: `applied` does that once the incident is stored, so a pass whose
        store write failed is tried again by the next one. A condition no check reports any more (a check turned
        off, a sink gone from the config) counts as cleared.
        """
        seen: set[tuple[str, str]] = set()
        for c in checks:
            key: tuple[str, str] = (c.kind, c.subject)
            seen.add(key)
            cond = self._conditions.get(key)
            if cond is None:
                if not c.bad:
                    continue  # healthy and never bad: nothing to remember
                cond = self._conditions[key] = _Condition(c.kind, c.subject)
            cond.facts, cond.exclude_sinks = dict(c.facts), c.exclude_sinks
            self._observe(cond, c.bad, now, wall)
        for key, cond in self._conditions.items():
            if key not in seen:
                self._observe(cond, False, now, wall)
        out = []
        debounce = self.config.debounce_s
        for key, cond in list(self._conditions.items()):
            if cond.incident is None and cond.bad_since is not None and now - cond.bad_since[0] >= debounce:
                out.append(self._transition(key, cond, "start", cond.bad_since[1], wall))
            elif cond.incident is not None and cond.good_since is not None and now - cond.good_since[0] >= debounce:
                out.append(self._transition(key, cond, "end", cond.incident.start, cond.good_since[1]))
            elif cond.incident is None and cond.bad_since is None:
                del self._conditions[key]  # cleared before it was ever raised
        return out

    @staticmethod
    def _observe(cond: _Condition, bad: bool, now: float, wall: datetime) -> None:
        if bad:
            cond.good_since = None
            if cond.bad_since is None:
                cond.bad_since = (now, wall)
        else:
            cond.bad_since = None
            if cond.incident is not None and cond.good_since is None:
                cond.good_since = (now, wall)

    def _open_labels(self) -> list[str]:
        return sorted(c.label for c in self._conditions.values() if c.incident is not None)

    def _transition(
        self, key: tuple[str, str], cond: _Condition, state: Literal["start", "end"], since: datetime, at: datetime
    ) -> Transition:
        facts = dict(cond.facts) if state == "start" else {**cond.opened_facts, **cond.facts}
        facts.update(
            kind=cond.kind,
            subject=cond.subject,
            site=self.site_id,
            caption=CAPTIONS[cond.kind][0 if state == "start" else 1],
            duration_s=max(0.0, (at - since).total_seconds()),
        )
        hit = RuleHit(
            rule_id=TYPE_PREFIX + cond.kind,
            type=TYPE_PREFIX + cond.kind,
            key=cond.subject or cond.kind,
            state=state,
            camera=SYSTEM_CAMERA,
            zone=None,
            track_ids=(),
            started_at=since,
            at=at,
            severity=SEVERITY[cond.kind],
            facts=facts,
        )
        return Transition(key, hit, cond.exclude_sinks)

    def applied(self, transition: Transition, incident: Incident | None) -> None:
        """The incident of `transition` is stored: the condition is now open (or gone)."""
        cond = self._conditions.get(transition.key)
        if cond is None:
            return
        if transition.hit.state == "start":
            cond.incident, cond.opened_facts = incident, dict(transition.hit.facts)
        else:
            del self._conditions[transition.key]

    # -- running --------------------------------------------------------------------------------------------------

    async def adopt_open(self) -> int:
        """Take over the system incidents an earlier run left open (newest per condition); returns how many."""
        docs = await self.db.call(self.db.sync.incidents, 1000, SYSTEM_CAMERA)
        adopted = 0
        for doc in docs:  # newest first
            kind = _KIND_OF_TYPE.get(str(doc.get("type")))
            if kind is None or doc.get("state") == "end":
                continue
            details = dict(doc.get("details") or {})
            subject = str(details.get("subject") or "")
            key = (kind, subject)
            if key in self._conditions:
                continue
            incident = incident_from_json(doc)
            self._conditions[key] = _Condition(
                kind,
                subject,
                facts=details,
                exclude_sinks=(subject,) if subject else (),
                incident=incident,
                opened_facts=details,
            )
            self.incidents.adopt(incident, subject or kind)
            adopted += 1
        if adopted:
            log.info("system health: took over %d open system incident(s) from the last run", adopted)
        return adopted

    async def tick(self) -> list[Incident]:
        """One pass: check, debounce, store what opened or ended; returns the incidents stored."""
        if not self._adopted:
            await self.adopt_open()
            self._adopted = True
        stored = await self.process(await self.checks(), time.monotonic(), _now())
        self.last_check = _now()
        return stored

    async def process(self, checks: Sequence[Check], now: float, wall: datetime) -> list[Incident]:
        """Debounce one pass of checks and store the incidents that open or end (each with the conditions open
        once it is applied); returns them."""
        stored = []
        for transition in self.evaluate(checks, now, wall):
            cond = self._conditions[transition.key]
            opened = set(self._open_labels())
            opened.symmetric_difference_update({cond.label})
            hit = replace(transition.hit, facts={**transition.hit.facts, "open_conditions": sorted(opened)})
            incident = await self.incidents.handle(hit, None, None, exclude_sinks=transition.exclude_sinks)
            self.applied(transition, incident)
            if incident is not None:
                stored.append(incident)
                if incident.state == "start":
                    self.metrics.incidents.labels(camera=SYSTEM_CAMERA, rule=hit.rule_id).inc()
        self._set_metrics()
        return stored

    def _set_metrics(self) -> None:
        for kind in KINDS:
            n = sum(1 for c in self._conditions.values() if c.kind == kind and c.incident is not None)
            self.metrics.system_condition.labels(kind=kind).set(n)

    async def run(self) -> None:
        """Check every `interval_s` forever; a failing pass is logged, shown in /readyz and retried with backoff."""
        backoff = RESTART_START_S
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a check or the store failing must not end the monitoring for good
                self.error = f"{type(exc).__name__}: {redact_url(_clip(str(exc)))}"
                log.exception("system health: check failed; again in %.0f s", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RESTART_MAX_S)
                continue
            self.error, backoff = None, RESTART_START_S
            await asyncio.sleep(self.config.interval_s)

    def snapshot(self) -> dict[str, Any]:
        """The `system` section of /readyz: open conditions, those waiting out the debounce, the monitor's state."""
        open_, pending = [], []
        for c in sorted(self._conditions.values(), key=lambda c: c.label):
            if c.incident is not None:
                open_.append(
                    {
                        "kind": c.kind,
                        "subject": c.subject or None,
                        "type": c.incident.type,
                        "severity": c.incident.severity,
                        "since": c.incident.start.isoformat(),
                        "incident_id": c.incident.id,
                        "explanation": redact_url(c.incident.explanation),
                        "clearing_since": None if c.good_since is None else c.good_since[1].isoformat(),
                    }
                )
            elif c.bad_since is not None:
                pending.append({"kind": c.kind, "subject": c.subject or None, "since": c.bad_since[1].isoformat()})
        return {
            "ok": not open_,
            "open": open_,
            "pending": pending,
            "last_check": None if self.last_check is None else self.last_check.isoformat(),
            "error": self.error,
        }
