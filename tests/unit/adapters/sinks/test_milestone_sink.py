"""Milestone XProtect sink against the emulators (XProtect cannot run here): the REST stand-in for the identity
provider, cameras, bookmarks and alarms; the Event Server's Analytics Events port, which checks every document
against Milestone's own AnalyticsEvent.xsd; and a Generic Events data source. Plus the sink's config."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from components.milestone_emulator import (
    XSD,
    AnalyticsEventServer,
    GenericEventServer,
    XProtectEmulator,
    xsd_available,
)
from conftest import require
from lxml import etree

from adapters.sinks.milestone import SPEC
from adapters.sinks.milestone import sink as milestone
from adapters.sinks.milestone.config import MilestoneSinkConfig
from adapters.sinks.milestone.events import IncidentView, build_analytics_event
from adapters.sinks.milestone.sink import REST, TOKEN_PATH, MilestoneSink
from plugin.app import build_sink
from plugin.config.loader import parse_config
from plugin.config.service import OutboxConfig
from plugin.errors import ConfigError, SinkAuthError, SinkNotReady, SinkRejected
from plugin.incidents.database import AsyncDatabase
from plugin.incidents.documents import incident_to_json
from plugin.incidents.outbox import OutboxWorker
from plugin.inference.server import free_port
from plugin.metrics import Metrics
from plugin.types import Incident

pytestmark = pytest.mark.milestone

GUID = "068680AB-5350-4AC7-A47E-652300B16252"
UNKNOWN_GUID = "11111111-2222-4333-8444-555555555555"
PASSWORD = "Correct-Horse-7"
WRONG = "Wrong-Staple-8812"
T0 = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)
BOX = [0.25, 0.4, 0.5, 0.95]  # x1, y1, x2, y2, normalised
M = {"m": "urn:milestone-systems"}
FAST = OutboxConfig(backoff_start_s=0.05, backoff_max_s=0.2, timeout_s=10)
ALL_MODES = ["bookmark", "alarm", "analytics_event", "generic_event"]
WAIT_S = 10.0


def incident(state: str = "start", box: bool = True, camera: str = "cam1", **extra: Any) -> Incident:
    """A loitering incident; the end shares the start's id when given `id`."""
    ended = state == "end"
    details: dict[str, Any] = {"dwell_s": 12.0 if ended else 8.0, "threshold_s": 8.0}
    if box:
        details["box"] = BOX
    return Incident(
        id=extra.pop("id", Incident.new_id()),
        rule_id="table-dwell",
        type="loitering",
        camera=camera,
        start=T0,
        end=T0 + timedelta(seconds=12) if ended else None,
        state="end" if ended else "start",
        seq=1 if ended else 0,
        explanation=f"Person #3 stayed {12 if ended else 8} s in zone table (threshold 8 s) on {camera}",
        zone="table",
        track_ids=(3,),
        details=details,
        **extra,
    )


@dataclass
class Site:
    """One emulated XProtect site."""

    emu: XProtectEmulator
    analytics: AnalyticsEventServer
    generic: GenericEventServer


@asynccontextmanager
async def site(**emulator: Any) -> AsyncIterator[Site]:
    """The REST emulator, the Analytics Events port and a Generic Events source, all on 127.0.0.1."""
    require(xsd_available())
    async with (
        XProtectEmulator(password=PASSWORD, cameras={GUID.lower(): "Front table"}, **emulator) as emu,
        AnalyticsEventServer() as analytics,
        GenericEventServer() as generic,
    ):
        yield Site(emu, analytics, generic)


def sink_config(s: Site, **extra: Any) -> MilestoneSinkConfig:
    """A milestone sink writing every mode to the emulated site."""
    doc = {
        "kind": "milestone",
        "id": "xp",
        "url": s.emu.url,
        "username": "storesight",
        "password": PASSWORD,
        "cameras": {"cam1": GUID},
        "mode": ALL_MODES,
        "event_server_host": "127.0.0.1",
        "analytics_event_port": s.analytics.port,
        "generic_event_port": s.generic.port,
        "timeout_s": 5,
    }
    return MilestoneSinkConfig.model_validate(doc | extra)


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[AsyncDatabase]:
    """A fresh SQLite store (the sink's references live there)."""
    s = AsyncDatabase(tmp_path / "storesight.db")
    yield s
    await s.close()


async def until_delivered(database: AsyncDatabase, sink_id: str, n: int) -> None:
    """Wait until `n` deliveries of the sink are delivered."""
    deadline = time.monotonic() + WAIT_S
    while (await database.call(database.sync.outbox_counts)).get(sink_id, {}).get("delivered", 0) < n:
        assert time.monotonic() < deadline, await database.call(database.sync.deliveries)
        await asyncio.sleep(0.05)


def text(doc: etree._Element, path: str) -> str | None:
    """The text at an XPath-like path in the Milestone namespace."""
    return doc.findtext(path, namespaces=M)


async def post_raw(port: int, body: bytes) -> int:
    """POST a document to the Analytics Events port as the Event Server takes it; the HTTP status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST / HTTP/1.1\r\nContent-Type: text/xml\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    writer.write(head.encode() + body)
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    writer.close()
    await writer.wait_closed()
    return status


# --- the whole path ------------------------------------------------------------------------------------------------


async def test_start_and_end_give_one_bookmark_one_alarm_and_schema_valid_events_with_the_box(
    database: AsyncDatabase,
) -> None:
    async with site() as s:
        sink = MilestoneSink(sink_config(s), database)
        start = incident()
        end = incident("end", id=start.id)
        for inc in (start, end):
            await database.call(database.sync.save, inc, ["xp"])
        try:
            assert await OutboxWorker(database, {"xp": sink}, Metrics(), FAST).deliver_due() == 2
        finally:
            await sink.close()
        counts = await database.call(database.sync.outbox_counts)
        assert counts["xp"] == {"pending": 0, "delivered": 2, "dead": 0}

        # one bookmark on the mapped camera: rule as header, the final explanation, pre/post-roll around the incident
        [bookmark] = s.emu.bookmarks.values()
        assert bookmark["devicePath"] == {"type": "cameras", "id": GUID}
        assert bookmark["header"] == "table-dwell"
        assert bookmark["description"] == f"{end.explanation}\nstoresight:{start.id}"
        assert bookmark["reference"] == f"storesight:{start.id}"
        assert (bookmark["timeBegin"], bookmark["timeTriggered"], bookmark["timeEnd"]) == (
            "2026-11-29T13:59:55.000Z",
            "2026-11-29T14:00:00.000Z",
            "2026-11-29T14:00:17.000Z",
        )
        assert len(s.emu.requests("POST", "/bookmarks")) == 1
        assert len(s.emu.requests("PATCH", f"/bookmarks/{bookmark['id']}")) == 1
        ref = json.loads(await database.get_ref("xp", start.id) or "{}")
        assert ref["bookmark"] == bookmark["id"]

        # one alarm, raised by the start, with the camera as source
        [alarm] = s.emu.alarms.values()
        assert (alarm["name"], alarm["source"]) == ("table-dwell", GUID)
        assert alarm["message"].startswith(start.explanation)

        # both Analytics Events passed Milestone's XSD at the receiver, and carry the box and the camera
        assert s.analytics.invalid == []
        assert len(s.analytics.valid) == 2
        for doc, state in zip(s.analytics.valid, ("start", "end"), strict=True):
            assert text(doc, "m:EventHeader/m:Message") == "table-dwell"
            assert text(doc, "m:EventHeader/m:CustomTag") == f"{state}|{start.id}"
            assert text(doc, "m:EventHeader/m:Source/m:FQID/m:ObjectId") == GUID
            assert text(doc, "m:ReferenceList/m:Reference/m:FQID/m:ObjectId") == GUID
            box = doc.find("m:ObjectList/m:Object/m:BoundingBox", namespaces=M)
            assert box is not None
            ltrb = [float(text(box, f"m:{side}") or "nan") for side in ("Left", "Top", "Right", "Bottom")]
            assert ltrb == BOX
        assert text(s.analytics.valid[0], "m:EndTime") is None
        assert text(s.analytics.valid[1], "m:EndTime") == "2026-11-29T14:00:12+00:00"
        # the same delivery resent would carry the same event ID; different state changes have different ones
        ids = {text(d, "m:EventHeader/m:ID") for d in s.analytics.valid}
        assert len(ids) == 2

        assert s.generic.strings == [
            f"StoreSight|table-dwell|start|cam1|loitering|{start.id}",
            f"StoreSight|table-dwell|end|cam1|loitering|{start.id}",
        ]


async def test_a_lost_reply_and_outbox_retries_give_no_second_bookmark(database: AsyncDatabase) -> None:
    async with site() as s:
        sink = MilestoneSink(sink_config(s), database)
        start = incident()
        # XProtect stores the bookmark but the reply never arrives; then the alarm fails once after the bookmark
        s.emu.lose_reply("POST", "/bookmarks")
        s.emu.fail("POST", "/alarms", 503)
        await database.call(database.sync.save, start, ["xp"])
        worker = OutboxWorker(database, {"xp": sink}, Metrics(), FAST)
        running = asyncio.create_task(worker.run())
        try:
            await until_delivered(database, "xp", 1)
            await database.call(database.sync.save, incident("end", id=start.id), ["xp"])
            worker.notify()
            await until_delivered(database, "xp", 2)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            await sink.close()

    [bookmark] = s.emu.bookmarks.values()
    creates = [r for r in s.emu.requests("POST", "/bookmarks") if "task" not in r.query]
    searches = [r for r in s.emu.requests("POST", "/bookmarks") if r.query.get("task") == "searchTime"]
    assert len(creates) == 1 and creates[0].status is None  # the one create, whose reply was lost
    assert len(searches) == 1  # the retry found it by its marker instead of creating another
    assert [r.status for r in s.emu.requests("PATCH", f"/bookmarks/{bookmark['id']}")] == [200]
    assert len(s.emu.alarms) == 1
    # steps done before a later one failed are not repeated: one event per state change
    assert len(s.analytics.valid) == 2 and len(s.generic.strings) == 2
    rows = await database.call(database.sync.deliveries)
    assert {r["state"] for r in rows} == {"delivered"}
    assert max(r["attempts"] for r in rows) == 3  # lost reply, alarm 503, then done


async def test_token_is_renewed_before_it_expires_and_once_after_a_401(database: AsyncDatabase) -> None:
    async with site(token_lifetime_s=1.0) as s:
        sink = MilestoneSink(sink_config(s, mode=["bookmark"]), database)
        try:
            first = incident()
            await sink.publish(first.delivery_key, incident_to_json(first))
            assert s.emu.logins == 1
            await asyncio.sleep(0.85)  # past 80 % of the 1 s lifetime: renewed before use, never sent expired
            end = incident("end", id=first.id)
            await sink.publish(end.delivery_key, incident_to_json(end))
            assert s.emu.logins == 2
            assert not [r for r in s.emu.received if r.status == 401]

            s.emu.expire_tokens()  # revoked early: one 401, a new login, the same request again
            second = incident()
            await sink.publish(second.delivery_key, incident_to_json(second))
            assert s.emu.logins == 3
            assert [r.status for r in s.emu.received if r.status == 401] == [401]
            assert len(s.emu.bookmarks) == 2
        finally:
            await sink.close()


async def test_wrong_password_is_an_auth_error_and_credentials_never_reach_the_logs(
    database: AsyncDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with site() as s:
        bad = MilestoneSink(sink_config(s, password=WRONG), database)
        good = MilestoneSink(sink_config(s), database)
        inc = incident()
        try:
            with pytest.raises(SinkAuthError, match="identity provider refused user 'storesight'") as err:
                await bad.publish(inc.delivery_key, incident_to_json(inc))
            assert WRONG not in str(err.value)

            await database.call(database.sync.save, inc, ["xp"])
            await OutboxWorker(database, {"xp": bad}, Metrics(), FAST).deliver_due()
            assert bad.health.auth_failed is True and bad.health.last_error is not None
            assert (await database.call(database.sync.outbox_counts))["xp"]["pending"] == 1  # held, not dropped

            await good.publish(inc.delivery_key, incident_to_json(inc))  # debug logging of a real login
            # a token the identity provider issues but the REST API refuses, even when fresh: an auth failure
            s.emu.reject_tokens = True
            logins = s.emu.logins
            with pytest.raises(SinkAuthError, match="HTTP 401 with a fresh token"):
                await good.publish(incident().delivery_key, incident_to_json(incident()))
            assert s.emu.logins == logins + 1
        finally:
            await bad.close()
            await good.close()
    assert "authentication failed" in caplog.text
    assert WRONG not in caplog.text and PASSWORD not in caplog.text
    assert all(WRONG not in r.path and PASSWORD not in r.path for r in s.emu.received)


async def test_unmapped_camera_is_rejected_without_writing_anything(database: AsyncDatabase) -> None:
    async with site() as s:
        sink = MilestoneSink(sink_config(s), database)
        inc = incident(camera="cam9")
        try:
            with pytest.raises(SinkRejected, match="camera 'cam9' has no Milestone camera"):
                await sink.publish(inc.delivery_key, incident_to_json(inc))
            await database.call(database.sync.save, inc, ["xp"])
            await OutboxWorker(database, {"xp": sink}, Metrics(), FAST).deliver_due()
        finally:
            await sink.close()
        assert s.emu.received == [] and s.analytics.requests == [] and s.generic.strings == []
    assert (await database.call(database.sync.outbox_counts))["xp"]["dead"] == 1


@pytest.mark.parametrize(
    ("setup", "expected", "match"),
    [
        ("bookmark_503", SinkNotReady, "POST /bookmarks: HTTP 503"),
        ("camera_unknown_to_xprotect", SinkRejected, "HTTP 400 devicePath: no such camera"),
        ("analytics_port_closed", SinkNotReady, "analytics event not sent"),
        ("gateway_down", SinkNotReady, "identity provider unreachable"),
        ("forbidden", SinkAuthError, "may not do this"),
    ],
)
async def test_failures_map_to_the_three_outcomes(
    database: AsyncDatabase, setup: str, expected: type[Exception], match: str
) -> None:
    async with site() as s:
        extra: dict[str, Any] = {}
        if setup == "bookmark_503":
            s.emu.fail("POST", "/bookmarks", 503)
        elif setup == "camera_unknown_to_xprotect":
            extra["cameras"] = {"cam1": UNKNOWN_GUID}
        elif setup == "analytics_port_closed":
            extra.update(mode=["analytics_event"], analytics_event_port=free_port())
        elif setup == "gateway_down":
            extra["url"] = f"http://127.0.0.1:{free_port()}"
        elif setup == "forbidden":
            s.emu.fail("POST", "/bookmarks", 403)
        sink = MilestoneSink(sink_config(s, **extra), database)
        inc = incident()
        try:
            with pytest.raises(expected, match=match):
                await sink.publish(inc.delivery_key, incident_to_json(inc))
        finally:
            await sink.close()


# --- the Analytics Event XML -----------------------------------------------------------------------------------


async def test_the_emulator_schema_check_rejects_broken_documents() -> None:
    """So that 'the receiver found it valid' cannot pass by accident."""
    require(xsd_available())
    view = IncidentView.parse("k:start:0", incident_to_json(incident()))
    good = build_analytics_event(view, GUID, "table-dwell")

    def broken(edit: str) -> bytes:
        doc = etree.fromstring(etree.tostring(good))
        header = doc.find("m:EventHeader", namespaces=M)
        assert header is not None
        if edit == "no Message":
            header.remove(header.find("m:Message", namespaces=M))  # type: ignore[arg-type]
        elif edit == "bad ID":
            header.find("m:ID", namespaces=M).text = "incident-1"  # type: ignore[union-attr]
        elif edit == "box without Right":
            box = doc.find(".//m:BoundingBox", namespaces=M)
            assert box is not None
            box.remove(box.find("m:Right", namespaces=M))  # type: ignore[arg-type]
        elif edit == "out of order":
            doc.remove(header)
            doc.append(header)
        return etree.tostring(doc)

    template = (XSD.parent / "AnalyticsEvent.sample.xml").read_bytes()
    filled = template.replace(b"$timestamp$", b"2026-11-29T14:00:00+00:00")
    cases = {
        "good": (etree.tostring(good), 200),
        "vendor sample, filled": (filled, 200),
        "vendor sample as shipped": (template, 400),  # the $timestamp$ placeholder is not a dateTime
        "not XML": (b"<AnalyticsEvent", 400),
        **{edit: (broken(edit), 400) for edit in ("no Message", "bad ID", "box without Right", "out of order")},
    }
    async with AnalyticsEventServer() as server:
        statuses = {name: await post_raw(server.port, body) for name, (body, _) in cases.items()}
        assert statuses == {name: status for name, (_, status) in cases.items()}
        assert len(server.valid) == 2 and len(server.invalid) == len(cases) - 2
        assert any("Message" in bad.error for bad in server.invalid)


async def test_a_document_the_schema_refuses_is_rejected_before_sending(
    database: AsyncDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = milestone.build_analytics_event

    def without_message(inc: IncidentView, camera_guid: str, message: str) -> etree._Element:
        doc = real(inc, camera_guid, message)
        header = doc.find("m:EventHeader", namespaces=M)
        assert header is not None
        header.remove(header.find("m:Message", namespaces=M))  # type: ignore[arg-type]
        return doc

    monkeypatch.setattr(milestone, "build_analytics_event", without_message)
    async with site() as s:
        sink = MilestoneSink(sink_config(s, mode=["analytics_event"]), database)
        inc = incident()
        try:
            with pytest.raises(SinkRejected, match=r"does not match AnalyticsEvent\.xsd.*Message"):
                await sink.publish(inc.delivery_key, incident_to_json(inc))
        finally:
            await sink.close()
        assert s.analytics.requests == []


async def test_an_incident_without_a_box_has_no_overlay(database: AsyncDatabase) -> None:
    async with site() as s:
        sink = MilestoneSink(sink_config(s, mode=["analytics_event"], analytics_message="StoreSight"), database)
        inc = incident(box=False)
        try:
            await sink.publish(inc.delivery_key, incident_to_json(inc))
        finally:
            await sink.close()
        [doc] = s.analytics.valid
        assert doc.find("m:ObjectList", namespaces=M) is None
        assert text(doc, "m:EventHeader/m:Message") == "StoreSight"
        assert text(doc, "m:ReferenceList/m:Reference/m:FQID/m:ObjectId") == GUID


@pytest.mark.parametrize(
    "box",
    [
        pytest.param([10, 20, 300, 400], id="pixels"),
        pytest.param([0.5, 0.4, 0.2, 0.9], id="inverted"),
        pytest.param([0.1, 0.2, 0.3], id="three-values"),
        pytest.param("0.1,0.2,0.3,0.4", id="text"),
    ],
)
def test_a_box_that_is_not_normalised_xyxy_gives_no_overlay(box: Any) -> None:
    doc = incident_to_json(replace(incident(), details={"box": box}))
    assert IncidentView.parse("k:start:0", doc).box is None


async def test_without_the_xsd_documents_go_unchecked_and_the_log_says_so_once(
    database: AsyncDatabase, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with site() as s:
        cfg = sink_config(s, mode=["analytics_event"], analytics_xsd=str(tmp_path / "missing.xsd"))
        sink = MilestoneSink(cfg, database)
        try:
            for _ in range(2):
                inc = incident()
                await sink.publish(inc.delivery_key, incident_to_json(inc))
        finally:
            await sink.close()
        assert len(s.analytics.valid) == 2
    assert caplog.text.count("not checked against AnalyticsEvent.xsd") == 1


# --- self-test -----------------------------------------------------------------------------------------------------


async def test_self_test_logs_in_checks_cameras_and_writes_labelled_entries(database: AsyncDatabase) -> None:
    async with site() as s:
        sink = MilestoneSink(sink_config(s), database)
        try:
            summary = await sink.self_test()
        finally:
            await sink.close()
        assert f"logged in to {s.emu.url} as storesight" in summary
        assert "cam1 = 'Front table'" in summary
        for mode in ALL_MODES:
            assert f"{mode}: " in summary
        [bookmark] = s.emu.bookmarks.values()
        assert bookmark["header"] == "storesight-test" and "connection test" in bookmark["description"]
        [alarm] = s.emu.alarms.values()
        assert alarm["name"] == "storesight-test"
        [doc] = s.analytics.valid
        assert text(doc, "m:EventHeader/m:Name") == "storesight-test"
        [line] = s.generic.strings
        assert line.startswith("StoreSight|test|")
        assert await database.call(database.sync.outbox_counts) == {}  # a test leaves no deliveries behind


async def test_self_test_names_mapped_cameras_xprotect_does_not_have(database: AsyncDatabase) -> None:
    async with site() as s:
        sink = MilestoneSink(sink_config(s, cameras={"cam1": UNKNOWN_GUID}), database)
        try:
            with pytest.raises(SinkRejected, match=f"not found in XProtect: cam1 -> {UNKNOWN_GUID}"):
                await sink.self_test()
        finally:
            await sink.close()
        assert s.emu.bookmarks == {} and s.analytics.requests == []


# --- config --------------------------------------------------------------------------------------------------------

CAMERAS = [{"id": "cam1", "source": "/dev/null"}]


def test_config_defaults_and_build_sink(tmp_path: Path) -> None:
    config = parse_config(
        {
            "cameras": CAMERAS,
            "sinks": [
                {
                    "kind": "milestone",
                    "id": "xp",
                    "url": "https://xprotect.store.lan",
                    "username": "storesight",
                    "password": "pw-not-shown",
                    "cameras": {"cam1": GUID},
                }
            ],
        }
    )
    cfg = config.sinks[0]
    assert isinstance(cfg, MilestoneSinkConfig)
    assert (cfg.mode, cfg.analytics_event_port, cfg.generic_event_port, cfg.verify_tls) == (
        ["bookmark"],
        9090,
        1234,
        True,
    )
    assert "pw-not-shown" not in repr(cfg)
    refs = AsyncDatabase(tmp_path / "refs.db")
    sink = build_sink(cfg, refs)
    assert isinstance(sink, MilestoneSink) and sink.kind == SPEC.key == "milestone"
    assert sink.http.base + TOKEN_PATH == "https://xprotect.store.lan/API/IDP/connect/token"
    assert sink.http.base + REST == "https://xprotect.store.lan/api/rest/v1"
    assert sink.event_server == "xprotect.store.lan"


@pytest.mark.parametrize(
    ("sink", "expected"),
    [
        ({"cameras": {"cam1": "front-door"}}, "sinks[0].cameras.cam1: 'front-door' is not a Milestone camera GUID"),
        ({"cameras": {"cam2": GUID}}, "sinks[0].cameras.cam2: unknown camera 'cam2'"),
        ({"mode": ["bookmark", "sms"]}, "sinks[0].mode[1]: "),
        ({"mode": []}, "sinks[0].mode: needs at least 1 item"),
        ({"mode": ["alarm", "alarm"]}, "sinks[0].mode: lists a mode twice"),
        ({"url": "https://xprotect/api/rest"}, "sinks[0].url: does not match"),
        ({"password": None}, "sinks[0].password: "),
        ({"event_server_host": "es:9090"}, "sinks[0].event_server_host: 'es:9090' is not a host"),
        ({"analytics_event_port": 0}, "sinks[0].analytics_event_port: must be >= 1"),
        ({"bookmarks": True}, "sinks[0].bookmarks: unknown key"),
    ],
)
def test_bad_milestone_config_is_named_by_path(sink: dict[str, Any], expected: str) -> None:
    doc = {"kind": "milestone", "id": "xp", "url": "https://xp", "username": "u", "password": "p"} | sink
    with pytest.raises(ConfigError) as err:
        parse_config({"cameras": CAMERAS, "sinks": [doc]}, "store.yaml")
    assert f"store.yaml: {expected}" in str(err.value)
