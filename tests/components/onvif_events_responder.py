"""An ONVIF event service for tests: an aiohttp SOAP responder on 127.0.0.1 speaking the messages of ONVIF's
`event.wsdl` (ipycam, the real ONVIF device the other tests use, has no event service).

It answers what a client needs around the event service (device service: GetSystemDateAndTime, GetServices) and
the event service itself: CreatePullPointSubscription, PullMessages (a real long poll), Renew, Unsubscribe.
Subscriptions end at their termination time unless renewed; PullMessages does not extend them (many cameras do
not), so a client that forgets Renew loses its subscription here as it would on such a camera.

Every event-service request is validated against the schema in ``../shared/specs/onvif/event.wsdl`` (with the
ONVIF schema it uses, ``onvif.xsd``), and so is every reply and every NotificationMessage the tests queue: the
shapes are the WSDL's, not this file's idea of them. The OASIS WS-Notification, WS-Addressing and W3C schemas
that the WSDL imports by URL come from onvif-zeep-async's bundled copies (no network here).

Switches for tests: `lose()` forgets every subscription (the next pull gets the camera's ResourceUnknown fault),
`restart()` is a reboot (the port goes away and comes back with no subscriptions), `queue_raw()` queues a message
fragment as is, for replies no schema would allow. `reference_parameters=True` makes it a camera that tells its
subscriptions apart by a WS-Addressing reference parameter instead of by URL: every subscription reference carries
one shared address and a `<dom0:SubscriptionId>` in its ReferenceParameters (the element and namespace Axis cameras
use, as third-party clients quote them [S]), and a request to that address without the matching SOAP header,
marked `wsa:IsReferenceParameter="true"`, gets a `ter:InvalidArgs` fault, as those cameras answer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import functools
import hashlib
import itertools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import onvif
from aiohttp import web
from lxml import etree

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED = Path(onvif.__file__).parent / "wsdl"

SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
WSNT = "http://docs.oasis-open.org/wsn/b-2"
WSA = "http://www.w3.org/2005/08/addressing"
TT = "http://www.onvif.org/ver10/schema"
TEV = "http://www.onvif.org/ver10/events/wsdl"
TDS = "http://www.onvif.org/ver10/device/wsdl"
TNS1 = "http://www.onvif.org/ver10/topics"
XS = "http://www.w3.org/2001/XMLSchema"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
CONCRETE_SET = "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet"
SUBSCRIPTION_NS = "http://www.axis.com/2009/event"  # the reference parameter's namespace [S]
SHARED_PATH = "/onvif/subscription"  # the one subscription address with reference_parameters


def specs_dir() -> Path:
    """$STORESIGHT_SPECS_DIR, else the workplace's vendor specs next to the checkout (never copied into it)."""
    env = os.environ.get("STORESIGHT_SPECS_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "specs"


def events_responder_available() -> str | None:
    """None when the responder can run here, else why not."""
    for name in ("event.wsdl", "onvif.xsd", "common.xsd"):
        if not (specs_dir() / "onvif" / name).is_file():
            return f"{specs_dir() / 'onvif' / name} not found (set STORESIGHT_SPECS_DIR)"
    for name in ("b-2.xsd", "t-1.xsd", "ws-addr.xsd", "bf-2.xsd", "xml.xsd", "xmlmime", "include"):
        if not (BUNDLED / name).is_file():
            return f"onvif-zeep-async's bundled {name} is missing from {BUNDLED}"
    return None


# --- the schema ---------------------------------------------------------------------------------------------------

# onvif.xsd imports the SOAP 1.2 envelope schema only for two diagnostic types; libxml2 needs something there.
_SOAP12_STUB = f"""<xs:schema xmlns:xs="{XS}" targetNamespace="{SOAP12}">
  <xs:complexType name="Envelope"><xs:sequence><xs:any processContents="lax" minOccurs="0" maxOccurs="unbounded"/>
  </xs:sequence><xs:anyAttribute processContents="lax"/></xs:complexType>
  <xs:complexType name="Fault"><xs:sequence><xs:any processContents="lax" minOccurs="0" maxOccurs="unbounded"/>
  </xs:sequence><xs:anyAttribute processContents="lax"/></xs:complexType>
</xs:schema>""".encode()
_IMPORTS = {
    "https://www.w3.org/2005/05/xmlmime": "xmlmime",
    "https://www.w3.org/2004/08/xop/include": "include",
    "http://docs.oasis-open.org/wsn/b-2.xsd": "b-2.xsd",
    "http://www.w3.org/2005/08/addressing/ws-addr.xsd": "ws-addr.xsd",
    "http://docs.oasis-open.org/wsn/t-1.xsd": "t-1.xsd",
}


def _deterministic(text: bytes) -> bytes:
    """ONVIF's schemas put `xs:any namespace="##any"` (and ##targetNamespace) after optional elements of the same
    namespace, which XSD's Unique Particle Attribution forbids and libxml2 enforces. Narrowing those wildcards to
    ##other is the usual workaround; it only affects vendor extension points, which no message here uses."""
    return text.replace(b'namespace="##any"', b'namespace="##other"').replace(
        b'namespace="##targetNamespace"', b'namespace="##other"'
    )


class _LocalSchemas(etree.Resolver):
    """Serves imported schemas from disk: the ONVIF ones from the shared specs, the OASIS/W3C ones bundled with
    onvif-zeep-async, and a stub for the SOAP envelope."""

    def resolve(self, system_url: str, public_id: str, context: Any) -> Any:
        if system_url == "https://www.w3.org/2003/05/soap-envelope":
            return self.resolve_string(_SOAP12_STUB, context)
        if system_url in _IMPORTS:
            return self.resolve_filename(str(BUNDLED / _IMPORTS[system_url]), context)
        path = Path(system_url)
        if path.suffix == ".xsd" and path.parent == specs_dir() / "onvif":
            return self.resolve_string(_deterministic(path.read_bytes()), context, base_url=system_url)
        return None


@functools.cache
def event_schema() -> etree.XMLSchema:
    """The schema of event.wsdl's messages (with onvif.xsd for tt:Message), compiled once (~0.5 s)."""
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    parser.resolvers.add(_LocalSchemas())
    wsdl_path = specs_dir() / "onvif" / "event.wsdl"
    wsdl = etree.parse(str(wsdl_path), parser)
    inline = wsdl.find(f".//{{{XS}}}schema")
    assert inline is not None, "event.wsdl has no inline schema"
    # the inline schema uses prefixes declared on wsdl:definitions (QNames in attribute values): carry them over
    nsmap = {k: v for k, v in wsdl.getroot().nsmap.items() if k} | {k: v for k, v in inline.nsmap.items() if k}
    schema = etree.Element(inline.tag, nsmap=nsmap, attrib=dict(inline.attrib))
    etree.SubElement(schema, f"{{{XS}}}import", namespace=TT, schemaLocation=str(specs_dir() / "onvif" / "onvif.xsd"))
    for child in inline:
        schema.append(copy.deepcopy(child))
    text = _deterministic(etree.tostring(schema))
    return etree.XMLSchema(etree.ElementTree(etree.fromstring(text, parser, base_url=str(wsdl_path))))


def validation_errors(element: Any) -> list[str]:
    """Why `element` does not match the event service schema; empty when it does."""
    schema = event_schema()
    if schema.validate(element):
        return []
    return [f"line {e.line}: {e.message}" for e in schema.error_log]


# --- messages -----------------------------------------------------------------------------------------------------


def xs_datetime(t: datetime) -> str:
    """An xs:dateTime in UTC with Z."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def notification(
    topic: str,
    utc_time: datetime | None = None,
    *,
    source: Mapping[str, str] | None = None,
    data: Mapping[str, str] | None = None,
    key: Mapping[str, str] | None = None,
    operation: str | None = "Changed",
    validate: bool = True,
) -> Any:
    """A wsnt:NotificationMessage as ONVIF Core shapes it: Topic (ConcreteSet dialect, tns1: prefix) and a
    tt:Message with Source, Key and Data SimpleItems. Checked against the schema unless `validate` is off."""
    msg = etree.Element(f"{{{WSNT}}}NotificationMessage", nsmap={"wsnt": WSNT, "tt": TT, "tns1": TNS1})
    etree.SubElement(msg, f"{{{WSNT}}}Topic", Dialect=CONCRETE_SET).text = topic
    holder = etree.SubElement(msg, f"{{{WSNT}}}Message")
    attrs = {"UtcTime": xs_datetime(utc_time or datetime.now(UTC))}
    if operation is not None:
        attrs["PropertyOperation"] = operation
    inner = etree.SubElement(holder, f"{{{TT}}}Message", attrs)
    for name, items in (("Source", source), ("Key", key), ("Data", data)):
        if items is not None:
            lst = etree.SubElement(inner, f"{{{TT}}}{name}")
            for n, v in items.items():
                etree.SubElement(lst, f"{{{TT}}}SimpleItem", Name=n, Value=v)
    if validate:
        errors = validation_errors(msg)
        assert not errors, f"test bug: not a NotificationMessage event.wsdl allows: {errors}"
    return msg


_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


def parse_duration_or_time(text: str, now: datetime) -> timedelta:
    """wsnt:AbsoluteOrRelativeTimeType: an xs:duration (PT120S) or an xs:dateTime, as a length from now."""
    text = text.strip()
    m = _DURATION.match(text)
    if m and text not in ("P", "PT"):
        d, h, mi, s = (float(g) if g else 0.0 for g in m.groups())
        return timedelta(days=d, hours=h, minutes=mi, seconds=s)
    when = datetime.fromisoformat(text)
    return (when if when.tzinfo else when.replace(tzinfo=UTC)) - now


# --- the responder ------------------------------------------------------------------------------------------------


class _Fault(Exception):
    def __init__(self, code: str, subcode: str | None, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.code, self.subcode, self.reason, self.status = code, subcode, reason, status


@dataclass
class Subscription:
    """One pull point."""

    id: int
    termination: datetime
    queue: list[Any] = field(default_factory=list)  # elements, or bytes queued raw
    wake: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Seen:
    """One request as received."""

    path: str
    operation: str
    authenticated: bool
    reference_parameters: tuple[str, ...] = ()  # "{ns}name=text" of each header marked IsReferenceParameter


class EventsResponder:
    """The responder; `async with EventsResponder() as r:` starts it on a free port of 127.0.0.1."""

    def __init__(
        self,
        username: str = "",
        password: str = "",
        *,
        events_service: bool = True,
        max_pull_timeout_s: float = 60.0,
        clock_offset_s: float = 0.0,
        reference_parameters: bool = False,
    ) -> None:
        self.reference_parameters = reference_parameters
        self.username = username
        self.password = password
        self.events_service = events_service
        self.max_pull_timeout_s = max_pull_timeout_s
        self.clock_offset_s = clock_offset_s  # the camera's clock minus the real one (a camera that lost its time)
        self.port = 0
        self.subscriptions: dict[int, Subscription] = {}
        self.requests: list[Seen] = []
        self.errors: list[str] = []  # schema violations in requests (a client bug) or replies (a responder bug)
        self.ids = itertools.count(1)
        self._runner: web.AppRunner | None = None

    def now(self) -> datetime:
        """The camera's clock."""
        return datetime.now(UTC) + timedelta(seconds=self.clock_offset_s)

    @property
    def counts(self) -> dict[str, int]:
        """Requests by operation."""
        out: dict[str, int] = {}
        for r in self.requests:
            out[r.operation] = out.get(r.operation, 0) + 1
        return out

    async def __aenter__(self) -> EventsResponder:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen (on the same port as before, after a stop)."""
        event_schema()  # compile before the first request, not during it
        app = web.Application()
        app.router.add_post("/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, self.port, reuse_address=True)
        await site.start()
        if not self.port:
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        """Stop listening; pulls in progress end."""
        self.lose()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def restart(self, down_s: float = 0.5) -> None:
        """A reboot: the port closes for `down_s`, and the camera comes back without subscriptions."""
        await self.stop()
        await asyncio.sleep(down_s)
        await self.start()

    @property
    def device_url(self) -> str:
        """Where the device service answers."""
        return f"http://{HOST}:{self.port}/onvif/device_service"

    def lose(self) -> None:
        """Forget every subscription, as a camera does when it restarts its event service."""
        for sub in self.subscriptions.values():
            sub.wake.set()
        self.subscriptions.clear()

    def publish(self, *messages: Any) -> None:
        """Queue NotificationMessages (from `notification()`) to every live subscription."""
        for sub in self.subscriptions.values():
            sub.queue.extend(copy.deepcopy(m) for m in messages)
            sub.wake.set()

    def queue_raw(self, fragment: bytes) -> None:
        """Queue a message fragment exactly as given (it goes into the reply unchecked)."""
        for sub in self.subscriptions.values():
            sub.queue.append(fragment)
            sub.wake.set()

    # -- SOAP --

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        path = "/" + request.match_info["path"]
        try:
            envelope = etree.fromstring(raw, etree.XMLParser(resolve_entities=False, no_network=True))
            body = envelope.find(f"{{{SOAP12}}}Body")
            if body is None or len(body) == 0:
                raise _Fault("Sender", None, "no SOAP 1.2 Body")
            op = body[0]
            name = etree.QName(op).localname
            authenticated = self._authenticated(envelope)
            refs = _reference_headers(envelope)
            self.requests.append(
                Seen(path, name, authenticated, tuple(f"{etree.QName(h).text}={h.text}" for h in refs))
            )
            if self.username and not authenticated and name != "GetSystemDateAndTime":  # ONVIF: PRE_AUTH
                raise _Fault("Sender", "ter:NotAuthorized", "Sender not authorized")
            if path == SHARED_PATH and self.reference_parameters:
                path = f"/onvif/pullpoint/{self._referenced(refs)}"
            elif path.startswith("/onvif/pullpoint/") and self.reference_parameters:
                raise _Fault("Receiver", "ter:ActionNotSupported", f"nothing at {path}", status=500)
            reply = await self._dispatch(path, op, name)
        except _Fault as fault:
            return self._fault(fault)
        return web.Response(body=_envelope(reply), content_type="application/soap+xml", charset="utf-8")

    def _authenticated(self, envelope: Any) -> bool:
        """WS-Security UsernameToken with PasswordDigest = Base64(SHA-1(nonce + created + password))."""
        token = envelope.find(f"{{{SOAP12}}}Header/{{{WSSE}}}Security/{{{WSSE}}}UsernameToken")
        if token is None:
            return False
        user = token.findtext(f"{{{WSSE}}}Username") or ""
        digest = token.findtext(f"{{{WSSE}}}Password") or ""
        nonce = token.findtext(f"{{{WSSE}}}Nonce") or ""
        created = token.findtext(f"{{{WSU}}}Created") or ""
        try:
            expected = hashlib.sha1(base64.b64decode(nonce) + created.encode() + self.password.encode()).digest()
        except ValueError:
            return False
        return user == self.username and digest == base64.b64encode(expected).decode()

    async def _dispatch(self, path: str, op: Any, name: str) -> Any:
        ns = etree.QName(op).namespace
        if path == "/onvif/device_service" and ns == TDS:
            if name == "GetSystemDateAndTime":
                return _system_date_and_time(self.now())
            if name == "GetServices":
                return self._services()
        if ns in (TEV, WSNT):
            errors = validation_errors(op)
            if errors:
                self.errors.extend(f"request {name}: {e}" for e in errors)
                raise _Fault("Sender", "ter:InvalidArgVal", f"{name} does not match event.wsdl: {errors[0]}")
            if path == "/onvif/events" and self.events_service and name == "CreatePullPointSubscription":
                return self._create(op)
            if match := re.fullmatch(r"/onvif/pullpoint/(\d+)", path):
                sub = self._subscription(int(match.group(1)))
                if name == "PullMessages":
                    return await self._pull(sub, op)
                if name == "Renew":
                    return self._renew(sub, op)
                if name == "Unsubscribe":
                    del self.subscriptions[sub.id]
                    sub.wake.set()  # a pull waiting on it ends now
                    return _reply(etree.Element(f"{{{WSNT}}}UnsubscribeResponse", nsmap={"wsnt": WSNT}), self.errors)
        raise _Fault("Receiver", "ter:ActionNotSupported", f"{name} is not supported at {path}", status=500)

    def _services(self) -> Any:
        base = f"http://{HOST}:{self.port}/onvif"
        resp = etree.Element(f"{{{TDS}}}GetServicesResponse", nsmap={"tds": TDS, "tt": TT})
        services = [("http://www.onvif.org/ver10/device/wsdl", f"{base}/device_service")]
        if self.events_service:
            services.append((TEV, f"{base}/events"))
        for namespace, xaddr in services:
            svc = etree.SubElement(resp, f"{{{TDS}}}Service")
            etree.SubElement(svc, f"{{{TDS}}}Namespace").text = namespace
            etree.SubElement(svc, f"{{{TDS}}}XAddr").text = xaddr
            version = etree.SubElement(svc, f"{{{TDS}}}Version")
            etree.SubElement(version, f"{{{TT}}}Major").text = "2"
            etree.SubElement(version, f"{{{TT}}}Minor").text = "60"
        return resp

    def _referenced(self, refs: list[Any]) -> str:
        """The subscription id a request to the shared address names in its reference parameter header."""
        ids = [h.text or "" for h in refs if h.tag == f"{{{SUBSCRIPTION_NS}}}SubscriptionId"]
        if len(ids) != 1:
            raise _Fault("Sender", "ter:InvalidArgs", "no SubscriptionId reference parameter in the SOAP header")
        if not ids[0].strip().isdigit():
            raise _Fault("Sender", "wsrf-rw:ResourceUnknownFault", f"no subscription {ids[0]!r}")
        return ids[0].strip()

    def _subscription(self, sub_id: int) -> Subscription:
        sub = self.subscriptions.get(sub_id)
        now = self.now()
        if sub is not None and now > sub.termination:
            del self.subscriptions[sub_id]
            sub = None
        if sub is None:
            raise _Fault("Sender", "wsrf-rw:ResourceUnknownFault", f"no subscription {sub_id} (ended or never made)")
        return sub

    def _create(self, op: Any) -> Any:
        now = self.now()
        initial = op.findtext(f"{{{TEV}}}InitialTerminationTime")
        length = parse_duration_or_time(initial, now) if initial else timedelta(seconds=60)
        sub = Subscription(next(self.ids), now + length)
        self.subscriptions[sub.id] = sub
        resp = etree.Element(
            f"{{{TEV}}}CreatePullPointSubscriptionResponse", nsmap={"tev": TEV, "wsnt": WSNT, "wsa": WSA}
        )
        ref = etree.SubElement(resp, f"{{{TEV}}}SubscriptionReference")
        if self.reference_parameters:
            etree.SubElement(ref, f"{{{WSA}}}Address").text = f"http://{HOST}:{self.port}{SHARED_PATH}"
            params = etree.SubElement(ref, f"{{{WSA}}}ReferenceParameters")
            ident = etree.SubElement(params, f"{{{SUBSCRIPTION_NS}}}SubscriptionId", nsmap={"dom0": SUBSCRIPTION_NS})
            ident.text = str(sub.id)
        else:
            etree.SubElement(ref, f"{{{WSA}}}Address").text = f"http://{HOST}:{self.port}/onvif/pullpoint/{sub.id}"
        etree.SubElement(resp, f"{{{WSNT}}}CurrentTime").text = xs_datetime(now)
        etree.SubElement(resp, f"{{{WSNT}}}TerminationTime").text = xs_datetime(sub.termination)
        return _reply(resp, self.errors)

    def _renew(self, sub: Subscription, op: Any) -> Any:
        now = self.now()
        sub.termination = now + parse_duration_or_time(op.findtext(f"{{{WSNT}}}TerminationTime") or "PT60S", now)
        resp = etree.Element(f"{{{WSNT}}}RenewResponse", nsmap={"wsnt": WSNT})
        etree.SubElement(resp, f"{{{WSNT}}}TerminationTime").text = xs_datetime(sub.termination)
        etree.SubElement(resp, f"{{{WSNT}}}CurrentTime").text = xs_datetime(now)
        return _reply(resp, self.errors)

    async def _pull(self, sub: Subscription, op: Any) -> Any:
        now = self.now()
        timeout = min(parse_duration_or_time(op.findtext(f"{{{TEV}}}Timeout") or "PT1S", now).total_seconds(),
                      self.max_pull_timeout_s)  # fmt: skip
        limit = int(op.findtext(f"{{{TEV}}}MessageLimit") or "1")
        if not sub.queue:
            sub.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sub.wake.wait(), timeout)
        if self.subscriptions.get(sub.id) is not sub:  # lost while waiting
            raise _Fault("Sender", "wsrf-rw:ResourceUnknownFault", f"subscription {sub.id} was lost")
        batch, sub.queue = sub.queue[:limit], sub.queue[limit:]
        now = self.now()
        head = (
            f'<tev:PullMessagesResponse xmlns:tev="{TEV}" xmlns:wsnt="{WSNT}">'
            f"<tev:CurrentTime>{xs_datetime(now)}</tev:CurrentTime>"
            f"<tev:TerminationTime>{xs_datetime(sub.termination)}</tev:TerminationTime>"
        ).encode()
        parts = [m if isinstance(m, bytes) else etree.tostring(m) for m in batch]
        text = head + b"".join(parts) + b"</tev:PullMessagesResponse>"
        if all(not isinstance(m, bytes) for m in batch):
            return _reply(etree.fromstring(text), self.errors)
        return text  # raw fragments: sent as they are

    def _fault(self, fault: _Fault) -> web.Response:
        sub = ""
        if fault.subcode:
            sub = f"<env:Subcode><env:Value>{fault.subcode}</env:Value></env:Subcode>"
        xml = (
            f'<?xml version="1.0" encoding="UTF-8"?><env:Envelope xmlns:env="{SOAP12}" '
            'xmlns:ter="http://www.onvif.org/ver10/error" xmlns:wsrf-rw="http://docs.oasis-open.org/wsrf/rw-2">'
            f"<env:Body><env:Fault><env:Code><env:Value>env:{fault.code}</env:Value>{sub}</env:Code>"
            f'<env:Reason><env:Text xml:lang="en">{_escape(fault.reason)}</env:Text></env:Reason>'
            "</env:Fault></env:Body></env:Envelope>"
        )
        return web.Response(status=fault.status, body=xml.encode(), content_type="application/soap+xml")


def _reference_headers(envelope: Any) -> list[Any]:
    """The SOAP header blocks marked wsa:IsReferenceParameter="true" (WS-Addressing 1.0 SOAP Binding 3.4)."""
    header = envelope.find(f"{{{SOAP12}}}Header")
    if header is None:
        return []
    return [h for h in header if isinstance(h.tag, str) and h.get(f"{{{WSA}}}IsReferenceParameter") in ("true", "1")]


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _reply(element: Any, errors: list[str]) -> Any:
    """A reply element, checked against the schema (a mismatch is the responder's bug: recorded, sent anyway)."""
    errors.extend(f"reply {etree.QName(element).localname}: {e}" for e in validation_errors(element))
    return element


def _envelope(reply: Any) -> bytes:
    inner = reply if isinstance(reply, bytes) else etree.tostring(reply)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><env:Envelope xmlns:env="{SOAP12}"><env:Body>'.encode()
        + inner
        + b"</env:Body></env:Envelope>"
    )


def _system_date_and_time(now: datetime) -> Any:
    resp = etree.Element(f"{{{TDS}}}GetSystemDateAndTimeResponse", nsmap={"tds": TDS, "tt": TT})
    sdt = etree.SubElement(resp, f"{{{TDS}}}SystemDateAndTime")
    etree.SubElement(sdt, f"{{{TT}}}DateTimeType").text = "NTP"
    etree.SubElement(sdt, f"{{{TT}}}DaylightSavings").text = "false"
    utc = etree.SubElement(sdt, f"{{{TT}}}UTCDateTime")
    t = etree.SubElement(utc, f"{{{TT}}}Time")
    for tag, value in (("Hour", now.hour), ("Minute", now.minute), ("Second", now.second)):
        etree.SubElement(t, f"{{{TT}}}{tag}").text = str(value)
    d = etree.SubElement(utc, f"{{{TT}}}Date")
    for tag, value in (("Year", now.year), ("Month", now.month), ("Day", now.day)):
        etree.SubElement(d, f"{{{TT}}}{tag}").text = str(value)
    return resp
