"""ZoneMinder sink against a real ZoneMinder 1.36 (packaging/dev/zoneminder.sh) recording a real RTSP camera (the
shared clip through the GStreamer RTSP server): events recorded with the explanation, closed at the end, exactly
once across retries and lost replies, through the real outbox; wrong password, ZoneMinder down, unknown monitors,
token renewal and redaction; plus the notes format and the config."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from components.mqtt import free_port
from components.rtsp import RtspServer, rtsp_available, start_rtsp_server
from components.zoneminder import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    BASE_URL,
    TEST_MONITOR_PREFIX,
    ZmAdmin,
)
from conftest import require

from adapters.sinks.zoneminder import SPEC
from adapters.sinks.zoneminder.config import ZoneMinderSinkConfig
from adapters.sinks.zoneminder.sink import ZoneMinderSink, incidents_in_notes, merge_notes
from plugin.app import build_sink
from plugin.config.loader import parse_config
from plugin.config.service import OutboxConfig
from plugin.errors import ConfigError, SinkAuthError, SinkNotReady, SinkRejected
from plugin.incidents.database import AsyncDatabase
from plugin.incidents.documents import incident_to_json
from plugin.incidents.outbox import OutboxWorker
from plugin.metrics import Metrics
from plugin.types import Incident

# The shared clip's frame size: a ZoneMinder Ffmpeg monitor is declared with the size of its stream.
CLIP_SIZE = (768, 432)
FAST = OutboxConfig(backoff_start_s=0.05, backoff_max_s=0.2, timeout_s=20)
T0 = datetime(2026, 11, 29, 14, 0, 0, tzinfo=UTC)
zm = pytest.mark.zoneminder


@dataclass
class Rig:
    """A running ZoneMinder with one test monitor recording the RTSP camera."""

    admin: ZmAdmin
    monitor: str
    rtsp: RtspServer


@pytest.fixture(scope="session")
def zoneminder_rig(clip: Path, zoneminder: None) -> Iterator[Rig]:
    """ZoneMinder (the session's, see conftest) with a Nodect monitor on the shared clip."""
    require(rtsp_available())
    admin = ZmAdmin()
    admin.remove_stale_test_monitors()
    # a few loops of the 139 s clip outlast the session: ZoneMinder records only while frames arrive
    with start_rtsp_server({"/store": clip}, loop=3) as rtsp:
        monitor = admin.add_monitor(f"{TEST_MONITOR_PREFIX}{os.getpid()}", rtsp.url("/store"), *CLIP_SIZE)
        try:
            admin.wait_capturing(monitor)
            yield Rig(admin, monitor, rtsp)
        finally:
            admin.delete_monitor(monitor)


def config(monitor: str | int, **extra: Any) -> ZoneMinderSinkConfig:
    """A zoneminder sink config for the local ZoneMinder with cam1 on `monitor`."""
    doc = {
        "kind": "zoneminder",
        "id": "zm",
        "url": BASE_URL,
        "username": ADMIN_USER,
        "password": ADMIN_PASSWORD,
        "cameras": {"cam1": monitor},
        "timeout_s": 10,
        **extra,
    }
    return ZoneMinderSinkConfig.model_validate(doc)


def incident(ended: bool = False, camera: str = "cam1", **extra: Any) -> Incident:
    """A loitering incident on cam1, open or ended; a fresh id unless given."""
    return Incident(
        id=extra.pop("id", Incident.new_id()),
        rule_id="table-dwell",
        type="loitering",
        camera=camera,
        zone="table",
        start=T0,
        end=T0 + timedelta(seconds=42) if ended else None,
        state="end" if ended else "start",
        seq=1 if ended else 0,
        explanation=extra.pop("explanation", "Person #3 stayed at the table for 42 s (limit 30 s)"),
        track_ids=(3,),
        **extra,
    )


def doc(inc: Incident) -> dict[str, Any]:
    """The outbox payload of an incident."""
    return incident_to_json(inc)


class MemoryRefs:
    """SinkRefs in a dict; `fail_puts` makes the next puts raise, like a bridge that dies before storing."""

    def __init__(self) -> None:
        self.refs: dict[tuple[str, str], str] = {}
        self.fail_puts = 0

    async def get_ref(self, sink_id: str, incident_id: str) -> str | None:
        return self.refs.get((sink_id, incident_id))

    async def put_ref(self, sink_id: str, incident_id: str, ref: str) -> None:
        if self.fail_puts:
            self.fail_puts -= 1
            raise RuntimeError("simulated crash before the event id was stored")
        self.refs[(sink_id, incident_id)] = ref


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[AsyncDatabase]:
    """A fresh SQLite store."""
    s = AsyncDatabase(tmp_path / "db.sqlite")
    yield s
    await s.close()


async def in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """The blocking admin client, off the event loop."""
    return await asyncio.to_thread(fn, *args, **kwargs)


# --- against the real ZoneMinder -----------------------------------------------------------------------------------


@zm
async def test_start_records_an_event_with_the_explanation_and_end_closes_it(
    zoneminder_rig: Rig, database: AsyncDatabase
) -> None:
    rig = zoneminder_rig
    sink = ZoneMinderSink(config(rig.monitor), database)
    inc = incident()
    before = await in_thread(rig.admin.event_ids, rig.monitor)
    try:
        receipt = await sink.publish(inc.delivery_key, doc(inc))
        event_id = await database.get_ref("zm", inc.id)
        assert event_id is not None and receipt.detail == f"ZoneMinder event {event_id} on monitor {rig.monitor}"
        event = await in_thread(rig.admin.event, event_id)
        assert str(event["MonitorId"]) == rig.monitor
        assert event["Cause"] == "StoreSight loitering" and event["Name"] == "StoreSight: table-dwell"
        assert f"StoreSight incident {inc.id} [active]" in event["Notes"]
        assert "Person #3 stayed at the table for 42 s (limit 30 s)" in event["Notes"]
        assert "Forced Web" not in event["Notes"]
        assert event["EndDateTime"] is None and await in_thread(rig.admin.alarm_state, rig.monitor) == 2  # alarm

        # the same delivery again (its reply was lost): the same event, nothing new recorded
        again = await sink.publish(inc.delivery_key, doc(inc))
        assert again.detail == receipt.detail

        end = incident(ended=True, id=inc.id)
        assert (await sink.publish(end.delivery_key, doc(end))).detail.endswith("; alarm off")
        closed = await in_thread(rig.admin.wait_closed, event_id)
        assert float(closed["Length"]) > 0 and int(closed["Frames"]) > 0
        assert f"StoreSight incident {inc.id} [ended]" in closed["Notes"]
        assert "lasted 42.0 s" in closed["Notes"]
        assert closed["Cause"] == "StoreSight loitering"  # zmc's own update at close keeps ours
        assert await in_thread(rig.admin.event_ids, rig.monitor) == [*before, event_id]

        # the end retried after its reply was lost: the event is closed already, nothing is cut short
        assert (await sink.publish(end.delivery_key, doc(end))).detail.endswith("(closed)")
        assert await in_thread(rig.admin.event_ids, rig.monitor) == [*before, event_id]
    finally:
        await sink.close()


@zm
async def test_a_lost_reply_or_a_lost_reference_never_records_a_second_event(zoneminder_rig: Rig) -> None:
    rig = zoneminder_rig
    refs = MemoryRefs()
    sink = ZoneMinderSink(config(rig.monitor), refs)
    inc = incident()
    before = await in_thread(rig.admin.event_ids, rig.monitor)
    try:
        # the alarm went on and opened an event, then the bridge died before storing its id
        refs.fail_puts = 1
        with pytest.raises(RuntimeError, match="simulated crash"):
            await sink.publish(inc.delivery_key, doc(inc))
        # the retry: the monitor is still in alarm, so ZoneMinder names the same event
        await sink.publish(inc.delivery_key, doc(inc))
        event_id = refs.refs[("zm", inc.id)]
        assert await in_thread(rig.admin.event_ids, rig.monitor) == [*before, event_id]

        # a bridge with a new database (no stored reference) finds the event by the incident id in its Notes
        other = ZoneMinderSink(config(rig.monitor), MemoryRefs())
        try:
            assert await other.find_event(rig.monitor, inc.id) == event_id
            end = incident(ended=True, id=inc.id)
            assert (await other.publish(end.delivery_key, doc(end))).detail.endswith("; alarm off")
        finally:
            await other.close()
        await in_thread(rig.admin.wait_closed, event_id)
        assert await in_thread(rig.admin.event_ids, rig.monitor) == [*before, event_id]
    finally:
        await sink.close()


@zm
async def test_incidents_sharing_a_camera_share_the_event_until_the_last_ends(zoneminder_rig: Rig) -> None:
    rig = zoneminder_rig
    sink = ZoneMinderSink(config(rig.monitor), MemoryRefs())
    a, b = incident(explanation="Person #1 lingered"), incident(explanation="Person #2 lingered")
    try:
        await sink.publish(a.delivery_key, doc(a))
        await sink.publish(b.delivery_key, doc(b))
        shared = {await sink.refs.get_ref("zm", a.id), await sink.refs.get_ref("zm", b.id)}
        assert len(shared) == 1
        event_id = shared.pop()
        assert event_id is not None
        a_end = incident(ended=True, id=a.id, explanation="Person #1 lingered")
        assert "alarm kept on for 1 other incident" in (await sink.publish(a_end.delivery_key, doc(a_end))).detail
        # past the test monitor's minimum event length and post-event frames: had the alarm gone off, it would
        # have closed by now
        await asyncio.sleep(3.0)
        event = await in_thread(rig.admin.event, event_id)
        assert event["EndDateTime"] is None and await in_thread(rig.admin.alarm_state, rig.monitor) == 2
        assert incidents_in_notes(event["Notes"]) == {a.id: "ended", b.id: "active"}
        b_end = incident(ended=True, id=b.id, explanation="Person #2 lingered")
        assert (await sink.publish(b_end.delivery_key, doc(b_end))).detail.endswith("; alarm off")
        closed = await in_thread(rig.admin.wait_closed, event_id)
        assert incidents_in_notes(closed["Notes"]) == {a.id: "ended", b.id: "ended"}
        assert "Person #1 lingered" in closed["Notes"] and "Person #2 lingered" in closed["Notes"]
    finally:
        await sink.close()


@zm
async def test_through_the_outbox_worker_and_an_end_whose_start_never_arrived(
    zoneminder_rig: Rig, database: AsyncDatabase
) -> None:
    rig = zoneminder_rig
    sink = build_sink(config(rig.monitor), database)
    assert isinstance(sink, ZoneMinderSink) and sink.kind == SPEC.key
    inc, lone = incident(), incident()
    await database.call(database.sync.save, inc, ["zm"])
    await database.call(database.sync.save, incident(ended=True, id=inc.id), ["zm"])
    # only the end of this one: its start went to a sink added later, or was dead-lettered
    await database.call(database.sync.save, incident(ended=True, id=lone.id), ["zm"])
    worker = OutboxWorker(database, {"zm": sink}, Metrics(), FAST)
    try:
        assert await worker.flush(timeout_s=60)
    finally:
        await sink.close()
    counts = await database.call(database.sync.outbox_counts)
    assert counts["zm"] == {"pending": 0, "delivered": 3, "dead": 0}
    for incident_id in (inc.id, lone.id):
        event_id = await database.get_ref("zm", incident_id)
        assert event_id is not None
        closed = await in_thread(rig.admin.wait_closed, event_id)
        # the lone end's alarm came while the monitor still recorded the first event's post-event frames, and
        # ZoneMinder continues an event then: both incidents may share it, each with its paragraph
        assert incidents_in_notes(closed["Notes"])[incident_id] == "ended"
        assert str(closed["MonitorId"]) == rig.monitor
    assert sink.health.ok


@zm
async def test_wrong_password_is_an_auth_error_and_never_shows_the_password(
    zoneminder_rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "not-the-Password-9f3"
    sink = ZoneMinderSink(config(zoneminder_rig.monitor, password=secret), MemoryRefs())
    inc = incident()
    try:
        with pytest.raises(SinkAuthError, match="login refused") as err:
            await sink.publish(inc.delivery_key, doc(inc))
        with pytest.raises(SinkAuthError):
            await sink.self_test()
    finally:
        await sink.close()
    assert secret not in str(err.value) and secret not in caplog.text


@zm
async def test_tokens_are_renewed_and_a_refused_token_logs_in_again_without_leaking(
    zoneminder_rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sink = ZoneMinderSink(config(zoneminder_rig.monitor), MemoryRefs())
    try:
        await sink.self_test()
        first = sink._access
        assert first
        # near expiry: renewed with the refresh token, before a request could race it
        sink._access_until = 0.0
        await sink.self_test()
        assert "access token renewed" in caplog.text and sink._access
        # a token the server no longer takes (its secret changed, a restart): one fresh login, then it works
        sink._access = first[:-4] + "AAAA"
        assert "monitor" in await sink.self_test()
        assert "logging in again" in caplog.text
        tokens = [t for t in (first, sink._access, sink._refresh) if t]
    finally:
        await sink.close()
    for token in tokens:
        assert token not in caplog.text


async def test_zoneminder_down_is_not_ready() -> None:
    port = free_port()  # nothing listens there: as if Apache were stopped
    sink = ZoneMinderSink(config(1, url=f"http://127.0.0.1:{port}/zm"), MemoryRefs())
    inc = incident()
    try:
        with pytest.raises(SinkNotReady, match="Cannot connect"):
            await sink.publish(inc.delivery_key, doc(inc))
        with pytest.raises(SinkNotReady):
            await sink.self_test()
    finally:
        await sink.close()


@zm
async def test_wrong_path_is_not_ready_with_a_hint(zoneminder_rig: Rig) -> None:
    sink = ZoneMinderSink(config(zoneminder_rig.monitor, url=BASE_URL + "/nothing-here"), MemoryRefs())
    try:
        with pytest.raises(SinkNotReady, match="no ZoneMinder API at"):
            await sink.self_test()
    finally:
        await sink.close()


@zm
async def test_unknown_monitor_and_unmapped_camera_are_rejected_clearly(
    zoneminder_rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig = zoneminder_rig
    sink = ZoneMinderSink(config(rig.monitor, cameras={"cam1": rig.monitor, "cam2": 9999}), MemoryRefs())
    inc = incident(camera="cam2")
    before = await in_thread(rig.admin.event_ids, rig.monitor)
    try:
        with pytest.raises(SinkRejected, match="camera 'cam2' is mapped to ZoneMinder monitor 9999, which does not"):
            await sink.publish(inc.delivery_key, doc(inc))
        assert "no monitor 9999 (camera cam2)" in caplog.text  # the whole map, checked on the first delivery
        with pytest.raises(SinkRejected, match="camera 'cam9' has no ZoneMinder monitor"):
            other = incident(camera="cam9")
            await sink.publish(other.delivery_key, doc(other))
        with pytest.raises(SinkRejected, match=r"camera cam2: no monitor 9999 \(monitors: .*storesight-test"):
            await sink.self_test()
    finally:
        await sink.close()
    assert await in_thread(rig.admin.event_ids, rig.monitor) == before


@zm
async def test_self_test_summarises_the_map(zoneminder_rig: Rig) -> None:
    sink = ZoneMinderSink(config(zoneminder_rig.monitor), MemoryRefs())
    try:
        summary = await sink.self_test()
    finally:
        await sink.close()
    assert (
        summary.startswith("ZoneMinder 1.36")
        and f"cam1 -> monitor {zoneminder_rig.monitor} 'storesight-test-" in summary
    )
    assert "(Nodect)" in summary


# --- without ZoneMinder --------------------------------------------------------------------------------------------


def test_notes_keep_other_incidents_and_text_and_replace_their_own() -> None:
    own = "StoreSight incident abc [ended]\nloitering\nstarted x"
    cases = [
        # existing notes, expected notes, other incidents still active
        (None, own, []),
        ("", own, []),
        ("Forced Web: ", own, []),
        ("StoreSight incident abc [active]\nold text", own, []),
        ("Motion: zone1\n\nStoreSight incident abc [active]\nold", f"Motion: zone1\n\n{own}", []),
        ("StoreSight incident xyz [active]\nother", f"StoreSight incident xyz [active]\nother\n\n{own}", ["xyz"]),
        ("StoreSight incident xyz [ended]\nother", f"StoreSight incident xyz [ended]\nother\n\n{own}", []),
    ]
    for existing, expected, active in cases:
        assert merge_notes(existing, "abc", own) == (expected, active), existing
    assert incidents_in_notes(f"StoreSight incident xyz [active]\nx\n\n{own}") == {"xyz": "active", "abc": "ended"}
    assert incidents_in_notes("StoreSight incident abcd [active]") == {"abcd": "active"}  # not abc


def test_config_takes_numeric_monitor_ids_and_names_bad_fields() -> None:
    cfg = config(3, url="http://nvr.store.lan/zm/")
    assert cfg.cameras == {"cam1": "3"} and cfg.url == "http://nvr.store.lan/zm"
    assert (
        ZoneMinderSinkConfig.model_validate(
            {"kind": "zoneminder", "id": "zm", "url": "http://127.0.0.1/zm", "cameras": {"cam1": "2"}}
        ).username
        is None
    )  # ZoneMinder without authentication
    base = {"cameras": [{"id": "cam1", "source": "x.mp4"}]}
    bad = [
        ({"cameras": {"cam1": "front"}}, "sinks[0].cameras: cam1: 'front' is not a ZoneMinder monitor Id"),
        ({"cameras": {}}, "sinks[0].cameras: needs at least 1 item"),
        ({"url": "http://admin:pw@nvr/zm"}, "sinks[0].url: does not match"),
        ({"username": None}, "sinks[0].password: set without username"),
        ({"cameras": {"cam7": 1}}, "sinks[0].cameras.cam7: unknown camera 'cam7'"),
    ]
    for change, message in bad:
        sink = {"kind": "zoneminder", "id": "zm", "url": "http://127.0.0.1/zm", "username": "u", "password": "p",
                "cameras": {"cam1": 1}} | change  # fmt: skip
        with pytest.raises(ConfigError) as err:
            parse_config({**base, "sinks": [sink]})
        assert message in str(err.value), str(err.value)
    parsed = parse_config(
        {**base, "sinks": [{"kind": "zoneminder", "id": "zm", "url": "http://h/zm", "cameras": {"cam1": 1}}]}
    )
    assert isinstance(parsed.sinks[0], ZoneMinderSinkConfig)


async def test_bad_incident_payload_is_rejected() -> None:
    sink = ZoneMinderSink(config(1), MemoryRefs())
    with pytest.raises(SinkRejected, match="bad or missing"):
        await sink.publish("k", {"id": "x", "camera": "cam1", "state": "start", "start": "yesterday"})
    await sink.close()


@zm
async def test_an_alarm_longer_than_the_section_length_is_ended_in_the_event_recorded_now(zoneminder_rig: Rig) -> None:
    rig = zoneminder_rig
    # its own monitor on the same camera, with a section length of seconds instead of ZoneMinder's 600
    name = f"{TEST_MONITOR_PREFIX}{os.getpid()}-split"
    monitor = await in_thread(rig.admin.add_monitor, name, rig.rtsp.url("/store"), *CLIP_SIZE, SectionLength="4")
    sink = ZoneMinderSink(config(monitor), MemoryRefs())
    inc = incident()
    try:
        await in_thread(rig.admin.wait_capturing, monitor)
        await sink.publish(inc.delivery_key, doc(inc))
        first = await sink.refs.get_ref("zm", inc.id)
        deadline = time.monotonic() + 30
        while len(await in_thread(rig.admin.event_ids, monitor)) < 2:  # ZoneMinder started a second event
            assert time.monotonic() < deadline, "no second event"
            await asyncio.sleep(0.5)
        end = incident(ended=True, id=inc.id)
        receipt = await sink.publish(end.delivery_key, doc(end))
        assert f"ZoneMinder event {first} (continued in " in receipt.detail and receipt.detail.endswith("; alarm off")
        last = (await in_thread(rig.admin.event_ids, monitor))[-1]
        closed = await in_thread(rig.admin.wait_closed, last)
        assert incidents_in_notes(closed["Notes"]) == {inc.id: "ended"}
        assert incidents_in_notes((await in_thread(rig.admin.event, first))["Notes"]) == {inc.id: "ended"}
        assert await in_thread(rig.admin.alarm_state, monitor) == 0
    finally:
        await sink.close()
        await in_thread(rig.admin.delete_monitor, monitor)


def test_the_setup_script_stops_only_what_it_is_told_and_says_what_it_started() -> None:
    """The session fixture stops exactly the services the start printed: the script's two ends of that contract."""
    from components.zoneminder import SETUP_SCRIPT, _started

    bad = subprocess.run(["bash", str(SETUP_SCRIPT), "stop", "postgres"], capture_output=True, text=True, timeout=60)
    require(None if "needs root" not in bad.stderr else "packaging/dev/zoneminder.sh needs root or sudo")
    assert bad.returncode == 2 and "unknown service 'postgres' (zoneminder, apache or mariadb)" in bad.stderr
    nothing_yet = subprocess.run(["bash", str(SETUP_SCRIPT), "restart"], capture_output=True, text=True, timeout=60)
    assert nothing_yet.returncode == 2 and "usage: zoneminder.sh [start | stop" in nothing_yet.stderr
    out = "zoneminder.sh: up\nSTARTED mariadb\nSTARTED zoneminder\nREADY http://127.0.0.1:18081/zm\n"
    assert _started(out) == ["mariadb", "zoneminder"] and _started("READY http://127.0.0.1:18081/zm\n") == []
