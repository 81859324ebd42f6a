"""ONVIF events: a PullPoint subscription to a camera's event service, and a parser that turns its
NotificationMessages into StoreSight camera signals (plugin/camera_signals.py).

The operations are ONVIF Core's event service, as `../shared/specs/onvif/event.wsdl` defines them:
CreatePullPointSubscription, then a loop of PullMessages long polls on the returned subscription, Renew before the
termination time, Unsubscribe on the way out. When the subscription is lost (a fault on PullMessages or Renew, the
camera rebooted or unreachable), a new one is created, with backoff.

Why not onvif-zeep-async's PullPointManager (4.3.0, checked in its source): it renews on a timer of its own and
never less than 48 s apart (60 s floor x 0.8), restarts 40 s after an error, and does not pull; a pull that fails
because the camera rebooted is not its business. Driving the operations here keeps renewal, pulling and recovery in
one task with one notion of time. The library still does the parts it does well: WS-Security with the camera's
clock offset, WS-Addressing headers, service creation from the subscription reference.

Which subscription a request is for: per WS-Addressing, the SubscriptionReference is an endpoint reference, its
Address plus optional ReferenceParameters, and a client must echo each reference parameter as a SOAP header block
marked `wsa:IsReferenceParameter="true"` in every message to that endpoint (WS-Addressing 1.0 SOAP Binding, 3.4).
Many cameras (Axis's `dom0:SubscriptionId`, for one) give all subscriptions one address and tell them apart only
by that header; without it a pull gets a fault. The parameters are read from the raw reply (zeep turns an element
it happens to know into an object, which cannot be echoed as it came) and sent, copied verbatim, on PullMessages,
Renew and Unsubscribe. A reference without them is addressed by its URL alone, as before.

PullMessages replies are parsed here with lxml, not by zeep: the message payload is an `xs:any` with lax processing,
which zeep turns into a typed object when it knows the element and into a bare element when it does not (vendor
extensions), and a single malformed message would fail the whole reply. One XML path handles every shape, lets
a bad message be rejected alone, and is the same parser the property tests hammer.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from lxml import etree
from onvif import ONVIFCamera
from onvif.exceptions import ONVIFError
from zeep.settings import Settings

from adapters.cameras.onvif.device import (
    PROTOCOL_EXCEPTIONS,
    UNREACHABLE_EXCEPTIONS,
    WSDL_DIR,
    _describe,
    _is_auth_failure,
)
from plugin.config.cameras import OnvifConfig
from plugin.errors import CameraAuthError, SourceError
from plugin.redact import redact_url
from plugin.types import CameraSignal, CameraSignalKind

log = logging.getLogger(__name__)

SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
WSNT = "http://docs.oasis-open.org/wsn/b-2"
TT = "http://www.onvif.org/ver10/schema"
TEV = "http://www.onvif.org/ver10/events/wsdl"
ONVIF_TOPICS = "http://www.onvif.org/ver10/topics"
EVENTS_NS = TEV
PULLPOINT_NS = f"{TEV}/PullPointSubscription"  # the library's key for the subscription's own address
WSA = "http://www.w3.org/2005/08/addressing"  # WS-Addressing 1.0, what ONVIF's endpoint references use

# A subscription ends this long after its last renewal: long enough that one lost Renew does not end it, short
# enough that a camera frees the pull point soon after a bridge dies (cameras allow only a few: MaxPullPoints).
SUBSCRIPTION_S = 120.0
# One PullMessages waits this long for a message. Longer means fewer requests; ONVIF devices must accept a minute,
# but a NAT or proxy in between may drop an idle HTTP request sooner.
PULL_TIMEOUT_S = 20.0
MESSAGE_LIMIT = 100  # per pull; a camera with more queued answers again at once
RENEW_MARGIN_S = 10.0  # renew when less than a pull plus this is left (capped at a quarter of the subscription)
RETRY_START_S = 2.0  # first wait after losing the subscription; doubles to RETRY_MAX_S
RETRY_MAX_S = 60.0
UNSUBSCRIBE_TIMEOUT_S = 2.0  # a courtesy on the way out: never hold up shutdown for it
CLOCK_TRUST_S = 5.0  # the camera's clock offset is measured to ~1 s; correct message times only beyond this
MAX_REPLY_BYTES = 4 * 1024 * 1024  # MESSAGE_LIMIT messages are a few hundred kB at most
MAX_REMEMBERED = 256  # distinct unknown topics / rejection reasons logged; beyond it a noisy camera stays quiet
# Reference parameters echoed on every request: cameras send one or two small elements (an id); a reference with
# more is broken or hostile, and would otherwise be copied into every request for the subscription's life.
MAX_REFERENCE_PARAMETERS = 8
MAX_REFERENCE_BYTES = 4096

# what an awaited call to the camera raises when it goes wrong (adapters/onvif.py explains each)
CALL_EXCEPTIONS: tuple[type[Exception], ...] = (*UNREACHABLE_EXCEPTIONS, *PROTOCOL_EXCEPTIONS)

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_FRACTION = re.compile(r"(\.\d{6})\d+")
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


# --- the parser ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """How one ONVIF topic (or a subtree of topics, when it ends in "/") becomes a signal."""

    topic: str  # without the tns1: prefix
    kind: CameraSignalKind
    state: tuple[str, ...] = ()  # Data items holding an on/off boolean, preferred first
    states: Mapping[str, tuple[bool, str | None]] | None = None  # an enumerated State: value -> (on, cause)
    value: tuple[str, ...] = ()  # Data items holding a number (counting)
    cause: str | None = None

    def matches(self, topic: str) -> bool:
        """Exact topic, or any topic below it when this one ends in "/"."""
        return topic.startswith(self.topic) if self.topic.endswith("/") else topic == self.topic


# Topic names and payload items from ONVIF Core, Analytics, Imaging, Door Control and Access Control (see
# ../shared/design/INTEGRATIONS.md section 6.4). Cameras differ in the item names of the state, so each state
# topic lists the names seen, and any single boolean item is accepted when none of them is there.
TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec("RuleEngine/CellMotionDetector/Motion", "motion", state=("IsMotion",)),
    TopicSpec("RuleEngine/MotionRegionDetector/Motion", "motion", state=("State", "IsMotion")),
    TopicSpec("VideoSource/MotionAlarm", "motion", state=("State",)),
    TopicSpec("VideoSource/GlobalSceneChange/", "tamper", state=("State",), cause="scene changed"),
    TopicSpec("RuleEngine/TamperDetector/", "tamper", state=("IsTamper", "State"), cause="tampered"),
    TopicSpec("VideoSource/ImageTooBlurry/", "tamper", state=("State",), cause="image too blurry"),
    TopicSpec("VideoSource/ImageTooDark/", "tamper", state=("State",), cause="image too dark"),
    TopicSpec("VideoSource/ImageTooBright/", "tamper", state=("State",), cause="image too bright"),
    TopicSpec("RuleEngine/LineDetector/Crossed", "line_crossing"),
    TopicSpec("RuleEngine/FieldDetector/ObjectsInside", "field", state=("IsInside",)),
    TopicSpec("RuleEngine/LoiteringDetector/", "loitering", state=("IsLoitering", "State", "IsInside")),
    TopicSpec("RuleEngine/CountAggregation/", "counting", value=("Count",)),
    TopicSpec(
        "Door/State/DoorAlarm",
        "door_alarm",
        states={
            "Normal": (False, None),
            "DoorForcedOpen": (True, "forced open"),
            "DoorOpenTooLong": (True, "held open"),
        },
    ),
    TopicSpec(
        "Door/State/DoorTamper",
        "door_alarm",
        states={"NotInTamper": (False, None), "TamperDetected": (True, "tampered")},
    ),
    TopicSpec("AccessControl/Duress", "door_alarm", cause="duress"),
    TopicSpec("AccessControl/AccessGranted/", "access", cause="granted"),
    TopicSpec("AccessControl/AccessTaken/", "access", cause="taken"),
    TopicSpec("AccessControl/AccessNotTaken/", "access", cause="not taken"),
    TopicSpec("AccessControl/Denied/", "access", cause="denied"),
)

# Source items that name what reported a signal, in the order people recognise them.
_ORIGINS = (
    ("Rule", "rule"),
    ("DoorToken", "door"),
    ("AccessPointToken", "access point"),
    ("VideoSourceConfigurationToken", "video source"),
    ("VideoSourceToken", "video source"),
    ("Source", "source"),
    ("InputToken", "input"),
)
_TRUE = {"true", "1"}
_FALSE = {"false", "0"}


@dataclass(frozen=True, slots=True)
class UnknownTopic:
    """A well-formed message on a topic StoreSight does not use."""

    topic: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message that could not be read, and why."""

    reason: str
    topic: str | None = None


Parsed = CameraSignal | UnknownTopic | Rejected


@dataclass(frozen=True, slots=True)
class PullBatch:
    """One PullMessages reply, read."""

    parsed: tuple[Parsed, ...]
    remaining_s: float | None  # TerminationTime - CurrentTime as the camera stated them


class EventsProtocolError(SourceError):
    """The camera's event service answered with something that is not a usable reply."""


class EventsFault(EventsProtocolError):
    """A SOAP fault: for PullMessages and Renew, usually the subscription is gone (the camera rebooted)."""

    def __init__(self, message: str, codes: tuple[str, ...]) -> None:
        super().__init__(message)
        self.codes = codes


class EventsUnsupported(SourceError):
    """The device has no event service."""


def _clean(value: str, limit: int = 64) -> str:
    """A camera-supplied string made safe to show: printable, bounded."""
    text = "".join(c if c.isprintable() else "?" for c in value.strip())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_utc(text: str) -> datetime | None:
    """An xs:dateTime in UTC; a time without zone is UTC (ONVIF's UtcTime is); None when invalid."""
    s = _FRACTION.sub(r"\1", text.strip())  # xs:dateTime allows more fraction digits than Python reads
    if not s or len(s) > 40:
        return None
    try:
        value = datetime.fromisoformat(s)
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    # a camera that lost its clock says 1970, which is corrected later; far-off years are garbage (and would
    # overflow when shifted by the camera's clock offset)
    return value if 1970 <= value.year <= 9000 else None


def _topic(element: Any) -> str | Rejected:
    """The topic path with ONVIF's namespace prefix removed from each level; vendor prefixes are kept."""
    text = "".join(element.itertext()).strip()
    if not text:
        return Rejected("empty Topic")
    if len(text) > 256:
        return Rejected("Topic longer than 256 characters")
    if any(c in text for c in "|*") or "//" in text:
        return Rejected("Topic is an expression, not one topic", _clean(text))
    levels = []
    for level in text.split("/"):
        prefix, colon, local = level.strip().rpartition(":")
        if not _NAME.match(local) or (colon and not _NAME.match(prefix)):
            return Rejected(f"Topic level {_clean(level)!r} is not a name", _clean(text))
        if colon:
            namespace = element.nsmap.get(prefix)
            # tns1 undeclared is a common firmware slip; it always means ONVIF's topic namespace
            if namespace != ONVIF_TOPICS and not (namespace is None and prefix == "tns1"):
                local = f"{prefix}:{local}"
        levels.append(local)
    return "/".join(levels)


def _items(parent: Any, what: str) -> dict[str, str] | Rejected:
    """The SimpleItems of a Source, Key or Data list; the first of a repeated name wins."""
    found: dict[str, str] = {}
    if parent is None:
        return found
    for item in parent.iterchildren(f"{{{TT}}}SimpleItem"):
        name, value = item.get("Name"), item.get("Value")
        if not name:
            return Rejected(f"a {what} SimpleItem has no Name")
        if value is None:
            return Rejected(f"{what} item {_clean(name)!r} has no Value")
        found.setdefault(name, value)
    return found


def _origin(source: Mapping[str, str], topic: str) -> str:
    for item, what in _ORIGINS:
        if source.get(item):
            return f"ONVIF {what} {_clean(source[item])}"
    return f"ONVIF topic {topic}"


def _state(spec: TopicSpec, data: Mapping[str, str]) -> tuple[bool, str | None] | Rejected:
    """On or off (and why) from the Data items."""
    if spec.states is not None:
        raw = data.get("State")
        if raw is None:
            return Rejected("no Data item State", spec.topic)
        if raw.strip() not in spec.states:
            allowed = ", ".join(spec.states)
            return Rejected(f"State {_clean(raw)!r} is not one of {allowed}", spec.topic)
        return spec.states[raw.strip()]
    names = [n for n in spec.state if n in data]
    if not names:
        booleans = [n for n, v in data.items() if v.strip().lower() in _TRUE | _FALSE]
        if len(booleans) != 1:
            return Rejected(f"no Data item {'/'.join(spec.state)}", spec.topic)
        names = booleans
    raw = data[names[0]].strip().lower()
    if raw not in _TRUE | _FALSE:
        return Rejected(f"Data item {names[0]} is {_clean(data[names[0]])!r}, not a boolean", spec.topic)
    return raw in _TRUE, spec.cause


def parse_notification(element: Any, camera: str) -> Parsed:
    """One wsnt:NotificationMessage element as a signal, an unknown topic, or a rejection with its reason."""
    if not isinstance(element.tag, str) or element.tag != f"{{{WSNT}}}NotificationMessage":
        return Rejected("not a wsnt:NotificationMessage")
    topic_el = element.find(f"{{{WSNT}}}Topic")
    if topic_el is None:
        return Rejected("no Topic")
    topic = _topic(topic_el)
    if isinstance(topic, Rejected):
        return topic
    spec = next((s for s in TOPICS if s.matches(topic)), None)
    if spec is None:
        return UnknownTopic(topic)
    message = element.find(f"{{{WSNT}}}Message/{{{TT}}}Message")
    if message is None:
        return Rejected("no tt:Message in wsnt:Message", topic)
    raw_time = message.get("UtcTime")
    if raw_time is None:
        return Rejected("tt:Message has no UtcTime", topic)
    at = parse_utc(raw_time)
    if at is None:
        return Rejected(f"UtcTime {_clean(raw_time)!r} is not a date-time", topic)
    operation = message.get("PropertyOperation")
    if operation not in (None, "Initialized", "Changed", "Deleted"):
        return Rejected(f"PropertyOperation {_clean(operation)!r} is not Initialized, Changed or Deleted", topic)
    source = _items(message.find(f"{{{TT}}}Source"), "Source")
    data = _items(message.find(f"{{{TT}}}Data"), "Data")
    for part in (source, data):
        if isinstance(part, Rejected):
            return Rejected(part.reason, topic)
    assert not isinstance(source, Rejected) and not isinstance(data, Rejected)
    active: bool | None = None
    cause = spec.cause
    value: float | None = None
    if spec.state or spec.states is not None:
        if operation == "Deleted":
            active = False  # the property is gone: whatever it reported is over
        else:
            state = _state(spec, data)
            if isinstance(state, Rejected):
                return Rejected(state.reason, topic)
            active, cause = state
    elif spec.value:
        name = next((n for n in spec.value if n in data), None)
        if name is None:
            return Rejected(f"no Data item {'/'.join(spec.value)}", topic)
        try:
            value = float(data[name])
        except ValueError:
            return Rejected(f"Data item {name} is {_clean(data[name])!r}, not a number", topic)
        if value != value or value in (float("inf"), float("-inf")):
            return Rejected(f"Data item {name} is not a finite number", topic)
    key = topic + "|" + "&".join(f"{k}={v}" for k, v in sorted(source.items()))
    return CameraSignal(
        camera=camera,
        kind=spec.kind,
        at=at,
        topic=topic,
        key=key,
        active=active,
        initialized=operation == "Initialized",
        rule=_clean(source["Rule"]) if source.get("Rule") else None,
        origin=_origin(source, topic),
        cause=cause,
        value=value,
        source=source,
        data=data,
    )


def parse_notification_xml(text: bytes | str, camera: str) -> Parsed:
    """A standalone NotificationMessage document (a Notify body part, a metadata stream's event, a test)."""
    try:
        element = etree.fromstring(text.encode() if isinstance(text, str) else text, _PARSER)
    except (etree.XMLSyntaxError, ValueError) as exc:
        return Rejected(f"not well-formed XML: {_clean(str(exc), 120)}")
    return parse_notification(element, camera)


def _fault(body: Any) -> EventsFault | None:
    for ns in (SOAP12, SOAP11):
        fault = body.find(f"{{{ns}}}Fault")
        if fault is None:
            continue
        codes = tuple(
            t.strip()
            for t in fault.xpath(".//*[local-name()='Value' or local-name()='faultcode']/text()")
            if isinstance(t, str) and t.strip()
        )
        reason = " ".join(
            t.strip()
            for t in fault.xpath(".//*[local-name()='Text' or local-name()='faultstring']/text()")
            if t.strip()
        )
        return EventsFault(f"SOAP fault {' / '.join(codes) or '?'}: {_clean(reason or 'no reason', 200)}", codes)
    return None


def parse_pull_response(content: bytes, camera: str) -> PullBatch:
    """A PullMessages reply: its messages read one by one. Raises EventsFault for a SOAP fault and
    EventsProtocolError for anything that is not a PullMessagesResponse envelope."""
    if len(content) > MAX_REPLY_BYTES:
        raise EventsProtocolError(f"PullMessages reply of {len(content)} bytes is over {MAX_REPLY_BYTES}")
    try:
        root = etree.fromstring(content, _PARSER)
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise EventsProtocolError(f"PullMessages reply is not XML: {_clean(str(exc), 120)}") from None
    if root.tag not in (f"{{{SOAP12}}}Envelope", f"{{{SOAP11}}}Envelope"):
        raise EventsProtocolError("PullMessages reply is not a SOAP envelope")
    body = root.find(f"{{{etree.QName(root).namespace}}}Body")
    if body is None:
        raise EventsProtocolError("PullMessages reply has no SOAP Body")
    fault = _fault(body)
    if fault is not None:
        raise fault
    reply = body.find(f"{{{TEV}}}PullMessagesResponse")
    if reply is None:
        raise EventsProtocolError("PullMessages reply has no tev:PullMessagesResponse")
    current = parse_utc(reply.findtext(f"{{{TEV}}}CurrentTime") or "")
    termination = parse_utc(reply.findtext(f"{{{TEV}}}TerminationTime") or "")
    remaining = (termination - current).total_seconds() if current and termination else None
    parsed = tuple(parse_notification(m, camera) for m in reply.iterchildren(f"{{{WSNT}}}NotificationMessage"))
    return PullBatch(parsed, remaining)


def reference_parameters(envelope: Any) -> tuple[Any, ...]:
    """The ReferenceParameters of a CreatePullPointSubscriptionResponse envelope's SubscriptionReference, each
    copied as the SOAP header block to echo: marked wsa:IsReferenceParameter="true"; () when there are none.
    Raises EventsProtocolError for more than MAX_REFERENCE_PARAMETERS or MAX_REFERENCE_BYTES of them."""
    if envelope is None:
        return ()
    body = envelope.find(f"{{{SOAP12}}}Body")
    if body is None:
        body = envelope.find(f"{{{SOAP11}}}Body")
    path = f"{{{TEV}}}CreatePullPointSubscriptionResponse/{{{TEV}}}SubscriptionReference/{{{WSA}}}ReferenceParameters"
    params = body.find(path) if body is not None else None
    if params is None:
        return ()
    blocks = [p for p in params if isinstance(p.tag, str)]  # elements, not comments or processing instructions
    size = sum(len(etree.tostring(b)) for b in blocks)
    if len(blocks) > MAX_REFERENCE_PARAMETERS or size > MAX_REFERENCE_BYTES:
        raise EventsProtocolError(f"the subscription reference has {len(blocks)} reference parameters, {size} bytes "
                                  f"(at most {MAX_REFERENCE_PARAMETERS}, {MAX_REFERENCE_BYTES} bytes)")  # fmt: skip
    echoed = []
    for block in blocks:
        header = copy.deepcopy(block)  # keeps the namespaces it uses
        header.set(f"{{{WSA}}}IsReferenceParameter", "true")
        echoed.append(header)
    return tuple(echoed)


# --- the client ---------------------------------------------------------------------------------------------------


class SubscriptionLost(SourceError):
    """The subscription ended under us: the camera dropped it, rebooted, or stopped answering."""


EventsState = Literal["starting", "subscribed", "reconnecting", "failed", "unsupported", "stopped"]


@dataclass
class EventsStatus:
    """What the events client is doing, for readiness and tests."""

    state: EventsState = "starting"
    subscriptions: int = 0  # successful CreatePullPointSubscription calls
    renewals: int = 0
    pulls: int = 0
    signals: int = 0  # messages delivered as signals
    unknown: int = 0  # messages on topics StoreSight does not use
    rejected: int = 0  # messages that could not be read
    last_error: str | None = None
    last_rejection: str | None = None
    last_signal_at: datetime | None = None  # our clock, when the last signal arrived
    unknown_topics: set[str] = field(default_factory=set)  # logged once each


SignalHandler = Callable[[CameraSignal], Awaitable[None]]


def _remaining(current: Any, termination: Any) -> float | None:
    """TerminationTime - CurrentTime from a zeep reply (datetimes, either may be missing or naive)."""
    if not isinstance(current, datetime) or not isinstance(termination, datetime):
        return None
    if (current.tzinfo is None) != (termination.tzinfo is None):
        current, termination = current.replace(tzinfo=UTC), termination.replace(tzinfo=UTC)
    return float((termination - current).total_seconds())


class _LastReply:
    """A zeep plugin that keeps the last reply envelope as received (zeep calls both hooks of every plugin)."""

    def __init__(self) -> None:
        self.envelope: Any = None

    def ingress(self, envelope: Any, http_headers: Any, operation: Any) -> tuple[Any, Any]:
        self.envelope = envelope
        return envelope, http_headers

    def egress(self, envelope: Any, http_headers: Any, operation: Any, binding_options: Any) -> tuple[Any, Any]:
        return envelope, http_headers


def _raw_replies(service: Any) -> None:
    """Make `service` hand back HTTP replies unparsed. Its own Settings object: the library shares one among all
    services, and zeep's settings() context manager is per thread, not per task, so it would leak to other cameras'
    calls made during a long poll."""
    settings = Settings(strict=False, raw_response=True)
    service.zeep_client.settings = settings
    service.zeep_client_authless.settings = settings


class OnvifEventsClient:
    """Keeps a PullPoint subscription to one camera alive and hands each parsed message to `on_signal`."""

    def __init__(
        self,
        camera_id: str,
        config: OnvifConfig,
        on_signal: SignalHandler,
        *,
        subscription_s: float = SUBSCRIPTION_S,
        pull_timeout_s: float = PULL_TIMEOUT_S,
        retry_start_s: float = RETRY_START_S,
        retry_max_s: float = RETRY_MAX_S,
    ) -> None:
        self.camera_id = camera_id
        self.config = config
        self.on_signal = on_signal
        self.subscription_s = subscription_s
        self.pull_timeout_s = pull_timeout_s
        self.renew_margin_s = min(RENEW_MARGIN_S, subscription_s / 4)
        self.retry_start_s = retry_start_s
        self.retry_max_s = retry_max_s
        self.status = EventsStatus()
        self.where = f"{camera_id}: ONVIF events at {config.host}:{config.port}"
        self._cam: ONVIFCamera | None = None
        self._pullpoint: Any = None
        self._subscription: Any = None
        self._reference: tuple[Any, ...] = ()  # SOAP header blocks every request to the subscription carries
        self._expires = 0.0  # monotonic
        self._rejections_logged: set[str] = set()

    def describe(self) -> dict[str, object]:
        """The status for /readyz (no secrets: errors are redacted where they are made)."""
        st = self.status
        return {
            "state": st.state,
            "subscriptions": st.subscriptions,
            "renewals": st.renewals,
            "signals": st.signals,
            "unknown": st.unknown,
            "rejected": st.rejected,
            "error": st.last_error,
            "last_rejection": st.last_rejection,
            "last_signal_at": None if st.last_signal_at is None else st.last_signal_at.isoformat(),
        }

    def crashed(self, reason: str) -> None:
        """`run()` ended in an unexpected error: its supervisor restarts it; readiness says why meanwhile."""
        self.status.state, self.status.last_error = "reconnecting", reason

    # -- the loop --

    async def run(self) -> None:
        """Subscribe and pull until cancelled; re-subscribe with backoff when the subscription is lost. Returns
        (status failed or unsupported) only when the camera rejects the login or has no event service."""
        delay = self.retry_start_s
        lost_at: float | None = None
        try:
            while True:
                try:
                    await self._subscribe()
                    if lost_at is not None:
                        log.info("%s: subscribed again after %.0f s", self.where, time.monotonic() - lost_at)
                    lost_at, delay = None, self.retry_start_s
                    await self._pull_loop()
                except CameraAuthError as exc:
                    self.status.state, self.status.last_error = "failed", str(exc)
                    log.error("%s: %s (not retried: cameras lock accounts)", self.where, exc)
                    return
                except EventsUnsupported as exc:
                    self.status.state, self.status.last_error = "unsupported", str(exc)
                    log.warning("%s: %s; camera events are off for this camera", self.where, exc)
                    return
                except SourceError as exc:
                    self.status.state, self.status.last_error = "reconnecting", str(exc)
                    if lost_at is None:
                        lost_at = time.monotonic()
                        log.warning("%s: %s; subscribing again", self.where, exc)
                    else:
                        log.debug("%s: still no subscription: %s", self.where, exc)
                await self._teardown(unsubscribe=False)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # jitter: cameras of a store rebooted together
                delay = min(delay * 2, self.retry_max_s)
        finally:
            await self._teardown(unsubscribe=self.status.state == "subscribed")
            if self.status.state in ("starting", "subscribed", "reconnecting"):
                self.status.state = "stopped"

    async def _subscribe(self) -> None:
        cfg = self.config
        password = cfg.password.get_secret_value() if cfg.password is not None else None
        # a fresh device each time: after a reboot the camera may have a new clock, new addresses, new services
        cam = self._cam = ONVIFCamera(
            cfg.host, cfg.port, cfg.username or "", password or "", wsdl_dir=WSDL_DIR, no_cache=True, adjust_time=True
        )
        interval = timedelta(seconds=self.subscription_s)
        try:
            async with asyncio.timeout(cfg.timeout_s):
                await cam.update_xaddrs()
                if EVENTS_NS not in cam.xaddrs:
                    raise EventsUnsupported("the device has no event service")
                events = await cam.create_events_service()
                reply = _LastReply()
                events.zeep_client.plugins.append(reply)
                # relative InitialTerminationTime, so the camera's clock does not matter (the library switches to
                # absolute times for devices that get relative ones wrong)
                result = await events.CreatePullPointSubscription(
                    {"InitialTerminationTime": cam.get_next_termination_time(interval)}
                )
                address = getattr(getattr(result.SubscriptionReference, "Address", None), "_value_1", None)
                if not address:
                    raise EventsProtocolError("CreatePullPointSubscription answered without an address")
                self._reference = reference_parameters(reply.envelope)
                cam.xaddrs[PULLPOINT_NS] = cam.rewrite_url(str(address).strip())
                self._subscription = await cam.create_subscription_service("PullPointSubscription")
                self._pullpoint = await cam.create_pullpoint_service()
                _raw_replies(self._pullpoint)
                if cam.has_broken_relative_time(interval, result.CurrentTime, result.TerminationTime):
                    result = await self._subscription.Renew(
                        self._addressed({"TerminationTime": cam.get_next_termination_time(interval)})
                    )
        except TimeoutError:
            raise SourceError(f"no answer within {cfg.timeout_s:g} s") from None
        except UNREACHABLE_EXCEPTIONS as exc:
            raise SourceError(f"not reachable: {redact_url(_describe(exc))}") from None
        except PROTOCOL_EXCEPTIONS as exc:
            if _is_auth_failure(exc):
                raise CameraAuthError(
                    f"rejected the login for user {cfg.username!r} ({redact_url(_describe(exc))})"
                    if cfg.username
                    else f"requires a login: set onvif.username and onvif.password ({redact_url(_describe(exc))})"
                ) from None
            if isinstance(exc, ONVIFError) and "support service" in str(exc):
                raise EventsUnsupported("the device has no event service") from None
            raise SourceError(f"could not subscribe: {redact_url(_describe(exc))}") from None
        self._expire_in(_remaining(result.CurrentTime, result.TerminationTime))
        self.status.subscriptions += 1
        self.status.state, self.status.last_error = "subscribed", None
        log.info(
            "%s: subscribed (pull point %s%s, ends in %.0f s unless renewed)",
            self.where, redact_url(cam.xaddrs[PULLPOINT_NS]),
            f", {len(self._reference)} reference parameter(s)" if self._reference else "",
            self._expires - time.monotonic(),
        )  # fmt: skip

    def _addressed(self, params: dict[str, Any]) -> dict[str, Any]:
        """A request's parameters with the subscription's reference parameters as SOAP headers (zeep copies them
        into each envelope), when it has any."""
        return params | {"_soapheaders": list(self._reference)} if self._reference else params

    def _expire_in(self, remaining: float | None) -> None:
        # relative to our monotonic clock: the camera's clock may be anywhere
        left = self.subscription_s if remaining is None else max(remaining, 1.0)
        self._expires = time.monotonic() + left

    async def _pull_loop(self) -> None:
        while True:
            left = self._expires - time.monotonic()
            if left <= self.pull_timeout_s + self.renew_margin_s:
                await self._renew()
                left = self._expires - time.monotonic()
            timeout = max(1.0, min(self.pull_timeout_s, left - self.renew_margin_s))
            batch = await self._pull(timeout)
            if batch.remaining_s is not None:
                # the camera's own view of the end; some extend it on every pull, which spares a Renew
                self._expire_in(batch.remaining_s)
            for item in batch.parsed:
                await self._handle(item)

    async def _renew(self) -> None:
        assert self._cam is not None and self._subscription is not None
        interval = timedelta(seconds=self.subscription_s)
        try:
            async with asyncio.timeout(self.config.timeout_s):
                result = await self._subscription.Renew(
                    self._addressed({"TerminationTime": self._cam.get_next_termination_time(interval)})
                )
        except TimeoutError:
            raise SubscriptionLost(f"Renew: no answer within {self.config.timeout_s:g} s") from None
        except CALL_EXCEPTIONS as exc:
            raise SubscriptionLost(f"Renew failed: {redact_url(_describe(exc))}") from None
        self._expire_in(_remaining(getattr(result, "CurrentTime", None), getattr(result, "TerminationTime", None)))
        self.status.renewals += 1
        log.debug("%s: renewed, ends in %.0f s", self.where, self._expires - time.monotonic())

    async def _pull(self, timeout_s: float) -> PullBatch:
        request: dict[str, Any] = {"Timeout": timedelta(seconds=int(timeout_s)), "MessageLimit": MESSAGE_LIMIT}
        try:
            # the camera answers within the Timeout; the extra is for the network and a busy camera
            async with asyncio.timeout(timeout_s + self.config.timeout_s):
                reply = await self._pullpoint.PullMessages(self._addressed(request))
        except TimeoutError:
            raise SubscriptionLost(f"PullMessages: no answer within {timeout_s + self.config.timeout_s:g} s") from None
        except CALL_EXCEPTIONS as exc:
            raise SubscriptionLost(f"PullMessages failed: {redact_url(_describe(exc))}") from None
        self.status.pulls += 1
        content = bytes(getattr(reply, "content", b"") or b"")
        status = int(getattr(reply, "status_code", 0))
        try:
            batch = parse_pull_response(content, self.camera_id)
        except EventsFault as exc:
            raise SubscriptionLost(f"PullMessages: {exc}") from None
        except EventsProtocolError as exc:
            raise SubscriptionLost(f"PullMessages: HTTP {status}: {exc}") from None
        if status != 200:
            raise SubscriptionLost(f"PullMessages: HTTP {status}")
        return batch

    async def _handle(self, item: Parsed) -> None:
        if isinstance(item, UnknownTopic):
            self.status.unknown += 1
            seen = self.status.unknown_topics
            if item.topic not in seen and len(seen) < MAX_REMEMBERED:
                seen.add(item.topic)
                log.info("%s: ignoring topic %s (not a signal StoreSight uses; said once)", self.where, item.topic)
            return
        if isinstance(item, Rejected):
            self.status.rejected += 1
            self.status.last_rejection = f"{item.topic or 'message'}: {item.reason}"
            if item.reason not in self._rejections_logged and len(self._rejections_logged) < MAX_REMEMBERED:
                self._rejections_logged.add(item.reason)
                log.warning("%s: rejected a message on %s: %s", self.where, item.topic or "no topic", item.reason)
            return
        signal = item
        offset = self._cam.dt_diff if self._cam is not None else None
        if offset is not None and abs(offset.total_seconds()) > CLOCK_TRUST_S:
            # the camera's clock is off: put its times on ours, so incidents line up with the video and the VMS
            signal = _shifted(signal, -offset)
        self.status.signals += 1
        self.status.last_signal_at = datetime.now(UTC)
        await self.on_signal(signal)

    async def _teardown(self, unsubscribe: bool) -> None:
        cam, subscription, addressed = self._cam, self._subscription, self._addressed({})
        self._cam = self._pullpoint = self._subscription = None
        self._reference = ()
        if cam is None:
            return
        if unsubscribe and subscription is not None:
            try:
                async with asyncio.timeout(UNSUBSCRIBE_TIMEOUT_S):
                    await subscription.Unsubscribe(addressed)
            except CALL_EXCEPTIONS as exc:
                # the pull point expires by itself at its termination time
                log.debug("%s: Unsubscribe failed: %s", self.where, redact_url(_describe(exc)))
        await cam.close()


def _shifted(signal: CameraSignal, by: timedelta) -> CameraSignal:
    return replace(signal, at=signal.at + by)
