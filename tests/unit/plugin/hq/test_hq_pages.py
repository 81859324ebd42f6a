"""Head office's pages on real data (sent through the hq sink into a real PostgreSQL): the figures add up to what
the stores sent, every table downloads as CSV, and a store manager sees their own store only, by page, API, picture
and export."""

from __future__ import annotations

import asyncio
import csv
import io
import shutil
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import aiohttp
import pytest
import pytest_asyncio
from components.hq_server import RunningHq, hq_server, seed
from components.postgres import PostgresServer
from conftest import require

from plugin.cli.hq_synth import SynthStore, hour_records

START = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)  # a Monday
HOURS = 48
PERIOD = "from=2026-11-30&to=2026-12-02"
STORES = [SynthStore.make(1), SynthStore.make(2)]  # Paris 001, London 002
USERS = {"ada": ("admin", []), "lou": ("analyst", []), "max": ("store_manager", ["store-001"])}
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64 + b"\xff\xd9"


# one head office for the module (seeding takes seconds); the tests only read
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hq(postgres: PostgresServer) -> AsyncIterator[RunningHq]:
    """Head office with two days of two stores."""
    async with hq_server(await postgres.create_database_async("pages"), USERS) as running:
        await seed(running, STORES, START, HOURS, JPEG)
        yield running


async def get(hq: RunningHq, path: str, user: str | None = "ada") -> tuple[int, str, str]:
    """GET as a user signed in through the sign-in form (None: nobody); (status, content type, text)."""
    if user is None:
        async with aiohttp.ClientSession() as anonymous, anonymous.get(hq.url + path, allow_redirects=False) as r:
            return r.status, r.content_type, await r.text()
    http, _ = await hq.session(user)
    async with http.get(hq.url + path, allow_redirects=False) as r:
        return r.status, r.content_type, await r.text()


def rows_of(text: str) -> list[dict[str, str]]:
    """CSV rows as dicts."""
    return list(csv.DictReader(io.StringIO(text)))


async def test_chain_page_ranks_the_stores_with_figures_that_add_up(hq: RunningHq) -> None:
    status, ctype, html = await get(hq, f"/?{PERIOD}")
    assert status == 200 and ctype == "text/html"
    assert "Paris 001" in html and "London 002" in html and "<svg" in html and "http://" not in html.split("<svg")[0]
    status, ctype, text = await get(hq, f"/?{PERIOD}&csv=ranking")
    assert status == 200 and ctype == "text/csv"
    ranking = {r["store"]: r for r in rows_of(text)}
    for store in STORES:
        tz = ZoneInfo(store.timezone)
        expected = 0
        for h in range(HOURS):
            hour = START + timedelta(hours=h)
            if datetime(2026, 11, 30).date() <= hour.astimezone(tz).date() < datetime(2026, 12, 2).date():
                rollup = hour_records(store, hour)[0][2]
                expected += sum(int(r["count"]) for r in rollup["rows"] if r["metric"] == "in")
        assert int(ranking[store.id]["visitors"]) == expected
        incidents = int(ranking[store.id]["incidents"])
        assert float(ranking[store.id]["per 1,000 visitors"]) == pytest.approx(incidents * 1000 / expected, abs=1e-3)


async def test_store_page_shows_every_chart_and_its_tables(hq: RunningHq) -> None:
    status, _, html = await get(hq, f"/stores/store-001?{PERIOD}")
    assert status == 200
    for title in ("Footfall by hour and entrance", "Occupancy by hour", "Queue length by hour against the limit",
                  "Queue wait (s) by hour", "Incidents by type and hour", "Dwell by zone", "POS exceptions by register",
                  "Camera health: minutes offline or degraded by day"):  # fmt: skip
        assert title in html, title
    status, _, text = await get(hq, f"/stores/store-001?{PERIOD}&csv=footfall")
    foot = rows_of(text)
    assert len(foot) == 24 and sum(int(r["total"]) for r in foot) > 0
    assert all(int(r["total"]) == 0 for r in foot if int(r["hour"][:2]) < 8)  # closed before 08:00
    _, _, queues = await get(hq, f"/stores/store-001?{PERIOD}&csv=queues")
    [q] = rows_of(queues)
    assert (q["queue rule"], q["limit length"], q["limit wait s"]) == ("queue-1", "5", "180.0")


async def test_incident_page_shows_the_snapshot(hq: RunningHq) -> None:
    [inc_id] = [r["id"] for r in await hq.db.fetch("SELECT id FROM incidents WHERE store_id = 'store-001' LIMIT 1")]
    status, _, html = await get(hq, f"/stores/store-001/incidents/{inc_id}")
    assert status == 200 and f"/stores/store-001/incidents/{inc_id}/snapshot.jpg" in html
    url = f"{hq.url}/stores/store-001/incidents/{inc_id}/snapshot.jpg"
    http, _ = await hq.session("ada")
    async with http.get(url) as r:
        assert r.status == 200 and r.content_type == "image/jpeg" and await r.read() == JPEG


async def test_store_manager_sees_only_their_store(hq: RunningHq) -> None:
    [other] = [r["id"] for r in await hq.db.fetch("SELECT id FROM incidents WHERE store_id = 'store-002' LIMIT 1")]
    status, _, html = await get(hq, f"/?{PERIOD}", "max")
    assert status == 200 and "Paris 001" in html and "London 002" not in html and "store-002" not in html
    for path in (f"/stores/store-002?{PERIOD}", f"/stores/store-002/incidents/{other}",
                 f"/stores/store-002/incidents/{other}/snapshot.jpg", f"/stores/store-002?{PERIOD}&csv=footfall",
                 "/api/stores/store-002/incidents"):  # fmt: skip
        assert (await get(hq, path, "max"))[0] == 404, path
    for path in ("/", "/conversion", "/alarms"):
        for table in ("ranking", "weekly", "conversion_by_store", "alarms_by_store"):
            status, _, text = await get(hq, f"{path}?{PERIOD}&csv={table}", "max")
            assert status in (200, 404) and "store-002" not in text and "London" not in text
    status, _, api = await get(hq, "/api/stores", "max")
    assert status == 200 and "store-002" not in api and "store-001" in api
    assert (await get(hq, f"/stores/store-001?{PERIOD}", "max"))[0] == 200
    assert (await get(hq, f"/stores/store-002?{PERIOD}", "lou"))[0] == 200  # the analyst sees the whole chain


async def test_not_signed_in_goes_to_sign_in_and_api_says_401(hq: RunningHq) -> None:
    status, _, _ = await get(hq, "/stores/store-001", None)
    assert status == 303
    assert (await get(hq, "/api/stores", None))[0] == 401


async def test_conversion_and_alarm_pages(hq: RunningHq) -> None:
    status, _, text = await get(hq, f"/conversion?{PERIOD}&csv=conversion_by_store")
    assert status == 200
    for r in rows_of(text):
        assert float(r["conversion"]) == pytest.approx(int(r["transactions"]) / int(r["visitors"]), abs=1e-3)
    status, _, text = await get(hq, f"/alarms?{PERIOD}&csv=alarms_by_store")
    for r in rows_of(text):
        assert int(r["received"]) == int(r["verified by video"]) + int(r["unverified"])
    status, _, html = await get(hq, f"/alarms?{PERIOD}")
    assert status == 200 and "Alarms by hour of the day" in html


async def test_bad_period_is_a_clear_400(hq: RunningHq) -> None:
    status, _, text = await get(hq, "/?from=2026-12-05&to=2026-12-01")
    assert status == 400 and "from must be before to" in text
    status, _, text = await get(hq, "/?days=lots")
    assert status == 400 and "period" in text


async def post_form(hq: RunningHq, path: str, form: dict[str, str], user: str = "ada") -> tuple[int, str, str]:
    """POST a form in `user`'s signed-in session; (status, Location, text)."""
    http, _ = await hq.session(user)
    async with http.post(hq.url + path, data=form, allow_redirects=False) as r:
        return r.status, r.headers.get("Location", ""), await r.text()


async def test_feedback_is_stored_with_who_and_counts_in_precision(hq: RunningHq) -> None:
    inc = await hq.db.pool.fetchrow(
        """SELECT i.id, i.rule_id, i.camera FROM incidents i LEFT JOIN verdicts v ON v.store_id = i.store_id
           AND v.incident_id = i.id WHERE i.store_id = 'store-001' AND v.incident_id IS NULL AND i.type = 'sweep'
           LIMIT 1"""
    )
    path = f"/stores/store-001/incidents/{inc['id']}/feedback"
    _, _, before = await get(hq, f"/precision?{PERIOD}&store=store-001&csv=precision_by_camera")
    judged_before = {(r["store"], r["camera"]): int(r["judged"]) for r in rows_of(before)}
    form = {"verdict": "false_alarm", "reason": "staff_activity", "comment": "restocking the shelf"}
    status, _, text = await post_form(hq, path, form)  # no CSRF token
    assert status == 403 and "CSRF" in text
    _, lou_csrf = await hq.session("lou")
    status, _, _ = await post_form(hq, path, form | {"csrf_token": lou_csrf})  # another session's token
    assert status == 403
    assert await hq.db.pool.fetchval("SELECT count(*) FROM feedback WHERE incident_id = $1", inc["id"]) == 0
    _, csrf = await hq.session("ada")
    status, location, _ = await post_form(hq, path, form | {"csrf_token": csrf})
    assert status == 303 and location.endswith(f"/incidents/{inc['id']}#feedback")
    row = await hq.db.pool.fetchrow("SELECT * FROM feedback WHERE incident_id = $1", inc["id"])
    assert (row["verdict"], row["reason"], row["comment"], row["by_user"], row["source"]) == (
        "false_alarm",
        "staff_activity",
        "restocking the shelf",
        "ada",
        "hq",
    )
    _, _, html = await get(hq, f"/stores/store-001/incidents/{inc['id']}")
    assert "restocking the shelf" in html and "head office" in html
    audited = await hq.db.fetch("SELECT actor, action, outcome FROM audit_log WHERE target = $1", path)
    assert [(a["actor"], a["action"], a["outcome"]) for a in audited][-1] == (
        "ada", "POST /stores/{store}/incidents/{id}/feedback", "303")  # fmt: skip
    _, _, after = await get(hq, f"/precision?{PERIOD}&store=store-001&csv=precision_by_camera")
    judged_after = {(r["store"], r["camera"]): int(r["judged"]) for r in rows_of(after)}
    key = ("store-001", inc["camera"])
    assert judged_after[key] == judged_before.get(key, 0) + 1


async def test_store_manager_cannot_judge_another_stores_incident(hq: RunningHq) -> None:
    other = await hq.db.pool.fetchval("SELECT id FROM incidents WHERE store_id = 'store-002' LIMIT 1")
    _, csrf = await hq.session("max")
    form = {"verdict": "confirmed", "reason": "theft_seen", "csrf_token": csrf}
    status, _, _ = await post_form(hq, f"/stores/store-002/incidents/{other}/feedback", form, "max")
    assert status == 404
    assert (await get(hq, f"/precision?{PERIOD}&store=store-002", "max"))[0] == 404


async def test_precision_page_shows_rules_weeks_and_a_threshold_change(hq: RunningHq) -> None:
    status, _, html = await get(hq, f"/precision?{PERIOD}")
    assert status == 200 and "Least precise rules first" in html
    _, _, text = await get(hq, f"/precision?{PERIOD}&csv=precision_by_rule")
    for r in rows_of(text):
        if r["precision"]:
            assert float(r["precision"]) == pytest.approx(int(r["confirmed"]) / int(r["judged"]), abs=1e-3)
    _, _, text = await get(hq, f"/precision?{PERIOD}&csv=threshold_changes")
    changes = rows_of(text)
    # the synthetic stores lower the dwell threshold on 1 December (November: 90 s, December: 60 s)
    assert {(c["store"], c["rule"], c["change"]) for c in changes} == {
        (s.id, "aisle-dwell", "min_dwell_s: 90.0 -> 60.0") for s in STORES
    }


async def test_roi_report_figures_come_from_the_stored_data(hq: RunningHq) -> None:
    status, _, html = await get(hq, "/roi?period=week&at=2026-12-01")
    assert status == 200 and "2026-11-30 to 2026-12-07" in html
    _, _, text = await get(hq, "/roi?period=week&at=2026-12-01&csv=confirmed_by_type")
    rows = {r["type"]: r for r in rows_of(text)}
    confirmed = {r["type"]: r["n"] for r in await hq.db.fetch(
        "SELECT type, count(*) AS n FROM verdicts WHERE verdict = 'confirmed' GROUP BY type")}  # fmt: skip
    assert {t: int(r["confirmed"]) for t, r in rows.items() if int(r["confirmed"])} == {
        t: n for t, n in confirmed.items() if t != "alarm_unverified"}  # fmt: skip
    loss = sum(float(r["loss prevented (EUR)"]) for r in rows.values())
    assert f"{loss:,.0f}" in html or f"{loss:,.2f}" in html
    unverified = await hq.db.pool.fetchval("SELECT sum(incidents) FROM day_types WHERE type = 'alarm_unverified'")
    later = confirmed.get("alarm_unverified", 0)
    assert f"{unverified} alarms video found no one for, less {later} a person later confirmed" in html


async def test_roi_report_for_a_store_manager_is_their_store_and_pdf_says_the_same(hq: RunningHq) -> None:
    status, _, html = await get(hq, "/roi?period=week&at=2026-12-01", "max")
    assert status == 200 and "your stores (1 stores)" in html
    assert (await get(hq, "/roi?period=week&at=2026-12-01&store=store-002", "max"))[0] == 404
    assert (await get(hq, "/roi.pdf?period=week&at=2026-12-01&store=store-002", "max"))[0] == 404
    http, _ = await hq.session("ada")
    async with http.get(f"{hq.url}/roi.pdf?period=week&at=2026-12-01&store=store-001") as r:
        assert r.status == 200 and r.content_type == "application/pdf"
        pdf = await r.read()
    assert pdf.startswith(b"%PDF")
    pdftotext = shutil.which("pdftotext")
    require(None if pdftotext else "pdftotext is not installed (apt-get install poppler-utils)")
    assert pdftotext is not None
    proc = await asyncio.create_subprocess_exec(pdftotext, "-", "-", stdin=PIPE, stdout=PIPE)
    text = (await proc.communicate(pdf))[0].decode()
    assert "Estimated loss\nprevented" in text and "Paris 001 (store-001)" in text, text


TOTALS_FROM_DAY_TABLES = """
    WITH t AS (SELECT store_id, day,
                      sum(incidents) FILTER (WHERE NOT (type LIKE 'system%' OR type = 'camera_offline')) AS incidents,
                      sum(incidents) FILTER (WHERE type LIKE 'pos\\_%') AS exceptions,
                      sum(incidents) FILTER (WHERE type LIKE 'alarm\\_%') AS alarms
               FROM day_types GROUP BY 1, 2),
         v AS (SELECT store_id, day, sum(confirmed) AS confirmed, sum(confirmed + false_alarm) AS judged
               FROM verdict_days GROUP BY 1, 2)
    SELECT d.store_id, d.day, d.incidents, d.exceptions, d.alarms, d.confirmed, d.judged,
           coalesce(t.incidents, 0) AS t_incidents, coalesce(t.exceptions, 0) AS t_exceptions,
           coalesce(t.alarms, 0) AS t_alarms, coalesce(v.confirmed, 0) AS v_confirmed, coalesce(v.judged, 0) AS v_judged
    FROM store_days d LEFT JOIN t USING (store_id, day) LEFT JOIN v USING (store_id, day)"""


async def _totals_match(hq: RunningHq) -> int:
    rows = await hq.db.fetch(TOTALS_FROM_DAY_TABLES)
    for r in rows:
        kept = (r["incidents"], r["exceptions"], r["alarms"], r["confirmed"], r["judged"])
        summed = (r["t_incidents"], r["t_exceptions"], r["t_alarms"], r["v_confirmed"], r["v_judged"])
        assert kept == summed, (r["store_id"], r["day"])
    return sum(r["incidents"] for r in rows)


async def test_store_day_totals_follow_the_day_tables_through_ingest_and_changed_verdicts(hq: RunningHq) -> None:
    """The chain pages read store_days' totals, which triggers keep from the day tables: they must agree after
    the chain's history arrived through ingest, and after a verdict is given and then changed."""
    assert await _totals_match(hq) > 0
    inc = await hq.db.pool.fetchval(
        """SELECT i.id FROM incidents i LEFT JOIN verdicts v ON v.store_id = i.store_id AND v.incident_id = i.id
           WHERE i.store_id = 'store-002' AND v.incident_id IS NULL AND i.type = 'sweep' LIMIT 1"""
    )
    _, csrf = await hq.session("ada")
    path = f"/stores/store-002/incidents/{inc}/feedback"
    confirmed_before = await hq.db.pool.fetchval("SELECT sum(confirmed) FROM store_days WHERE store_id = 'store-002'")
    for verdict in ("confirmed", "false_alarm"):  # given, then changed: the confirmed count goes up, then back
        status, _, _ = await post_form(
            hq, path, {"verdict": verdict, "reason": "other", "comment": "", "csrf_token": csrf}
        )
        assert status == 303
        await _totals_match(hq)
        confirmed = await hq.db.pool.fetchval("SELECT sum(confirmed) FROM store_days WHERE store_id = 'store-002'")
        assert confirmed == confirmed_before + (1 if verdict == "confirmed" else 0)
