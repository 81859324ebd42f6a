"""Finding cameras: WS-Discovery for ONVIF devices on the local network, the camera lists of configured VMSs, and
a config skeleton written from what was found.

WS-Discovery (2005/04, SOAP-over-UDP on port 3702; ../shared/design/INTEGRATIONS.md section 6.1): a Probe goes to
the multicast group 239.255.255.250 (or, directed, to one host), and devices answer with ProbeMatches carrying
their endpoint reference, types, scopes (name, hardware, location) and XAddrs (device service URLs). Two probes
are sent, one per type (the spec's `tds:Device`, and `dn:NetworkVideoTransmitter`, which most devices answer to),
each repeated once as SOAP-over-UDP asks, because UDP loses packets.

VMS listings use the sink modules' own calls and log-ins: Nx devices (`GET /rest/v4/devices`), ZoneMinder monitors
(`monitors.json`, with each monitor's source URL), Frigate cameras (`/api/config`), Milestone XProtect cameras (the
API Gateway's `GET /api/rest/v1/cameras` with the identity provider's bearer token) and Genetec Security Center
cameras (the Web SDK's EntityConfiguration report and entity queries). Each camera's VMS id goes into its sink's
`cameras` map. A stream URL is written only where the VMS serves one at a known address: Nx's RTSP, Frigate's
go2rtc restream, a ZoneMinder monitor's source, Genetec's Media Gateway RTSP (INTEGRATIONS.md 4.3 [S], assumed
on the Web SDK's host: a TODO comment says so). XProtect's REST API names no stream, so each XProtect camera gets
a `${STORESIGHT_<ID>_SOURCE}` placeholder and a TODO comment saying what to fill in: loading the skeleton fails,
naming the variable, until the user has.

Nothing written or printed holds a password: credentials found in stream URLs become `${ENV}` references (one pair
of variables per distinct login), and a sink's secrets that were in clear in its config become references too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import re
import socket
import textwrap
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

import yaml
from lxml import etree

from adapters.cameras.onvif.device import OnvifCamera, pick_analysis_profile, pick_evidence_profile, probe
from adapters.sinks.frigate.config import FrigateSinkConfig
from adapters.sinks.genetec.config import GenetecSinkConfig
from adapters.sinks.milestone.config import MilestoneSinkConfig
from adapters.sinks.nx.config import NxSinkConfig
from adapters.sinks.zoneminder.config import ZoneMinderSinkConfig
from plugin.config.root import Config, SinkConfig
from plugin.errors import SinkAuthError, SinkNotReady, SinkRejected, SourceError, StoreSightError
from plugin.redact import redact_url

log = logging.getLogger(__name__)

WSD_PORT = 3702
WSD_GROUP = "239.255.255.250"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
WSD = "http://schemas.xmlsoap.org/ws/2005/04/discovery"
WSD11 = "http://docs.oasis-open.org/ws-dd/ns/discovery/2009/01"  # WS-Discovery 1.1; a few devices answer in it
DN = "http://www.onvif.org/ver10/network/wsdl"
TDS = "http://www.onvif.org/ver10/device/wsdl"
PROBE_TYPES = (("dn", DN, "NetworkVideoTransmitter"), ("tds", TDS, "Device"))
SCOPE_PREFIX = "onvif://www.onvif.org/"

DISCOVERY_TIMEOUT_S = 3.0  # devices answer within APP_MAX_DELAY (500 ms); the rest is for slow ones and repeats
REPEAT_DELAY_S = (0.05, 0.25)  # SOAP-over-UDP's UDP_MIN_DELAY..UDP_UPPER_DELAY before the repeat
MULTICAST_TTL = 1  # the local network only: discovery is for the store's own cameras
MAX_DATAGRAM = 65535
PROBE_CONCURRENCY = 4  # ONVIF probes at once: a store has tens of cameras, and each probe is a few requests

USER_ENV = "STORESIGHT_ONVIF_USERNAME"
PASSWORD_ENV = "STORESIGHT_ONVIF_PASSWORD"

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
_ID_CHARS = re.compile(r"[^a-z0-9_.-]+")


# --- WS-Discovery -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiscoveredDevice:
    """One ProbeMatch (merged when a device answers more than one probe)."""

    endpoint: str  # the device's endpoint reference, usually urn:uuid:...
    xaddrs: tuple[str, ...]
    types: tuple[str, ...]
    scopes: tuple[str, ...]
    answered_from: str  # address that sent the ProbeMatches

    def scope(self, key: str) -> str | None:
        """The first onvif://www.onvif.org/<key>/<value> scope's value, percent-decoded."""
        for s in self.scopes:
            if s.lower().startswith(SCOPE_PREFIX + key.lower() + "/"):
                return unquote(s[len(SCOPE_PREFIX) + len(key) + 1 :]).strip() or None
        return None

    @property
    def name(self) -> str | None:
        """The name scope (what the installer called it)."""
        return self.scope("name")

    @property
    def hardware(self) -> str | None:
        """The hardware scope (usually the model)."""
        return self.scope("hardware")

    @property
    def location(self) -> str | None:
        """The location scope."""
        return self.scope("location")

    @property
    def device_url(self) -> str | None:
        """The XAddr to talk to: http(s), an IPv4 address before names and IPv6 (a link-local IPv6 is useless
        from another interface)."""

        def rank(url: str) -> int:
            host = urlsplit(url).hostname or ""
            try:
                return 0 if ipaddress.ip_address(host).version == 4 else 2
            except ValueError:
                return 1

        usable = [x for x in self.xaddrs if urlsplit(x).scheme in ("http", "https") and urlsplit(x).hostname]
        return min(usable, key=rank) if usable else None

    @property
    def host_port(self) -> tuple[str, int] | None:
        """Host and port of `device_url`."""
        url = self.device_url
        if url is None:
            return None
        parts = urlsplit(url)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return None
        return str(parts.hostname), port


def probe_message(message_id: str, type_prefix: str, type_ns: str, type_name: str) -> bytes:
    """A WS-Discovery Probe for one device type."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<e:Envelope xmlns:e="{SOAP12}" xmlns:w="{WSA}" xmlns:d="{WSD}" xmlns:{type_prefix}="{type_ns}">'
        f"<e:Header><w:MessageID>{message_id}</w:MessageID>"
        '<w:To e:mustUnderstand="true">urn:schemas-xmlsoap-org:ws:2005:04:discovery</w:To>'
        f'<w:Action e:mustUnderstand="true">{WSD}/Probe</w:Action></e:Header>'
        f"<e:Body><d:Probe><d:Types>{type_prefix}:{type_name}</d:Types></d:Probe></e:Body></e:Envelope>"
    ).encode()


def _texts(element: Any, expression: str) -> list[str]:
    found = element.xpath(expression)
    return [str(t).strip() for t in found if isinstance(t, str)] if isinstance(found, list) else []


def parse_probe_matches(data: bytes, answered_from: str, message_ids: Iterable[str] = ()) -> list[DiscoveredDevice]:
    """The ProbeMatch entries of one datagram; [] for anything else (other traffic on the port, garbage, or an
    answer to someone else's probe when `message_ids` is given)."""
    try:
        root = etree.fromstring(data, _PARSER)
    except (etree.XMLSyntaxError, ValueError):
        return []
    ids = set(message_ids)
    relates = _texts(root, "//*[local-name()='RelatesTo']/text()")
    if ids and relates and not ids.intersection(relates):
        return []
    found = []
    for ns in (WSD, WSD11):
        for match in root.iterfind(f".//{{{ns}}}ProbeMatch"):
            address = " ".join(_texts(match, "./*[local-name()='EndpointReference']/*[local-name()='Address']/text()"))
            xaddrs = tuple((match.findtext(f"{{{ns}}}XAddrs") or "").split())
            if not address.strip() and not xaddrs:
                continue
            found.append(
                DiscoveredDevice(
                    endpoint=address.strip() or xaddrs[0],
                    xaddrs=xaddrs,
                    types=tuple((match.findtext(f"{{{ns}}}Types") or "").split()),
                    scopes=tuple((match.findtext(f"{{{ns}}}Scopes") or "").split()),
                    answered_from=answered_from,
                )
            )
    return found


class _Collector(asyncio.DatagramProtocol):
    def __init__(self, message_ids: Sequence[str]) -> None:
        self.message_ids = message_ids
        self.found: dict[str, DiscoveredDevice] = {}
        self.error: Exception | None = None

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        for dev in parse_probe_matches(data, f"{addr[0]}:{addr[1]}", self.message_ids):
            seen = self.found.get(dev.endpoint)
            if seen is not None:  # the same device answering the other probe: merge what it said
                dev = DiscoveredDevice(
                    dev.endpoint,
                    tuple(dict.fromkeys(seen.xaddrs + dev.xaddrs)),
                    tuple(dict.fromkeys(seen.types + dev.types)),
                    tuple(dict.fromkeys(seen.scopes + dev.scopes)),
                    seen.answered_from,
                )
            self.found[dev.endpoint] = dev

    def error_received(self, exc: Exception) -> None:
        # an ICMP "port unreachable" from a directed probe to a host without a discovery service
        self.error = exc


def parse_target(target: str) -> tuple[str, int]:
    """HOST, HOST:PORT or [IPv6]:PORT."""
    text = target.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or str(WSD_PORT)
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, str(WSD_PORT)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise StoreSightError(f"--target {target!r}: give HOST or HOST:PORT")
    return host, int(port)


async def ws_discover(target: str | None = None, timeout_s: float = DISCOVERY_TIMEOUT_S) -> list[DiscoveredDevice]:
    """Probe for ONVIF devices: multicast on the local network, or directed at `target` (HOST[:PORT])."""
    loop = asyncio.get_running_loop()
    if target is None:
        host, port, family, bind = WSD_GROUP, WSD_PORT, socket.AF_INET, "0.0.0.0"
    else:
        host, port = parse_target(target)
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            raise StoreSightError(f"--target {target!r}: cannot resolve {host!r}: {exc.strerror}") from None
        family, _, _, _, sockaddr = infos[0]
        host = str(sockaddr[0])
        loopback = ipaddress.ip_address(host).is_loopback
        bind = ("127.0.0.1" if family == socket.AF_INET else "::1") if loopback else ""
        bind = bind or ("0.0.0.0" if family == socket.AF_INET else "::")
    ids = [f"uuid:{uuid.uuid4()}" for _ in PROBE_TYPES]
    transport, collector = await loop.create_datagram_endpoint(
        lambda: _Collector(ids), local_addr=(bind, 0), family=family
    )
    try:
        if target is None:
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, MULTICAST_TTL)
        messages = [probe_message(i, *t) for i, t in zip(ids, PROBE_TYPES, strict=True)]
        for repeat in range(2):
            if repeat:
                await asyncio.sleep(random.uniform(*REPEAT_DELAY_S))
            for message in messages:
                transport.sendto(message, (host, port))
        await asyncio.sleep(timeout_s)
    finally:
        transport.close()
    if collector.error is not None and not collector.found:
        log.info("discovery: %s", collector.error)
    return sorted(collector.found.values(), key=lambda d: (d.name or "", d.endpoint))


# --- credentials out of URLs --------------------------------------------------------------------------------------


@dataclass
class EnvRefs:
    """Environment variable names for the logins found, one pair per distinct login; the values stay here."""

    prefix: str = "STORESIGHT_CAMERA"
    pairs: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)  # for sink secrets: variable -> what it replaces

    def names(self, user: str, password: str) -> tuple[str, str]:
        """The (user, password) variables for this login."""
        key = (user, password)
        if key not in self.pairs:
            n = len(self.pairs) + 1
            stem = self.prefix if n == 1 else f"{self.prefix}{n}"
            self.pairs[key] = (f"{stem}_USER", f"{stem}_PASSWORD")
        return self.pairs[key]

    def required(self) -> list[str]:
        """Every variable the skeleton refers to."""
        out = [v for pair in self.pairs.values() for v in pair]
        return out + [v for v in self.secrets if v not in out]


def _netloc(parts: SplitResult, userinfo: str | None) -> str:
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{userinfo}@{host}{port}" if userinfo else f"{host}{port}"


def env_credentials(url: str, refs: EnvRefs, *, require_login: bool = False, login_of: str = "") -> str:
    """`url` with its user:password replaced by ${USER_VAR}:${PASSWORD_VAR} (added when `require_login`; `login_of`
    names whose login that is, so two VMSs that each need one get a variable pair each)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return redact_url(url)
    if parts.username is None and not require_login:
        return url
    if parts.username is None:
        user_var, pass_var = refs.names(f"\x00{login_of}", "")  # a key no real login has
    else:
        user_var, pass_var = refs.names(unquote(parts.username), unquote(parts.password or ""))
    userinfo = f"${{{user_var}}}:${{{pass_var}}}" if parts.password is not None or require_login else f"${{{user_var}}}"
    return urlunsplit(parts._replace(netloc=_netloc(parts, userinfo)))


# --- VMS listings -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VmsCamera:
    """A camera as a VMS knows it."""

    ref: str  # the VMS's own id: Nx device id, ZoneMinder monitor Id, Frigate name, XProtect or Genetec GUID
    name: str
    stream_url: str | None = field(default=None, repr=False)  # may hold credentials: never print it as it is
    note: str | None = None
    # what the user must check or fill in; with no stream_url the skeleton still gets this camera, its source a
    # ${STORESIGHT_<ID>_SOURCE} placeholder (without a todo, a camera without a stream is skipped)
    todo: str | None = None


# The product each sink kind talks to, for messages that must say which system answered.
PRODUCTS = {"nx": "Nx Witness", "milestone": "Milestone XProtect", "genetec": "Genetec Security Center",
            "zoneminder": "ZoneMinder", "frigate": "Frigate"}  # fmt: skip
MILESTONE_TODO = (
    "XProtect's REST API names no stream: set source to the camera's own RTSP URL, or replace it with an onvif "
    "section for the camera (or for XProtect's Open Network Bridge, ONVIF on port 580; INTEGRATIONS.md 3.7)"
)
GENETEC_RTSP_PORT = 654  # the Media Gateway's RTSP port by default (INTEGRATIONS.md 4.3 [S])
GENETEC_TODO = (
    "Genetec Media Gateway RTSP [S: INTEGRATIONS.md 4.3], assumed to run on the Web SDK's host: change the host if "
    "the Media Gateway role runs elsewhere; its login is a Security Center user's; /lowres instead of /live asks "
    "for the low-resolution stream (5.5+)"
)


@dataclass
class VmsListing:
    """One sink's cameras, or why there are none."""

    sink_id: str
    kind: str
    cameras: list[VmsCamera] = field(default_factory=list)
    error: str | None = None


class _NoRefs:
    """Listing writes nothing: SinkRefs that keep nothing."""

    async def get_ref(self, sink_id: str, incident_id: str) -> str | None:
        return None

    async def put_ref(self, sink_id: str, incident_id: str, ref: str) -> None:
        return None


def _rtsp_host(url: str) -> str:
    host = urlsplit(url).hostname or "127.0.0.1"
    return f"[{host}]" if ":" in host else host


async def list_vms_cameras(sink: SinkConfig) -> VmsListing:
    """The cameras a configured VMS sink can see (kinds whose module has a listing call)."""
    from adapters.sinks.frigate.sink import FrigateSink
    from adapters.sinks.nx.sink import NxSink
    from adapters.sinks.zoneminder.sink import ZoneMinderSink

    listing = VmsListing(sink.id, sink.kind)
    try:
        if isinstance(sink, NxSinkConfig):
            nx = NxSink(sink, _NoRefs())
            try:
                devices = await nx.devices()
            finally:
                await nx.close()
            port = urlsplit(sink.url).port or (443 if sink.url.startswith("https") else 80)
            for device, name in sorted(devices.items(), key=lambda kv: (kv[1], kv[0])):
                # Nx serves every camera's RTSP on its own port; stream=1 is the secondary (sub) stream, the one
                # to analyse. Its RTSP needs a user with digest auth enabled (INTEGRATIONS.md 2.4): not a session.
                url = f"rtsp://{_rtsp_host(sink.url)}:{port}/{device}?stream=1"
                listing.cameras.append(VmsCamera(device, name, url, "Nx RTSP, secondary stream"))
        elif isinstance(sink, ZoneMinderSinkConfig):
            zm = ZoneMinderSink(sink, _NoRefs())
            try:
                monitors = await zm.monitors()
            finally:
                await zm.close()
            for m in sorted(monitors.values(), key=lambda m: int(m.id)):
                scheme = urlsplit(m.path).scheme.lower() if m.path else ""
                if scheme in ("rtsp", "rtsps", "http", "https"):
                    listing.cameras.append(VmsCamera(m.id, m.name, m.path, f"the monitor's source ({m.function})"))
                else:
                    note = f"source {m.path!r} is not a network stream" if m.path else "no source URL"
                    listing.cameras.append(VmsCamera(m.id, m.name, None, note))
        elif isinstance(sink, FrigateSinkConfig):
            frigate = FrigateSink(sink, _NoRefs())
            try:
                names = await frigate.cameras()
            finally:
                await frigate.close()
            for name in names:
                # Frigate's go2rtc restream of the camera (its default RTSP port)
                url = f"rtsp://{_rtsp_host(sink.url)}:8554/{name}"
                listing.cameras.append(VmsCamera(name, name, url, "Frigate's go2rtc restream"))
        elif isinstance(sink, MilestoneSinkConfig):
            listing.cameras += await _milestone_cameras(sink)
        elif isinstance(sink, GenetecSinkConfig):
            listing.cameras += await _genetec_cameras(sink)
        else:
            listing.error = f"listing cameras is not supported for {sink.kind} sinks yet: map cameras by hand"
    except (SinkAuthError, SinkNotReady, SinkRejected, StoreSightError) as exc:
        listing.error = f"{PRODUCTS.get(sink.kind, sink.kind)}: {redact_url(str(exc))}"
    return listing


_XPROTECT_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


async def _milestone_cameras(sink: MilestoneSinkConfig) -> list[VmsCamera]:
    """XProtect's cameras, by GUID; none has a stream URL (a TODO each), disabled ones are listed but skipped."""
    from adapters.sinks.milestone.sink import MilestoneSink

    ms = MilestoneSink(sink, _NoRefs())
    try:
        found = await ms.cameras()
    finally:
        await ms.close()
    out = []
    for c in sorted(found, key=lambda c: (c.name, c.id)):
        if not _XPROTECT_GUID.match(c.id):
            out.append(VmsCamera(c.id, c.name, None, "its id is not a GUID, which the sink's cameras need"))
        elif not c.enabled:
            out.append(VmsCamera(c.id, c.name, None, "disabled in XProtect"))
        else:
            out.append(VmsCamera(c.id, c.name, None, "XProtect camera, no stream URL", MILESTONE_TODO))
    return out


async def _genetec_cameras(sink: GenetecSinkConfig) -> list[VmsCamera]:
    """Security Center's cameras, by GUID, each with the Media Gateway's RTSP URL for its live stream."""
    from adapters.sinks.genetec.sink import GenetecSink

    sc = GenetecSink(sink, _NoRefs())
    try:
        found = await sc.cameras()
    finally:
        await sc.close()
    host = _rtsp_host(sink.url)
    out = []
    for c in sorted(found, key=lambda c: (c.name, c.guid)):
        state = f", {c.running_state}" if c.running_state else ""
        url = f"rtsp://{host}:{GENETEC_RTSP_PORT}/{c.guid}/live"
        out.append(VmsCamera(c.guid, c.name, url, f"Media Gateway RTSP, live stream{state}", GENETEC_TODO))
    return out


# --- ONVIF details ------------------------------------------------------------------------------------------------


@dataclass
class FoundDevice:
    """A discovered device and, when probed, what it said."""

    device: DiscoveredDevice
    camera: OnvifCamera | None = None
    error: str | None = None


async def probe_devices(
    devices: Sequence[DiscoveredDevice], username: str | None, password: str | None, timeout_s: float
) -> list[FoundDevice]:
    """Run the ONVIF probe (identity, profiles, stream URIs) on each device, a few at a time."""
    gate = asyncio.Semaphore(PROBE_CONCURRENCY)

    async def one(dev: DiscoveredDevice) -> FoundDevice:
        where = dev.host_port
        if where is None:
            return FoundDevice(dev, error="no usable device service address (XAddrs)")
        async with gate:
            try:
                return FoundDevice(dev, await probe(where[0], where[1], username, password, timeout_s))
            except SourceError as exc:
                return FoundDevice(dev, error=str(exc))

    return list(await asyncio.gather(*(one(d) for d in devices)))


# --- the skeleton -------------------------------------------------------------------------------------------------


class _Quoted(str):
    """A string YAML writes double-quoted: ${VAR} references stay one scalar whatever the value holds."""


class _SkeletonDumper(yaml.SafeDumper):
    pass


_SkeletonDumper.add_representer(
    _Quoted, lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:str", str(value), style='"')
)


def camera_id(name: str | None, fallback: str, taken: set[str]) -> str:
    """A config id from a name: lower case, [a-z0-9_.-], unique among `taken`."""
    base = _ID_CHARS.sub("-", (name or "").lower()).strip("-._")[:56] or fallback
    if not base[0].isalnum():
        base = f"cam-{base}"
    cid, n = base, 2
    while cid in taken:
        cid, n = f"{base}-{n}", n + 1
    taken.add(cid)
    return cid


_SECRET_KEYS = ("password", "token", "secret")


def _env_name(*parts: str) -> str:
    return re.sub(r"[^A-Z0-9_]", "_", "_".join(parts).upper())


def sink_skeleton(raw: Mapping[str, Any], refs: EnvRefs) -> dict[str, Any]:
    """A sink section as the user wrote it (not expanded), with secrets written in clear turned into ${ENV}."""
    out: dict[str, Any] = {}
    sink_id = str(raw.get("id") or raw.get("kind") or "sink")
    for key, value in raw.items():
        if key in _SECRET_KEYS and isinstance(value, str):
            if re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}", value.strip()):
                out[key] = _Quoted(value.strip())
            else:
                var = _env_name("STORESIGHT", sink_id, key)
                refs.secrets[var] = f"sinks.{sink_id}.{key}"
                out[key] = _Quoted(f"${{{var}}}")
        elif key == "url" and isinstance(value, str) and "@" in value:
            out[key] = _Quoted(env_credentials(value, refs))
        elif key == "headers" and isinstance(value, Mapping):
            # webhook headers often carry tokens: keep the names, never the values
            out[key] = {h: _Quoted(f"${{{_env_name('STORESIGHT', sink_id, h)}}}") for h in value}
            refs.secrets.update({_env_name("STORESIGHT", sink_id, h): f"sinks.{sink_id}.headers.{h}" for h in value})
        else:
            out[key] = value
    return out


@dataclass
class Skeleton:
    """The document to write, and what the user must set before using it."""

    document: dict[str, Any]
    env: list[str]
    notes: list[str]
    todos: dict[str, str] = field(default_factory=dict)  # camera id -> what to check or fill in (a comment)


# Sink kinds whose restream needs the VMS's own login (a VMS user allowed to stream), not the camera's.
_VMS_LOGIN_STREAMS = ("nx", "genetec")


def _vms_camera(cid: str, vc: VmsCamera, listing: VmsListing, refs: EnvRefs, env: list[str]) -> dict[str, Any]:
    """A camera entry for a VMS camera: its stream with the login as references, else a source placeholder."""
    if vc.stream_url is None:
        var = _env_name("STORESIGHT", cid, "SOURCE")
        if var not in env:
            env.append(var)
        url = f"${{{var}}}"
    else:
        login = listing.kind in _VMS_LOGIN_STREAMS
        url = env_credentials(vc.stream_url, refs, require_login=login, login_of=listing.sink_id)
    return {"id": cid, "name": vc.name or cid, "source": _Quoted(url) if "${" in url else url}


def build_skeleton(
    found: Sequence[FoundDevice],
    listings: Sequence[VmsListing],
    *,
    onvif_username: str | None,
    raw_sinks: Sequence[Mapping[str, Any]] = (),
) -> Skeleton:
    """Cameras from discovery (an onvif section each) and from VMS listings (a source URL each), with each
    VMS camera mapped in its sink's `cameras`; credentials as ${ENV} references."""
    refs = EnvRefs()
    taken: set[str] = set()
    cameras: list[dict[str, Any]] = []
    notes: list[str] = []
    env: list[str] = []
    by_host: dict[str, dict[str, Any]] = {}
    for f in found:
        where = f.device.host_port
        if where is None:
            notes.append(f"{f.device.endpoint}: skipped, no usable device service address")
            continue
        name = f.device.name or (f"{f.camera.manufacturer} {f.camera.model}" if f.camera else None)
        cid = camera_id(name, f"cam-{len(cameras) + 1}", taken)
        onvif: dict[str, Any] = {"host": where[0], "port": where[1]}
        if onvif_username:
            onvif["username"] = _Quoted(f"${{{USER_ENV}}}")
            onvif["password"] = _Quoted(f"${{{PASSWORD_ENV}}}")
            env += [e for e in (USER_ENV, PASSWORD_ENV) if e not in env]
        entry: dict[str, Any] = {"id": cid, "name": name or cid, "onvif": onvif}
        if f.camera is not None:
            analysis = pick_analysis_profile(f.camera.profiles)
            evidence = pick_evidence_profile(f.camera.profiles)
            for role, p in (("analysis", analysis), ("evidence", evidence)):
                if p is not None and p.stream_uri:
                    notes.append(f"{cid}: {role} stream {p.token} {p.width}x{p.height}: "
                                 f"{env_credentials(p.stream_uri, refs)}")  # fmt: skip
        cameras.append(entry)
        by_host[where[0]] = entry
    sink_maps: dict[str, dict[str, str]] = {}
    todos: dict[str, str] = {}
    for listing in listings:
        if listing.error is not None:
            notes.append(f"sink {listing.sink_id} ({listing.kind}): {listing.error}")
            continue
        cam_map = sink_maps.setdefault(listing.sink_id, {})
        for vc in listing.cameras:
            host = urlsplit(vc.stream_url).hostname if vc.stream_url else None
            if host is not None and host in by_host and listing.kind == "zoneminder":
                # the ZoneMinder monitor pulls the same camera discovery found: one camera, mapped to both
                cam_map[by_host[host]["id"]] = vc.ref
                continue
            if vc.stream_url is None and vc.todo is None:
                notes.append(f"sink {listing.sink_id}: {listing.kind} camera {vc.ref} {vc.name!r} skipped: {vc.note}")
                continue
            cid = camera_id(vc.name, f"{listing.kind}-{vc.ref}", taken)
            cameras.append(_vms_camera(cid, vc, listing, refs, env))
            cam_map[cid] = vc.ref
            if vc.todo is not None:
                todos[cid] = vc.todo
    sinks = []
    for raw in raw_sinks:
        sink = sink_skeleton(raw, refs)
        if sink.get("id") in sink_maps:
            sink["cameras"] = sink_maps[str(sink["id"])]
            if not sink["cameras"]:
                notes.append(f"sink {sink['id']}: the VMS listed no camera to map; map at least one (our camera "
                             "id: its VMS id) under the sink's `cameras` before the file loads")  # fmt: skip
        sinks.append(sink)
    document: dict[str, Any] = {"cameras": cameras}
    if sinks:
        document["sinks"] = sinks
    env += [e for e in refs.required() if e not in env]
    return Skeleton(document, env, notes, todos)


def render_skeleton(skeleton: Skeleton, source: str) -> str:
    """The YAML text, with a header saying what to set and what was found."""
    lines = [
        f"# StoreSight config skeleton written by `storesight discover` at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"# from {source}.",
        "# Review it: add zones and rules, remove cameras you do not want analysed.",
        "# No password is in this file: set these environment variables before `storesight run -c` (values that",
        "# go into a URL must be percent-encoded, e.g. @ as %40):",
    ]
    lines += [f"#   {name}" for name in skeleton.env] or ["#   (none)"]
    if skeleton.todos:
        lines.append(
            f"# TODO: {len(skeleton.todos)} camera(s) below carry a TODO comment: check or fill in the source."
        )
    if skeleton.notes:
        lines.append("# Found:")
        lines += [f"#   {redact_url(n)}" for n in skeleton.notes]
    body = yaml.dump(skeleton.document, Dumper=_SkeletonDumper, sort_keys=False, allow_unicode=True, width=120)
    return "\n".join(lines) + "\n" + _with_todos(body, skeleton.todos)


def _with_todos(body: str, todos: Mapping[str, str]) -> str:
    """`body` with a `# TODO <id>: ...` comment above each camera in `todos` (YAML writers drop comments, so they
    go in afterwards: above the `- id: <id>` item that starts the camera, in the top-level cameras list only)."""
    out: list[str] = []
    in_cameras = False
    for line in body.splitlines():
        if line and not line.startswith((" ", "-")):
            in_cameras = line.startswith("cameras:")
        elif in_cameras and line.startswith("- id: "):
            item = yaml.safe_load(line[2:])
            cid = str(item.get("id")) if isinstance(item, dict) else ""
            if cid in todos:
                text = f"TODO {cid}: {todos[cid]}"
                out += [f"# {part}" for part in textwrap.wrap(text, 116)]
        out.append(line)
    return "\n".join(out) + "\n"


def write_skeleton(skeleton: Skeleton, path: Path, source: str) -> None:
    """Write the skeleton (never over an existing file: it may be the user's real config)."""
    text = render_skeleton(skeleton, source)
    try:
        with path.open("x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        raise StoreSightError(f"--write-config {path}: the file exists; give a new name") from None
    except OSError as exc:
        raise StoreSightError(f"--write-config {path}: {exc.strerror or exc}") from None


def raw_sinks(path: Path) -> list[dict[str, Any]]:
    """The sinks section of a config file as written (${VAR} references not expanded)."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []
    sinks = doc.get("sinks") if isinstance(doc, dict) else None
    return [s for s in sinks if isinstance(s, dict)] if isinstance(sinks, list) else []


async def list_configured_vms(config: Config) -> list[VmsListing]:
    """Listings of every sink that is a VMS (webhook and MQTT sinks have no cameras)."""
    vms = [s for s in config.sinks if s.kind not in ("webhook", "mqtt")]
    return list(await asyncio.gather(*(list_vms_cameras(s) for s in vms)))


# --- the command --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiscoverOptions:
    """What `storesight discover` was asked."""

    target: str | None = None  # HOST[:PORT] for a directed probe; None: multicast
    timeout_s: float = DISCOVERY_TIMEOUT_S
    probe: bool = False  # ask each device for its profiles
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    vms_only: bool = False
    config_path: Path | None = None
    write_config: Path | None = None


@dataclass
class DiscoveryResult:
    """What was found, before it is reported."""

    found: list[FoundDevice]
    listings: list[VmsListing]


async def discover(opts: DiscoverOptions, config: Config | None) -> DiscoveryResult:
    """Probe the network (unless VMS only), the devices (when asked) and the configured VMSs, concurrently."""
    if opts.vms_only and config is None:
        raise StoreSightError("--vms-only needs -c FILE with the VMS sinks to list")

    async def onvif() -> list[FoundDevice]:
        if opts.vms_only:
            return []
        devices = await ws_discover(opts.target, opts.timeout_s)
        if not opts.probe:
            return [FoundDevice(d) for d in devices]
        from adapters.cameras.onvif.device import PROBE_TIMEOUT_S

        return await probe_devices(devices, opts.username, opts.password, PROBE_TIMEOUT_S)

    async def vms() -> list[VmsListing]:
        return await list_configured_vms(config) if config is not None else []

    found, listings = await asyncio.gather(onvif(), vms())
    return DiscoveryResult(found, listings)


def _profile(p: Any) -> dict[str, Any]:
    return {"token": p.token, "name": p.name, "encoding": p.encoding, "width": p.width, "height": p.height,
            "fps": p.fps, "stream_uri": None if p.stream_uri is None else redact_url(p.stream_uri)}  # fmt: skip


def report(result: DiscoveryResult) -> dict[str, Any]:
    """The findings as JSON-able data, credentials redacted."""
    onvif = []
    for f in result.found:
        d, cam = f.device, f.camera
        probed = None
        if cam is not None:
            analysis, evidence = pick_analysis_profile(cam.profiles), pick_evidence_profile(cam.profiles)
            probed = {
                "manufacturer": cam.manufacturer,
                "model": cam.model,
                "firmware": cam.firmware,
                "serial": cam.serial,
                "analysis_profile": analysis.token if analysis else None,
                "evidence_profile": evidence.token if evidence else None,
                "profiles": [_profile(p) for p in cam.profiles],
            }
        onvif.append(
            {
                "endpoint": d.endpoint,
                "name": d.name,
                "hardware": d.hardware,
                "location": d.location,
                "device_url": d.device_url,
                "xaddrs": list(d.xaddrs),
                "types": list(d.types),
                "scopes": list(d.scopes),
                "answered_from": d.answered_from,
                "probe": probed,
                "error": None if f.error is None else redact_url(f.error),
            }
        )
    vms = [
        {
            "sink": listing.sink_id,
            "kind": listing.kind,
            "error": listing.error,
            "cameras": [
                {
                    "ref": c.ref,
                    "name": c.name,
                    "note": c.note,
                    "todo": c.todo,
                    "stream": None if c.stream_url is None else redact_url(c.stream_url),
                }
                for c in listing.cameras
            ],
        }
        for listing in result.listings
    ]
    return {"onvif": onvif, "vms": vms, "config_written": None, "env": []}


def report_and_write(result: DiscoveryResult, opts: DiscoverOptions) -> dict[str, Any]:
    """The report, after writing the skeleton when `opts.write_config` asks for one."""
    out = report(result)
    out["probed"] = None if opts.vms_only else (f"directed probe to {opts.target}" if opts.target else "multicast")
    out["timeout_s"] = opts.timeout_s
    if opts.write_config is not None:
        skeleton = build_skeleton(
            result.found,
            result.listings,
            onvif_username=opts.username,
            raw_sinks=raw_sinks(opts.config_path) if opts.config_path else (),
        )
        sources = [] if opts.vms_only else [f"WS-Discovery ({out['probed']})"]
        if opts.config_path is not None:
            sources.append(f"the VMS sinks of {opts.config_path}")
        write_skeleton(skeleton, opts.write_config, " and ".join(sources))
        out["config_written"] = str(opts.write_config)
        out["env"] = skeleton.env
    return out


def format_report(rep: Mapping[str, Any]) -> str:
    """The report for people."""
    lines = []
    if rep.get("probed"):
        lines.append(f"ONVIF devices ({rep['probed']}, {rep['timeout_s']:g} s): {len(rep['onvif'])}")
    for d in rep["onvif"]:
        label = " ".join(x for x in (d["name"], f"({d['hardware']})" if d["hardware"] else None) if x)
        lines.append(f"  {label or d['endpoint']}  {d['device_url'] or 'no device URL'}")
        if d["probe"] is not None:
            p = d["probe"]
            sizes = ", ".join(f"{x['token']} {x['width']}x{x['height']}" for x in p["profiles"] if x["width"])
            lines.append(f"    {p['manufacturer']} {p['model']}, firmware {p['firmware']}: {sizes or 'no video'}")
        if d["error"]:
            lines.append(f"    probe failed: {d['error']}")
    for v in rep["vms"]:
        lines.append(f"VMS sink {v['sink']} ({v['kind']}): " + (v["error"] or f"{len(v['cameras'])} camera(s)"))
        for c in v["cameras"]:
            note = f"  ({c['note']})" if c["note"] else ""
            lines.append(f"  {c['ref']:<36}  {c['name']!r}  {c['stream'] or '-'}{note}")
    if rep.get("config_written"):
        env = rep["env"]
        lines.append(f"wrote {rep['config_written']}" + (f"; set {', '.join(env)} before using it" if env else ""))
    return "\n".join(lines)
