"""Feedback on incidents: every verdict is kept with who, when and from where (the audit), and the latest one per
incident is the verdict precision counts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from plugin.hq.pg import Conn
from plugin.types import FeedbackVerdict


@dataclass(frozen=True)
class Feedback:
    """One verdict on one incident."""

    store_id: str
    incident_id: str
    verdict: FeedbackVerdict
    reason: str
    comment: str
    by_user: str
    source: str  # "hq" or "store"
    at: datetime
    rule_id: str
    type: str
    camera: str
    incident_start: datetime


_COLUMNS = {"confirmed": "confirmed", "false_alarm": "false_alarm", "unsure": "unsure"}  # verdict -> day column
_DAY = "(($2::timestamptz) AT TIME ZONE (SELECT timezone FROM stores WHERE id = $1))::date"


async def record_feedback(conn: Conn, fb: Feedback) -> None:
    """Keep the verdict, and make it the incident's verdict unless a later one is already there (the day counts
    move from the old verdict to the new). Call inside a transaction."""
    await conn.execute(
        """INSERT INTO feedback (store_id, incident_id, verdict, reason, comment, by_user, source, at, rule_id, type,
               camera, incident_start) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)""",
        fb.store_id,
        fb.incident_id,
        fb.verdict,
        fb.reason,
        fb.comment,
        fb.by_user,
        fb.source,
        fb.at,
        fb.rule_id,
        fb.type,
        fb.camera,
        fb.incident_start,
    )
    old = await conn.fetchrow(
        "SELECT verdict, at FROM verdicts WHERE store_id = $1 AND incident_id = $2 FOR UPDATE",
        fb.store_id,
        fb.incident_id,
    )
    if old is not None and old["at"] > fb.at:
        return  # an older verdict arriving late: it is kept above, but the later one still counts
    await conn.execute(
        """INSERT INTO verdicts (store_id, incident_id, verdict, at, rule_id, type, camera, incident_start)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (store_id, incident_id) DO UPDATE SET verdict = excluded.verdict, at = excluded.at""",
        fb.store_id,
        fb.incident_id,
        fb.verdict,
        fb.at,
        fb.rule_id,
        fb.type,
        fb.camera,
        fb.incident_start,
    )
    if old is not None and old["verdict"] == fb.verdict:
        return
    key = (fb.store_id, fb.incident_start, fb.type, fb.rule_id, fb.camera)
    if old is not None:
        gone = _COLUMNS[old["verdict"]]
        await conn.execute(
            f"""UPDATE verdict_days SET {gone} = {gone} - 1 WHERE store_id = $1 AND day = {_DAY} AND type = $3
                AND rule_id = $4 AND camera = $5""",
            *key,
        )
    new = _COLUMNS[fb.verdict]
    await conn.execute(
        f"""INSERT INTO verdict_days (store_id, day, type, rule_id, camera, {new}) VALUES ($1, {_DAY}, $3, $4, $5, 1)
            ON CONFLICT (store_id, day, type, rule_id, camera) DO UPDATE SET {new} = verdict_days.{new} + 1""",
        *key,
    )


async def feedback_for(conn: Conn, store_id: str, incident_id: str) -> list[dict[str, object]]:
    """Every verdict given on an incident, newest first."""
    rows = await conn.fetch(
        """SELECT verdict, reason, comment, by_user, source, at FROM feedback WHERE store_id = $1 AND incident_id = $2
           ORDER BY at DESC, id DESC""",
        store_id,
        incident_id,
    )
    return [dict(r) for r in rows]
