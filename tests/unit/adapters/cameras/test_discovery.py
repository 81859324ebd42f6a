"""`storesight discover`: WS-Discovery answered by a ProbeMatch responder in this file, bound to 127.0.0.1 and
reached by a directed probe (nothing multicasts: the one test of the multicast default swaps the socket for a
recorder), the ONVIF probe of what was found (ipycam), camera lists from VMS sinks (the Nx emulator, a real
ZoneMinder), and the config skeleton: it validates with load_config, and no password is in it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from conftest import require
from lxml import etree

from adapters.cameras.onvif.discovery import (
    WSD,
    WSD_GROUP,
    WSD_PORT,
    DiscoveredDevice,
    FoundDevice,
    parse_probe_matches,
    parse_target,
    ws_discover,
)
from plugin.cli.discover import DiscoverOptions, DiscoveryResult, discover, report_and_write
from plugin.cli.skeleton import (
    EnvRefs,
    VmsListing,
    build_skeleton,
    camera_id,
    env_credentials,
    render_skeleton,
    sink_skeleton,
    write_skeleton,
)
from plugin.config.loader import load_config
from plugin.errors import StoreSightError
from plugin.protocols import VmsCamera

SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
CAM_PASSWORD = "Cam-s3cret-pw"  # distinctive, so a leak is found by a substring test
VMS_PASSWORD = "Vms-s3cret-pw"
ENDPOINT = "urn:uuid:6b2f4a7e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"


# --- a WS-Discovery device on 127.0.0.1 ---------------------------------------------------------------------------


def probe_matches(relates_to: str, endpoint: str, xaddrs: str, scopes: str, ns: str = WSD) -> bytes:
    """ProbeMatches as a device sends them (WS-Discovery 2005/04, the shape INTEGRATIONS.md 6.1 quotes)."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><e:Envelope xmlns:e="{SOAP12}" xmlns:w="{WSA}" xmlns:d="{ns}" '
        'xmlns:dn="http://www.onvif.org/ver10/network/wsdl" xmlns:tds="http://www.onvif.org/ver10/device/wsdl">'
        f"<e:Header><w:MessageID>uuid:0a6dc791-2be6-4991-9af1-454778a1917a</w:MessageID>"
        f"<w:RelatesTo>{relates_to}</w:RelatesTo>"
        "<w:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</w:To>"
        f"<w:Action>{ns}/ProbeMatches</w:Action></e:Header>"
        f"<e:Body><d:ProbeMatches><d:ProbeMatch><w:EndpointReference><w:Address>{endpoint}</w:Address>"
        "</w:EndpointReference><d:Types>dn:NetworkVideoTransmitter tds:Device</d:Types>"
        f"<d:Scopes>{scopes}</d:Scopes><d:XAddrs>{xaddrs}</d:XAddrs><d:MetadataVersion>1</d:MetadataVersion>"
        "</d:ProbeMatch></d:ProbeMatches></e:Body></e:Envelope>"
    ).encode()


SCOPES = (
    "onvif://www.onvif.org/type/video_encoder onvif://www.onvif.org/Profile/Streaming "
    "onvif://www.onvif.org/name/Front%20door onvif://www.onvif.org/hardware/M3045 "
    "onvif://www.onvif.org/location/country/uk"
)


@dataclass
class ProbeResponder:
    """A UDP WS-Discovery target on 127.0.0.1: answers each Probe for its types with a ProbeMatches."""

    xaddrs: str
    scopes: str = SCOPES
    endpoint: str = ENDPOINT
    probes: list[Any] = field(default_factory=list)  # (MessageID, Types, the envelope) of each Probe received
    port: int = 0

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="wsd-responder", daemon=True)

    def __enter__(self) -> ProbeResponder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            envelope = etree.fromstring(data)
            message_id = envelope.findtext(f"{{{SOAP12}}}Header/{{{WSA}}}MessageID")
            types = envelope.findtext(f"{{{SOAP12}}}Body/{{{WSD}}}Probe/{{{WSD}}}Types")
            self.probes.append((message_id, types, envelope))
            assert peer[0] == "127.0.0.1"
            # other traffic a client must ignore: garbage, and an answer to someone else's probe
            self.sock.sendto(b"\x00not xml", peer)
            self.sock.sendto(probe_matches("uuid:someone-else", "urn:uuid:other", "http://10.9.9.9/x", ""), peer)
            self.sock.sendto(probe_matches(str(message_id), self.endpoint, self.xaddrs, self.scopes), peer)


@pytest.fixture(autouse=True)
def _no_multicast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any multicast send from this process fails the test (the directed probes here never need one)."""
    import ipaddress

    original = socket.socket.sendto

    def sendto(self: socket.socket, data: Any, *args: Any) -> int:
        address = args[-1]
        if isinstance(address, tuple) and ipaddress.ip_address(address[0]).is_multicast:
            raise AssertionError(f"test tried to multicast to {address}")
        return original(self, data, *args)

    monkeypatch.setattr(socket.socket, "sendto", sendto)


# --- WS-Discovery -------------------------------------------------------------------------------------------------


def test_probe_matches_are_parsed_and_others_ignored() -> None:
    data = probe_matches("uuid:mine", ENDPOINT, "http://[fe80::1]/onvif/device_service http://10.0.0.5:8080/onvif/"
                         "device_service", SCOPES)  # fmt: skip
    (dev,) = parse_probe_matches(data, "10.0.0.5:3702", ["uuid:mine"])
    assert (dev.endpoint, dev.name, dev.hardware, dev.location) == (ENDPOINT, "Front door", "M3045", "country/uk")
    assert dev.device_url == "http://10.0.0.5:8080/onvif/device_service"  # IPv4 before link-local IPv6
    assert dev.host_port == ("10.0.0.5", 8080)
    assert "dn:NetworkVideoTransmitter" in dev.types
    assert parse_probe_matches(data, "x", ["uuid:not-mine"]) == []
    assert parse_probe_matches(b"\x00\xff", "x") == []
    assert parse_probe_matches(b"<a/>", "x") == []
    wsd11 = probe_matches("uuid:mine", ENDPOINT, "http://10.0.0.6/onvif/device_service", "",
                          ns="http://docs.oasis-open.org/ws-dd/ns/discovery/2009/01")  # fmt: skip
    assert [d.host_port for d in parse_probe_matches(wsd11, "x", ["uuid:mine"])] == [("10.0.0.6", 80)]


@pytest.mark.parametrize(
    ("target", "expected"),
    [("127.0.0.1", ("127.0.0.1", 3702)), ("cam.lan:4000", ("cam.lan", 4000)), ("[::1]:5000", ("::1", 5000)),
     ("fe80::1", ("fe80::1", 3702)), ("host:0", StoreSightError), (":3702", StoreSightError)],
)  # fmt: skip
def test_targets(target: str, expected: Any) -> None:
    if expected is StoreSightError:
        with pytest.raises(StoreSightError, match="give HOST or HOST:PORT"):
            parse_target(target)
    else:
        assert parse_target(target) == expected


async def test_a_directed_probe_finds_the_device() -> None:
    with ProbeResponder("http://127.0.0.1:8899/onvif/device_service") as responder:
        found = await ws_discover(f"127.0.0.1:{responder.port}", timeout_s=0.5)
    (dev,) = found  # one device, though it answered four probes, and the decoys were ignored
    assert (dev.endpoint, dev.name, dev.host_port) == (ENDPOINT, "Front door", ("127.0.0.1", 8899))
    types = sorted(t for _, t, _ in responder.probes)
    assert types == ["dn:NetworkVideoTransmitter"] * 2 + ["tds:Device"] * 2  # each type, repeated once
    _, _, envelope = responder.probes[0]
    action = envelope.findtext(f"{{{SOAP12}}}Header/{{{WSA}}}Action")
    to = envelope.findtext(f"{{{SOAP12}}}Header/{{{WSA}}}To")
    assert (action, to) == (f"{WSD}/Probe", "urn:schemas-xmlsoap-org:ws:2005:04:discovery")
    assert len({m for m, _, _ in responder.probes}) == 2  # a repeat keeps its MessageID


async def test_multicast_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    # checked without a network: the socket is replaced by a recorder, so nothing is sent anywhere
    sent: list[tuple[bytes, Any]] = []
    options: list[tuple[int, int, int]] = []

    class Recorder:
        def sendto(self, data: bytes, addr: Any) -> None:
            sent.append((data, addr))

        def get_extra_info(self, name: str) -> Any:
            return type("Sock", (), {"setsockopt": lambda _s, *a: options.append(a)})()

        def close(self) -> None:
            pass

    async def endpoint(_loop: Any, factory: Any, **kw: Any) -> tuple[Recorder, Any]:
        assert kw["local_addr"] == ("0.0.0.0", 0)
        return Recorder(), factory()

    monkeypatch.setattr(asyncio.get_running_loop().__class__, "create_datagram_endpoint", endpoint)
    assert await ws_discover(None, timeout_s=0.05) == []
    assert {addr for _, addr in sent} == {(WSD_GROUP, WSD_PORT)} and len(sent) == 4
    assert (socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1) in options  # the local network only


# --- credentials out of the skeleton ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "require_login", "expected"),
    [
        ("rtsp://10.0.0.5/s1", False, "rtsp://10.0.0.5/s1"),
        ("rtsp://10.0.0.5/s1", True, "rtsp://${STORESIGHT_CAMERA_USER}:${STORESIGHT_CAMERA_PASSWORD}@10.0.0.5/s1"),
        ("rtsp://admin:p%40ss@10.0.0.5:554/s1?ch=1", False,
         "rtsp://${STORESIGHT_CAMERA_USER}:${STORESIGHT_CAMERA_PASSWORD}@10.0.0.5:554/s1?ch=1"),
        ("rtsp://viewer@[fe80::1]:554/s1", False, "rtsp://${STORESIGHT_CAMERA_USER}@[fe80::1]:554/s1"),
    ],
)  # fmt: skip
def test_credentials_become_environment_references(url: str, require_login: bool, expected: str) -> None:
    assert env_credentials(url, EnvRefs(), require_login=require_login) == expected


def test_one_variable_pair_per_distinct_login() -> None:
    refs = EnvRefs()
    a = env_credentials("rtsp://admin:one@10.0.0.5/s", refs)
    b = env_credentials("rtsp://admin:one@10.0.0.6/s", refs)
    c = env_credentials("rtsp://admin:two@10.0.0.7/s", refs)
    assert a.split("@")[0] == b.split("@")[0] != c.split("@")[0]
    assert refs.required() == ["STORESIGHT_CAMERA_USER", "STORESIGHT_CAMERA_PASSWORD",
                               "STORESIGHT_CAMERA2_USER", "STORESIGHT_CAMERA2_PASSWORD"]  # fmt: skip


def test_camera_ids() -> None:
    taken: set[str] = set()
    assert camera_id("Front Door (main)", "cam-1", taken) == "front-door-main"
    assert camera_id("Front Door (main)", "cam-2", taken) == "front-door-main-2"
    assert camera_id("Kasse 3 / Süd", "cam-3", taken) == "kasse-3-s-d"
    assert camera_id(None, "cam-4", taken) == "cam-4"
    assert camera_id("___", "cam-5", taken) == "cam-5"


def test_sink_secrets_in_clear_become_references_and_references_stay() -> None:
    refs = EnvRefs()
    clear = sink_skeleton({"kind": "nx", "id": "nvr", "url": "https://nvr:7001", "password": VMS_PASSWORD}, refs)
    kept = sink_skeleton({"kind": "nx", "id": "nvr2", "url": "https://nvr:7001", "password": "${NX_PW}"}, refs)
    hook = sink_skeleton({"kind": "webhook", "id": "hook", "url": "https://u:p@h/x", "headers": {"X-Key": "k"}}, refs)
    assert (clear["password"], kept["password"]) == ("${STORESIGHT_NVR_PASSWORD}", "${NX_PW}")
    assert hook["url"] == "https://${STORESIGHT_CAMERA_USER}:${STORESIGHT_CAMERA_PASSWORD}@h/x"
    assert hook["headers"] == {"X-Key": "${STORESIGHT_HOOK_X_KEY}"}
    assert VMS_PASSWORD not in json.dumps([clear, kept, hook])


def _found(host: str = "10.0.0.5", name: str | None = "Front door") -> FoundDevice:
    scopes = (f"onvif://www.onvif.org/name/{name}",) if name else ()
    return FoundDevice(DiscoveredDevice(f"urn:uuid:{host}", (f"http://{host}/onvif/device_service",), (), scopes, ""))


def test_skeleton_validates_and_holds_no_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listings = [
        VmsListing("zm", "zoneminder", [
            VmsCamera("3", "Back door", f"rtsp://admin:{CAM_PASSWORD}@10.0.0.9/live", "the monitor's source"),
            VmsCamera("4", "Front door ZM", f"rtsp://admin:{CAM_PASSWORD}@10.0.0.5/live", "same camera as ONVIF"),
            VmsCamera("5", "USB", None, "source '/dev/video0' is not a network stream"),
        ]),
        VmsListing("ms", "milestone", error="listing cameras is not supported for milestone sinks yet"),
    ]  # fmt: skip
    raw = [{"kind": "zoneminder", "id": "zm", "url": "http://nvr/zm", "username": "admin", "password": VMS_PASSWORD,
            "cameras": {"old": "1"}}]  # fmt: skip
    skeleton = build_skeleton([_found(), _found("10.0.0.6", None)], listings, onvif_username="storesight",
                              raw_sinks=raw)  # fmt: skip
    path = tmp_path / "skeleton.yaml"
    write_skeleton(skeleton, path, "a test")
    text = path.read_text()
    assert CAM_PASSWORD not in text and VMS_PASSWORD not in text
    doc = yaml.safe_load(text)
    assert [c["id"] for c in doc["cameras"]] == ["front-door", "cam-2", "back-door"]
    assert doc["cameras"][0]["onvif"] == {"host": "10.0.0.5", "port": 80, "username": "${STORESIGHT_ONVIF_USERNAME}",
                                          "password": "${STORESIGHT_ONVIF_PASSWORD}"}  # fmt: skip
    # the monitor pulling the ONVIF camera is mapped to it, not added twice
    assert doc["sinks"][0]["cameras"] == {"front-door": "4", "back-door": "3"}
    assert doc["sinks"][0]["password"] == "${STORESIGHT_ZM_PASSWORD}"
    assert "sink ms (milestone): listing cameras is not supported" in text
    assert "zoneminder camera 5 'USB' skipped" in text
    for name in skeleton.env:
        monkeypatch.setenv(name, "a'b:@ #x{}" if name.endswith("PASSWORD") else "user")
    # values with YAML's special characters still make one scalar each (load_config expands ${VAR} in the text
    # before parsing it, so only a value holding " or \ could still break a double-quoted scalar)
    config = load_config(path)
    assert [c.id for c in config.cameras] == ["front-door", "cam-2", "back-door"]
    assert config.cameras[0].onvif is not None and config.cameras[0].onvif.password is not None
    assert config.cameras[0].onvif.password.get_secret_value() == "a'b:@ #x{}"
    with pytest.raises(StoreSightError, match="the file exists"):
        write_skeleton(skeleton, path, "a test")


def test_render_lists_what_to_set() -> None:
    skeleton = build_skeleton([_found()], [], onvif_username=None)
    text = render_skeleton(skeleton, "x")
    assert "#   (none)" in text and "username" not in yaml.safe_load(text)["cameras"][0]["onvif"]


async def test_vms_only_needs_a_config() -> None:
    with pytest.raises(StoreSightError, match="--vms-only needs -c FILE"):
        await discover(DiscoverOptions(vms_only=True), None)


# --- the command, against an Nx emulator --------------------------------------------------------------------------


async def _cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`storesight ARGS` in a subprocess, while this event loop keeps serving the emulators."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "plugin.cli", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=env or dict(os.environ),
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return int(proc.returncode or 0), out.decode(), err.decode()


@pytest.mark.nx
async def test_cli_discovers_devices_and_nx_cameras_and_writes_a_skeleton(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from components.nx_emulator import NxEmulator, nx_emulator_available, self_signed_cert

    require(nx_emulator_available())
    cert = self_signed_cert(tmp_path)
    devices = {"3a4ad4ea-9269-4b1f-a7aa-2cec537d0248": "Checkout 1", "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0": "Stock"}
    async with NxEmulator(devices=dict(devices), password=VMS_PASSWORD, tls=cert) as nx:
        config = tmp_path / "store.yaml"
        config.write_text(yaml.safe_dump({
            "cameras": [{"id": "old", "source": "rtsp://127.0.0.1/x"}],
            "sinks": [{"kind": "nx", "id": "nvr", "url": nx.url, "username": "storesight",
                       "password": "${NX_TEST_PASSWORD}", "ca_bundle": str(cert[0]), "cameras": {}}],
        }))  # fmt: skip
        env = dict(os.environ) | {"NX_TEST_PASSWORD": VMS_PASSWORD}
        skeleton = tmp_path / "skeleton.yaml"
        with ProbeResponder("http://127.0.0.1:8899/onvif/device_service") as responder:
            target = f"127.0.0.1:{responder.port}"
            rc, out, err = await _cli("discover", "--target", target, "--timeout", "0.5", "-c", str(config),
                                      "--write-config", str(skeleton), "--json", env=env)  # fmt: skip
            assert rc == 0, err
            rc2, text, err2 = await _cli("discover", "-c", str(config), "--vms-only", env=env)
        assert nx.violations == [] and nx.response_violations == []
    assert rc2 == 0, err2
    report = json.loads(out)
    assert [(d["name"], d["device_url"]) for d in report["onvif"]] == [
        ("Front door", "http://127.0.0.1:8899/onvif/device_service")
    ]
    (nvr,) = report["vms"]
    assert {c["ref"]: c["name"] for c in nvr["cameras"]} == devices
    assert all(c["stream"].endswith("?stream=1") for c in nvr["cameras"])
    assert report["env"] == ["STORESIGHT_CAMERA_USER", "STORESIGHT_CAMERA_PASSWORD"]
    assert "VMS sink nvr (nx): 2 camera(s)" in text and "Checkout 1" in text
    written = skeleton.read_text()
    for output in (out, err, text, err2, written):
        assert VMS_PASSWORD not in output
    doc = yaml.safe_load(written)
    assert doc["sinks"][0]["password"] == "${NX_TEST_PASSWORD}"  # the user's own reference, kept
    assert set(doc["sinks"][0]["cameras"].values()) == set(devices)
    monkeypatch.setenv("NX_TEST_PASSWORD", VMS_PASSWORD)
    monkeypatch.setenv("STORESIGHT_CAMERA_USER", "rtsp-user")
    monkeypatch.setenv("STORESIGHT_CAMERA_PASSWORD", "rtsp-pw")
    loaded = load_config(skeleton)
    assert [c.id for c in loaded.cameras] == ["front-door", "checkout-1", "stock"]
    assert loaded.cameras[1].source is not None and loaded.cameras[1].source.startswith("rtsp://rtsp-user:rtsp-pw@")


# --- with a real ONVIF device -------------------------------------------------------------------------------------


@pytest.mark.onvif
async def test_discovered_device_is_probed_for_its_streams(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from components.onvif_device import onvif_device_available, start_onvif_device

    require(onvif_device_available())
    with (
        start_onvif_device(username="admin", password=CAM_PASSWORD) as device,
        ProbeResponder(f"http://127.0.0.1:{device.port}/onvif/device_service") as responder,
    ):
        opts = DiscoverOptions(target=f"127.0.0.1:{responder.port}", timeout_s=0.5, probe=True, username="admin",
                               password=CAM_PASSWORD, write_config=tmp_path / "s.yaml")  # fmt: skip
        result = await discover(opts, None)
        rep = report_and_write(result, opts)
    (dev,) = rep["onvif"]
    assert dev["error"] is None
    assert (dev["probe"]["manufacturer"], dev["probe"]["analysis_profile"]) == ("PythonCam", "Profile_Sub")
    written = (tmp_path / "s.yaml").read_text()
    assert CAM_PASSWORD not in written and CAM_PASSWORD not in json.dumps(rep)
    assert f"rtsp://127.0.0.1:{device.rtsp_port}/video_sub" in written  # what was found, for reference
    doc = yaml.safe_load(written)
    assert doc["cameras"][0]["onvif"]["port"] == device.port
    monkeypatch.setenv("STORESIGHT_ONVIF_USERNAME", "admin")
    monkeypatch.setenv("STORESIGHT_ONVIF_PASSWORD", CAM_PASSWORD)
    onvif = load_config(tmp_path / "s.yaml").cameras[0].onvif
    assert onvif is not None and onvif.password is not None and onvif.password.get_secret_value() == CAM_PASSWORD


# --- with a real ZoneMinder ---------------------------------------------------------------------------------------


@pytest.fixture
def zm_monitor(zoneminder: None) -> Iterator[str]:
    """A ZoneMinder monitor (Function None: it captures nothing) whose source URL carries a password."""
    from components.zoneminder import TEST_MONITOR_PREFIX, ZmAdmin

    admin = ZmAdmin()
    admin.remove_stale_test_monitors()
    url = f"rtsp://camuser:{CAM_PASSWORD}@127.0.0.1:9/discover-test"
    # its own name: add_monitor finds its monitor by name, and the ZoneMinder sink tests' monitor may exist too
    name = f"{TEST_MONITOR_PREFIX}{os.getpid()}-discovery"
    monitor = admin.add_monitor(name, url, 640, 360, Function="None", Enabled="0")
    try:
        yield monitor
    finally:
        with contextlib.suppress(Exception):
            admin.delete_monitor(monitor)


@pytest.mark.zoneminder
async def test_zoneminder_monitors_are_listed_with_their_sources(zm_monitor: str, tmp_path: Path) -> None:
    from components.zoneminder import ADMIN_PASSWORD, ADMIN_USER, BASE_URL

    doc = {
        "cameras": [{"id": "old", "source": "rtsp://127.0.0.1/x"}],
        "sinks": [{"kind": "zoneminder", "id": "zm", "url": BASE_URL, "username": ADMIN_USER,
                   "password": ADMIN_PASSWORD, "cameras": {"old": zm_monitor}}],
    }  # fmt: skip
    path = tmp_path / "store.yaml"
    path.write_text(yaml.safe_dump(doc))
    opts = DiscoverOptions(vms_only=True, config_path=path, write_config=tmp_path / "s.yaml")
    rep = report_and_write(await discover(opts, load_config(path)), opts)
    (zm,) = rep["vms"]
    assert zm["error"] is None
    (mine,) = [c for c in zm["cameras"] if c["ref"] == zm_monitor]
    assert mine["stream"] == "rtsp://**REDACTED**@127.0.0.1:9/discover-test"
    written = (tmp_path / "s.yaml").read_text()
    assert CAM_PASSWORD not in written and CAM_PASSWORD not in json.dumps(rep)
    skeleton = yaml.safe_load(written)
    assert skeleton["sinks"][0]["password"] == "${STORESIGHT_ZM_PASSWORD}"  # it was in clear in the config
    (cam,) = [c for c in skeleton["cameras"] if skeleton["sinks"][0]["cameras"].get(c["id"]) == zm_monitor]
    assert cam["source"].startswith("rtsp://${STORESIGHT_CAMERA")
    assert cam["source"].endswith("@127.0.0.1:9/discover-test")


def test_discovery_result_report_redacts() -> None:
    from plugin.cli.discover import report

    listing = VmsListing("zm", "zoneminder", [VmsCamera("3", "x", f"rtsp://a:{CAM_PASSWORD}@h/s")])
    assert CAM_PASSWORD not in json.dumps(report(DiscoveryResult([], [listing])))


# --- Milestone XProtect and Genetec Security Center, against their emulators --------------------------------------

MS_CAMS = {"0c5f6a3e-2b1d-4e8f-9a7c-3d2e1f0a9b8c": "Checkout 1", "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d": "Stockroom",
           "f0e1d2c3-b4a5-4697-8877-665544332211": "Old entrance"}  # fmt: skip
MS_DISABLED = "f0e1d2c3-b4a5-4697-8877-665544332211"
SC_CAMS = {"5c2b5a0e-8d7f-4c3e-9a1b-0f6e2d4c8a10": "Till 2", "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b": "Back door",
           "0a1b2c3d-4e5f-4061-8273-8495a6b7c8d9": "Car park"}  # fmt: skip
SC_APP_ID = "KxsD11z743Hf5Gq9mv3+5ekxzemlCiUXkTFY5ba1NOGcLCmGstt2n0zYE9NsNimv"


def _vms_config(tmp_path: Path, sink: dict[str, Any], cameras: list[dict[str, Any]] | None = None) -> Path:
    path = tmp_path / "store.yaml"
    doc = {"cameras": cameras or [{"id": "old", "source": "rtsp://127.0.0.1/x"}], "sinks": [sink]}
    path.write_text(yaml.safe_dump(doc))
    return path


async def _discover_vms(config: Path, skeleton: Path | None = None) -> dict[str, Any]:
    opts = DiscoverOptions(vms_only=True, config_path=config, write_config=skeleton)
    return report_and_write(await discover(opts, load_config(config)), opts)


def _todo_above(text: str, camera: str) -> str:
    """The TODO comment lines right above the camera's `- id:` line."""
    lines = text.splitlines()
    at = lines.index(f"- id: {camera}")
    above = []
    for line in reversed(lines[:at]):
        if not line.startswith("# "):
            break
        above.insert(0, line[2:])
    return " ".join(above)


@pytest.mark.milestone
async def test_xprotect_cameras_are_listed_mapped_and_left_to_fill_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from components.milestone_emulator import XProtectEmulator

    async with XProtectEmulator(password=VMS_PASSWORD, cameras=dict(MS_CAMS), disabled={MS_DISABLED}) as emu:
        config = _vms_config(tmp_path, {"kind": "milestone", "id": "xp", "url": emu.url, "username": "storesight",
                                        "password": VMS_PASSWORD})  # fmt: skip
        rep = await _discover_vms(config, tmp_path / "s.yaml")
    # one log-in, one listing with its bearer token, both answered
    assert (emu.logins, emu.refused_logins) == (1, 0)
    (listed,) = emu.requests("GET", "/cameras")
    assert listed.status == 200 and listed.query == {}
    (xp,) = rep["vms"]
    assert xp["error"] is None
    assert {c["ref"]: c["name"] for c in xp["cameras"]} == MS_CAMS
    assert all(c["stream"] is None for c in xp["cameras"])
    assert [c["note"] for c in xp["cameras"] if c["ref"] == MS_DISABLED] == ["disabled in XProtect"]
    written = (tmp_path / "s.yaml").read_text()
    assert VMS_PASSWORD not in written and VMS_PASSWORD not in json.dumps(rep)
    doc = yaml.safe_load(written)
    assert doc["sinks"][0]["password"] == "${STORESIGHT_XP_PASSWORD}"
    assert doc["sinks"][0]["cameras"] == {"checkout-1": "0c5f6a3e-2b1d-4e8f-9a7c-3d2e1f0a9b8c",
                                          "stockroom": "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"}  # fmt: skip
    assert [(c["id"], c["source"]) for c in doc["cameras"]] == [
        ("checkout-1", "${STORESIGHT_CHECKOUT_1_SOURCE}"), ("stockroom", "${STORESIGHT_STOCKROOM_SOURCE}")
    ]  # fmt: skip
    assert "Open Network Bridge" in _todo_above(written, "checkout-1")
    assert "names no stream" in _todo_above(written, "stockroom")
    assert "camera f0e1d2c3-b4a5-4697-8877-665544332211 'Old entrance' skipped: disabled in XProtect" in written
    assert rep["env"] == ["STORESIGHT_CHECKOUT_1_SOURCE", "STORESIGHT_STOCKROOM_SOURCE", "STORESIGHT_XP_PASSWORD"]
    # until the sources are filled in, loading it fails and names what is missing
    monkeypatch.setenv("STORESIGHT_XP_PASSWORD", VMS_PASSWORD)
    with pytest.raises(StoreSightError, match="STORESIGHT_CHECKOUT_1_SOURCE is not set"):
        load_config(tmp_path / "s.yaml")
    monkeypatch.setenv("STORESIGHT_CHECKOUT_1_SOURCE", "rtsp://10.0.0.5/s1")
    monkeypatch.setenv("STORESIGHT_STOCKROOM_SOURCE", "rtsp://10.0.0.6/s1")
    loaded = load_config(tmp_path / "s.yaml")
    assert [c.source for c in loaded.cameras] == ["rtsp://10.0.0.5/s1", "rtsp://10.0.0.6/s1"]


@pytest.mark.genetec
async def test_security_center_cameras_are_listed_with_media_gateway_streams(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from components.genetec_emulator import GenetecEmulator

    import adapters.sinks.genetec.sink as genetec

    # small pages and lookup batches, so paging and several entities per query are exercised on three cameras
    monkeypatch.setattr(genetec, "LIST_PAGE_SIZE", 2)
    monkeypatch.setattr(genetec, "LOOKUP_BATCH", 2)
    async with GenetecEmulator(cameras=dict(SC_CAMS), password=VMS_PASSWORD, application_id=SC_APP_ID) as sc:
        sc.running_states["0a1b2c3d-4e5f-4061-8273-8495a6b7c8d9".replace("-", "")] = "NotRunning"
        config = _vms_config(tmp_path, {"kind": "genetec", "id": "sc", "url": sc.url, "username": "storesight",
                                        "password": "${SC_TEST_PASSWORD}", "application_id": SC_APP_ID,
                                        "cameras": {"old": next(iter(SC_CAMS))}})  # fmt: skip
        monkeypatch.setenv("SC_TEST_PASSWORD", VMS_PASSWORD)
        rep = await _discover_vms(config, tmp_path / "s.yaml")
    assert sc.violations == [], "requests the documented Web SDK does not take"
    assert sc.report_pages == 2  # 2 + 1 cameras: the short second page ends the listing
    assert sc.count("GET", "/entity?q=entity=", 200) == 2  # names looked up two at a time
    (listed,) = rep["vms"]
    assert listed["error"] is None
    assert {c["ref"]: c["name"] for c in listed["cameras"]} == SC_CAMS
    car_park = next(c for c in listed["cameras"] if c["name"] == "Car park")
    assert car_park["note"] == "Media Gateway RTSP, live stream, NotRunning"
    written = (tmp_path / "s.yaml").read_text()
    assert VMS_PASSWORD not in written and VMS_PASSWORD not in json.dumps(rep)
    doc = yaml.safe_load(written)
    assert doc["sinks"][0]["password"] == "${SC_TEST_PASSWORD}"
    assert doc["sinks"][0]["cameras"] == {"back-door": "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b",
                                          "car-park": "0a1b2c3d-4e5f-4061-8273-8495a6b7c8d9",
                                          "till-2": "5c2b5a0e-8d7f-4c3e-9a1b-0f6e2d4c8a10"}  # fmt: skip
    till = next(c for c in doc["cameras"] if c["id"] == "till-2")
    assert till["source"] == ("rtsp://${STORESIGHT_CAMERA_USER}:${STORESIGHT_CAMERA_PASSWORD}@127.0.0.1:654/"
                              "5c2b5a0e-8d7f-4c3e-9a1b-0f6e2d4c8a10/live")  # fmt: skip
    assert "Media Gateway role runs elsewhere" in _todo_above(written, "till-2")
    monkeypatch.setenv("STORESIGHT_CAMERA_USER", "mg-user")
    monkeypatch.setenv("STORESIGHT_CAMERA_PASSWORD", "mg-pw")
    loaded = load_config(tmp_path / "s.yaml")
    assert {c.id for c in loaded.cameras} == {"till-2", "back-door", "car-park"}


@pytest.mark.parametrize("vendor", [pytest.param("milestone", marks=pytest.mark.milestone),
                                    pytest.param("genetec", marks=pytest.mark.genetec)])  # fmt: skip
@pytest.mark.parametrize(
    ("password", "cameras", "error"),
    [
        ("not-the-password", True, {"milestone": "Milestone XProtect: http://127.0.0.1:PORT: the identity provider "
                                                 "refused user 'storesight': HTTP 400 invalid_grant",
                                    "genetec": "Genetec Security Center: http://127.0.0.1:PORT/WebSdk: list the "
                                               "cameras: HTTP 401 Unauthorized: Invalid credentials twice"}),
        (VMS_PASSWORD, False, None),
    ],
)  # fmt: skip
async def test_vms_listing_wrong_login_and_empty(
    tmp_path: Path, vendor: str, password: str, cameras: bool, error: dict[str, str] | None
) -> None:
    from components.genetec_emulator import GenetecEmulator
    from components.milestone_emulator import XProtectEmulator

    if vendor == "milestone":
        async with XProtectEmulator(password=VMS_PASSWORD, cameras=dict(MS_CAMS) if cameras else {}) as emu:
            sink = {"kind": "milestone", "id": "xp", "url": emu.url, "username": "storesight", "password": password}
            rep = await _discover_vms(_vms_config(tmp_path, sink), tmp_path / "s.yaml")
        port = emu.port
        assert len(emu.requests("GET", "/cameras")) == (0 if error else 1)
    else:
        async with GenetecEmulator(cameras=dict(SC_CAMS) if cameras else {}, password=VMS_PASSWORD,
                                   application_id=SC_APP_ID) as sc:  # fmt: skip
            sink = {"kind": "genetec", "id": "sc", "url": sc.url, "username": "storesight", "password": password,
                    "application_id": SC_APP_ID, "cameras": {"old": next(iter(SC_CAMS))}}  # fmt: skip
            rep = await _discover_vms(_vms_config(tmp_path, sink), tmp_path / "s.yaml")
        port = int(urlsplit(sc.url).port or 0)
        assert sc.violations == []
    (listed,) = rep["vms"]
    assert listed["cameras"] == []
    if error is None:
        assert listed["error"] is None
    else:
        assert str(listed["error"]).startswith(error[vendor].replace("PORT", str(port)))
    written = (tmp_path / "s.yaml").read_text()
    # an empty listing leaves an empty camera map, which does not load: the header says what to do
    assert ("listed no camera to map" in written) == (error is None)
    assert "not-the-password" not in written and VMS_PASSWORD not in written
    assert "not-the-password" not in json.dumps(rep) and VMS_PASSWORD not in json.dumps(rep)


def test_each_vms_login_gets_its_own_variables() -> None:
    door = "5c2b5a0e-8d7f-4c3e-9a1b-0f6e2d4c8a10"
    listings = [
        VmsListing("nvr", "nx", [VmsCamera("3a4ad4ea-9269-4b1f-a7aa-2cec537d0248", "Till", "rtsp://nvr:7001/3a?stream=1")]),
        VmsListing("sc", "genetec", [VmsCamera(door, "Door", f"rtsp://sc:654/{door}/live", "x", "check")]),
    ]  # fmt: skip
    skeleton = build_skeleton([], listings, onvif_username=None)
    sources = [c["source"] for c in skeleton.document["cameras"]]
    assert sources == ["rtsp://${STORESIGHT_CAMERA_USER}:${STORESIGHT_CAMERA_PASSWORD}@nvr:7001/3a?stream=1",
                       "rtsp://${STORESIGHT_CAMERA2_USER}:${STORESIGHT_CAMERA2_PASSWORD}@sc:654/"
                       "5c2b5a0e-8d7f-4c3e-9a1b-0f6e2d4c8a10/live"]  # fmt: skip
    assert skeleton.todos == {"door": "check"}
    assert "# TODO door: check\n- id: door\n" in render_skeleton(skeleton, "a test")
