"""Nx's REST-only analytics integration through the Nx sink, against the emulator that checks every request and reply
against Nx's OpenAPI file: registration, waiting for approval (deliveries held with the reason), approval, then the
analytics events and the object tracks with their boxes on the mapped device, each once."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from components.nx_emulator import NxEmulator
from components.nx_rig import DEV1, T0_MS, cert, deliver_all, emulator, incident, nx_sink, opened_database

from adapters.sinks.nx.analytics import REGISTRATION_KEY, nx_box, track_uuid
from adapters.sinks.nx.sink import TEST_TAG
from plugin.config.loader import parse_config
from plugin.errors import ConfigError, SinkAuthError, SinkNotReady
from plugin.incidents.documents import incident_to_json
from plugin.types import Incident

pytestmark = pytest.mark.nx
__all__ = ["cert"]  # the certificate fixture, shared with the Nx sink tests

APPROVAL_POLL_S = 0.05
ANALYTICS = {"enabled": True, "integration_id": "storesight.test", "pin_code": "4711",
             "approval_poll_s": APPROVAL_POLL_S}  # fmt: skip
BOX = [0.1, 0.2, 0.4, 0.9]


async def past_the_approval_poll() -> None:
    """Wait out approval_poll_s: a sink told "waiting for approval" asks Nx again only once that long has passed
    since it last asked (a deadline on the monotonic clock, which only grows longer under load, not a race)."""
    await asyncio.sleep(APPROVAL_POLL_S * 1.2)


def incident_bookmarks(nx: NxEmulator) -> list[dict[str, Any]]:
    """The bookmarks other than `storesight vms test`'s."""
    return [b for b in nx.bookmarks.values() if TEST_TAG not in b["tags"]]


def boxed_incident() -> tuple[Incident, Incident]:
    """An incident on cam1 with two tracks and the normalised box the incident manager writes."""
    start, end = incident()
    return (
        replace(start, track_ids=(7, 9), details={"box": BOX}),
        replace(end, track_ids=(7, 9), details={"box": BOX}),
    )


@pytest.mark.parametrize("login_before_approval", [True, False])
async def test_registration_waits_for_approval_then_events_and_tracks_land_once(
    cert: tuple[Path, Path], tmp_path: Path, login_before_approval: bool
) -> None:
    start, end = boxed_incident()
    async with (
        emulator(cert, integration_login_before_approval=login_before_approval) as nx,
        opened_database(tmp_path / "db") as database,
        nx_sink(nx, cert, database, analytics=ANALYTICS) as sink,
    ):
        detail = await sink.self_test()
        assert "analytics: " in detail and "waiting for approval in Nx" in detail and "PIN 4711" in detail
        [(request_id, req)] = nx.integration_requests.items()
        assert req["pinCode"] == "4711" and req["isRestOnly"] is True and not req["isApproved"]
        assert req["integrationManifest"]["id"] == "storesight.test"
        assert req["engineManifest"]["typeLibrary"]["eventTypes"][0]["id"] == "storesight.test.incident"

        # not approved: the bookmark and generic event go out, the deliveries wait with the reason
        counts = await deliver_all(
            database, sink, [start, end], until=lambda: "waiting for approval" in (sink.health.last_error or "")
        )
        assert counts["delivered"] == 0 and counts["dead"] == 0
        assert not sink.health.ok and request_id in (sink.health.last_error or "")
        assert len(incident_bookmarks(nx)) == 1 and len(nx.events) == 1
        assert not nx.analytics_events and not nx.object_metadata and not nx.engines
        with pytest.raises(SinkNotReady, match="waiting for approval in Nx"):
            await sink.publish(start.delivery_key, incident_to_json(start))

        nx.approve()  # the administrator's click
        await past_the_approval_poll()
        counts = await deliver_all(database, sink, [])
        assert counts == {"pending": 0, "delivered": 2, "dead": 0}
        assert sink.health.ok and sink.health.last_error is None
        [engine] = nx.engines
        assert nx.device_agents == {(engine, DEV1): True}

        [objects] = nx.object_metadata
        assert objects["engineId"] == engine and objects["deviceId"] == DEV1 and objects["timestampMs"] == T0_MS
        assert [o["trackId"] for o in objects["objects"]] == [track_uuid(start.id, 7), track_uuid(start.id, 9)]
        assert {o["boundingBox"] for o in objects["objects"]} == {"0.1,0.2,0.3x0.7"}
        assert {o["typeId"] for o in objects["objects"]} == {"storesight.test.person"}
        began, ended = nx.analytics_events
        assert all(e["deviceId"] == DEV1 and e["engineId"] == engine for e in (began, ended))
        [ev1], [ev2] = began["events"], ended["events"]
        assert ev1 == {"typeId": "storesight.test.incident", "caption": "table-dwell", "description": start.explanation,
                       "isActive": True, "key": start.id, "trackId": track_uuid(start.id, 7)}  # fmt: skip
        assert ev2["isActive"] is False and ev2["key"] == start.id and ev2["description"] == end.explanation
        assert began["timestampMs"] == T0_MS and ended["timestampMs"] == T0_MS + 12_500
        # the bookmark and generic event were not written again by the retries
        assert len(incident_bookmarks(nx)) == 1 and len(nx.events) == 1 and nx.count("POST", "/bookmarks") == 2
        assert "integration approved, engine" in await sink.self_test()

        # delivered again (a retry after a lost outbox ack): nothing new in Nx
        await sink.publish(start.delivery_key, incident_to_json(start))
        assert len(nx.analytics_events) == 2 and len(nx.object_metadata) == 1
    assert len(nx.integration_requests) == 1


async def test_a_restart_reuses_the_registration_and_a_removed_request_is_made_again(
    cert: tuple[Path, Path], tmp_path: Path
) -> None:
    start, _ = boxed_incident()
    async with emulator(cert) as nx, opened_database(tmp_path / "db") as database:
        async with nx_sink(nx, cert, database, analytics=ANALYTICS) as sink:
            with pytest.raises(SinkNotReady, match="waiting for approval"):
                await sink.publish(start.delivery_key, incident_to_json(start))
        assert await database.get_ref("nvr", REGISTRATION_KEY)  # kept for the next run
        nx.approve()
        async with nx_sink(nx, cert, database, analytics=ANALYTICS) as sink:  # StoreSight restarted
            await sink.publish(start.delivery_key, incident_to_json(start))
        assert len(nx.integration_requests) == 1 and len(nx.analytics_events) == 1
        assert len(nx.bookmarks) == 1 and len(nx.events) == 1

        nx.integration_requests.clear()  # the administrator deleted it
        async with nx_sink(nx, cert, database, analytics=ANALYTICS) as sink:
            with pytest.raises(SinkNotReady, match="is gone from Nx"):
                await sink.analytics.ready()  # type: ignore[union-attr]
            await past_the_approval_poll()
            with pytest.raises(SinkNotReady, match="waiting for approval in Nx"):
                await sink.analytics.ready()  # type: ignore[union-attr]
        assert len(nx.integration_requests) == 1  # a new request


async def test_incidents_without_a_box_send_only_the_event(cert: tuple[Path, Path], tmp_path: Path) -> None:
    start, _ = incident()  # a track but no box
    async with emulator(cert) as nx, opened_database(tmp_path / "db") as database:
        async with nx_sink(nx, cert, database, analytics=ANALYTICS, bookmark=False) as sink:
            with pytest.raises(SinkNotReady):
                await sink.publish(start.delivery_key, incident_to_json(start))
            nx.approve()
            await past_the_approval_poll()
            receipt = await sink.publish(start.delivery_key, incident_to_json(start))
        assert receipt.detail == f"Nx start: generic event, analytics event on device {DEV1}"
        assert not nx.object_metadata and len(nx.analytics_events) == 1 and len(nx.events) == 1


def test_box_conversion_and_config() -> None:
    assert nx_box([0.25, 0.5, 0.75, 1.0]) == "0.25,0.5,0.5x0.5"
    assert nx_box([0.5, 0.5, 0.5, 0.6]) is None and nx_box("0,0,1,1") is None
    base = {"kind": "nx", "id": "nvr", "url": "https://nvr:7001", "username": "u", "password": "p"}
    doc = {"cameras": [{"id": "cam1", "source": "x.mp4"}], "sinks": [base]}
    [cfg] = parse_config(doc).sinks
    assert not cfg.analytics.enabled  # type: ignore[union-attr]
    for change, message in [
        ({"enabled": True}, "sinks[0].analytics.pin_code: the analytics integration needs a 4-digit pin_code"),
        ({"pin_code": "12345"}, "sinks[0].analytics.pin_code"),
        ({"integration_id": "Store Sight"}, "sinks[0].analytics.integration_id"),
    ]:
        with pytest.raises(ConfigError) as err:
            parse_config(doc | {"sinks": [base | {"analytics": change}]})
        assert message in str(err.value), str(err.value)


async def test_the_emulator_checks_analytics_requests_against_the_spec(cert: tuple[Path, Path]) -> None:
    async with NxEmulator(devices={DEV1: "Checkout 1"}, tls=cert) as nx:
        ssl_ctx = ssl.create_default_context(cafile=str(cert[0]))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_ctx)) as http:
            url = f"{nx.url}/rest/v4/analytics/integrations/*/requests"
            manifest = {"id": "a.b", "name": "n", "description": "d", "version": "1", "vendor": "v"}
            bad = {"integrationManifest": manifest, "engineManifest": {}}  # no pinCode
            async with http.post(url, json=bad) as resp:
                assert resp.status == 400 and "'pinCode' is a required property" in (await resp.json())["errorString"]
            async with http.post(url, json=bad | {"pinCode": "1234", "pin": "1"}) as resp:
                assert resp.status == 400 and "not in the spec: pin" in (await resp.json())["errorString"]
            async with http.post(url, json=bad | {"pinCode": "1234"}) as resp:
                assert resp.status == 200 and set(await resp.json()) == {"requestId", "username", "password"}
        assert len(nx.violations) == 2 and len(nx.integration_requests) == 1 and nx.response_violations == []


async def test_lost_metadata_replies_reuse_the_track_ids_and_event_key(cert: tuple[Path, Path], tmp_path: Path) -> None:
    start, end = boxed_incident()
    async with emulator(cert) as nx, opened_database(tmp_path / "db") as database:
        async with nx_sink(nx, cert, database, analytics=ANALYTICS) as sink:
            with pytest.raises(SinkNotReady, match="waiting for approval"):
                await sink.analytics.ready()  # type: ignore[union-attr]
            nx.approve()
            await past_the_approval_poll()
            nx.lose_reply(1, "POST", "/metadata/object")  # taken by Nx, the sink never hears so
            nx.lose_reply(1, "POST", "/metadata/event", how="502")
            counts = await deliver_all(database, sink, [start, end])
        assert counts == {"pending": 0, "delivered": 2, "dead": 0}
        assert all(f.remaining == 0 for f in nx.faults)
        first, second = nx.object_metadata  # the retry re-sent the same tracks: the same Nx track ids
        assert [o["trackId"] for o in first["objects"]] == [o["trackId"] for o in second["objects"]]
        keys = [(e["events"][0]["key"], e["events"][0]["isActive"]) for e in nx.analytics_events]
        assert keys == [(start.id, True), (start.id, True), (start.id, False)]  # at least once after a lost reply
        assert len(incident_bookmarks(nx)) == 1 and len(nx.events) == 1


async def test_a_refused_permission_names_the_integration_user(cert: tuple[Path, Path], tmp_path: Path) -> None:
    start, _ = boxed_incident()
    async with emulator(cert) as nx, opened_database(tmp_path / "db") as database:
        async with nx_sink(nx, cert, database, analytics=ANALYTICS) as sink:
            with pytest.raises(SinkNotReady, match="waiting for approval"):
                await sink.analytics.ready()  # type: ignore[union-attr]
            nx.approve()
            await past_the_approval_poll()
            nx.fail(1, 403, "POST", "/metadata/event")
            with pytest.raises(SinkAuthError, match="analytics integration's user 'integration-"):
                await sink.publish(start.delivery_key, incident_to_json(start))
            await sink.publish(start.delivery_key, incident_to_json(start))  # once the rights are there
        assert len(nx.object_metadata) == 1 and len(nx.analytics_events) == 1 and len(nx.events) == 1
