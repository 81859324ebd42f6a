"""StoreSight's own health as system incidents: the debounce, the explanations, the exclusion of the sink a
condition is about, taking over incidents left open by a restart; then with real components: an unreachable Triton
that comes back (a real tritonserver behind a TCP forwarder started late), a webhook that dead-letters, a storage
threshold above the real free space, /readyz and /metrics; and how each sink shows a system event (the Nx emulator
that checks every request against Nx's OpenAPI file, the Milestone emulators with the XSD, the Genetec Web SDK
emulator, a real mosquitto; ZoneMinder and Frigate skip)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import require
from helpers import WebhookReceiver

from adapters.sinks.frigate.config import FrigateSinkConfig
from adapters.sinks.frigate.sink import FrigateSink
from adapters.sinks.zoneminder.config import ZoneMinderSinkConfig
from adapters.sinks.zoneminder.sink import ZoneMinderSink
from plugin.app import build_app
from plugin.config.loader import parse_config
from plugin.config.service import StorageConfig, SystemHealthConfig
from plugin.errors import ConfigError
from plugin.incidents.database import AsyncDatabase
from plugin.incidents.documents import incident_to_json
from plugin.incidents.explain import Explainer
from plugin.incidents.manager import IncidentManager
from plugin.inference.server import EmbeddedTriton, free_port
from plugin.insights.system_health import Check, SystemHealthMonitor
from plugin.metrics import Metrics
from plugin.types import Incident
from plugin.web.keys import DATABASE, SYSTEM

T0 = datetime(2026, 11, 29, 14, 3, 5, tzinfo=UTC)
TOKEN = "system-health-token-0123456789"
WAIT_S = 20.0  # upper bound for anything to happen; with the fast settings below it takes well under a second
FAST_HEALTH = {"interval_s": 0.1, "debounce_s": 0.3}
FAST_OUTBOX = {"backoff_start_s": 0.05, "backoff_max_s": 0.2, "timeout_s": 5}
TRITON = {"url": "grpc://10.0.0.5:8001", "model": "yolox_nano", "cameras": 3, "reason": ""}


# --- the monitor on its own ------------------------------------------------------------------------------------------


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[AsyncDatabase]:
    """A fresh SQLite store."""
    s = AsyncDatabase(tmp_path / "storesight.db")
    yield s
    await s.close()


def monitor_for(
    database: AsyncDatabase, tmp_path: Path, sink_ids: tuple[str, ...] = (), debounce_s: float = 2.0
) -> SystemHealthMonitor:
    """A monitor over a real incident manager and store; its checks are fed by the test."""
    manager = IncidentManager(database, tmp_path / "evidence", Explainer("UTC"), list(sink_ids))
    return SystemHealthMonitor(
        SystemHealthConfig(debounce_s=debounce_s), StorageConfig(path=tmp_path, min_free_mb=0), "store-042",
        manager, database, {}, Metrics(),
    )  # fmt: skip


def inference(bad: bool) -> Check:
    """The inference check, failing or not."""
    return Check("inference_down", "", bad, TRITON)


@pytest.mark.parametrize(
    ("spells", "expected"),
    [
        pytest.param([], [], id="nothing-checked"),
        pytest.param([(0, True), (1, False), (2, True), (3, False)], [], id="blips-shorter-than-debounce"),
        pytest.param([(0, True), (1, True), (2, True), (3, True)], [("start", 2, 0)], id="opens-after-debounce"),
        pytest.param(
            [(0, True), (2, True), (3, False), (4, True), (5, True)], [("start", 2, 0)], id="brief-recovery-no-end"
        ),
        pytest.param(
            [(0, True), (2, True), (3, False), (4, False), (5, False), (6, False)],
            [("start", 2, 0), ("end", 5, 3)],
            id="ends-after-debounce-at-first-good",
        ),
        pytest.param([(0, False), (1, False)], [], id="healthy"),
    ],
)
async def test_debounce(
    database: AsyncDatabase, tmp_path: Path, spells: list[tuple[int, bool]], expected: list[tuple[str, int, int]]
) -> None:
    """(state, second it is stored, second it is dated) for each incident change."""
    monitor = monitor_for(database, tmp_path)
    got = []
    for second, bad in spells:
        wall = T0 + timedelta(seconds=second)
        for inc in await monitor.process([inference(bad)], float(second), wall):
            dated = inc.start if inc.state == "start" else inc.end
            assert dated is not None
            got.append((inc.state, second, int((dated - T0).total_seconds())))
    assert got == expected


async def test_each_kind_explains_itself(database: AsyncDatabase, tmp_path: Path) -> None:
    monitor = monitor_for(database, tmp_path, sink_ids=("nvr", "soc"), debounce_s=0)
    bad = [
        inference(True),
        Check("sink_dead_letters", "nvr", True,
              {"sink": "nvr", "sink_kind": "nx", "dead": 3, "last_error": "rejected: HTTP 400 bad device"}, ("nvr",)),
        Check("sink_auth_failed", "soc", True,
              {"sink": "soc", "sink_kind": "webhook", "error": "HTTP 401 denied"}, ("soc",)),
        Check("storage_low", "", True, {"path": "/var/lib/storesight", "free_mb": 812.4, "total_mb": 51200.0,
                                        "free_percent": 1.6, "threshold": "1024 MiB"}),
    ]  # fmt: skip
    opened = {i.type: i for i in await monitor.process(bad, 0.0, T0)}
    assert opened["system_inference_down"].explanation == (
        "Analytics stopped on site store-042: Triton at grpc://10.0.0.5:8001 not ready since 14:03:05 "
        "(no detections on 3 cameras)"
    )
    assert opened["system_sink_dead_letters"].explanation == (
        "Deliveries failing on site store-042: 3 to sink nvr (nx) dead-lettered since 14:03:05 (last: rejected: HTTP "
        "400 bad device); fix the sink, then retry them (storesight outbox retry -c CONFIG --sink nvr)"
    )
    assert opened["system_sink_auth_failed"].explanation == (
        "Sink soc (webhook) refuses StoreSight's credentials on site store-042 since 14:03:05: HTTP 401 denied; its "
        "deliveries are held until the config is fixed"
    )
    assert opened["system_storage_low"].explanation == (
        "Storage nearly full on site store-042: 812 MiB (1.6 %) free in /var/lib/storesight since 14:03:05, under the "
        "1024 MiB threshold; incidents and evidence stop being saved when it is full"
    )
    for inc in opened.values():
        assert (inc.camera, inc.track_ids, inc.zone, inc.details["site"]) == ("system", (), None, "store-042")
    assert opened["system_inference_down"].details["caption"] == "StoreSight analytics down"
    # each change carries what is open once it applies: a dashboard sees the whole picture in any one of them
    assert opened["system_storage_low"].details["open_conditions"] == [
        "inference_down", "sink_auth_failed:soc", "sink_dead_letters:nvr", "storage_low"
    ]  # fmt: skip

    # the sink a condition is about never hears of it; the others do
    def sinks_of(inc: Incident) -> set[str]:
        doc = database.sync.incident(inc.id)
        assert doc is not None
        return {d["sink"] for d in doc["deliveries"]}

    assert sinks_of(opened["system_sink_dead_letters"]) == {"soc"}
    assert sinks_of(opened["system_sink_auth_failed"]) == {"nvr"}
    assert sinks_of(opened["system_inference_down"]) == {"nvr", "soc"}

    good = [inference(False),
            Check("storage_low", "", False, {"path": "/var/lib/storesight", "free_mb": 5000.0, "total_mb": 51200.0,
                                             "free_percent": 9.8, "threshold": "1024 MiB"})]  # fmt: skip
    # the sink checks report nothing any more (say the sinks left the config): that clears them too
    ended = {i.type: i for i in await monitor.process(good, 130.0, T0 + timedelta(seconds=130))}
    assert set(ended) == set(opened) and all(i.id == opened[i.type].id for i in ended.values())
    assert ended["system_inference_down"].explanation == (
        "Analytics back on site store-042: Triton at grpc://10.0.0.5:8001 ready again at 14:05:15 "
        "(stopped 14:03:05-14:05:15, 130 s)"
    )
    assert ended["system_inference_down"].details["caption"] == "StoreSight analytics back"
    assert ended["system_storage_low"].explanation == (
        "Storage on site store-042 back to 5000 MiB (9.8 %) free at 14:05:15 (low since 14:03:05)"
    )
    assert ended["system_sink_dead_letters"].explanation.startswith("Deliveries to sink nvr (nx) on site store-042 ")
    assert sinks_of(ended["system_sink_dead_letters"]) == {"soc"}
    assert monitor.snapshot()["ok"] is True and monitor.snapshot()["open"] == []


async def test_a_restart_continues_the_open_incident(database: AsyncDatabase, tmp_path: Path) -> None:
    first = monitor_for(database, tmp_path, debounce_s=0)
    [opened] = await first.process([inference(True)], 0.0, T0)
    # StoreSight restarts while Triton is still down: the same incident goes on, no second "analytics down"
    second = monitor_for(database, tmp_path, debounce_s=0)
    assert await second.adopt_open() == 1
    assert await second.process([inference(True)], 100.0, T0 + timedelta(minutes=5)) == []
    assert second.snapshot()["open"][0]["incident_id"] == opened.id
    # and it ends that incident when Triton is back
    [ended] = await second.process([inference(False)], 200.0, T0 + timedelta(minutes=10))
    assert (ended.id, ended.state, ended.seq) == (opened.id, "end", 1)
    # a third start finds nothing left open
    assert await monitor_for(database, tmp_path).adopt_open() == 0


# --- in the application, with real components ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running(doc: dict[str, Any]) -> AsyncIterator[tuple[web.Application, str]]:
    """The whole application (build_app, every context) serving HTTP on a free port; it and its base URL."""
    port = free_port()
    doc = {"web": {"port": port, "token": TOKEN}, "outbox": FAST_OUTBOX, "system_health": FAST_HEALTH} | doc
    app = build_app(parse_config(doc))
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield app, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def until(done: Callable[[], Any], what: str) -> Any:
    """Poll (bounded) until `done()` is truthy; its value."""
    deadline = time.monotonic() + WAIT_S
    while not (value := done()):
        if time.monotonic() > deadline:
            raise AssertionError(f"within {WAIT_S:g} s: {what}")
        await asyncio.sleep(0.05)
    return value


def posted(hook: WebhookReceiver, type_: str, state: str | None = None) -> list[dict[str, Any]]:
    """The incidents of this type (and state) a webhook receiver accepted, in arrival order."""
    with hook.lock:
        docs = [r["body"]["incident"] for r in hook.requests]
    return [d for d in docs if d["type"] == type_ and (state is None or d["state"] == state)]


async def get_json(url: str) -> Any:
    """GET a JSON document (any status)."""
    async with aiohttp.ClientSession() as http, http.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        return await r.json()


async def metric(base: str, kind: str) -> float:
    """storesight_system_condition{kind} from /metrics."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics", headers=auth) as resp:
        text = await resp.text()
    line = next(ln for ln in text.splitlines() if ln.startswith(f'storesight_system_condition{{kind="{kind}"}}'))
    return float(line.rsplit(" ", 1)[1])


def dead_triton() -> dict[str, Any]:
    """An external Triton URL nobody listens on."""
    return {"url": f"http://127.0.0.1:{free_port()}", "request_timeout_s": 2}


@contextlib.asynccontextmanager
async def forward(port: int, target_port: int) -> AsyncIterator[None]:
    """A plain TCP forwarder 127.0.0.1:port -> 127.0.0.1:target_port (a Triton that "comes up" on `port`)."""
    handlers: set[asyncio.Task[Any]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except OSError:
            writer.close()
        finally:
            handlers.discard(task)

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        for task in list(handlers):
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


@pytest.mark.triton
async def test_inference_down_reaches_the_webhook_and_ends_when_triton_is_back(
    triton: EmbeddedTriton, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens here until the forwarder to the real Triton starts
    with WebhookReceiver() as hook:
        doc = {
            "site": {"id": "store-042"},
            "storage": {"path": str(tmp_path / "data"), "min_free_mb": 0},
            "triton": {"url": f"http://127.0.0.1:{port}", "request_timeout_s": 2},
            "sinks": [{"kind": "webhook", "id": "soc", "url": hook.url}],
        }
        async with running(doc) as (app, base):
            [opened] = await until(lambda: posted(hook, "system_inference_down", "start"), "inference_down opened")
            assert opened["camera"] == "system" and opened["track_ids"] == [] and opened["severity"] == "critical"
            assert opened["explanation"].startswith(
                f"Analytics stopped on site store-042: Triton at http://127.0.0.1:{port} not ready since "
            )
            ready = await get_json(f"{base}/readyz")
            assert ready["ready"] is False and ready["system"]["ok"] is False
            [condition] = ready["system"]["open"]
            assert (condition["kind"], condition["incident_id"]) == ("inference_down", opened["id"])
            assert await metric(base, "inference_down") == 1.0

            async with forward(port, triton.http_port):
                [ended] = await until(lambda: posted(hook, "system_inference_down", "end"), "inference_down ended")
                assert ended["id"] == opened["id"] and ended["seq"] == 1
                assert ended["explanation"].startswith("Analytics back on site store-042: Triton at ")
                assert ended["details"]["open_conditions"] == []
                ready = await get_json(f"{base}/readyz")
                assert ready["triton"]["ready"] is True and ready["system"]["ok"] is True
                assert await metric(base, "inference_down") == 0.0
                await asyncio.sleep(0.5)  # nothing more: one start, one end
                assert len(posted(hook, "system_inference_down")) == 2
                assert app[SYSTEM] is not None and app[SYSTEM].error is None


async def test_a_dead_lettering_sink_is_reported_to_the_others_only(tmp_path: Path) -> None:
    with WebhookReceiver() as good, WebhookReceiver(status=400) as bad:
        doc = {
            "storage": {"path": str(tmp_path / "data"), "min_free_mb": 0},
            "triton": dead_triton(),
            "sinks": [{"kind": "webhook", "id": "good", "url": good.url},
                      {"kind": "webhook", "id": "bad", "url": bad.url}],
        }  # fmt: skip
        async with running(doc) as (app, base):
            # analytics down reaches both; "bad" rejects it (400): a dead letter, so its condition opens
            [opened] = await until(lambda: posted(good, "system_sink_dead_letters", "start"), "dead letters reported")
            assert opened["details"]["sink"] == "bad" and opened["details"]["dead"] >= 1
            assert "HTTP 400" in opened["explanation"] and "--sink bad" in opened["explanation"]
            doc_ = await app[DATABASE].call(app[DATABASE].sync.incident, opened["id"])
            assert {d["sink"] for d in doc_["deliveries"]} == {"good"}  # never queued for the sink it is about
            ready = await get_json(f"{base}/readyz")
            assert "sink_dead_letters" in {c["kind"] for c in ready["system"]["open"]}
            assert await metric(base, "sink_dead_letters") == 1.0

            # the receiver is fixed and the dead letters retried by hand: the condition ends, again only at "good"
            bad.status = 200
            async with aiohttp.ClientSession() as http:
                auth = {"Authorization": f"Bearer {TOKEN}"}
                async with http.post(f"{base}/api/outbox/retry", json={"sink": "bad"}, headers=auth) as resp:
                    assert (await resp.json())["requeued"] >= 1
            [ended] = await until(lambda: posted(good, "system_sink_dead_letters", "end"), "dead letters cleared")
            assert ended["id"] == opened["id"]
            await until(lambda: posted(bad, "system_inference_down", "start"), "the retried dead letter delivered")
            await asyncio.sleep(0.5)
        assert posted(bad, "system_sink_dead_letters") == []
        assert len(posted(good, "system_sink_dead_letters")) == 2  # one start, one end: no storm


async def test_storage_low_in_the_vms_readyz_and_metrics(tmp_path: Path) -> None:
    with WebhookReceiver() as hook:
        doc = {
            "site": {"id": "store-042"},
            # a threshold above the real free space: the condition holds on this machine as it is
            "storage": {"path": str(tmp_path / "data"), "min_free_mb": 10**9},
            "triton": dead_triton(),
            "sinks": [{"kind": "webhook", "id": "soc", "url": hook.url}],
        }
        async with running(doc) as (_, base):
            [opened] = await until(lambda: posted(hook, "system_storage_low", "start"), "storage_low opened")
            assert opened["explanation"].startswith("Storage nearly full on site store-042: ")
            assert "under the 1000000000 MiB threshold" in opened["explanation"]
            assert opened["details"]["free_mb"] > 0 and opened["severity"] == "warning"
            ready = await get_json(f"{base}/readyz")
            kinds = {c["kind"] for c in ready["system"]["open"]}
            assert {"storage_low", "inference_down"} <= kinds
            assert ready["system"]["error"] is None and ready["system"]["last_check"]
            assert await metric(base, "storage_low") == 1.0
            assert await metric(base, "sink_auth_failed") == 0.0
            stored = await get_json(f"{base}/api/incidents?camera=system")
            assert {i["type"] for i in stored} >= {"system_storage_low", "system_inference_down"}


async def test_the_monitor_can_be_turned_off(tmp_path: Path) -> None:
    doc = {"storage": {"path": str(tmp_path / "data")}, "triton": dead_triton(), "system_health": {"enabled": False}}
    async with running(doc) as (app, base):
        assert app[SYSTEM] is None
        assert (await get_json(f"{base}/readyz"))["system"] is None


def test_config_fields_and_the_reserved_camera_id() -> None:
    with pytest.raises(ConfigError, match=r"cameras\[0\]\.id: 'system' is reserved"):
        parse_config({"cameras": [{"id": "system", "source": "x.mp4"}]})
    with pytest.raises(ConfigError, match=r"storage\.min_free_percent: must be < 100"):
        parse_config({"storage": {"min_free_percent": 100}})
    with pytest.raises(ConfigError, match=r"system_health\.interval_s: must be > 0"):
        parse_config({"system_health": {"interval_s": 0}})
    defaults = parse_config({})
    assert (defaults.storage.min_free_mb, defaults.system_health.debounce_s) == (1024, 15)


# --- what each sink makes of a system incident ----------------------------------------------------------------------


async def system_pair(database: AsyncDatabase, tmp_path: Path) -> tuple[Incident, Incident]:
    """A real system_inference_down start and its end, made by the monitor from its checks."""
    monitor = monitor_for(database, tmp_path, debounce_s=0)
    [opened] = await monitor.process([inference(True)], 0.0, T0)
    [ended] = await monitor.process([inference(False)], 60.0, T0 + timedelta(seconds=60))
    return opened, ended


@pytest.mark.nx
async def test_nx_gets_a_generic_event_without_a_device(database: AsyncDatabase, tmp_path: Path) -> None:
    from components.nx_emulator import NxEmulator, nx_emulator_available

    from adapters.sinks.nx.config import NxSinkConfig
    from adapters.sinks.nx.sink import NxSink
    from plugin.errors import SinkNotReady

    require(nx_emulator_available())
    async with NxEmulator(devices={"3a4ad4ea-9269-4b1f-a7aa-2cec537d0248": "Checkout 1"}) as nx:
        # in the application: analytics down (Triton unreachable) reaches Nx as a site-wide generic event
        doc = {
            "site": {"id": "store-042"},
            "storage": {"path": str(tmp_path / "data"), "min_free_mb": 0},
            "triton": dead_triton(),
            "sinks": [{"kind": "nx", "id": "nvr", "url": nx.url, "username": nx.username, "password": nx.password}],
        }
        async with running(doc):
            [event] = await until(lambda: list(nx.events), "a generic event in Nx")
        assert "deviceIds" not in event and event["state"] == "instant"
        assert (event["source"], event["caption"]) == ("StoreSight", "StoreSight analytics down")
        assert event["description"].startswith("Analytics stopped on site store-042: Triton at http://127.0.0.1:")
        assert nx.count("POST", "/bookmarks") == 0  # a bookmark needs a device

        # the sink on its own: start and end, and a lost reply that must not make a second event
        opened, ended = await system_pair(database, tmp_path)
        config = NxSinkConfig.model_validate(
            {"kind": "nx", "id": "nvr2", "url": nx.url, "username": nx.username, "password": nx.password}
        )
        sink = NxSink(config, database)
        try:
            nx.lose_reply(1, "POST", "/events/generic")
            with pytest.raises(SinkNotReady):
                await sink.publish(opened.delivery_key, incident_to_json(opened))
            receipt = await sink.publish(opened.delivery_key, incident_to_json(opened))
            assert "found in the event log" in receipt.detail
            await sink.publish(ended.delivery_key, incident_to_json(ended))
            again = await sink.publish(ended.delivery_key, incident_to_json(ended))
            assert "sent before" in again.detail
        finally:
            await sink.close()
        mine = [e for e in nx.events if opened.id in e["description"]]
        assert [e["caption"] for e in mine] == ["StoreSight analytics down", "StoreSight analytics back"]
        assert ended.end is not None and mine[1]["timestampMs"] == int(ended.end.timestamp() * 1000)
    assert nx.violations == [] and nx.response_violations == []


@pytest.mark.milestone
async def test_milestone_raises_an_alarm_and_events_without_a_camera(
    database: AsyncDatabase, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from components.milestone_emulator import AnalyticsEventServer, GenericEventServer, XProtectEmulator, xsd_available

    from adapters.sinks.milestone.config import MilestoneSinkConfig
    from adapters.sinks.milestone.sink import MilestoneSink

    require(xsd_available())
    server_room = "068680AB-5350-4AC7-A47E-652300B16252"
    async with (
        XProtectEmulator(password="Correct-Horse-7", cameras={server_room.lower(): "Server room"}) as emu,
        AnalyticsEventServer() as analytics,
        GenericEventServer() as generic,
    ):
        opened, ended = await system_pair(database, tmp_path)
        for source in (None, server_room):
            config = MilestoneSinkConfig.model_validate({
                "kind": "milestone", "id": f"xp-{source}", "url": emu.url, "username": "storesight",
                "password": "Correct-Horse-7", "mode": ["bookmark", "alarm", "analytics_event", "generic_event"],
                "event_server_host": "127.0.0.1", "analytics_event_port": analytics.port,
                "generic_event_port": generic.port, "system_source": source, "timeout_s": 5,
            })  # fmt: skip
            sink = MilestoneSink(config, database)
            try:
                with caplog.at_level(logging.WARNING):
                    for inc in (opened, ended):
                        await sink.publish(inc.delivery_key, incident_to_json(inc))
            finally:
                await sink.close()
        assert emu.bookmarks == {}
        alarms = list(emu.alarms.values())
        assert [a["name"] for a in alarms] == ["StoreSight analytics down"] * 2  # on the start only, per sink
        assert "source" not in alarms[0] and alarms[1]["source"] == server_room
        assert alarms[0]["message"].startswith("Analytics stopped on site store-042")
        assert analytics.invalid == [] and len(analytics.valid) == 4
        ns = "{urn:milestone-systems}"
        doc = analytics.valid[0]
        assert doc.findtext(f"{ns}EventHeader/{ns}Source/{ns}Name") == "StoreSight"
        assert doc.find(f"{ns}ReferenceList") is None
        assert generic.strings[0] == f"StoreSight|system_inference_down|start|system|system_inference_down|{opened.id}"
    assert sum("no bookmark" in r.getMessage() for r in caplog.records) == 2  # once per sink, not per incident


@pytest.mark.genetec
async def test_genetec_raises_the_system_custom_event_without_a_camera(database: AsyncDatabase, tmp_path: Path) -> None:
    from components.genetec_emulator import DEMO_APP_ID, GenetecEmulator

    from adapters.sinks.genetec.config import GenetecSinkConfig
    from adapters.sinks.genetec.sink import GenetecSink

    opened, ended = await system_pair(database, tmp_path)
    async with GenetecEmulator(cameras={"5c2b5a0e-8d7f-4c3e-9a1b-0f6e2d4c8a10": "Checkout 1"},
                               custom_event_ids={5001, 9001}) as sc:  # fmt: skip
        base = {"kind": "genetec", "url": sc.url, "username": sc.username, "password": sc.password,
                "application_id": DEMO_APP_ID, "cameras": {"cam1": "5c2b5a0e-8d7f-4c3e-9a1b-0f6e2d4c8a10"}}  # fmt: skip
        told = GenetecSink(
            GenetecSinkConfig.model_validate(base | {"id": "sc", "system_custom_event_id": 9001}), database
        )
        silent = GenetecSink(GenetecSinkConfig.model_validate(base | {"id": "sc2"}), database)
        try:
            for inc in (opened, ended):
                await told.publish(inc.delivery_key, incident_to_json(inc))
                receipt = await silent.publish(inc.delivery_key, incident_to_json(inc))
                assert "skipped" in receipt.detail
            again = await told.publish(opened.delivery_key, incident_to_json(opened))
            assert "done before" in again.detail
        finally:
            await told.close()
            await silent.close()
        assert sc.custom_events == [{"id": 9001, "entity": None, "message": None}]
        assert sc.bookmarks == []
    assert sc.violations == []


async def test_zoneminder_and_frigate_skip_system_incidents_without_a_request(
    database: AsyncDatabase, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    opened, ended = await system_pair(database, tmp_path)
    nowhere = f"http://127.0.0.1:{free_port()}"  # any request would fail: none may be made
    zm = ZoneMinderSink(ZoneMinderSinkConfig.model_validate(
        {"kind": "zoneminder", "id": "zm", "url": f"{nowhere}/zm", "cameras": {"cam1": "1"}}), database)  # fmt: skip
    frigate = FrigateSink(FrigateSinkConfig.model_validate(
        {"kind": "frigate", "id": "fr", "url": nowhere, "cameras": {"cam1": "front"}}), database)  # fmt: skip
    try:
        with caplog.at_level(logging.INFO):
            for inc in (opened, ended):
                assert "skipped" in (await zm.publish(inc.delivery_key, incident_to_json(inc))).detail
                assert "skipped" in (await frigate.publish(inc.delivery_key, incident_to_json(inc))).detail
    finally:
        await zm.close()
        await frigate.close()
    said = [r.getMessage() for r in caplog.records if "no system events" in r.getMessage()]
    assert len(said) == 2  # once each


@pytest.fixture(scope="module")
def broker() -> Iterator[Any]:
    """A real mosquitto for the MQTT test."""
    from components.mqtt import mosquitto_available, start_mosquitto

    require(mosquitto_available())
    with start_mosquitto() as b:
        yield b


@pytest.mark.mqtt
async def test_mqtt_keeps_the_system_state_retained(broker: Any, database: AsyncDatabase, tmp_path: Path) -> None:
    import aiomqtt

    from adapters.sinks.mqtt import MqttSink, MqttSinkConfig

    async def retained() -> dict[str, Any]:
        """What a dashboard subscribing now gets on {prefix}/system/state."""
        async with aiomqtt.Client("127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5, timeout=5) as c:
            await c.subscribe("sh/store-042/system/state", qos=1)
            async with asyncio.timeout(5):
                async for message in c.messages:
                    assert message.retain is True and isinstance(message.payload, bytes)
                    parsed: dict[str, Any] = json.loads(message.payload)
                    return parsed
        raise AssertionError("no retained system state")

    opened, ended = await system_pair(database, tmp_path)
    sink = MqttSink(MqttSinkConfig.model_validate(
        {"kind": "mqtt", "id": "mq", "port": broker.port, "topic_prefix": "sh/store-042", "timeout_s": 5}))  # fmt: skip
    try:
        receipt = await sink.publish(opened.delivery_key, incident_to_json(opened))
        assert receipt.detail == "MQTT sh/store-042/incidents/system/system_inference_down"
        state = await retained()
        assert (state["ok"], state["open"], state["id"], state["state"]) == (False, ["inference_down"], opened.id,
                                                                            "start")  # fmt: skip
        assert state["explanation"] == opened.explanation
        await sink.publish(ended.delivery_key, incident_to_json(ended))
        state = await retained()
        assert (state["ok"], state["open"], state["state"]) == (True, [], "end")
    finally:
        await sink.close()
