"""ONVIF cameras against a real device: ipycam (a third-party virtual IP camera with ONVIF and RTSP) bound to
127.0.0.1 with its WS-Discovery replaced by a no-op (tests/components/onvif_device.py). Profile choice and URI
handling are table-tested without a device."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from components.onvif_device import MAIN, SUB, OnvifDevice, onvif_device_available, start_onvif_device
from conftest import require
from helpers import example, run_cli

from adapters.cameras.onvif.device import (
    WSDL_DIR,
    OnvifProfile,
    pick_analysis_profile,
    pick_evidence_profile,
    probe,
    with_credentials,
)
from adapters.cameras.onvif.source import OnvifSource
from plugin.app import build_app
from plugin.config.cameras import OnvifConfig
from plugin.config.loader import load_config, parse_config
from plugin.errors import CameraAuthError, SourceError
from plugin.inference.server import EmbeddedTriton, free_port
from plugin.pipeline.supervisor import RESTART_START_S
from plugin.web.keys import CAMERAS

USER = "admin"
PASSWORD = "Ipy-s3cret-pw"  # distinctive, so a leak into a message is found by a substring test
MEDIA_NS = "http://www.onvif.org/ver10/media/wsdl"
onvif = pytest.mark.onvif


def _device(**kwargs: Any) -> Iterator[OnvifDevice]:
    require(onvif_device_available())
    with start_onvif_device(**kwargs) as device:
        yield device
    # the child refuses multicast at the socket level: a refusal logged here means ipycam tried
    assert "forbidden" not in device.stderr(), device.stderr()


@pytest.fixture(scope="module")
def open_device() -> Iterator[OnvifDevice]:
    """ipycam without credentials."""
    yield from _device()


@pytest.fixture(scope="module")
def locked_device() -> Iterator[OnvifDevice]:
    """ipycam that requires USER / PASSWORD (WS-Security UsernameToken)."""
    yield from _device(username=USER, password=PASSWORD)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- against the real device ----------------------------------------------------------------------------------


@onvif
@pytest.mark.parametrize("locked", [False, True], ids=["open", "with-credentials"])
async def test_probe_finds_device_profiles_and_streams(
    locked: bool, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    device: OnvifDevice = request.getfixturevalue("locked_device" if locked else "open_device")
    user, password = (USER, PASSWORD) if locked else (None, None)
    found = await probe(device.host, device.port, user, password, timeout_s=10)

    assert (found.manufacturer, found.model, found.serial) == ("PythonCam", "VirtualCam-1", "PY-000001")
    assert found.firmware == "1.3.0"
    assert MEDIA_NS in found.services  # from GetServices
    rtsp = f"rtsp://127.0.0.1:{device.rtsp_port}"
    main, sub = found.profiles
    assert (main.token, main.encoding, main.width, main.height) == ("Profile_Main", "H264", *MAIN)
    assert (sub.token, sub.encoding, sub.width, sub.height) == ("Profile_Sub", "H264", *SUB)
    assert (main.stream_uri, sub.stream_uri) == (f"{rtsp}/video_main", f"{rtsp}/video_sub")
    assert main.snapshot_uri == f"http://127.0.0.1:{device.port}/snapshot.jpg"
    assert main.fps == sub.fps == 10
    assert found.analysis_profile() == sub  # the sub stream: smallest at least 320 wide
    assert found.evidence_profile() == main
    assert found.analysis_profile("Profile_Main") == main  # a configured token wins
    assert found.clock_offset_s is not None and abs(found.clock_offset_s) < 5  # measured: adjust_time is on
    assert PASSWORD not in capsys.readouterr().err


@onvif
async def test_wrong_password_is_an_auth_error_that_names_the_camera(locked_device: OnvifDevice) -> None:
    with pytest.raises(CameraAuthError) as err:
        await probe(locked_device.host, locked_device.port, USER, "not-the-password", timeout_s=10, name="cam1")
    message = str(err.value)
    assert message.startswith(f"cam1: ONVIF camera at 127.0.0.1:{locked_device.port} ")
    assert "wrong username or password" in message
    assert "Sender not authorized" in message  # what the device said
    assert "not-the-password" not in message and PASSWORD not in message
    assert isinstance(err.value, SourceError)


@onvif
async def test_missing_credentials_say_a_login_is_required(locked_device: OnvifDevice) -> None:
    with pytest.raises(CameraAuthError, match=r"requires a login: set onvif\.username and onvif\.password"):
        await probe(locked_device.host, locked_device.port, None, None, timeout_s=10, name="cam1")


async def test_closed_port_is_not_reachable() -> None:
    port = _free_port()
    with pytest.raises(SourceError) as err:
        await probe("127.0.0.1", port, USER, PASSWORD, timeout_s=5, name="cam1")
    assert not isinstance(err.value, CameraAuthError)
    assert str(err.value) == f"cam1: ONVIF camera at 127.0.0.1:{port} is not reachable: connection refused"


async def test_silent_port_times_out_as_not_reachable() -> None:
    # accepts connections (the kernel's backlog) but never answers, like a hung camera web server
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        with pytest.raises(SourceError, match=r"is not reachable: no answer within 0\.5 s$") as err:
            await probe("127.0.0.1", port, USER, PASSWORD, timeout_s=0.5)
    assert not isinstance(err.value, CameraAuthError)


@onvif
async def test_camera_clock_two_hours_off_still_authenticates() -> None:
    from onvif import ONVIFCamera
    from zeep.exceptions import Fault

    # a compliant camera tells its time before login (ONVIF PRE_AUTH); stock ipycam does not, see the next test
    for device in _device(username=USER, password=PASSWORD, clock_offset_s=7200, preauth_time=True):
        # the library without adjust_time signs with our clock: the device refuses it (ipycam allows 300 s)
        plain = ONVIFCamera(device.host, device.port, USER, PASSWORD, wsdl_dir=WSDL_DIR, no_cache=True)
        try:
            with pytest.raises(Fault, match="not authorized"):
                await (await plain.create_devicemgmt_service()).GetDeviceInformation()
        finally:
            await plain.close()
        found = await probe(device.host, device.port, USER, PASSWORD, timeout_s=10)
        assert found.clock_offset_s is not None and abs(found.clock_offset_s - 7200) < 5
        assert found.analysis_profile().token == "Profile_Sub"
        with pytest.raises(CameraAuthError) as err:  # with the time known, a refusal is the password alone
            await probe(device.host, device.port, USER, "not-the-password", timeout_s=10)
        assert "clock" not in str(err.value)


@onvif
async def test_camera_that_hides_its_time_before_login_gets_a_clock_hint() -> None:
    for device in _device(username=USER, password=PASSWORD, clock_offset_s=7200):
        with pytest.raises(CameraAuthError) as err:
            await probe(device.host, device.port, USER, PASSWORD, timeout_s=10, name="cam1")
    assert "wrong username or password" in str(err.value)
    assert "a camera clock more than a few minutes off would also cause this" in str(err.value)


@onvif
@pytest.mark.parametrize(("profile", "shape"), [(None, (SUB[1], SUB[0], 3)), ("Profile_Main", (MAIN[1], MAIN[0], 3))])
async def test_source_reads_frames_from_the_resolved_stream(
    locked_device: OnvifDevice, profile: str | None, shape: tuple[int, int, int]
) -> None:
    config = OnvifConfig.model_validate(
        {"host": "127.0.0.1", "port": locked_device.port, "username": USER, "password": PASSWORD, "profile": profile}
    )
    source = OnvifSource("cam1", config, fps=5)
    try:
        frame = await anext(aiter(source.frames()))
    finally:
        await source.close()
    assert frame.image.shape == shape
    assert source.status.connected and source.status.frames_delivered == 1
    assert source.profile is not None and source.profile.token == (profile or "Profile_Sub")


@onvif
async def test_source_keeps_credentials_from_a_stream_on_another_host(
    locked_device: OnvifDevice, caplog: pytest.LogCaptureFixture
) -> None:
    """Configured as `localhost`, the device names 127.0.0.1 in its stream URI: another host as written, so the
    stream is opened without the ONVIF login (ipycam's RTSP needs none) and the operator is told why."""
    config = OnvifConfig(host="localhost", port=locked_device.port, username=USER, password=PASSWORD)
    source = OnvifSource("cam1", config, fps=5)
    try:
        with caplog.at_level(logging.WARNING, logger="adapters.cameras.onvif.source"):
            frame = await anext(aiter(source.frames()))
    finally:
        await source.close()
    assert frame.image.shape == (SUB[1], SUB[0], 3)
    assert source._inner is not None and PASSWORD not in source._inner.source and USER not in source._inner.source
    assert "its credentials are not sent there" in caplog.text and PASSWORD not in caplog.text


@onvif
async def test_source_reports_an_unknown_profile_token(open_device: OnvifDevice) -> None:
    config = OnvifConfig(host="127.0.0.1", port=open_device.port, profile="Profile_9")
    source = OnvifSource("cam1", config, fps=5)
    with pytest.raises(SourceError, match=r"has no profile 'Profile_9' \(profiles: Profile_Main, Profile_Sub\)"):
        await anext(aiter(source.frames()))
    assert source.status.last_error is not None and "Profile_9" in source.status.last_error


@onvif
def test_cli_probe_prints_profiles_without_the_password(locked_device: OnvifDevice) -> None:
    env = os.environ | {"STORESIGHT_ONVIF_PASSWORD": PASSWORD}
    args = ("onvif", "probe", "--host", "127.0.0.1", "--port", str(locked_device.port), "--username", USER)
    done = run_cli(*args, "--json", timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["analysis_profile"], report["evidence_profile"]) == ("Profile_Sub", "Profile_Main")
    assert [(p["token"], p["width"], p["height"]) for p in report["profiles"]] == [
        ("Profile_Main", *MAIN),
        ("Profile_Sub", *SUB),
    ]
    text = run_cli(*args, timeout=60, env=env)
    assert text.returncode == 0, text.stderr
    assert "PythonCam VirtualCam-1" in text.stdout and "[analysis]" in text.stdout
    wrong = run_cli(*args, "--password", "nope-nope", timeout=60)
    assert wrong.returncode == 1
    assert "wrong username or password" in wrong.stderr and "nope-nope" not in wrong.stderr
    for out in (done.stdout, done.stderr, text.stdout, text.stderr):
        assert PASSWORD not in out


WEB_TOKEN = "test-token-0123456789abcdef"
READYZ_AUTH = {"Authorization": f"Bearer {WEB_TOKEN}"}  # /readyz shows the cameras to a token or a signed-in user


async def _readyz_until(port: int, done: Any, timeout_s: float = 30) -> dict[str, Any]:
    """Poll /readyz until `done(body)` or the time is up; the last body."""
    body: dict[str, Any] = {}
    async with aiohttp.ClientSession() as http:
        for _ in range(int(timeout_s / 0.25)):
            async with http.get(f"http://127.0.0.1:{port}/readyz", headers=READYZ_AUTH) as resp:
                body = await resp.json()
            if done(body):
                break
            await asyncio.sleep(0.25)
    return body


@onvif
@pytest.mark.triton
@pytest.mark.slow
@pytest.mark.parametrize("password", [PASSWORD, "not-the-password"], ids=["right-password", "wrong-password"])
async def test_bridge_analyses_an_onvif_camera(
    triton: EmbeddedTriton, locked_device: OnvifDevice, tmp_path: Path, password: str
) -> None:
    doc = example()
    doc["storage"] = {"path": str(tmp_path / "data")}
    doc["triton"] = {"url": triton.grpc_url}
    doc["web"] = {"port": free_port(), "token": WEB_TOKEN}
    cam = doc["cameras"][0]
    del cam["source"]
    cam["onvif"] = {"host": "127.0.0.1", "port": locked_device.port, "username": USER, "password": password}
    app = build_app(parse_config(doc))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", doc["web"]["port"]).start()
    try:
        if password == PASSWORD:
            body = await _readyz_until(doc["web"]["port"], lambda b: b["cameras"]["cam1"]["frames_analysed"] > 0)
            camera = body["cameras"]["cam1"]
            assert (camera["state"], camera["connected"], camera["error"]) == ("running", True, None)
            pipeline = app[CAMERAS].pipelines["cam1"]
            assert pipeline.last_frame is not None and pipeline.last_frame.image.shape == (SUB[1], SUB[0], 3)
        else:
            body = await _readyz_until(doc["web"]["port"], lambda b: b["cameras"]["cam1"]["state"] == "failed")
            await asyncio.sleep(RESTART_START_S + 0.5)  # long enough for a restart, which must not happen
            camera = body["cameras"]["cam1"]
            assert "wrong username or password" in camera["error"]
            assert app[CAMERAS].pipelines["cam1"].status.state == "failed"
            assert app[CAMERAS].tasks["cam1"].done()  # not retried: cameras lock accounts
        assert camera["source"] == f"onvif://127.0.0.1:{locked_device.port}"
        assert PASSWORD not in json.dumps(body) and "not-the-password" not in json.dumps(body)
    finally:
        await runner.cleanup()


# --- without a device -----------------------------------------------------------------------------------------


def test_onvif_camera_in_yaml_with_password_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORESIGHT_TEST_CAM_PW", PASSWORD)
    path = tmp_path / "store.yaml"
    path.write_text(
        "cameras:\n"
        "  - id: cam1\n"
        "    onvif: {host: 192.168.1.20, username: admin, password: '${STORESIGHT_TEST_CAM_PW}'}\n"
    )
    cam = load_config(path).cameras[0]
    assert cam.source is None and cam.onvif is not None
    assert (cam.onvif.port, cam.onvif.profile, cam.onvif.timeout_s) == (80, None, 10.0)
    assert cam.onvif.password is not None and cam.onvif.password.get_secret_value() == PASSWORD
    assert PASSWORD not in repr(cam) and PASSWORD not in cam.model_dump_json()
    assert cam.describe_source() == "onvif://192.168.1.20:80"


def _p(token: str, width: int | None, height: int | None, uri: bool = True) -> OnvifProfile:
    return OnvifProfile(token, token, "H264", width, height, 10.0, f"rtsp://cam/{token}" if uri else None, None)


@pytest.mark.parametrize(
    ("profiles", "analysis", "evidence"),
    [
        ([], None, None),
        ([_p("main", 1920, 1080), _p("sub", 640, 360)], "sub", "main"),
        ([_p("main", 2560, 1440), _p("sub", 704, 576), _p("third", 320, 240)], "third", "main"),
        ([_p("main", 1920, 1080), _p("tiny", 176, 144)], "main", "main"),  # below 320 wide: never analysed
        ([_p("a", 240, 180), _p("b", 176, 144)], "a", "a"),  # all too narrow: the widest
        ([_p("main", 1920, 1080), _p("sub", 640, 360, uri=False)], "main", "main"),  # no stream URI: skipped
        ([_p("x", None, None), _p("y", None, None)], "x", "x"),  # sizes unknown: the first
        ([_p("audio", None, None, uri=False)], None, None),
    ],
)
def test_profile_choice(profiles: list[OnvifProfile], analysis: str | None, evidence: str | None) -> None:
    chosen = pick_analysis_profile(profiles)
    largest = pick_evidence_profile(profiles)
    assert (chosen.token if chosen else None, largest.token if largest else None) == (analysis, evidence)


@pytest.mark.parametrize(
    ("uri", "user", "password", "expected"),
    [
        ("rtsp://10.0.0.5:554/s1", None, None, "rtsp://10.0.0.5:554/s1"),
        ("rtsp://10.0.0.5:554/s1", "admin", "pw", "rtsp://admin:pw@10.0.0.5:554/s1"),
        ("rtsp://10.0.0.5/s1?ch=1", "admin", "p@ss:w/rd", "rtsp://admin:p%40ss%3Aw%2Frd@10.0.0.5/s1?ch=1"),
        ("rtsp://cam:own@10.0.0.5/s1", "admin", "pw", "rtsp://cam:own@10.0.0.5/s1"),  # the device's own login
        ("rtsp://10.0.0.5/s1", "viewer", None, "rtsp://viewer@10.0.0.5/s1"),
    ],
)
def test_credentials_in_stream_uri(uri: str, user: str | None, password: str | None, expected: str) -> None:
    assert with_credentials(uri, user, password, "10.0.0.5") == expected


@pytest.mark.parametrize(
    ("uri", "configured", "gets_them"),
    [
        ("rtsp://[fe80::1]:554/s1", "fe80::1", True),
        ("rtsp://[FE80:0:0::1]:554/s1", "[fe80::1]", True),  # one address, written two ways
        ("rtsp://Cam-Lobby.local./s1", "cam-lobby.local", True),
        ("rtsp://10.0.0.6:554/s1", "10.0.0.5", False),  # another camera, or a machine the device names
        ("rtsp://attacker.example:554/s1", "10.0.0.5", False),
        ("rtsp://10.0.0.5.attacker.example/s1", "10.0.0.5", False),
        ("rtsp://10.0.0.5@attacker.example/s1", "10.0.0.5", False),  # userinfo is not the host
        ("rtsp://[::1/s1", "::1", False),  # not a URL: nothing sent
        ("/relative/s1", "10.0.0.5", False),
    ],
)
def test_credentials_go_only_to_the_configured_host(uri: str, configured: str, gets_them: bool) -> None:
    out = with_credentials(uri, "admin", "pw", configured)
    assert ("admin:pw@" in out) is gets_them
    if not gets_them:
        assert out == uri
