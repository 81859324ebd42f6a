"""Nx Witness sink against an emulator that checks every request against Nx's own OpenAPI file (REST v4), over TLS
with its own CA: bookmarks and generic events, lost replies and retries through the real outbox, session expiry,
wrong credentials, outages, the camera map, the self-test; plus the config and the emulator's own strictness."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pytest
from components.nx_emulator import NxEmulator
from components.nx_rig import (
    DEV1,
    DEV2,
    DEVICES,
    PASSWORD,
    T0_MS,
    UNKNOWN_DEV,
    cert,  # noqa: F401 - a fixture: pytest finds it by the tests' parameter name
    deliver_all,
    emulator,
    incident,
    nx_config,
    nx_sink,
    opened_database,
)

from adapters.sinks.nx import SPEC
from adapters.sinks.nx.api import MARKER_PREFIX
from adapters.sinks.nx.config import NxSinkConfig
from adapters.sinks.nx.sink import TEST_TAG, NxSink
from plugin.app import build_sink
from plugin.config.loader import parse_config
from plugin.errors import ConfigError, SinkAuthError, SinkNotReady, SinkRejected
from plugin.incidents.database import AsyncDatabase
from plugin.incidents.documents import incident_to_json
from plugin.types import Incident

pytestmark = pytest.mark.nx


def assert_one_bookmark_and_event(nx: NxEmulator, start: Incident, end: Incident) -> None:
    """Exactly one bookmark with the end's text and length, and one generic event, both on DEV1."""
    assert len(nx.bookmarks) == 1, nx.bookmarks
    [bm] = nx.bookmarks.values()
    assert bm["deviceId"] == DEV1
    assert bm["name"] == "StoreSight: table-dwell"
    assert bm["description"] == end.explanation
    assert bm["startTimeMs"] == T0_MS and bm["durationMs"] == 12_500
    assert bm["tags"] == ["storesight", "table-dwell", f"{MARKER_PREFIX}{start.id}"]
    assert len(nx.events) == 1, nx.events
    [ev] = nx.events
    assert ev["deviceIds"] == [DEV1] and ev["state"] == "instant" and ev["timestamp"] == str(T0_MS)
    assert ev["source"] == "StoreSight" and ev["caption"] == "StoreSight: table-dwell"
    assert ev["description"] == f"{start.explanation} (incident {start.id})"


async def test_start_and_end_make_one_bookmark_and_one_generic_event(cert: tuple[Path, Path], tmp_path: Path) -> None:
    start, end = incident()
    async with emulator(cert) as nx, opened_database(tmp_path / "db") as database, nx_sink(nx, cert, database) as sink:
        counts = await deliver_all(database, sink, [start, end])
        assert counts == {"pending": 0, "delivered": 2, "dead": 0}
        assert_one_bookmark_and_event(nx, start, end)
        # a first attempt needs no lookup; the end finds the bookmark through its stored reference
        assert nx.count("GET", "/bookmarks") == 0 and nx.count("PATCH", "/bookmarks/") == 1
        assert nx.logins == 1
        [delivered] = [
            d
            for d in await database.call(database.sync.deliveries, "delivered")
            if d["delivery_key"].endswith(":start:0")
        ]
        assert "bookmark" in delivered["receipt"] and "generic event" in delivered["receipt"]
    assert nx.count("DELETE", "/login/sessions/-") == 1 and not nx.sessions  # close() logged out


@pytest.mark.parametrize("how", ["disconnect", "502"])
async def test_a_lost_bookmark_reply_and_the_outbox_retry_make_no_duplicate(
    cert: tuple[Path, Path], tmp_path: Path, how: Literal["disconnect", "502"]
) -> None:
    start, end = incident()
    async with emulator(cert) as nx, opened_database(tmp_path / "db") as database, nx_sink(nx, cert, database) as sink:
        nx.lose_reply(1, "POST", "/bookmarks", how=how)  # stored in Nx, but the sink never hears so
        counts = await deliver_all(database, sink, [start, end])
        assert counts == {"pending": 0, "delivered": 2, "dead": 0}
        assert_one_bookmark_and_event(nx, start, end)
        assert nx.count("POST", "/bookmarks") == 1  # the retry looked it up instead of creating it again
        assert nx.count("GET", "/bookmarks") == 1


async def test_a_lost_generic_event_reply_is_not_sent_twice(cert: tuple[Path, Path], tmp_path: Path) -> None:
    start, end = incident()
    async with emulator(cert) as nx, opened_database(tmp_path / "db") as database, nx_sink(nx, cert, database) as sink:
        nx.lose_reply(1, "POST", "/events/generic")
        counts = await deliver_all(database, sink, [start, end])
        assert counts == {"pending": 0, "delivered": 2, "dead": 0}
        assert_one_bookmark_and_event(nx, start, end)
        assert nx.count("GET", "/events/log") == 1 and nx.count("POST", "/bookmarks") == 1


async def test_an_end_without_a_stored_reference_finds_the_bookmark_by_its_marker(
    cert: tuple[Path, Path], tmp_path: Path
) -> None:
    start, end = incident()
    async with emulator(cert, wrap_lists=True) as nx:  # and list replies as {"reply": [...]}
        async with opened_database(tmp_path / "a") as first, nx_sink(nx, cert, first) as sink:
            await sink.publish(start.delivery_key, incident_to_json(start))
        async with opened_database(tmp_path / "b") as empty, nx_sink(nx, cert, empty) as sink:
            receipt = await sink.publish(end.delivery_key, incident_to_json(end))
        assert_one_bookmark_and_event(nx, start, end)
        assert nx.count("GET", "/bookmarks") == 1 and receipt.detail.startswith("Nx end: bookmark ")
        # an end whose start never reached Nx: one bookmark of the full length, no event
        _, end2 = incident("cam2", n=2)
        async with opened_database(tmp_path / "c") as database, nx_sink(nx, cert, database) as sink:
            await sink.publish(end2.delivery_key, incident_to_json(end2))
            await sink.publish(end2.delivery_key, incident_to_json(end2))  # delivered twice: still one
        [bm2] = [b for b in nx.bookmarks.values() if b["deviceId"] == DEV2]
        assert bm2["durationMs"] == 12_500 and bm2["description"] == end2.explanation
        assert len(nx.events) == 1


async def test_the_session_is_renewed_before_it_expires(cert: tuple[Path, Path], tmp_path: Path) -> None:
    start, end = incident()
    async with emulator(cert, token_lifetime_s=1) as nx, opened_database(tmp_path / "db") as database:
        async with nx_sink(nx, cert, database) as sink:
            await sink.publish(start.delivery_key, incident_to_json(start))
            await asyncio.sleep(0.9)  # past 80 % of the 1 s session
            await sink.publish(end.delivery_key, incident_to_json(end))
        assert nx.logins == 2 and not [s for s in nx.seen if s.status == 401]  # renewed before Nx refused it
        assert_one_bookmark_and_event(nx, start, end)


async def test_a_session_that_expired_on_the_server_logs_in_again_once(cert: tuple[Path, Path], tmp_path: Path) -> None:
    start, end = incident()
    async with emulator(cert) as nx, opened_database(tmp_path / "db") as database, nx_sink(nx, cert, database) as sink:
        await sink.publish(start.delivery_key, incident_to_json(start))
        nx.expire_sessions()  # e.g. the server restarted
        await sink.publish(end.delivery_key, incident_to_json(end))
        assert nx.logins == 2 and nx.count("PATCH", "/bookmarks/", 401) == 1
        assert_one_bookmark_and_event(nx, start, end)


async def test_a_second_401_right_after_a_fresh_login_is_an_auth_error(cert: tuple[Path, Path], tmp_path: Path) -> None:
    start, _ = incident()
    async with emulator(cert) as nx, opened_database(tmp_path / "db") as database, nx_sink(nx, cert, database) as sink:
        nx.reject_all_tokens = True
        with pytest.raises(SinkAuthError, match="HTTP 401 again right after a fresh login"):
            await sink.publish(start.delivery_key, incident_to_json(start))
        assert nx.logins == 2 and not nx.bookmarks


async def test_wrong_password_is_an_auth_error_held_by_the_outbox_and_never_logged(
    cert: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    start, end = incident()
    async with emulator(cert) as nx, opened_database(tmp_path / "db") as database:
        async with nx_sink(nx, cert, database, password="hunter2-wrong") as sink:
            with pytest.raises(SinkAuthError, match="login as 'storesight' refused") as err:
                await sink.publish(start.delivery_key, incident_to_json(start))
            assert "hunter2" not in str(err.value)
            counts = await deliver_all(database, sink, [start, end], until=lambda: sink.health.auth_failed)
            await asyncio.sleep(0.3)  # time for retries that must not happen
            counts = (await database.call(database.sync.outbox_counts))[sink.id]
            assert sink.health.auth_failed and nx.logins == 2 and counts == {"pending": 2, "delivered": 0, "dead": 0}
        assert not nx.bookmarks and not nx.events
        # and a session that works leaves neither the password nor its token in the log
        async with nx_sink(nx, cert, database) as good:
            await good.publish(start.delivery_key, incident_to_json(start))
        tokens = {s.authorized_with for s in nx.seen if s.authorized_with}
        assert tokens
    assert "hunter2" not in caplog.text and PASSWORD not in caplog.text
    assert not any(t in caplog.text for t in tokens if t)


async def test_outages_and_timeouts_are_retried_by_the_outbox_until_delivered(
    cert: tuple[Path, Path], tmp_path: Path
) -> None:
    start, end = incident()
    async with emulator(cert) as nx, opened_database(tmp_path / "db") as database:
        async with nx_sink(nx, cert, database, timeout_s=0.3) as sink:
            nx.fail(1, 500, "POST", "/login/sessions")
            nx.fail(2, 503, "POST", "/bookmarks")
            nx.hang(1, "POST", "/events/generic")  # answered only after the sink gave up
            nx.fail(1, 502, "PATCH", "/bookmarks/")
            counts = await deliver_all(database, sink, [start, end])
            assert counts == {"pending": 0, "delivered": 2, "dead": 0}
        assert_one_bookmark_and_event(nx, start, end)
        assert all(f.remaining == 0 for f in nx.faults)
        dead_or_done = await database.call(database.sync.deliveries, "delivered")
        assert max(d["attempts"] for d in dead_or_done) >= 4  # 500, 503, 503, hang for the start


async def test_an_unreachable_server_is_not_ready(cert: tuple[Path, Path], tmp_path: Path) -> None:
    start, _ = incident()
    async with emulator(cert) as nx:
        url = nx.url
    async with opened_database(tmp_path / "db") as database:
        sink = NxSink(nx_config(nx, cert, url=url), database)
        try:
            with pytest.raises(SinkNotReady, match="login/sessions"):
                await sink.publish(start.delivery_key, incident_to_json(start))
        finally:
            await sink.close()


async def test_an_unmapped_camera_is_rejected_with_a_clear_message(cert: tuple[Path, Path], tmp_path: Path) -> None:
    start, _ = incident(camera="cam9")
    async with emulator(cert) as nx, opened_database(tmp_path / "db") as database, nx_sink(nx, cert, database) as sink:
        with pytest.raises(SinkRejected, match=r"camera 'cam9' has no Nx device in sink 'nvr' \(add `cam9: <Nx"):
            await sink.publish(start.delivery_key, incident_to_json(start))
        assert nx.seen == []  # refused before anything was sent


async def test_a_device_unknown_to_nx_is_a_rejection(cert: tuple[Path, Path], tmp_path: Path) -> None:
    start, _ = incident()
    async with (
        emulator(cert) as nx,
        opened_database(tmp_path / "db") as database,
        nx_sink(nx, cert, database, cameras={"cam1": UNKNOWN_DEV}) as sink,
    ):
        with pytest.raises(SinkRejected, match=f"create the bookmark .* on device {UNKNOWN_DEV}: HTTP 404"):
            await sink.publish(start.delivery_key, incident_to_json(start))


async def test_self_test_checks_the_camera_map_and_writes_a_test_bookmark(
    cert: tuple[Path, Path], tmp_path: Path
) -> None:
    async with emulator(cert) as nx, opened_database(tmp_path / "db") as database:
        async with nx_sink(nx, cert, database, cameras={"cam1": DEV1, "cam2": UNKNOWN_DEV.upper()}) as sink:
            with pytest.raises(SinkRejected, match=f"unknown Nx device ids: cam2 -> {UNKNOWN_DEV} .*Checkout 1"):
                await sink.self_test()
        assert not nx.bookmarks and not nx.events
        async with nx_sink(nx, cert, database) as sink:
            detail = await sink.self_test()
        [bm] = nx.bookmarks.values()
        assert bm["tags"] == [TEST_TAG] and "connection test" in bm["name"] and bm["deviceId"] == DEV1
        assert f"2 mapped device(s) found; wrote a test bookmark {bm['id']}" in detail and not nx.events
        async with nx_sink(nx, cert, database, bookmark=False) as sink:  # events only: the test writes an event
            assert "test generic event" in await sink.self_test()
        assert len(nx.events) == 1 and len(nx.bookmarks) == 1


async def test_an_untrusted_certificate_is_an_auth_error_naming_ca_bundle(
    cert: tuple[Path, Path], tmp_path: Path
) -> None:
    start, _ = incident()
    async with emulator(cert) as nx, opened_database(tmp_path / "db") as database:
        async with nx_sink(nx, cert, database, ca_bundle=None) as sink:
            with pytest.raises(SinkAuthError, match=r"not trusted .* set ca_bundle"):
                await sink.publish(start.delivery_key, incident_to_json(start))
        assert nx.seen == []  # the TLS handshake failed: no request reached the server


async def test_the_emulator_rejects_what_the_spec_does_not_allow(cert: tuple[Path, Path]) -> None:
    async with NxEmulator(devices=dict(DEVICES), password=PASSWORD, tls=cert) as nx:
        ssl_ctx = __import__("ssl").create_default_context(cafile=str(cert[0]))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_ctx)) as http:
            login = {"username": "storesight", "password": PASSWORD}
            async with http.post(f"{nx.url}/rest/v4/login/sessions", json=login) as resp:
                assert resp.status == 200
                auth = {"Authorization": f"Bearer {(await resp.json())['token']}"}
            url = f"{nx.url}/rest/v4/devices/{DEV1}/bookmarks"
            not_uuid = f"{nx.url}/rest/v4/devices/cam1/bookmarks"
            cases: list[tuple[str, str, dict[str, Any] | None, int, str]] = [
                ("POST", url, {"name": "no length", "startTimeMs": T0_MS}, 400, "'durationMs' is a required property"),
                ("POST", url, {"name": "typo", "durationMs": 1, "startTimeMS": 0}, 400, "not in the spec: startTimeMS"),
                ("POST", not_uuid, {"name": "x", "durationMs": 1}, 400, "not a 'uuid'"),
                ("POST", f"{nx.url}/rest/v4/events/generic", {"state": "begun"}, 400, "'begun' is not one of"),
                ("GET", f"{url}?limit=many", None, 400, "limit"),
                ("PUT", f"{nx.url}/rest/v4/events/generic", {}, 404, "no such operation"),
                ("GET", f"{nx.url}/rest/v4/no/such/path", None, 404, "no such operation"),
            ]  # fmt: skip
            for method, target, body, status, text in cases:
                async with http.request(method, target, json=body, headers=auth) as resp:
                    assert resp.status == status, (method, target, body)
                    assert text in (await resp.json())["errorString"]
            assert len(nx.violations) == len(cases) and not nx.bookmarks and not nx.events
            async with http.post(url, json={"name": "fine", "durationMs": 1000}, headers=auth) as resp:
                assert resp.status == 200  # and a well-formed one passes
        assert len(nx.violations) == len(cases) and len(nx.bookmarks) == 1 and nx.response_violations == []


def test_config_names_bad_fields_and_build_sink_picks_nx(tmp_path: Path) -> None:
    base = {"kind": "nx", "id": "nvr", "url": "https://nvr.store.lan:7001", "username": "storesight",
            "password": "pw", "cameras": {"cam1": "{" + DEV1.upper() + "}"}}  # fmt: skip
    doc = {"cameras": [{"id": "cam1", "source": "x.mp4"}], "sinks": [base]}
    cfg = parse_config(doc)
    [sink_cfg] = cfg.sinks
    assert isinstance(sink_cfg, NxSinkConfig) and sink_cfg.cameras == {"cam1": DEV1}  # braces and case normalised
    assert sink_cfg.verify_tls and sink_cfg.bookmark and sink_cfg.generic_event and sink_cfg.tags == ["storesight"]
    sink = build_sink(sink_cfg, AsyncDatabase(tmp_path / "refs.db"))
    assert isinstance(sink, NxSink) and sink.kind == SPEC.key == "nx"
    assert "pw" not in repr(sink_cfg)
    bad = [
        ({"cameras": {"cam1": "Checkout 1"}}, "config: sinks[0].cameras.cam1: 'Checkout 1' is not an Nx device id"),
        ({"url": "https://nvr:7001/rest/v4"}, "config: sinks[0].url: does not match"),
        ({"bookmark": False, "generic_event": False}, "config: sinks[0].generic_event: bookmark and generic_event"),
        ({"password": None}, "config: sinks[0].password"),
        ({"tags": [""]}, "config: sinks[0].tags[0]"),
        ({"cameras": {"cam7": DEV1}}, "config: sinks[0].cameras.cam7: unknown camera 'cam7'"),
    ]
    for change, message in bad:
        with pytest.raises(ConfigError) as err:
            parse_config(doc | {"sinks": [base | change]})
        assert message in str(err.value), str(err.value)
