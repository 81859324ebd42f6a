"""Finding ONVIF devices: WS-Discovery on the local network (or a directed probe of one host), and the ONVIF probe of
each device found.

WS-Discovery (2005/04, SOAP-over-UDP on port 3702; ../shared/design/INTEGRATIONS.md section 6.1): a Probe goes to
the multicast group 239.255.255.250 (or, directed, to one host), and devices answer with ProbeMatches carrying
their endpoint reference, types, scopes (name, hardware, location) and XAddrs (device service URLs). Two probes
are sent, one per type (the spec's `tds:Device`, and `dn:NetworkVideoTransmitter`, which most devices answer to),
each repeated once as SOAP-over-UDP asks, because UDP loses packets.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import re
import socket
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from lxml import etree

from adapters.cameras.onvif.device import OnvifCamera, probe
from plugin.errors import SourceError, StoreSightError

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
