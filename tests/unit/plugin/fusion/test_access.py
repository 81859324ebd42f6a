"""Access control: the door-event webhook (validation, storage before 202, badge ids kept out of answers and logs),
ONVIF door and access signals as door events, tailgating on synthetic door-line crossings, forced and held doors
with the door camera's evidence, the `access` config's exact error paths, and the whole path through the app's
contexts and HTTP routes."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from helpers import example

from adapters.cameras.onvif.messages import ONVIF_TOPICS, TT, WSNT, parse_notification_xml
from plugin.app import access_ctx, add_intake_routes, auth_ctx, database_ctx, new_app, sinks_ctx
from plugin.config.loader import parse_config
from plugin.config.root import Config
from plugin.config.service import DetectorConfig
from plugin.errors import ConfigError
from plugin.fusion.access.model import AccessEventIn, badge_digest, badge_ref
from plugin.fusion.access.service import AccessService
from plugin.fusion.hub import BusinessHub
from plugin.incidents.database import AsyncDatabase
from plugin.incidents.explain import Explainer
from plugin.incidents.manager import IncidentManager
from plugin.inference.server import free_port
from plugin.metrics import Metrics
from plugin.pipeline.camera import CameraPipeline
from plugin.pipeline.presence import PresenceLog
from plugin.rules.base import Measurement, Observation
from plugin.rules.line_crossing import LineCrossingRuleConfig
from plugin.rules.registry import build_rule
from plugin.types import CameraSignal, Detections, Frame
from plugin.web.keys import ACCESS, CONFIG, DATABASE, PRESENCE
from plugin.web.routes import setup_routes

pytestmark = [pytest.mark.access]

T0 = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)
TOKEN = "access-test-token-0123456789"
BADGE = "04A1B2C3D4E5F6"  # a badge (card) id: personal data


def access_doc(**access: Any) -> dict[str, Any]:
    """The example config with a door line on cam1 (rule door-line) and door D1 on it."""
    doc = example()
    doc["rules"].append(
        {"id": "door-line", "type": "line_crossing", "camera": "cam1", "line": [[0.0, 0.6], [0.3, 0.6]]}
    )
    doc["access"] = {
        "doors": [{"id": "D1", "camera": "cam1", "line_rule": "door-line", "zone": "stockroom-door"}],
        "wait_max_s": 1,
        **access,
    }
    return doc


def access_config(**access: Any) -> Config:
    """A parsed config with an `access` section."""
    return parse_config(access_doc(**access))


def feed(presence: PresenceLog, seconds: float, at_door: dict[int, list[int]] | None = None) -> None:
    """Analysed cam1 frames at 5 fps from T0 for `seconds`; track ids in the door zone per whole second."""
    image = np.full((432, 768, 3), 90, np.uint8)
    at_door = at_door or {}
    for i in range(int(seconds * 5)):
        s = i / 5
        ids = at_door.get(int(s), [])
        mask = np.array([True] * len(ids), bool)
        presence.record(Frame("cam1", i, T0 + timedelta(seconds=s), 0.0, image), {"stockroom-door": mask},
                        np.asarray(ids, np.int32))  # fmt: skip


def cross(presence: PresenceLog, s: float, track_id: int, direction: str = "in") -> None:
    """A crossing of the door line at T0 + s, as the pipeline records a line_crossing Measurement."""
    presence.record_crossing("cam1", "door-line", T0 + timedelta(seconds=s), direction, track_id)


def grant(s: float, door: str = "D1", badge: str | None = BADGE, kind: str = "granted") -> AccessEventIn:
    """A door event at T0 + s."""
    return AccessEventIn.model_validate({"door": door, "kind": kind, "time": T0 + timedelta(seconds=s),
                                         "badge": badge})  # fmt: skip


@dataclass
class Env:
    database: AsyncDatabase
    presence: PresenceLog
    service: AccessService

    async def incidents(self) -> list[dict[str, Any]]:
        return await self.database.call(self.database.sync.incidents)

    async def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return await self.database.call(self.database.sync.business_events, "2026-01-01", "2027-01-01", kind)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    config = access_config()
    assert config.access is not None
    database = AsyncDatabase(tmp_path / "db.sqlite")
    hub = BusinessHub(database)
    presence = PresenceLog()
    incidents = IncidentManager(database, tmp_path / "evidence", Explainer("UTC"), ["nx"])
    service = AccessService(config.access, "store-42", hub, presence, incidents)
    try:
        yield Env(database, presence, service)
    finally:
        await service.close()
        await database.close()


# ---------------------------------------------------------------------------------------------------- crossings


def test_line_crossing_measurements_carry_the_track() -> None:
    rule = build_rule(LineCrossingRuleConfig.model_validate(
        {"id": "door-line", "type": "line_crossing", "camera": "cam1", "line": [[0.5, 1.0], [0.5, 0.0]]}
    ))  # fmt: skip
    out: list[Measurement] = []
    for i, x in enumerate([300, 400, 600, 650, 700, 750]):
        dets = Detections.from_arrays([[x - 20, 200, x + 20, 300]], [0.9], [0], [7])
        obs = Observation("cam1", T0 + timedelta(seconds=i * 0.2), dets, {}, 1000, 500, ("person",))
        out += [m for m in rule.update(obs) if isinstance(m, Measurement)]
    assert [(m.metric, m.track_id, m.key) for m in out] == [("in", 7, "person")]


class _WalkingDetector:
    """Stands in for the detector: one person walking left to right, 20 px a frame."""

    def __init__(self) -> None:
        self.x = 100.0

    async def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        self.x += 20
        return [Detections.from_arrays([[self.x - 50, 150, self.x + 50, 400]], [0.9], [0]) for _ in images]


async def test_pipeline_keeps_the_door_line_crossings_for_fusion() -> None:
    config = access_config()
    cam = config.camera("cam1")
    line = LineCrossingRuleConfig.model_validate(
        {"id": "door-line", "type": "line_crossing", "camera": "cam1", "line": [[0.5, 1.0], [0.5, 0.0]]}
    )
    rules = [build_rule(line)]
    source = SimpleNamespace(status=SimpleNamespace(frames_dropped=0), is_file=True)  # frames come from the test
    pipeline = CameraPipeline(cam, source, _WalkingDetector(), DetectorConfig(), rules, None, Metrics())  # type: ignore[arg-type]
    pipeline.resolve_classes(["person"])
    pipeline.presence = presence = PresenceLog()
    image = np.full((432, 768, 3), 90, np.uint8)
    for k in range(30):
        await pipeline.process(Frame("cam1", k, T0 + timedelta(seconds=k / 5), float(k), image))
    [crossing] = presence.crossings("cam1", "door-line", T0, T0 + timedelta(seconds=10))
    assert crossing.direction == "in" and crossing.track_id == 1  # the only person: the tracker's first id
    assert presence.analysed_until("cam1") == T0 + timedelta(seconds=29 / 5)


def test_presence_keeps_crossings_in_time_order() -> None:
    presence = PresenceLog()
    cross(presence, 5, 2)
    cross(presence, 3, 1)  # confirmed late (the track left the view): dated when it was last seen
    cross(presence, 4, 3, "out")
    got = presence.crossings("cam1", "door-line", T0, T0 + timedelta(seconds=10))
    assert [(c.track_id, c.direction) for c in got] == [(1, "in"), (3, "out"), (2, "in")]
    assert [c.track_id for c in presence.crossings("cam1", "door-line", T0, T0 + timedelta(seconds=4), "in")] == [1]


# ---------------------------------------------------------------------------------------------------- tailgating


@pytest.mark.parametrize(
    ("grants", "crossings", "expected"),
    [
        pytest.param([10], [(11, 1, "in")], None, id="one badge one person"),
        pytest.param([10], [(11, 1, "in"), (12.5, 2, "in")], ((2,), "2 people entered through door D1 on one "
                     "badge (grant at 14:00:10); over the count: #2 (line door-line on cam1)"), id="one extra"),
        pytest.param([10], [(20, 1, "in"), (21, 2, "in")], None, id="crossings outside the grant's window"),
        pytest.param([30], [(11, 1, "in"), (12, 2, "in")], None, id="grant outside the crossings' window"),
        pytest.param([10, 12], [(11, 1, "in"), (13, 2, "in")], None, id="two grants two people"),
        pytest.param([10, 12], [(11, 1, "in"), (13, 2, "in"), (14, 3, "in")], ((3,), "3 people entered through "
                     "door D1 on 2 badges (grants at 14:00:10, 14:00:12)"), id="two grants three people"),
        pytest.param([10], [(11, 1, "in"), (12, 2, "out")], None, id="someone leaving is not tailgating"),
        pytest.param([10], [(9.5, 1, "in"), (11, 2, "in"), (11.5, 4, "in")], ((2, 4), "3 people entered"),
                     id="clock lead: a crossing just before the grant is on it"),
    ],
)  # fmt: skip
async def test_tailgating(
    env: Env, grants: list[float], crossings: list[tuple[float, int, str]], expected: tuple[tuple[int, ...], str] | None
) -> None:
    feed(env.presence, 50)
    for s, track, direction in crossings:
        cross(env.presence, s, track, direction)
    for k, s in enumerate(grants):
        assert (await env.service.submit(grant(s, badge=f"{BADGE}{k}"), "test", "test")).new
    await env.service.idle()
    incidents = await env.incidents()
    if expected is None:
        assert incidents == [], [i["explanation"] for i in incidents]
        assert await env.events("access.tailgating") == []
        return
    [inc] = incidents
    tracks, text = expected
    assert inc["rule_id"] == "access.tailgating" and inc["type"] == "access_tailgating"
    assert inc["camera"] == "cam1" and inc["zone"] == "stockroom-door" and inc["severity"] == "warning"
    assert tuple(inc["track_ids"]) == tracks
    assert inc["explanation"].startswith(text), inc["explanation"]
    assert (await asyncio.to_thread(Path(inc["snapshot"]).read_bytes))[:2] == b"\xff\xd8"  # the door camera
    [event] = await env.events("access.tailgating")
    assert event["payload"]["extra_track_ids"] == list(tracks) and event["payload"]["grants"] == len(grants)
    assert BADGE not in inc["explanation"] and BADGE not in str(inc["details"])


async def test_tailgating_waits_for_the_video(env: Env) -> None:
    """Posted before the camera has analysed the window: judged once it has, with the crossings seen by then."""
    assert (await env.service.submit(grant(10), "test", "test")).new
    await asyncio.sleep(0.3)
    cross(env.presence, 11, 1)
    cross(env.presence, 12, 2)
    feed(env.presence, 40)
    await env.service.idle()
    [inc] = await env.incidents()
    assert inc["track_ids"] == [2]


async def test_unwatched_grant_is_not_judged(env: Env) -> None:
    feed(env.presence, 8)  # the camera stops before the grant
    await env.service.submit(grant(10), "test", "test")
    await env.service.idle()
    assert await env.incidents() == [] and env.service.counts["unverified"] == 1


# ---------------------------------------------------------------------------------------------------- door alarms


async def test_forced_door_raises_an_incident_with_evidence_and_the_people_count(env: Env) -> None:
    feed(env.presence, 40, {s: [5, 6] for s in range(18, 24)})
    cross(env.presence, 19, 5)
    cross(env.presence, 20, 6)
    event = grant(20, badge=None, kind="forced")
    assert (await env.service.submit(event, "test", "test")).new
    assert not (await env.service.submit(event, "test", "test")).new  # a resend is stored once, judged once
    await env.service.idle()
    [inc] = await env.incidents()
    assert inc["rule_id"] == "access.forced" and inc["severity"] == "critical" and inc["camera"] == "cam1"
    assert inc["track_ids"] == [5, 6] and inc["details"]["people"] == 2 and inc["details"]["crossed_in"] == 2
    assert inc["explanation"].startswith(
        "Door D1 forced open at 14:00:20: 2 people in zone stockroom-door, 2 in and 0 out across line door-line on "
        "cam1, 14:00:10-14:00:30"
    ), inc["explanation"]
    assert (await asyncio.to_thread(Path(inc["snapshot"]).read_bytes))[:2] == b"\xff\xd8"


async def test_held_door_with_nobody_there_and_one_unwatched(env: Env) -> None:
    feed(env.presence, 40)
    await env.service.submit(grant(20, badge=None, kind="held"), "test", "test")
    await env.service.submit(grant(100, badge=None, kind="held"), "test", "test")  # long after the video stops
    await env.service.idle()
    texts = sorted(i["explanation"] for i in await env.incidents())
    assert texts[0].startswith("Door D1 held open at 14:00:20: nobody in zone stockroom-door, 0 in and 0 out")
    assert texts[1].startswith("Door D1 held open at 14:01:40: people count unknown (cam1 did not analyse")


async def test_denied_and_closed_are_stored_only(env: Env) -> None:
    feed(env.presence, 40)
    await env.service.submit(grant(10, kind="denied"), "test", "test")
    await env.service.submit(grant(12, badge=None, kind="closed"), "test", "test")
    await env.service.idle()
    assert await env.incidents() == []
    [denied] = await env.events("access.denied")
    # the database keeps the badge's HMAC under the install key, never the badge itself
    key = env.service.key
    assert denied["payload"]["badge_digest"] == badge_digest(key, BADGE) and len(key) == 32
    assert denied["payload"]["badge_ref"] == badge_ref(key, BADGE) == badge_digest(key, BADGE)[:8]  # type: ignore[index]
    assert "badge" not in denied["payload"] and BADGE not in json.dumps(denied)
    # keyed: another installation's key gives another digest (a guessed badge number cannot be checked without it)
    assert badge_digest(bytes(32), BADGE) != denied["payload"]["badge_digest"]
    assert len(await env.events("access.closed")) == 1


# ---------------------------------------------------------------------------------------------------- ONVIF


def _onvif(topic: str, source: dict[str, str], data: dict[str, str], at: str = "2026-11-29T14:00:10Z",
           operation: str = "Changed") -> CameraSignal:  # fmt: skip
    def items(d: dict[str, str]) -> str:
        return "".join(f'<tt:SimpleItem Name="{k}" Value="{v}"/>' for k, v in d.items())

    raw = (
        f'<wsnt:NotificationMessage xmlns:wsnt="{WSNT}" xmlns:tt="{TT}" xmlns:tns1="{ONVIF_TOPICS}">'
        f"<wsnt:Topic>{topic}</wsnt:Topic><wsnt:Message>"
        f'<tt:Message UtcTime="{at}" PropertyOperation="{operation}"><tt:Source>{items(source)}</tt:Source>'
        f"<tt:Data>{items(data)}</tt:Data></tt:Message></wsnt:Message></wsnt:NotificationMessage>"
    )
    signal = parse_notification_xml(raw.encode(), "cam1")
    assert isinstance(signal, CameraSignal), signal
    return signal


async def test_onvif_door_and_access_signals_become_door_events(tmp_path: Path) -> None:
    doc = access_doc()
    doc["cameras"][0].pop("source")
    doc["cameras"][0]["onvif"] = {"host": "127.0.0.1", "events": {}}
    doc["access"]["doors"][0]["onvif"] = {"token": "Door1"}
    config = parse_config(doc)
    assert config.access is not None
    database = AsyncDatabase(tmp_path / "db.sqlite")
    presence = PresenceLog()
    service = AccessService(config.access, "s", BusinessHub(database), presence, None)
    try:
        await service.on_signal(
            _onvif("tns1:Door/State/DoorAlarm", {"DoorToken": "Door1"}, {"State": "DoorForcedOpen"})
        )
        await service.on_signal(_onvif("tns1:Door/State/DoorAlarm", {"DoorToken": "Door1"}, {"State": "Normal"},
                                       at="2026-11-29T14:00:30Z"))  # fmt: skip
        await service.on_signal(_onvif("tns1:AccessControl/AccessGranted/Credential", {"AccessPointToken": "Door1"},
                                       {"CredentialToken": BADGE}))  # fmt: skip
        await service.on_signal(
            _onvif("tns1:Door/State/DoorAlarm", {"DoorToken": "Door2"}, {"State": "DoorForcedOpen"})
        )
        await service.on_signal(_onvif("tns1:Door/State/DoorAlarm", {"DoorToken": "Door1"},
                                       {"State": "DoorOpenTooLong"}, operation="Initialized"))  # fmt: skip
        rows = await database.call(database.sync.business_events, "2026-01-01", "2027-01-01", None)
    finally:
        await service.close()
        await database.close()
    got = sorted((r["kind"], r["payload"]["door"], r["payload"]["badge_ref"], r["source"]) for r in rows)
    assert got == [
        ("access.closed", "D1", "", "access.onvif"),
        ("access.forced", "D1", "", "access.onvif"),
        ("access.granted", "D1", badge_ref(service.key, BADGE), "access.onvif"),
    ]  # another door's alarm and a state reported at subscription are not door events


# ---------------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("door", "expected"),
    [
        ({"camera": "cam9"}, "access.doors[0].camera: unknown camera 'cam9' (cameras: cam1)"),
        ({"line_rule": "nope"}, "access.doors[0].line_rule: unknown rule 'nope' (line_crossing rules on cam1: "
         "door-line)"),
        ({"line_rule": "table-dwell"}, "access.doors[0].line_rule: rule 'table-dwell' is a loitering rule, not "
         "line_crossing"),
        ({"zone": "till"}, "access.doors[0].zone: camera 'cam1' has no zone 'till'"),
        ({"tailgate_window_s": 0}, "access.doors[0].tailgate_window_s: must be > 0"),
        ({"tailgate": 5}, "access.doors[0].tailgate: unknown key"),
        ({"onvif": {"token": "Door1"}}, "access.doors[0].onvif.camera: camera 'cam1' has no onvif.events"),
        ({"onvif": {"camera": "acs", "token": "Door1"}}, "access.doors[0].onvif.camera: unknown camera 'acs'"),
    ],
)  # fmt: skip
def test_config_errors_name_the_path(door: dict[str, Any], expected: str) -> None:
    doc = access_doc()
    doc["access"]["doors"][0].update(door)
    with pytest.raises(ConfigError, match=re.escape(expected)):
        parse_config(doc)


def test_config_rule_on_another_camera_and_duplicate_doors() -> None:
    doc = access_doc()
    doc["cameras"].append({"id": "cam2", "source": "rtsp://127.0.0.1/x"})
    doc["rules"][-1]["camera"] = "cam2"
    with pytest.raises(ConfigError, match=re.escape("access.doors[0].line_rule: rule 'door-line' is on camera 'cam2'")):
        parse_config(doc)
    doc = access_doc()
    doc["access"]["doors"].append(dict(doc["access"]["doors"][0]))
    with pytest.raises(ConfigError, match=re.escape("access: doors: duplicate id 'D1'")):
        parse_config(doc)
    doc = access_doc(incidents={"tailgating": "loud"})
    with pytest.raises(ConfigError, match=re.escape("access.incidents.tailgating")):
        parse_config(doc)


# ---------------------------------------------------------------------------------------------------- the app


async def _start(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def access_app(tmp_path: Path, **access: Any) -> tuple[web.Application, int]:
    """The application with the store, sinks and access contexts (no cameras, no Triton), serving plugin.web."""
    doc = access_doc(**access)
    doc["storage"] = {"path": str(tmp_path / "data")}
    port = free_port()
    doc["web"] = {"port": port, "token": TOKEN}
    app = new_app(parse_config(doc))
    app.cleanup_ctx.extend([database_ctx, auth_ctx, sinks_ctx, access_ctx])
    setup_routes(app)
    add_intake_routes(app)
    return app, port


async def test_webhook_through_the_app(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Validation answers name the bad field; good events are stored before 202; a grant posted before the video
    is analysed is judged once it is, and tailgating comes out as an incident with the door camera's evidence."""
    caplog.set_level(logging.DEBUG)
    app, port = access_app(tmp_path, wait_max_s=10)
    runner = await _start(app, port)
    url = f"http://127.0.0.1:{port}/api/access/events"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    good = {"door": "D1", "kind": "granted", "time": "2026-11-29T14:00:10+00:00", "badge": BADGE, "id": "ev-1"}
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(url, json=good) as resp:
                assert resp.status == 401
            async with http.post(url, data=b"{nope", headers=auth) as resp:
                assert resp.status == 400 and (await resp.json())["error"] == "body is not JSON"
            async with http.post(url, json={**good, "door": "D9"}, headers=auth) as resp:
                body = await resp.json()
                assert resp.status == 400 and body["rejected"] == ["body.door: unknown door 'D9' (access.doors: D1)"]
            bad = {"door": "D1", "kind": "opened", "time": "2026-11-29T14:00:10", "badge": BADGE, "pin": "1234"}
            async with http.post(url, json={"events": [good, bad]}, headers=auth) as resp:
                body = await resp.json()
                assert resp.status == 202 and body["accepted"] == 1, body
                text = " ".join(body["rejected"])
                assert "events[1].kind: Input should be 'granted'" in text
                assert "events[1].time: Input should have timezone info" in text
                assert "events[1].pin: Extra inputs are not permitted" in text and BADGE not in text
            async with http.post(url, json=[good], headers=auth) as resp:
                assert resp.status == 202 and (await resp.json())["duplicates"] == 1  # a resend by event id
            async with http.post(url, json=[], headers=auth) as resp:
                assert resp.status == 400
            # stored before the answer
            rows = await app[DATABASE].call(
                app[DATABASE].sync.business_events, "2026-01-01", "2027-01-01", "access.granted"
            )
            assert len(rows) == 1 and rows[0]["payload"]["door"] == "D1" and rows[0]["source"] == "access.webhook"
            # the door camera's video arrives: two people over the line on one badge
            cross(app[PRESENCE], 11, 31)
            cross(app[PRESENCE], 12, 32)
            feed(app[PRESENCE], 40)
            await app[ACCESS].idle(timeout_s=20)
            incidents = await app[DATABASE].call(app[DATABASE].sync.incidents)
    finally:
        await runner.cleanup()
    [inc] = incidents
    assert inc["rule_id"] == "access.tailgating" and inc["track_ids"] == [32]
    assert inc["explanation"].startswith("2 people entered through door D1 on one badge (grant at 14:00:10)")
    assert await asyncio.to_thread(Path(inc["snapshot"]).is_file)
    service = app[ACCESS]
    assert service is not None
    assert BADGE not in caplog.text and badge_ref(service.key, BADGE) in caplog.text  # logs name badges by hash only


async def test_webhook_is_404_without_an_access_section(tmp_path: Path) -> None:
    app, port = access_app(tmp_path)
    app[CONFIG] = parse_config({**access_doc(), "access": None, "storage": {"path": str(tmp_path / "d")},
                                        "web": {"port": port, "token": TOKEN}})  # fmt: skip
    runner = await _start(app, port)
    try:
        async with aiohttp.ClientSession() as http:
            post = http.post(f"http://127.0.0.1:{port}/api/access/events", json={}, headers={"Authorization":
                             f"Bearer {TOKEN}"})  # fmt: skip
            async with post as resp:
                assert resp.status == 404
    finally:
        await runner.cleanup()
