"""Genetec Security Center sink against a Web SDK emulator that takes only the requests INTEGRATIONS.md section 4
documents: bookmarks and custom events through the query DSL, the real outbox retrying outages, lost replies
(at least once: the duplicate is shown, not hidden), auth failures, the camera map, the self-test; plus the config
and the emulator's own strictness."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from components.genetec_emulator import DEMO_APP_ID, GenetecEmulator
from yarl import URL

from adapters.sinks.genetec import SPEC
from adapters.sinks.genetec.config import GenetecSinkConfig
from adapters.sinks.genetec.sink import TEST_TEXT, TEXT_MAX, GenetecSink, dsl_text
from plugin.app import build_sink
from plugin.config.loader import parse_config
from plugin.config.service import OutboxConfig
from plugin.errors import ConfigError, SinkAuthError, SinkNotReady, SinkRejected
from plugin.incidents.database import AsyncDatabase
from plugin.incidents.documents import incident_to_json
from plugin.incidents.outbox import OutboxWorker
from plugin.metrics import Metrics
from plugin.types import Incident

pytestmark = pytest.mark.genetec

CAM1 = "5c2b5a0e-8d7f-4c3e-9a1b-0f6e2d4c8a10"
CAM2 = "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"
UNKNOWN = "11111111-2222-4333-8444-555555555555"
PASSWORD = "correct horse battery"
T0 = datetime(2026, 11, 29, 14, 0, 0, tzinfo=UTC)
FAST = OutboxConfig(backoff_start_s=0.05, backoff_max_s=0.2, timeout_s=5)
WAIT_S = 15.0  # upper bound for the outbox to get through; typical is well under a second
# Every character the query DSL reads, and a space, a plus and a non-ASCII letter: all must arrive as text.
AWKWARD = "Person #1, (aisle 3) = 50% @ door \\ exit + café"


def g32(guid: str) -> str:
    """A GUID as the DSL and the emulator write it."""
    return guid.replace("-", "")


@contextlib.asynccontextmanager
async def emulator(**kw: Any) -> AsyncIterator[GenetecEmulator]:
    """A running Web SDK with two cameras; afterwards, not one request may have broken the documented shape."""
    async with GenetecEmulator(cameras={CAM1: "Checkout 1", CAM2: "Stockroom"}, password=PASSWORD, **kw) as sc:
        yield sc
    assert sc.violations == [], "requests the documented Web SDK does not take"


def genetec_config(sc: GenetecEmulator, **extra: Any) -> GenetecSinkConfig:
    """A genetec sink for the emulator: cam1 on CAM1, cam2 on CAM2, custom event 5001."""
    doc = {"kind": "genetec", "id": "sc", "url": sc.url, "username": "storesight", "password": PASSWORD,
           "application_id": DEMO_APP_ID, "cameras": {"cam1": CAM1, "cam2": CAM2}, "custom_event_id": 5001,
           "timeout_s": 2} | extra  # fmt: skip
    return GenetecSinkConfig.model_validate(doc)


@contextlib.asynccontextmanager
async def genetec_sink(sc: GenetecEmulator, database: AsyncDatabase, **extra: Any) -> AsyncIterator[GenetecSink]:
    """A genetec sink keeping its references in `store`, closed afterwards."""
    sink = GenetecSink(genetec_config(sc, **extra), database)
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


def incident(camera: str = "cam1", n: int = 1, explanation: str | None = None) -> tuple[Incident, Incident]:
    """A loitering incident's start and its end 12.5 s later."""
    start = Incident(
        id=f"00000000-0000-4000-8000-{n:012d}", rule_id="table-dwell", type="loitering", camera=camera, start=T0,
        state="start", seq=0, explanation=explanation or f"Person #{n} stayed at table for 8 s", track_ids=(n,),
    )  # fmt: skip
    end = Incident(
        id=start.id, rule_id=start.rule_id, type=start.type, camera=camera, start=T0, end=T0 + timedelta(seconds=12.5),
        state="end", seq=1, explanation=f"Person #{n} stayed at table for 12.5 s, then left", track_ids=(n,),
    )  # fmt: skip
    return start, end


async def deliver_all(
    database: AsyncDatabase, sink: GenetecSink, incidents: list[Incident], until: Callable[[], bool] | None = None
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


def start_text(inc: Incident) -> str:
    return f"StoreSight table-dwell: {inc.explanation} (storesight:{inc.id})"


def end_text(inc: Incident) -> str:
    return f"StoreSight table-dwell ended (began 14:00:00 UTC): {inc.explanation} (storesight:{inc.id})"


async def test_start_and_end_make_two_bookmarks_and_one_custom_event_as_security_desk_shows_them(
    tmp_path: Path,
) -> None:
    start, end = incident(explanation=AWKWARD)
    async with emulator() as sc, opened_database(tmp_path / "db") as database, genetec_sink(sc, database) as sink:
        counts = await deliver_all(database, sink, [start, end])
        assert counts == {"pending": 0, "delivered": 2, "dead": 0}
        assert sc.bookmarks == [
            {"camera": g32(CAM1), "time": T0, "text": start_text(start)},
            {"camera": g32(CAM1), "time": T0 + timedelta(seconds=12), "text": end_text(end)},
        ]
        assert sc.custom_events == [{"id": 5001, "entity": g32(CAM1), "message": start_text(start)}]
        # one request per write, each authenticated as "<user>;<application id>"
        assert [s.status for s in sc.seen] == [200, 200, 200]
        assert {s.user for s in sc.seen} == {f"storesight;{DEMO_APP_ID}"}
        [receipt] = [d["receipt"] for d in await database.call(database.sync.deliveries, "delivered")
                     if d["delivery_key"].endswith(":start:0")]  # fmt: skip
        assert receipt == f"Genetec start: bookmark at 2026-11-29T14:00:00Z; custom event 5001 on camera {CAM1}"


async def test_a_lost_bookmark_reply_means_a_second_bookmark_at_least_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    start, _ = incident()
    async with emulator() as sc, opened_database(tmp_path / "db") as database, genetec_sink(sc, database) as sink:
        sc.plan.lose_reply(1, "POST", "AddCameraBookmark")  # Security Center stored it; the sink never hears so
        counts = await deliver_all(database, sink, [start])
        assert counts == {"pending": 0, "delivered": 1, "dead": 0}
        # The Web SDK has no documented lookup by our id: the retry cannot know, so the bookmark is there twice,
        # both carrying the incident's marker, and the log says why.
        assert [b["text"] for b in sc.bookmarks] == [start_text(start)] * 2
        assert len(sc.custom_events) == 1  # the step after it ran once
        assert "got no answer last time" in caplog.text and start.id in caplog.text


async def test_a_failed_custom_event_does_not_repeat_the_confirmed_bookmark(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    start, end = incident()
    async with emulator() as sc, opened_database(tmp_path / "db") as database, genetec_sink(sc, database) as sink:
        sc.plan.fail(2, 503, "POST", "RaiseCustomEvent")
        counts = await deliver_all(database, sink, [start, end])
        assert counts == {"pending": 0, "delivered": 2, "dead": 0}
        assert sc.count("POST", "AddCameraBookmark") == 2  # start and end, each once
        assert sc.count("POST", "RaiseCustomEvent") == 3 and len(sc.custom_events) == 1
        assert len(sc.bookmarks) == 2
    assert "got no answer" not in caplog.text  # a 503 is an answer: nothing was written


async def test_outages_and_timeouts_are_retried_by_the_outbox_until_delivered(tmp_path: Path) -> None:
    start, end = incident()
    async with emulator() as sc, opened_database(tmp_path / "db") as database:
        async with genetec_sink(sc, database, timeout_s=0.3) as sink:
            sc.plan.fail(1, 500, "POST", "AddCameraBookmark")
            sc.plan.fail(1, 502, "POST", "AddCameraBookmark")
            sc.plan.hang(1, "POST", "RaiseCustomEvent")  # answered only after the sink gave up, without doing it
            counts = await deliver_all(database, sink, [start, end])
            assert counts == {"pending": 0, "delivered": 2, "dead": 0}
        assert sc.plan.all_used
        assert len(sc.bookmarks) == 2 and len(sc.custom_events) == 1
        [first] = [
            d for d in await database.call(database.sync.deliveries, "delivered") if d["delivery_key"].endswith(":0")
        ]
        assert first["attempts"] >= 3


async def test_a_single_401_is_retried_once_and_goes_through(tmp_path: Path) -> None:
    start, _ = incident()
    async with emulator() as sc, opened_database(tmp_path / "db") as database, genetec_sink(sc, database) as sink:
        sc.plan.fail(1, 401, "POST", "AddCameraBookmark")  # an SDK session that idled out
        await sink.publish(start.delivery_key, incident_to_json(start))
        assert sc.count("POST", "AddCameraBookmark", 401) == 1 and len(sc.bookmarks) == 1


@pytest.mark.parametrize(
    ("change", "emulated", "message"),
    [
        ({"password": "hunter2-wrong"}, {}, r"HTTP 401 .* twice \(user 'storesight'"),
        ({"application_id": "not-the-certificate"}, {}, "HTTP 401"),
        ({}, {"licensed": False}, "HTTP 403 .*licence lacks the Web SDK"),
    ],
)
async def test_refused_credentials_are_an_auth_error_held_by_the_outbox_and_never_logged(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    change: dict[str, Any],
    emulated: dict[str, Any],
    message: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    start, end = incident()
    async with emulator(**emulated) as sc, opened_database(tmp_path / "db") as database:
        async with genetec_sink(sc, database, **change) as sink:
            with pytest.raises(SinkAuthError, match=message) as err:
                await sink.publish(start.delivery_key, incident_to_json(start))
            await deliver_all(database, sink, [start, end], until=lambda: sink.health.auth_failed)
            await asyncio.sleep(0.3)  # time for retries that must not happen
            counts = (await database.call(database.sync.outbox_counts))[sink.id]
            assert sink.health.auth_failed and counts == {"pending": 2, "delivered": 0, "dead": 0}
        assert not sc.bookmarks and not sc.custom_events
    secrets = ["hunter2", PASSWORD, base64.b64encode(f"storesight;{DEMO_APP_ID}:{PASSWORD}".encode()).decode()]
    assert not any(s in caplog.text or s in str(err.value) for s in secrets)


async def test_an_unmapped_camera_is_rejected_before_anything_is_sent(tmp_path: Path) -> None:
    start, _ = incident(camera="cam9")
    async with emulator() as sc, opened_database(tmp_path / "db") as database, genetec_sink(sc, database) as sink:
        with pytest.raises(SinkRejected, match=r"camera 'cam9' has no Genetec camera in sink 'sc' \(add `cam9: <"):
            await sink.publish(start.delivery_key, incident_to_json(start))
        counts = await deliver_all(database, sink, [start])
        assert counts == {"pending": 0, "delivered": 0, "dead": 1}
        assert sc.seen == []


async def test_a_camera_security_center_does_not_know_is_a_rejection(tmp_path: Path) -> None:
    start, _ = incident()
    async with (
        emulator() as sc,
        opened_database(tmp_path / "db") as database,
        genetec_sink(sc, database, cameras={"cam1": UNKNOWN}) as sink,
    ):
        with pytest.raises(SinkRejected, match=f"Security Center refused it: UnknownEntity: Camera {g32(UNKNOWN)}"):
            await sink.publish(start.delivery_key, incident_to_json(start))
        assert not sc.bookmarks


async def test_an_unreachable_server_is_not_ready(tmp_path: Path) -> None:
    start, _ = incident()
    async with emulator() as sc:
        pass  # closed: nothing listens on its port now
    async with opened_database(tmp_path / "db") as database, genetec_sink(sc, database) as sink:
        with pytest.raises(SinkNotReady, match="add the bookmark of incident"):
            await sink.publish(start.delivery_key, incident_to_json(start))


async def test_self_test_checks_the_cameras_and_writes_a_labelled_test_bookmark(tmp_path: Path) -> None:
    async with emulator() as sc, opened_database(tmp_path / "db") as database:
        async with genetec_sink(sc, database, cameras={"cam1": CAM1, "cam2": UNKNOWN}) as sink:
            with pytest.raises(SinkRejected, match=f"does not know: cam2 -> {UNKNOWN}"):
                await sink.self_test()
        assert not sc.bookmarks
        async with genetec_sink(sc, database) as sink:
            detail = await sink.self_test()
        [bm] = sc.bookmarks
        assert bm["camera"] == g32(CAM1) and bm["text"] == TEST_TEXT
        assert "cam1 = 'Checkout 1', cam2 = 'Stockroom'" in detail and "test bookmark on cam1" in detail
        assert not sc.custom_events


def test_a_long_explanation_is_cut_and_keeps_its_marker() -> None:
    start, _ = incident(explanation="x" * 2000)
    from adapters.sinks.genetec.sink import _Incident

    text = _Incident.parse(start.delivery_key, incident_to_json(start)).text(ended=False)
    assert len(text) <= TEXT_MAX and text.endswith(f"… (storesight:{start.id})")


async def test_the_emulator_rejects_requests_the_documented_api_does_not_take() -> None:
    async with GenetecEmulator(cameras={CAM1: "Checkout 1"}, password=PASSWORD) as sc:
        basic = base64.b64encode(f"storesight;{DEMO_APP_ID}:{PASSWORD}".encode()).decode()
        auth = {"Authorization": f"Basic {basic}", "Accept": "text/json"}
        ok_time, ok_text = "2026-11-29T14:00:00", dsl_text("fine text")
        cases: list[tuple[str, str, dict[str, str], int, str]] = [
            ("POST", f"action?q=AddCameraBookmark({CAM1},{ok_time},{ok_text})", {}, 400, "without dashes"),
            ("POST", f"action?q=AddCameraBookmark({g32(CAM1)},{ok_time},a,b)", {}, 400, "got 4 argument"),
            ("POST", f"action?q=AddCameraBookmark({g32(CAM1)},{ok_time},x=1)", {}, 400, "raw '='"),
            ("POST", f"action?q=AddCameraBookmark({g32(CAM1)},{ok_time},a%2)", {}, 400, "broken %-escape"),
            ("POST", f"action?q=AddCameraBookmark({g32(CAM1)},29.11.2026,{ok_text})", {}, 400, "yyyy-MM-dd"),
            ("POST", f"action?q=AddCameraBookmark({g32(CAM1)},{ok_time},{ok_text}", {}, 400, "never closed"),
            ("POST", f"action?q=AddBookmark({g32(CAM1)},{ok_time},{ok_text})", {}, 400, "unknown action"),
            ("POST", f"action?q=RaiseCustomEvent(5001,{g32(CAM1)},{ok_text})", {}, 400, "CustomEventId(<number>)"),
            ("POST", f"action?q=AddCameraBookmark({g32(CAM1)},{ok_time},{ok_text})", {"Accept": "*/*"}, 400,
             "text/json"),
            ("GET", f"action?q=AddCameraBookmark({g32(CAM1)},{ok_time},{ok_text})", {}, 405, "takes POST"),
            ("POST", "action", {}, 400, "q=<DSL>"),
            ("GET", f"entity?q=entity={g32(CAM1)},Password", {}, 400, "unknown entity propert"),
            ("GET", "report/AlarmActivity?q=EntityTypes@Camera", {}, 404, "no such endpoint"),
            ("GET", "report/EntityConfiguration?q=EntityTypes@Door", {}, 400, "must start with EntityTypes@Camera"),
            ("GET", "report/EntityConfiguration?q=EntityTypes@Camera,Page=0", {}, 400, "only Page=<n> and PageSize"),
            ("POST", "report/EntityConfiguration?q=EntityTypes@Camera", {}, 405, "takes GET"),
            ("GET", f"entity?q=entity={g32(CAM1)},Name,entity={g32(CAM2)}", {}, 400, "names no property"),
        ]  # fmt: skip
        async with aiohttp.ClientSession() as http:
            for method, target, headers, status, text in cases:
                url = URL(f"{sc.url}/{target}", encoded=True)
                async with http.request(method, url, headers=auth | headers) as resp:
                    assert resp.status == status, (method, target)
                    assert text in (await resp.json(content_type=None))["Rsp"]["Error"]["Message"], target
            assert len(sc.violations) == len(cases) and not sc.bookmarks
            good = URL(f"{sc.url}/action?q=AddCameraBookmark({g32(CAM1)},{ok_time},{ok_text})",
                                      encoded=True)  # fmt: skip
            async with http.post(good, headers=auth) as resp:
                assert resp.status == 200 and (await resp.json(content_type=None)) == {"Rsp": {"Status": "Ok"}}
        assert len(sc.violations) == len(cases) and sc.bookmarks[0]["text"] == "fine text"


def test_config_normalises_guids_defaults_the_base_uri_and_build_sink_picks_genetec(tmp_path: Path) -> None:
    base = {"kind": "genetec", "id": "sc", "url": "http://sc.store.lan:4590", "username": "storesight",
            "password": "pw-secret", "application_id": DEMO_APP_ID,
            "cameras": {"cam1": "{" + CAM1.upper() + "}", "cam2": g32(CAM2)}}  # fmt: skip
    doc = {"cameras": [{"id": "cam1", "source": "a.mp4"}, {"id": "cam2", "source": "b.mp4"}], "sinks": [base]}
    [cfg] = parse_config(doc).sinks
    assert isinstance(cfg, GenetecSinkConfig)
    assert cfg.cameras == {"cam1": CAM1, "cam2": CAM2} and cfg.url == "http://sc.store.lan:4590/WebSdk"
    assert cfg.custom_event_id is None and "pw-secret" not in repr(cfg)
    sink = build_sink(cfg, AsyncDatabase(tmp_path / "refs.db"))
    assert isinstance(sink, GenetecSink) and sink.kind == SPEC.key == "genetec"
    bad = [
        ({"cameras": {"cam1": "Checkout 1"}}, "config: sinks[0].cameras.cam1: 'Checkout 1' is not a Genetec camera"),
        ({"cameras": {}}, "config: sinks[0].cameras: needs at least 1 item"),
        ({"cameras": {"cam7": CAM1}}, "config: sinks[0].cameras.cam7: unknown camera 'cam7'"),
        ({"username": "me;app"}, "config: sinks[0].username: does not match"),
        ({"application_id": None}, "config: sinks[0].application_id"),
        ({"custom_event_id": 0}, "config: sinks[0].custom_event_id: must be >= 1"),
        ({"url": "sc.store.lan:4590"}, "config: sinks[0].url: does not match"),
        ({"colour": "red"}, "config: sinks[0].colour: unknown key"),
    ]
    for change, message in bad:
        with pytest.raises(ConfigError) as err:
            parse_config(doc | {"sinks": [base | change]})
        assert message in str(err.value), str(err.value)
