"""ONVIF event messages: the topics StoreSight reads, and a parser that turns a camera's NotificationMessages (and
whole PullMessages replies) into camera signals (plugin/types.py `CameraSignal`).

PullMessages replies are parsed here with lxml, not by zeep: the message payload is an `xs:any` with lax processing,
which zeep turns into a typed object when it knows the element and into a bare element when it does not (vendor
extensions), and a single malformed message would fail the whole reply. One XML path handles every shape, lets
a bad message be rejected alone, and is the same parser the property tests hammer.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lxml import etree

from plugin.errors import SourceError
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

# Reference parameters echoed on every request: cameras send one or two small elements (an id); a reference with
# more is broken or hostile, and would otherwise be copied into every request for the subscription's life.
MAX_REFERENCE_PARAMETERS = 8
MAX_REFERENCE_BYTES = 4096
MAX_REPLY_BYTES = 4 * 1024 * 1024  # a pull of MESSAGE_LIMIT (100) messages is a few hundred kB at most
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
