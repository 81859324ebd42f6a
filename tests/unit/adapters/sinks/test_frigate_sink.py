"""Frigate sink against an emulator of Frigate's HTTP API that takes only the requests INTEGRATIONS.md section 5.1
documents (with the field types of Frigate's own request models): manual events created and ended, the box drawn,
the real outbox retrying outages, lost replies (the create at least once, shown honestly; the end exactly once),
auth on port 8971 (login, expired tokens, refused passwords), the camera map, the self-test; plus the config and
the emulator's own strictness."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from components.frigate_emulator import PRE_CAPTURE_S, FrigateEmulator

from adapters.sinks.frigate import SPEC
from adapters.sinks.frigate.config import FrigateSinkConfig
from adapters.sinks.frigate.sink import MIN_EVENT_S, TEST_SUB_LABEL, FrigateSink
from plugin.app import build_sink
from plugin.config.loader import parse_config
from plugin.config.service import OutboxConfig
from plugin.errors import ConfigError, SinkAuthError, SinkNotReady, SinkRejected
from plugin.incidents.database import AsyncDatabase
from plugin.incidents.documents import incident_to_json
from plugin.incidents.outbox import OutboxWorker
from plugin.metrics import Metrics
from plugin.types import Incident

pytestmark = pytest.mark.frigate

PASSWORD = "correct horse battery"
BOX = [0.30, 0.20, 0.45, 0.80]  # normalised x1, y1, x2, y2, as the incident details carry it
FAST = OutboxConfig(backoff_start_s=0.05, backoff_max_s=0.2, timeout_s=5)
WAIT_S = 15.0  # upper bound for the outbox to get through; typical is well under a second


@contextlib.asynccontextmanager
async def emulator(**kw: Any) -> AsyncIterator[FrigateEmulator]:
    """A running Frigate with two cameras; afterwards, not one request may have broken the documented shape."""
    async with FrigateEmulator(cameras=["checkout", "stockroom"], **kw) as frigate:
        yield frigate
    assert frigate.violations == [], "requests Frigate's documented API does not take"


def frigate_config(frigate: FrigateEmulator, **extra: Any) -> FrigateSinkConfig:
    """A frigate sink for the emulator (logging in when it wants auth): cam1 on checkout, cam2 on stockroom."""
    doc: dict[str, Any] = {"kind": "frigate", "id": "frigate", "url": frigate.url, "timeout_s": 2,
                           "cameras": {"cam1": "checkout", "cam2": "stockroom"}}  # fmt: skip
    if frigate.auth:
        doc |= {"username": "storesight", "password": PASSWORD}
    return FrigateSinkConfig.model_validate(doc | extra)


@contextlib.asynccontextmanager
async def frigate_sink(frigate: FrigateEmulator, database: AsyncDatabase, **extra: Any) -> AsyncIterator[FrigateSink]:
    """A frigate sink keeping its references in `store`, closed afterwards."""
    sink = FrigateSink(frigate_config(frigate, **extra), database)
    try:
        yield sink
    finally:
        await sink.close()


@contextlib.asynccontextmanager
async def opened_database(path: Path) -> AsyncIterator[AsyncDatabase]:
    """A SQLite store (outbox and sink references)."""
    database = AsyncDatabase(path)
    try:
        yield database
    finally:
        await database.close()


def incident(camera: str = "cam1", n: int = 1, start: datetime | None = None) -> tuple[Incident, Incident]:
    """A loitering incident (with the person's box and a score) starting now, and its end 12.5 s later."""
    t0 = start or datetime.now(UTC)
    details = {"box": BOX, "score": 0.87}
    first = Incident(
        id=f"00000000-0000-4000-8000-{n:012d}", rule_id="table-dwell", type="loitering", camera=camera, start=t0,
        state="start", seq=0, explanation=f"Person #{n} stayed at table for 8 s", track_ids=(n,), details=details,
    )  # fmt: skip
    end = Incident(
        id=first.id, rule_id=first.rule_id, type=first.type, camera=camera, start=t0, end=t0 + timedelta(seconds=12.5),
        state="end", seq=1, explanation=f"Person #{n} stayed at table for 12.5 s, then left", track_ids=(n,),
        details=details,
    )  # fmt: skip
    return first, end


async def deliver_all(
    database: AsyncDatabase, sink: FrigateSink, incidents: list[Incident], until: Callable[[], bool] | None = None
) -> dict[str, int]:
    """Save the incidents to the outbox and let the real OutboxWorker deliver them (or work until `until()`)."""
    for inc in incidents:
        await database.call(database.sync.save, inc, [sink.id])
    worker = OutboxWorker(database, {sink.id: sink}, Metrics(), FAST)
    task = asyncio.create_task(worker.run())
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            counts = (await database.call(database.sync.outbox_counts))[sink.id]
            if (until() if until else counts["pending"] == 0) or time.monotonic() > deadline:
                return counts
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def assert_one_finished_event(frigate: FrigateEmulator, end: Incident) -> dict[str, Any]:
    """One event on `checkout`, as Frigate's review shows it: label, sub label, score, box, the end, the text."""
    assert len(frigate.events) == 1, frigate.events
    [ev] = frigate.events.values()
    assert ev["camera"] == "checkout" and ev["label"] == "storesight" and ev["sub_label"] == "table-dwell"
    assert ev["type"] == "api" and ev["score"] == 0.87 and ev["has_clip"]
    [drawn] = ev["draw"]["boxes"]
    assert drawn["box"] == pytest.approx([0.30, 0.20, 0.15, 0.60]) and drawn["score"] == 87  # x, y, w, h; percent
    assert end.end is not None and ev["end_time"] == pytest.approx(end.end.timestamp())
    assert ev["description"] == f"{end.explanation} (StoreSight incident {end.id})"
    return ev


@pytest.mark.parametrize("auth", [False, True], ids=["port-5000", "port-8971-login"])
async def test_start_and_end_make_one_event_as_frigate_shows_it(tmp_path: Path, auth: bool) -> None:
    start, end = incident()
    async with emulator(auth=auth) as frigate, opened_database(tmp_path / "db") as database:
        async with frigate_sink(frigate, database) as sink:
            counts = await deliver_all(database, sink, [start, end])
            assert counts == {"pending": 0, "delivered": 2, "dead": 0}
        ev = assert_one_finished_event(frigate, end)
        assert [(s.method, s.raw_path.rsplit("/", 1)[-1]) for s in frigate.seen if s.raw_path != "/api/login"] == [
            ("POST", "create"), ("PUT", "end"), ("POST", "description")]  # fmt: skip
        [create] = [s for s in frigate.seen if s.raw_path.endswith("/create")]
        assert create.raw_path == "/api/events/checkout/storesight/create"
        assert create.body["duration"] is None and create.body["include_recording"] is True  # open until the end
        assert frigate.ends == [(ev["id"], ev["end_time"])] and not frigate.unknown_ends
        assert frigate.logins == (1 if auth else 0)
        assert all(s.user for s in frigate.seen if s.raw_path != "/api/login") if auth else True
        [receipt] = [d["receipt"] for d in await database.call(database.sync.deliveries, "delivered")
                     if d["delivery_key"].endswith(":end:1")]  # fmt: skip
        assert receipt == f"Frigate end: event {ev['id']} ended; description written on camera checkout"


async def test_a_lost_create_reply_means_a_second_event_at_least_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    start, end = incident()
    async with (
        emulator() as frigate,
        opened_database(tmp_path / "db") as database,
        frigate_sink(frigate, database) as sink,
    ):
        frigate.plan.lose_reply(1, "POST", "/create")  # Frigate made the event; the sink never heard its id
        counts = await deliver_all(database, sink, [start, end])
        assert counts == {"pending": 0, "delivered": 2, "dead": 0}
        # Frigate's documented API cannot find an event by our id: the retry made a second one. The sink knows only
        # the second, so only that one is ended; the first stays open in Frigate. The log names the incident.
        assert len(frigate.events) == 2
        first, second = sorted(frigate.events.values(), key=lambda e: e["created"])
        assert first["end_time"] is None and first["sub_label"] == second["sub_label"] == "table-dwell"
        assert end.end is not None and second["end_time"] == pytest.approx(end.end.timestamp())
        assert "may now hold two events" in caplog.text and start.id in caplog.text


async def test_a_lost_end_reply_ends_the_same_event_again_and_nothing_else(tmp_path: Path) -> None:
    start, end = incident()
    async with (
        emulator() as frigate,
        opened_database(tmp_path / "db") as database,
        frigate_sink(frigate, database) as sink,
    ):
        frigate.plan.lose_reply(1, "PUT", "/end")
        counts = await deliver_all(database, sink, [start, end])
        assert counts == {"pending": 0, "delivered": 2, "dead": 0}
        ev = assert_one_finished_event(frigate, end)
        # exactly once through the stored id: the retry ends the same event with the same time, creates nothing
        assert frigate.ends == [(ev["id"], ev["end_time"])] * 2 and frigate.count("POST", "/create") == 1


async def test_outages_and_timeouts_are_retried_by_the_outbox_until_delivered(tmp_path: Path) -> None:
    start, end = incident()
    async with emulator(auth=True) as frigate, opened_database(tmp_path / "db") as database:
        async with frigate_sink(frigate, database, timeout_s=0.3) as sink:
            frigate.plan.fail(1, 500, "POST", "/api/login")
            frigate.plan.fail(1, 503, "POST", "/create")
            frigate.plan.hang(1, "PUT", "/end")  # answered only after the sink gave up, without ending anything
            frigate.plan.fail(1, 502, "POST", "/description")
            counts = await deliver_all(database, sink, [start, end])
            assert counts == {"pending": 0, "delivered": 2, "dead": 0}
        assert frigate.plan.all_used
        assert_one_finished_event(frigate, end)
        attempts = {d["delivery_key"].split(":", 1)[1]: d["attempts"]
                    for d in await database.call(database.sync.deliveries, "delivered")}  # fmt: skip
        assert attempts == {"start:0": 3, "end:1": 3}


async def test_a_token_frigate_no_longer_takes_means_one_new_login(tmp_path: Path) -> None:
    start, end = incident()
    async with emulator(auth=True) as frigate, opened_database(tmp_path / "db") as database:
        async with frigate_sink(frigate, database) as sink:
            await sink.publish(start.delivery_key, incident_to_json(start))
            frigate.revoke_tokens()  # Frigate restarted with a new JWT secret
            await sink.publish(end.delivery_key, incident_to_json(end))
        assert frigate.logins == 2 and frigate.count("PUT", "/end", 401) == 1
        assert_one_finished_event(frigate, end)


async def test_wrong_password_is_an_auth_error_held_by_the_outbox_and_never_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    start, end = incident()
    async with emulator(auth=True) as frigate, opened_database(tmp_path / "db") as database:
        async with frigate_sink(frigate, database, password="hunter2-wrong") as sink:
            with pytest.raises(SinkAuthError, match=r"login as 'storesight' refused \(HTTP 401\): Login failed") as err:
                await sink.publish(start.delivery_key, incident_to_json(start))
            assert "hunter2" not in str(err.value)
            await deliver_all(database, sink, [start, end], until=lambda: sink.health.auth_failed)
            await asyncio.sleep(0.3)  # time for retries that must not happen
            counts = (await database.call(database.sync.outbox_counts))[sink.id]
            assert sink.health.auth_failed and counts == {"pending": 2, "delivered": 0, "dead": 0}
        assert not frigate.events
        async with frigate_sink(frigate, database) as good:  # a working session leaves no token in the log either
            await good.publish(start.delivery_key, incident_to_json(start))
        assert frigate.tokens
    assert "hunter2" not in caplog.text and PASSWORD not in caplog.text
    assert not any(t in caplog.text for t in frigate.tokens)


async def test_a_configured_token_is_sent_as_bearer_and_a_refused_one_is_an_auth_error(tmp_path: Path) -> None:
    start, _ = incident()
    async with emulator(auth=True) as frigate, opened_database(tmp_path / "db") as database:
        frigate.tokens["issued.by.frigate"] = time.time() + 3600
        async with frigate_sink(frigate, database, username=None, password=None, token="issued.by.frigate") as sink:
            await sink.publish(start.delivery_key, incident_to_json(start))
        assert len(frigate.events) == 1 and frigate.logins == 0
        async with frigate_sink(frigate, database, username=None, password=None, token="expired.or.wrong") as sink:
            with pytest.raises(SinkAuthError, match=r"HTTP 401 .*set username/password, or a token that is valid"):
                await sink.self_test()
        assert frigate.logins == 0


async def test_an_unmapped_camera_is_rejected_before_anything_is_sent(tmp_path: Path) -> None:
    start, _ = incident(camera="cam9")
    async with (
        emulator() as frigate,
        opened_database(tmp_path / "db") as database,
        frigate_sink(frigate, database) as sink,
    ):
        with pytest.raises(SinkRejected, match=r"camera 'cam9' has no Frigate camera in sink 'frigate' \(add `cam9"):
            await sink.publish(start.delivery_key, incident_to_json(start))
        assert frigate.seen == []


async def test_a_camera_frigate_does_not_have_is_dead_lettered_with_frigates_reason(tmp_path: Path) -> None:
    start, _ = incident()
    async with (
        emulator() as frigate,
        opened_database(tmp_path / "db") as database,
        frigate_sink(frigate, database, cameras={"cam1": "front_door"}) as sink,
    ):
        counts = await deliver_all(database, sink, [start])
        assert counts == {"pending": 0, "delivered": 0, "dead": 1}
        [dead] = await database.call(database.sync.deliveries, "dead")
        assert "HTTP 404 front_door is not a valid camera." in str(dead)
        assert not frigate.events


async def test_a_fixed_duration_lets_frigate_end_the_event_and_the_end_writes_the_text(tmp_path: Path) -> None:
    start, end = incident()
    async with (
        emulator() as frigate,
        opened_database(tmp_path / "db") as database,
        frigate_sink(frigate, database, duration_s=30, include_recording=False) as sink,
    ):
        await deliver_all(database, sink, [start, end])
        [ev] = frigate.events.values()
        assert ev["end_time"] == pytest.approx(ev["created"] + 30) and not ev["has_clip"]
        assert ev["description"].startswith(end.explanation) and frigate.count("PUT", "/end") == 0


async def test_an_end_whose_start_never_reached_frigate_makes_one_event_of_the_incidents_length(
    tmp_path: Path,
) -> None:
    _, end = incident()
    async with (
        emulator() as frigate,
        opened_database(tmp_path / "db") as database,
        frigate_sink(frigate, database) as sink,
    ):
        await sink.publish(end.delivery_key, incident_to_json(end))
        await sink.publish(end.delivery_key, incident_to_json(end))  # delivered twice: still one
        [create] = [s for s in frigate.seen if s.raw_path.endswith("/create")]
        assert create.body["duration"] == 13 and len(frigate.events) == 1
        [ev] = frigate.events.values()
        assert ev["description"].startswith(end.explanation) and frigate.count("PUT", "/end") == 0


async def test_an_end_that_comes_late_never_ends_the_event_before_it_began(tmp_path: Path) -> None:
    start, end = incident(start=datetime.now(UTC) - timedelta(minutes=10))  # delivered after a long outage
    async with (
        emulator() as frigate,
        opened_database(tmp_path / "db") as database,
        frigate_sink(frigate, database) as sink,
    ):
        await deliver_all(database, sink, [start, end])
        [ev] = frigate.events.values()
        assert ev["end_time"] >= ev["created"] + MIN_EVENT_S - 0.5
        assert ev["start_time"] == pytest.approx(ev["created"] - PRE_CAPTURE_S)


async def test_a_frigate_without_descriptions_still_gets_its_events_ended_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first, first_end = incident(n=1)
    second, second_end = incident(n=2)
    async with (
        emulator(descriptions=False) as frigate,
        opened_database(tmp_path / "db") as database,
        frigate_sink(frigate, database) as sink,
    ):
        counts = await deliver_all(database, sink, [first, first_end, second, second_end])
        assert counts == {"pending": 0, "delivered": 4, "dead": 0}
        assert len(frigate.ends) == 2 and all(e["description"] is None for e in frigate.events.values())
    assert caplog.text.count("keeps no description") == 1


async def test_self_test_checks_the_cameras_then_creates_and_ends_a_labelled_test_event(tmp_path: Path) -> None:
    async with emulator(auth=True) as frigate, opened_database(tmp_path / "db") as database:
        async with frigate_sink(frigate, database, cameras={"cam1": "checkout", "cam2": "garage"}) as sink:
            with pytest.raises(SinkRejected, match=r"does not have: cam2 -> garage \(Frigate's cameras: checkout, st"):
                await sink.self_test()
        assert not frigate.events
        async with frigate_sink(frigate, database) as sink:
            detail = await sink.self_test()
        [ev] = frigate.events.values()
        assert ev["camera"] == "checkout" and ev["label"] == "storesight" and ev["sub_label"] == TEST_SUB_LABEL
        assert ev["end_time"] is not None and not ev["has_clip"]
        assert f"created and ended test event {ev['id']}" in detail


async def test_an_unreachable_frigate_is_not_ready(tmp_path: Path) -> None:
    start, _ = incident()
    async with emulator() as frigate:
        pass  # closed: nothing listens on its port now
    async with opened_database(tmp_path / "db") as database, frigate_sink(frigate, database) as sink:
        with pytest.raises(SinkNotReady, match="create the event of incident"):
            await sink.publish(start.delivery_key, incident_to_json(start))


async def test_the_emulator_rejects_requests_the_documented_api_does_not_take() -> None:
    async with FrigateEmulator(cameras=["checkout"]) as frigate:
        create = f"{frigate.url}/api/events/checkout/storesight/create"
        good_id = "1764380000.123456-abc123"
        cases: list[tuple[str, str, Any, int, str]] = [
            ("POST", create, {"duration": 30.5}, 400, "duration must be a positive integer"),
            ("POST", create, {"duration": "30"}, 400, "duration must be a positive integer"),
            ("POST", create, {"score": 87}, 400, "score must be a number 0..1"),
            ("POST", create, {"subLabel": "x"}, 400, "unknown field(s) subLabel"),
            ("POST", create, {"include_recording": "yes"}, 400, "include_recording must be a boolean"),
            ("POST", create, {"draw": {"boxes": [{"box": [0.3, 0.2, 0.9, 0.8]}]}}, 400, "not x, y, width, height"),
            ("POST", create, {"draw": {"boxes": [{"box": [0.1, 0.1, 0.2], "color": "red"}]}}, 400, "four fractions"),
            ("GET", create, None, 405, "create takes POST"),
            ("PUT", f"{frigate.url}/api/events/{good_id}/end", {"end_time": "now"}, 400, "end_time must be epoch"),
            ("PUT", f"{frigate.url}/api/events/my-event/end", {}, 400, "is not a Frigate event id"),
            ("POST", f"{frigate.url}/api/events/{good_id}/description", {"text": "x"}, 400, 'takes {"description"}'),
            ("POST", f"{frigate.url}/api/events", {}, 404, "no such endpoint"),
        ]  # fmt: skip
        async with aiohttp.ClientSession() as http:
            for method, url, body, status, text in cases:
                async with http.request(method, url, json=body) as resp:
                    assert resp.status == status, (method, url, body)
                    assert text in (await resp.json())["message"], (url, body)
            async with http.post(create, data=b'{"duration": 5}', headers={"Content-Type": "text/plain"}) as resp:
                assert resp.status == 400
            assert len(frigate.violations) == len(cases) + 1 and not frigate.events
            draw = {"boxes": [{"box": [0.3, 0.2, 0.15, 0.6], "score": 87}]}
            async with http.post(create, json={"sub_label": "ok", "duration": None, "draw": draw}) as resp:
                assert resp.status == 200 and (await resp.json())["success"] is True  # a well-formed one passes
        assert len(frigate.violations) == len(cases) + 1 and len(frigate.events) == 1


def test_config_defaults_and_build_sink_picks_frigate(tmp_path: Path) -> None:
    base = {"kind": "frigate", "id": "frigate", "url": "https://frigate.store.lan:8971/", "username": "storesight",
            "password": "pw-secret", "cameras": {"cam1": "checkout"}}  # fmt: skip
    doc = {"cameras": [{"id": "cam1", "source": "a.mp4"}], "sinks": [base]}
    [cfg] = parse_config(doc).sinks
    assert isinstance(cfg, FrigateSinkConfig) and cfg.url == "https://frigate.store.lan:8971"
    assert cfg.label == "storesight" and cfg.duration_s is None and cfg.include_recording and cfg.token is None
    assert "pw-secret" not in repr(cfg)
    sink = build_sink(cfg, AsyncDatabase(tmp_path / "refs.db"))
    assert isinstance(sink, FrigateSink) and sink.kind == SPEC.key == "frigate"
    no_auth = parse_config(doc | {"sinks": [{k: v for k, v in base.items() if k not in ("username", "password")}]})
    assert isinstance(no_auth.sinks[0], FrigateSinkConfig) and no_auth.sinks[0].username is None
    bad = [
        ({"cameras": {"cam1": "Checkout 1"}}, "config: sinks[0].cameras.cam1: 'Checkout 1' is not a Frigate camera"),
        ({"cameras": {}}, "config: sinks[0].cameras: needs at least 1 item"),
        ({"password": None}, "config: sinks[0].password: username and password go together"),
        ({"token": "a.b.c"}, "config: sinks[0].token: give token or username/password, not both"),
        ({"duration_s": 0}, "config: sinks[0].duration_s: must be >= 1"),
        ({"duration_s": 2.5}, "config: sinks[0].duration_s"),
        ({"label": "store/sight"}, "config: sinks[0].label: does not match"),
        ({"url": "frigate:5000"}, "config: sinks[0].url: does not match"),
    ]
    for change, message in bad:
        with pytest.raises(ConfigError) as err:
            parse_config(doc | {"sinks": [base | change]})
        assert message in str(err.value), str(err.value)
