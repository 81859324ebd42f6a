"""POS intake and fusion with the lane cameras.

Every adapter (POSLog, receipt text, JSON) hands normalised transactions to `PosService.submit`, which stores each
through the business hub (durable before the sender hears back) and, once stored, finds its exceptions (each
stored as `pos.<name>`) and asks the lane camera what it saw:

- refund with no customer present: nobody in the customer zone during the refund;
- no-sale with nobody at the counter;
- void after the customer left: someone was there earlier in the transaction (or the original, for a post-void),
  nobody at the void.

"Nobody" needs the camera to have watched the window (`PresenceAnswer.watched`); a window it did not cover is
"unverified", never "no customer". Video lags the register a little, so judging waits (outside the sender's
acknowledgement) until the camera's analysed video has passed the window, at most `fusion.wait_max_s`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from plugin.config.pos import PosConfig, PosLaneConfig
from plugin.fusion.hub import BusinessHub, PendingJudgements
from plugin.fusion.pos.exceptions import PosException, PosExceptionRules
from plugin.fusion.pos.model import TRANSACTION_KIND, ReceiptListener, Transaction, receipt_summary, render_receipt
from plugin.incidents.manager import IncidentManager
from plugin.metrics import Metrics
from plugin.pipeline.presence import PresenceAnswer, PresenceLog
from plugin.protocols import SubmitResult
from plugin.rules.base import RuleHit
from plugin.types import BusinessEvent

log = logging.getLogger(__name__)

POLL_S = 0.25  # how often a waiting judgement looks at how far video has been analysed
RECENT_MAX = 5000  # transactions kept for post-void look-ups (originals are minutes old; presence keeps 15 min)
Verdict = Literal["present", "absent", "unverified"]
CHECK_LABELS = {"refund_no_customer": "refund", "no_sale_nobody": "no-sale", "void_customer_left": "void"}


@dataclass(frozen=True)
class Look:
    """What the lane camera saw in the customer zone over a window."""

    start: datetime
    end: datetime
    answer: PresenceAnswer
    staff: PresenceAnswer | None

    @property
    def verdict(self) -> Verdict:
        """present / absent when the camera watched the window, unverified otherwise."""
        if not self.answer.watched:
            return "unverified"
        return "present" if self.answer.max_people > 0 else "absent"


class PosService:
    """The one entry for transactions; subscribes to the business hub for what follows storage."""

    def __init__(
        self,
        config: PosConfig,
        site: str,
        timezone: str,
        hub: BusinessHub,
        presence: PresenceLog,
        incidents: IncidentManager | None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.site = site
        self.tz = ZoneInfo(config.timezone or timezone)
        self.hub = hub
        self.presence = presence
        self.incidents = incidents
        self.metrics = metrics
        self.rules = PosExceptionRules(config)
        self.listeners: list[ReceiptListener] = []
        self._recent: OrderedDict[tuple[str, str, str], Transaction] = OrderedDict()
        self._judgements = PendingJudgements("pos")
        self._unknown_lanes: set[str] = set()
        self.counts = {"transactions": 0, "duplicates": 0, "exceptions": 0, "incidents": 0}
        hub.subscribe(self._on_event)

    async def start(self) -> None:
        """Seed the operator-frequency windows from stored transactions (a restart keeps counting)."""
        window = timedelta(seconds=2 * self.config.operator_limits.window_s)
        now = datetime.now(UTC)
        rows = await self.hub.db.call(
            self.hub.db.sync.business_events,
            (now - window).isoformat(),
            (now + window).isoformat(),
            TRANSACTION_KIND,
        )
        history = []
        for row in rows:
            try:
                history.append(Transaction.model_validate(row["payload"]))
            except ValidationError:
                continue  # written by an older version: it only counted towards a window
        self.rules.seed(history)

    async def close(self) -> None:
        """Stop judgements still waiting for video."""
        await self._judgements.cancel()

    async def idle(self, timeout_s: float = 60.0) -> None:
        """Wait until no judgement is pending (tests, --once)."""
        await self._judgements.idle(timeout_s)

    async def submit(self, txn: Transaction, source: str, origin: str | None = None) -> SubmitResult:
        """Store one transaction (returns after it is committed: acknowledge the sender then); `origin` joins the
        dedupe key (see TransactionIntake)."""
        lane = self.config.lane(txn.lane)
        if lane is not None and lane.clock_offset_s:
            txn = txn.shifted(lane.clock_offset_s)
        event = BusinessEvent(source, self.site, txn.end, TRANSACTION_KIND, txn.payload())
        key = txn.key if origin is None else f"{txn.key}:{origin}"
        event_id, new = await self.hub.ingest(event, dedupe_key=key)
        self.counts["transactions" if new else "duplicates"] += 1
        return SubmitResult(event_id, new)

    async def _on_event(self, event_id: str, event: BusinessEvent) -> None:
        """After storage: Transact feeds, exceptions, and the judgement with video."""
        if event.kind != TRANSACTION_KIND:
            return
        txn = Transaction.model_validate(event.payload)
        receipt = list(txn.receipt) or render_receipt(txn, self.tz)
        normalised = render_receipt(txn, self.tz)
        for listener in self.listeners:
            listener(txn, normalised)
        self._remember(txn)
        found = self.rules.check(txn)
        for exc in found:
            payload = {
                "transaction": txn.id, "lane": txn.lane, "store": txn.store, "operator": txn.operator,
                "type": txn.type, "amount": exc.amount, "reason": exc.reason, "transaction_event": event_id,
                **exc.facts,
            }  # fmt: skip
            # keyed by the stored transaction, not its id: two transactions with one id (one of them sent from
            # elsewhere) each keep their findings
            key = f"{txn.key}:{event_id}:{exc.name}" + (f":{exc.facts['category']}" if "category" in exc.facts else "")
            await self.hub.ingest(BusinessEvent(event.source, self.site, exc.at, exc.kind, payload), dedupe_key=key)
        self.counts["exceptions"] += len(found)
        lane = self.config.lane(txn.lane)
        if lane is None:
            if txn.lane not in self._unknown_lanes:
                self._unknown_lanes.add(txn.lane)
                log.warning("pos: lane %s is not in pos.lanes: its exceptions are stored, without video", txn.lane)
            return
        if self.incidents is None:
            return
        self._judgements.start(self._judge(txn, receipt, found, lane, event_id), f"pos-{txn.key}")

    def _remember(self, txn: Transaction) -> None:
        self._recent[(txn.store or "-", txn.lane, txn.id)] = txn
        while len(self._recent) > RECENT_MAX:
            self._recent.popitem(last=False)

    def _original(self, txn: Transaction) -> Transaction | None:
        if txn.link is None:
            return None
        return self._recent.get((txn.link.store or txn.store or "-", txn.link.lane or txn.lane, txn.link.id))

    # -- video

    async def _video_until(self, lane: PosLaneConfig, t: datetime) -> None:
        """Wait until the lane camera's analysed video has passed `t`, or wait_max_s has gone by."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.fusion.wait_max_s
        while loop.time() < deadline:
            last = self.presence.last_sample(lane.camera, lane.customer_zone)
            if last is not None and last >= t:
                return
            await asyncio.sleep(POLL_S)

    def _look(self, lane: PosLaneConfig, start: datetime, end: datetime) -> Look:
        answer = self.presence.people_in(lane.camera, lane.customer_zone, start, end)
        staff = None if lane.staff_zone is None else self.presence.people_in(lane.camera, lane.staff_zone, start, end)
        return Look(start, end, answer, staff)

    async def _judge(
        self, txn: Transaction, receipt: list[str], found: list[PosException], lane: PosLaneConfig, event_id: str
    ) -> None:
        pad = timedelta(seconds=self.config.fusion.window_pad_s)
        begin, end = txn.window(self.config.fusion.assumed_duration_s)
        void_at = self._void_moment(txn)
        await self._video_until(lane, max(end, void_at or end) + pad)
        whole = self._look(lane, begin - pad, end + pad)
        base = self._facts(txn, receipt, lane, event_id)
        for exc in found:
            await self._incident(exc.name, txn, lane, whole, exc.at, {**base, "reason": exc.reason,
                                 "amount": exc.amount})  # fmt: skip
        if txn.type == "return" or txn.returns:
            await self._fused("refund_no_customer", txn, lane, whole, None, base)
        if txn.type == "no_sale":
            await self._fused("no_sale_nobody", txn, lane, whole, None, base)
        if void_at is not None:
            await self._void_check(txn, lane, void_at, begin, pad, base)

    def _void_moment(self, txn: Transaction) -> datetime | None:
        if txn.type in ("void", "post_void"):
            return txn.end
        voided = [ln for ln in txn.voided_lines if abs(ln.amount) >= self.config.thresholds.line_void_min_amount]
        if not voided:
            return None
        return max((ln.time for ln in voided if ln.time is not None), default=txn.end)

    async def _void_check(
        self, txn: Transaction, lane: PosLaneConfig, void_at: datetime, begin: datetime, pad: timedelta,
        base: dict[str, Any],
    ) -> None:  # fmt: skip
        at = self._look(lane, void_at - pad, void_at + pad)
        before: Look | None
        if txn.type == "post_void":
            original = self._original(txn)
            if original is None:
                before = None  # not seen (or long ago): judged on the post-void alone
            else:
                o_begin, o_end = original.window(self.config.fusion.assumed_duration_s)
                before = self._look(lane, o_begin - pad, o_end + pad)
        elif void_at - pad > begin - pad:
            before = self._look(lane, begin - pad, void_at - pad)
        else:
            return  # voided as the transaction opened: there is no "before"
        verdicts = (at.verdict, None if before is None else before.verdict)
        if "unverified" in verdicts:
            await self._fused("void_customer_left", txn, lane, at if at.verdict == "unverified" else before, void_at,
                              base)  # fmt: skip
            return
        if at.verdict == "absent" and (before is None or before.verdict == "present"):
            if txn.type == "void" or txn.type == "post_void":
                worth = abs(txn.amount) or sum(ln.amount for ln in txn.lines)
            else:
                worth = sum(ln.amount for ln in txn.voided_lines)
            facts = {
                **base,
                "amount": round(worth, 2),
                "people_before": -1 if before is None else before.answer.max_people,
            }
            if before is not None:
                facts["tracks_before"] = ", ".join(f"#{t}" for t in before.answer.track_ids)
            await self._fused("void_customer_left", txn, lane, at, void_at, facts, before=before)

    async def _fused(
        self, check: str, txn: Transaction, lane: PosLaneConfig, look: Look | None, moment: datetime | None,
        base: dict[str, Any], before: Look | None = None,
    ) -> None:  # fmt: skip
        """Store the fusion's finding and raise its incident: `check` when nobody was there, `unverified` when the
        camera did not watch; nothing when someone was there."""
        assert look is not None
        if look.verdict == "present":
            return
        name = check if look.verdict == "absent" else "unverified"
        payload = {
            "check": check, "transaction": txn.id, "lane": lane.id, "camera": lane.camera, "zone": lane.customer_zone,
            "verdict": look.verdict, "people": look.answer.max_people, "watched_share": look.answer.watched_share,
            "window": [look.start.isoformat(), look.end.isoformat()],
        }  # fmt: skip
        if before is not None:
            payload["people_before"] = before.answer.max_people
        at = moment or txn.end
        key = f"{txn.key}:{base['transaction_event']}:{check}"
        await self.hub.ingest(BusinessEvent("pos.fusion", self.site, at, f"pos.{name}", payload), dedupe_key=key)
        facts = {**base, "check": CHECK_LABELS[check], "void_at": at}
        await self._incident(name, txn, lane, look, at, facts, before=before)

    def _facts(self, txn: Transaction, receipt: list[str], lane: PosLaneConfig, event_id: str) -> dict[str, Any]:
        return {
            "lane": lane.id,
            "txn_id": txn.id,
            "txn_type": txn.type.replace("_", " "),
            "operator": txn.operator or "unknown",
            "amount": abs(txn.amount),
            "currency": txn.currency or "",
            "receipt": "\n".join(receipt),
            "receipt_line": receipt_summary(receipt),
            "transaction_event": event_id,
        }

    async def _incident(
        self, name: str, txn: Transaction, lane: PosLaneConfig, look: Look, at: datetime, facts: dict[str, Any],
        before: Look | None = None,
    ) -> None:  # fmt: skip
        setting = getattr(self.config.incidents, name)
        if setting == "off" or self.incidents is None:
            return
        answer = look.answer
        track_ids = tuple(sorted({*answer.track_ids, *(before.answer.track_ids if before else ())}))
        facts = {
            **facts,
            "people": answer.max_people,
            "watched": answer.watched,
            "coverage": round(answer.watched_share * 100),
            "staff": -1 if look.staff is None else look.staff.max_people,
            "staff_zone": lane.staff_zone or "",
            "window_start": look.start,
            "window_end": look.end,
        }
        key = f"{txn.key}:{facts['transaction_event']}:{name}"  # per stored transaction, like its findings
        hit = RuleHit(
            rule_id=f"pos.{name}", type=f"pos_{name}", key=key, state="start", camera=lane.camera,
            zone=lane.customer_zone, track_ids=track_ids, started_at=look.start, at=look.end, severity=setting,
            facts=facts,
        )  # fmt: skip
        near = self.presence.frame_near(lane.camera, at)
        opened = await self.incidents.handle(
            hit, None, None, jpeg=None if near is None else near.jpeg, people=None if near is None else near.people
        )
        await self.incidents.handle(replace(hit, state="end"), None, None)
        if opened is not None:
            self.counts["incidents"] += 1
            if self.metrics is not None:
                self.metrics.incidents.labels(camera=lane.camera, rule=hit.rule_id).inc()
