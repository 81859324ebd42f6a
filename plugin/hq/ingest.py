"""POST /api/ingest: one keyed record from a store, authenticated by that store's own token, checked whole before
anything is stored, then stored in one transaction with its key. The same key with the same body again changes
nothing (200, "duplicate": the outbox may resend after a lost reply); the same key with another body is refused
(409). Every refusal is a 4xx that says why, and leaves nothing behind."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from plugin.hq.db import HqDatabase, Store
from plugin.hq.feedback import Feedback, record_feedback
from plugin.hq.keys import HQ_CONFIG, HQ_DB
from plugin.hq.pg import Conn
from plugin.hq.records import (
    MODELS,
    CameraHealthRecord,
    Envelope,
    FeedbackRecord,
    IncidentRecord,
    PosRecord,
    RollupRecord,
)

log = logging.getLogger(__name__)


def _problem(status: type[web.HTTPException], message: str) -> web.HTTPException:
    return status(text=json.dumps({"error": message}), content_type="application/json")


def _validation_message(exc: ValidationError, prefix: str) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in (prefix, *first["loc"]) if p != "")
    return f"{where}: {first['msg']}" + (f" ({len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else "")


async def authenticate_store(request: web.Request) -> Store:
    """The store whose token the request carries (Authorization: Bearer), else 401."""
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer ") or not header[7:].strip():
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": "missing store token (Authorization: Bearer ...)"}),
            content_type="application/json",
            headers={"WWW-Authenticate": "Bearer"},
        )
    store = await request.app[HQ_DB].store_for_token(header[7:].strip())
    if store is None:
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": "unknown store token"}),
            content_type="application/json",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return store


async def ingest(request: web.Request) -> web.Response:
    """Take one record from a store."""
    store = await authenticate_store(request)
    raw = await request.read()  # aiohttp refuses a body over client_max_size with 413 before this returns
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _problem(web.HTTPBadRequest, f"body is not JSON: {exc}") from None
    try:
        env = Envelope.model_validate(doc)
    except ValidationError as exc:
        raise _problem(web.HTTPUnprocessableEntity, _validation_message(exc, "")) from None
    if env.store != store.id:
        raise _problem(
            web.HTTPForbidden,
            f"store: {env.store!r} is not the store this token belongs to "
            f"({store.id!r}): a store writes only its own data",
        )
    try:
        record = MODELS[env.kind].model_validate(env.data)
    except ValidationError as exc:
        raise _problem(web.HTTPUnprocessableEntity, _validation_message(exc, "data")) from None
    snapshot = None
    if isinstance(record, IncidentRecord) and record.snapshot_jpeg is not None:
        snapshot = _snapshot(record.snapshot_jpeg, request.app[HQ_CONFIG].snapshot_max_bytes)
    digest = hashlib.sha256(json.dumps([env.kind, env.data], sort_keys=True).encode()).hexdigest()
    outcome = await store_record(request.app[HQ_DB], store, env.key, env.kind, digest, record, snapshot)
    if outcome == "conflict":
        raise _problem(
            web.HTTPConflict,
            f"key: {env.key!r} was already stored with a different record; a key names one record for good",
        )
    return web.json_response({"status": outcome, "key": env.key})


def _snapshot(text: str, limit: int) -> bytes:
    try:
        jpeg = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _problem(web.HTTPUnprocessableEntity, "data.snapshot_jpeg: not base64") from None
    if len(jpeg) > limit:
        raise _problem(web.HTTPRequestEntityTooLarge, f"data.snapshot_jpeg: {len(jpeg)} bytes, over {limit}")
    if not jpeg.startswith(b"\xff\xd8"):
        raise _problem(web.HTTPUnprocessableEntity, "data.snapshot_jpeg: not a JPEG")
    return jpeg


async def store_record(
    db: HqDatabase, store: Store, key: str, kind: str, digest: str, record: Any, snapshot: bytes | None
) -> str:
    """Store the record and its key in one transaction: "stored", "duplicate" (same key and body: nothing
    changed) or "conflict" (same key, another body: nothing changed)."""
    async with db.pool.acquire() as conn, conn.transaction():
        inserted = await conn.fetchval(
            """INSERT INTO ingest_keys (store_id, key, kind, digest) VALUES ($1, $2, $3, $4)
               ON CONFLICT (store_id, key) DO NOTHING RETURNING true""",
            store.id,
            key,
            kind,
            digest,
        )
        if not inserted:
            known = await conn.fetchval(
                "SELECT digest FROM ingest_keys WHERE store_id = $1 AND key = $2", store.id, key
            )
            return "duplicate" if known == digest else "conflict"
        if isinstance(record, IncidentRecord):
            await _incident(conn, store, record, snapshot)
        elif isinstance(record, RollupRecord):
            await _rollup(conn, store, record)
        elif isinstance(record, PosRecord):
            await _pos(conn, store, record)
        elif isinstance(record, CameraHealthRecord):
            await conn.execute(
                """INSERT INTO store_hours (store_id, hour, health) VALUES ($1, $2, $3)
                   ON CONFLICT (store_id, hour) DO UPDATE SET health = excluded.health""",
                store.id,
                record.hour,
                record.model_dump(mode="json")["cameras"],
            )
        elif isinstance(record, FeedbackRecord):
            await record_feedback(
                conn,
                Feedback(
                    store.id,
                    record.incident_id,
                    record.verdict,
                    record.reason,
                    record.comment,
                    record.by_user,
                    "store",
                    record.at,
                    record.rule_id,
                    record.type,
                    record.camera,
                    record.incident_start,
                ),
            )
        await conn.execute("UPDATE stores SET last_seen = now() WHERE id = $1", store.id)
    return "stored"


def _local_day_sql(column: str) -> str:
    return f"(({column}) AT TIME ZONE (SELECT timezone FROM stores WHERE id = $1))::date"


async def _incident(conn: Conn, store: Store, r: IncidentRecord, snapshot: bytes | None) -> None:
    """Newest state wins (by sequence); the day's counts move once per incident and once when it ends."""
    prev = await conn.fetchrow(
        "SELECT state, seq FROM incidents WHERE store_id = $1 AND id = $2 FOR UPDATE", store.id, r.id
    )
    if prev is not None and r.seq < prev["seq"]:
        return  # an older state change arriving late: the stored one is newer
    await conn.execute(
        """INSERT INTO incidents (store_id, id, rule_id, type, camera, zone, severity, state, seq, start_at, end_at,
               explanation, details, snapshot) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
           ON CONFLICT (store_id, id) DO UPDATE SET state = excluded.state, seq = excluded.seq,
               end_at = excluded.end_at, explanation = excluded.explanation, details = excluded.details,
               severity = excluded.severity, snapshot = coalesce(excluded.snapshot, incidents.snapshot),
               updated = now()""",
        store.id,
        r.id,
        r.rule_id,
        r.type,
        r.camera,
        r.zone,
        r.severity,
        r.state,
        r.seq,
        r.start,
        r.end,
        r.explanation,
        {**r.details, "track_ids": r.track_ids},
        snapshot,
    )
    ended = r.state == "end" and r.end is not None and (prev is None or prev["state"] != "end")
    if prev is None or ended:
        seconds = (r.end - r.start).total_seconds() if ended and r.end is not None else 0.0
        await conn.execute(
            f"""INSERT INTO day_types (store_id, day, type, incidents, seconds) VALUES ($1, {_local_day_sql("$3")},
                   $2, $4, $5)
               ON CONFLICT (store_id, day, type) DO UPDATE SET incidents = day_types.incidents + excluded.incidents,
                   seconds = day_types.seconds + excluded.seconds""",
            store.id,
            r.type,
            r.start,
            1 if prev is None else 0,
            max(seconds, 0.0),
        )


async def _rollup(conn: Conn, store: Store, r: RollupRecord) -> None:
    rows = [row.model_dump() for row in r.rows]
    visitors = int(sum(row["count"] for row in rows if row["metric"] == "in"))
    limits = {k: v.model_dump() for k, v in r.limits.items()}
    await conn.execute(
        """INSERT INTO store_hours (store_id, hour, visitors, series, limits, rules) VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (store_id, hour) DO UPDATE SET visitors = excluded.visitors, series = excluded.series,
               limits = excluded.limits, rules = excluded.rules""",
        store.id,
        r.hour,
        visitors,
        rows,
        limits,
        r.rules,
    )
    await _add_day(conn, store, r.hour, visitors=visitors)
    if r.rules:
        latest = await conn.fetch(
            """SELECT DISTINCT ON (rule_id) rule_id, config FROM rule_versions WHERE store_id = $1 AND since <= $2
               ORDER BY rule_id, since DESC""",
            store.id,
            r.hour,
        )
        known = {row["rule_id"]: row["config"] for row in latest}
        changed = [(rid, cfg) for rid, cfg in r.rules.items() if known.get(rid) != cfg]
        await conn.executemany(
            """INSERT INTO rule_versions (store_id, rule_id, since, config) VALUES ($1, $2, $3, $4)
               ON CONFLICT DO NOTHING""",
            [(store.id, rid, r.hour, cfg) for rid, cfg in changed],
        )


async def _pos(conn: Conn, store: Store, r: PosRecord) -> None:
    rows = [row.model_dump() for row in r.rows]
    transactions = sum(row["transactions"] for row in rows)
    amount = round(sum(row["amount"] for row in rows), 2)
    await conn.execute(
        """INSERT INTO store_hours (store_id, hour, transactions, amount, pos) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (store_id, hour) DO UPDATE SET transactions = excluded.transactions,
               amount = excluded.amount, pos = excluded.pos""",
        store.id,
        r.hour,
        transactions,
        amount,
        rows,
    )
    await _add_day(conn, store, r.hour, transactions=transactions, amount=amount)


async def _add_day(
    conn: Conn, store: Store, hour: datetime, visitors: int = 0, transactions: int = 0, amount: float = 0.0
) -> None:
    await conn.execute(
        f"""INSERT INTO store_days (store_id, day, visitors, transactions, amount)
            VALUES ($1, {_local_day_sql("$2")}, $3, $4, $5)
            ON CONFLICT (store_id, day) DO UPDATE SET visitors = store_days.visitors + excluded.visitors,
                transactions = store_days.transactions + excluded.transactions,
                amount = store_days.amount + excluded.amount""",
        store.id,
        hour,
        visitors,
        transactions,
        amount,
    )
