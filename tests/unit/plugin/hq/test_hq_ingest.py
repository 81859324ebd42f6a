"""Head office's ingest against a real PostgreSQL: each record kind is stored; bad input from a store (malformed,
oversized, another store's id, a wrong token, a replayed key with another body) gets a clear 4xx and stores nothing;
a replay of a stored key and body changes nothing."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from components.hq_server import RunningHq, hq_server

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 200 + b"\xff\xd9"
TABLES = ("ingest_keys", "incidents", "store_hours", "store_days", "day_types", "rule_versions", "feedback")


def incident(n: int = 1, state: str = "start", seq: int = 0, **over: Any) -> dict[str, Any]:
    """An incident record as the hq sink sends it."""
    doc = {
        "id": f"inc-{n}", "rule_id": "pos.void", "type": "pos_void", "camera": "lane1", "zone": None,
        "severity": "warning", "state": state, "seq": seq, "start": "2026-12-01T10:15:00+00:00",
        "end": "2026-12-01T10:17:30+00:00" if state == "end" else None, "explanation": "Void of 84.50 at lane 1",
        "track_ids": [3], "details": {"lane": "1", "operator": "op7"},
        "snapshot_jpeg": base64.b64encode(JPEG).decode() if state == "start" else None,
    }  # fmt: skip
    return doc | over


@pytest.fixture
async def hq(fresh_database: str) -> AsyncIterator[RunningHq]:
    """Head office with two stores."""
    async with hq_server(fresh_database, max_record_bytes=256 * 1024) as running:
        await running.add_store("berlin-1")
        await running.add_store("paris-2", timezone="Europe/Paris")
        yield running


async def post(hq: RunningHq, body: Any, store: str = "berlin-1", token: str | None = None,
               raw: bytes | None = None) -> tuple[int, dict[str, Any]]:  # fmt: skip
    """POST to /api/ingest as a store; (status, JSON answer)."""
    headers = {"Authorization": f"Bearer {token if token is not None else hq.tokens[store]}"}
    data = raw if raw is not None else json.dumps(body).encode()
    async with aiohttp.ClientSession() as s, s.post(f"{hq.url}/api/ingest", data=data, headers=headers) as r:
        text = await r.text()
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, {"error": text}


def envelope(kind: str, key: str, data: dict[str, Any], store: str = "berlin-1") -> dict[str, Any]:
    """The request body."""
    return {"store": store, "key": key, "kind": kind, "data": data}


async def counts(hq: RunningHq) -> dict[str, int]:
    """Rows in every table a record can touch."""
    return {t: int(await hq.db.pool.fetchval(f"SELECT count(*) FROM {t}")) for t in TABLES}


async def test_incident_states_are_stored_newest_first_with_snapshot_and_day_counts(hq: RunningHq) -> None:
    assert await post(hq, envelope("incident", "inc-1:start:0", incident())) == (
        200, {"status": "stored", "key": "inc-1:start:0"})  # fmt: skip
    status, _ = await post(hq, envelope("incident", "inc-1:end:1", incident(state="end", seq=1)))
    assert status == 200
    row = await hq.db.pool.fetchrow("SELECT * FROM incidents WHERE store_id = 'berlin-1' AND id = 'inc-1'")
    assert row["state"] == "end" and row["snapshot"] == JPEG  # the end carries no JPEG: the start's is kept
    assert row["details"] == {"lane": "1", "operator": "op7", "track_ids": [3]}
    day = await hq.db.pool.fetchrow("SELECT incidents, seconds FROM day_types WHERE type = 'pos_void'")
    assert (day["incidents"], day["seconds"]) == (1, 150.0)  # counted once; 2.5 minutes long


async def test_late_older_state_does_not_overwrite_newer(hq: RunningHq) -> None:
    await post(hq, envelope("incident", "inc-1:end:1", incident(state="end", seq=1)))
    await post(hq, envelope("incident", "inc-1:start:0", incident()))
    assert await hq.db.pool.fetchval("SELECT state FROM incidents WHERE id = 'inc-1'") == "end"
    assert await hq.db.pool.fetchval("SELECT incidents FROM day_types") == 1


async def test_replay_of_a_stored_key_changes_nothing(hq: RunningHq) -> None:
    body = envelope("incident", "inc-1:start:0", incident())
    await post(hq, body)
    before = await counts(hq)
    updated = await hq.db.pool.fetchval("SELECT updated FROM incidents")
    assert await post(hq, body) == (200, {"status": "duplicate", "key": "inc-1:start:0"})
    assert await counts(hq) == before
    assert await hq.db.pool.fetchval("SELECT updated FROM incidents") == updated


async def test_replayed_key_with_another_body_is_a_conflict(hq: RunningHq) -> None:
    await post(hq, envelope("incident", "inc-1:start:0", incident()))
    before = await counts(hq)
    status, answer = await post(hq, envelope("incident", "inc-1:start:0", incident(explanation="something else")))
    assert status == 409 and "already stored with a different record" in answer["error"]
    assert await counts(hq) == before
    assert await hq.db.pool.fetchval("SELECT explanation FROM incidents") == "Void of 84.50 at lane 1"


@pytest.mark.parametrize(
    ("raw", "status", "says"),
    [
        (b"{not json", 400, "body is not JSON"),
        (json.dumps({"store": "berlin-1", "key": "k", "kind": "incident"}).encode(), 422, "data: Field required"),
        (json.dumps(envelope("incident", "k", incident(severity="huge"))).encode(), 422, "data.severity"),
        (json.dumps(envelope("incident", "k", incident(start="yesterday"))).encode(), 422, "data.start"),
        (json.dumps(envelope("incident", "k", incident(surprise=1))).encode(), 422, "data.surprise"),
        (json.dumps(envelope("teleport", "k", {})).encode(), 422, "kind"),
        (
            json.dumps(envelope("rollup", "k", {"hour": "2026-12-01T10:30:00+00:00", "rows": []})).encode(),
            422,
            "data.hour: Value error, must be the start of an hour",
        ),
        (json.dumps(envelope("incident", "k", incident(snapshot_jpeg="***"))).encode(), 422, "not base64"),
        (
            json.dumps(
                envelope("incident", "k", incident(snapshot_jpeg=base64.b64encode(b"GIF89a").decode()))
            ).encode(),
            422,
            "not a JPEG",
        ),
        (json.dumps(envelope("feedback", "k", {"incident_id": "x"})).encode(), 422, "data."),
    ],
)
async def test_malformed_records_are_refused_naming_the_field(hq: RunningHq, raw: bytes, status: int,
                                                              says: str) -> None:  # fmt: skip
    before = await counts(hq)
    got, answer = await post(hq, None, raw=raw)
    assert got == status and says in answer["error"], answer
    assert await counts(hq) == before


async def test_oversized_record_is_refused(hq: RunningHq) -> None:
    before = await counts(hq)
    big = incident(details={"padding": "x" * 300 * 1024})
    status, answer = await post(hq, envelope("incident", "inc-big:start:0", big))
    assert status == 413 and "exceeded" in answer["error"]
    assert await counts(hq) == before


async def test_a_store_cannot_write_another_stores_data(hq: RunningHq) -> None:
    before = await counts(hq)
    status, answer = await post(hq, envelope("incident", "inc-1:start:0", incident(), store="paris-2"))
    assert status == 403 and "'paris-2' is not the store this token belongs to ('berlin-1')" in answer["error"]
    assert await counts(hq) == before


@pytest.mark.parametrize("token", ["", "not-a-store-token-at-all-000000"])
async def test_missing_or_unknown_token_is_401(hq: RunningHq, token: str) -> None:
    before = await counts(hq)
    status, answer = await post(hq, envelope("incident", "inc-1:start:0", incident()), token=token)
    assert status == 401 and "token" in answer["error"]
    assert await counts(hq) == before


async def test_hourly_records_fill_the_store_hour_and_day(hq: RunningHq) -> None:
    hour = "2026-12-01T23:00:00+00:00"  # 00:00 on 2 December in Berlin: the store's day, not UTC's
    rows = [
        {"camera": "door", "rule_id": "entrance", "metric": "in", "key": "person", "count": 42},
        {"camera": "door", "rule_id": "entrance", "metric": "out", "key": "person", "count": 40},
        {"camera": "till", "rule_id": "queue-1", "metric": "queue_length", "key": "q", "total": 30, "n": 10,
         "peak": 6},
    ]  # fmt: skip
    rules = {"queue-1": {"type": "queue", "max_length": 4}}
    rollup = {"hour": hour, "rows": rows, "limits": {"queue-1": {"max_length": 4}}, "rules": rules}
    pos = {"hour": hour, "rows": [{"lane": "1", "operator": "op7", "transactions": 9, "amount": 120.5,
                                   "exceptions": {"void": 1}}]}  # fmt: skip
    health = {"hour": hour, "cameras": {"door": {"online": 3500, "offline": 100}}}
    for kind, data in (("rollup", rollup), ("pos", pos), ("camera_health", health)):
        assert (await post(hq, envelope(kind, f"{kind}:{hour}", data)))[0] == 200
    h = await hq.db.pool.fetchrow("SELECT * FROM store_hours")
    assert (h["visitors"], h["transactions"], h["amount"]) == (42, 9, 120.5)
    assert h["health"] == {"door": {"online": 3500.0, "offline": 100.0}}
    d = await hq.db.pool.fetchrow("SELECT * FROM store_days")
    assert (str(d["day"]), d["visitors"], d["transactions"]) == ("2026-12-02", 42, 9)
    assert await hq.db.pool.fetchval("SELECT config FROM rule_versions WHERE rule_id = 'queue-1'") == rules["queue-1"]
    # the next hour with the same settings adds no version; a changed threshold does
    nxt = "2026-12-02T00:00:00+00:00"
    await post(hq, envelope("rollup", f"rollup:{nxt}", rollup | {"hour": nxt}))
    later = "2026-12-02T01:00:00+00:00"
    changed = {"queue-1": {"type": "queue", "max_length": 6}}
    await post(hq, envelope("rollup", f"rollup:{later}", rollup | {"hour": later, "rules": changed}))
    assert await hq.db.pool.fetchval("SELECT count(*) FROM rule_versions") == 2
    assert await hq.db.pool.fetchval("SELECT visitors FROM store_days") == 3 * 42


async def test_store_feedback_is_stored_with_who_and_when(hq: RunningHq) -> None:
    fb = {"incident_id": "inc-1", "verdict": "false_alarm", "reason": "staff_activity", "comment": "restocking",
          "by_user": "anna", "at": "2026-12-01T11:00:00+00:00", "rule_id": "pos.void", "type": "pos_void",
          "camera": "lane1", "incident_start": "2026-12-01T10:15:00+00:00"}  # fmt: skip
    assert (await post(hq, envelope("feedback", "feedback:inc-1:1", fb)))[0] == 200
    row = await hq.db.pool.fetchrow("SELECT * FROM feedback")
    assert (row["verdict"], row["by_user"], row["source"]) == ("false_alarm", "anna", "store")
    status, answer = await post(hq, envelope("feedback", "feedback:inc-1:2", fb | {"reason": "because"}))
    assert status == 422 and "data.reason" in answer["error"]


async def test_a_changed_verdict_moves_the_day_counts_and_a_late_older_one_does_not(hq: RunningHq) -> None:
    from datetime import UTC, datetime, timedelta

    from plugin.hq.feedback import Feedback, record_feedback

    start = datetime(2026, 12, 1, 22, 30, tzinfo=UTC)  # 23:30 in Berlin: the store's 1 December
    at = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)

    def fb(verdict: str, when: datetime) -> Feedback:
        return Feedback("berlin-1", "inc-9", verdict, "other", "", "ana", "hq", when, "pos.void", "pos_void",  # type: ignore[arg-type]
                        "lane1", start)  # fmt: skip

    async def days() -> list[tuple[str, int, int, int]]:
        rows = await hq.db.fetch("SELECT day, confirmed, false_alarm, unsure FROM verdict_days")
        return [(str(r["day"]), r["confirmed"], r["false_alarm"], r["unsure"]) for r in rows]

    async with hq.db.pool.acquire() as conn, conn.transaction():
        await record_feedback(conn, fb("confirmed", at))
    assert await days() == [("2026-12-01", 1, 0, 0)]
    async with hq.db.pool.acquire() as conn, conn.transaction():
        await record_feedback(conn, fb("false_alarm", at + timedelta(hours=1)))
    assert await days() == [("2026-12-01", 0, 1, 0)]
    async with hq.db.pool.acquire() as conn, conn.transaction():
        await record_feedback(conn, fb("unsure", at - timedelta(hours=1)))  # given earlier, arriving late
    assert await days() == [("2026-12-01", 0, 1, 0)]
    assert await hq.db.pool.fetchval("SELECT count(*) FROM feedback") == 3  # every verdict kept (the audit)
    assert await hq.db.pool.fetchval("SELECT verdict FROM verdicts") == "false_alarm"
