"""ONVIF events: the NotificationMessage parser on messages shaped (and checked) by ONVIF's event.wsdl and onvif.xsd,
property tests that garbled input is rejected with a reason and never crashes it, and the PullPoint client against
the events responder (tests/components/onvif_events_responder.py): subscribe, pull, renew, recover after the
subscription is lost or the camera reboots, unknown topics logged once, bad messages skipped, forwarded signals
become incidents through the incident manager."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from components.onvif_events_responder import (
    CONCRETE_SET,
    SUBSCRIPTION_NS,
    TEV,
    TNS1,
    TT,
    WSNT,
    EventsResponder,
    events_responder_available,
    notification,
    validation_errors,
)
from conftest import require
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from adapters.cameras.onvif.events import OnvifEventsClient
from adapters.cameras.onvif.messages import (
    TOPICS,
    EventsProtocolError,
    Rejected,
    UnknownTopic,
    parse_notification,
    parse_notification_xml,
    parse_pull_response,
    reference_parameters,
)
from adapters.cameras.registry import camera_source, events_source
from plugin.config.cameras import OnvifConfig
from plugin.config.loader import parse_config
from plugin.errors import ConfigError
from plugin.incidents.database import AsyncDatabase
from plugin.incidents.explain import Explainer
from plugin.incidents.manager import IncidentManager
from plugin.metrics import Metrics
from plugin.pipeline.camera_signals import CameraSignals
from plugin.pipeline.presence import PresenceLog
from plugin.pipeline.supervisor import CameraFleet, PipelineParts, Supervisor
from plugin.rules.base import RuleContext
from plugin.types import CAMERA_SIGNAL_KINDS, CameraSignal

USER = "admin"
PASSWORD = "Ev3nts-s3cret-pw"
T = datetime(2026, 11, 29, 14, 3, 5, tzinfo=UTC)
ANALYTICS = {"VideoSourceConfigurationToken": "VSC1", "VideoAnalyticsConfigurationToken": "VAC1"}
onvif = pytest.mark.onvif


@pytest.fixture(autouse=True, scope="module")
def _schema() -> None:
    require(events_responder_available())


def parse(msg: Any) -> Any:
    return parse_notification(msg, "cam1")


# --- the parser, on the WSDL's shapes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "source", "data", "operation", "expected"),
    [
        ("tns1:RuleEngine/CellMotionDetector/Motion", {"VideoSourceConfigurationToken": "VSC1", "Rule": "Motion1"},
         {"IsMotion": "true"}, "Changed", ("motion", True, None, None, "ONVIF rule Motion1")),
        ("tns1:VideoSource/MotionAlarm", {"Source": "VideoSource_1"}, {"State": "false"}, "Changed",
         ("motion", False, None, None, "ONVIF source VideoSource_1")),
        ("tns1:RuleEngine/MotionRegionDetector/Motion", {"Rule": "Region1"}, {"State": "1"}, "Changed",
         ("motion", True, None, None, "ONVIF rule Region1")),
        ("tns1:VideoSource/GlobalSceneChange/ImagingService", {"Source": "VS1"}, {"State": "true"}, "Changed",
         ("tamper", True, "scene changed", None, "ONVIF source VS1")),
        ("tns1:RuleEngine/TamperDetector/Tamper", ANALYTICS | {"Rule": "Tamper1"}, {"IsTamper": "true"}, "Changed",
         ("tamper", True, "tampered", None, "ONVIF rule Tamper1")),
        ("tns1:VideoSource/ImageTooDark/AnalyticsService", {"Source": "VS1"}, {"State": "true"}, "Changed",
         ("tamper", True, "image too dark", None, "ONVIF source VS1")),
        ("tns1:RuleEngine/LineDetector/Crossed", ANALYTICS | {"Rule": "Line1"}, {"ObjectId": "12"}, None,
         ("line_crossing", None, None, None, "ONVIF rule Line1")),
        ("tns1:RuleEngine/FieldDetector/ObjectsInside", ANALYTICS | {"Rule": "Field1"}, {"IsInside": "true"},
         "Initialized", ("field", True, None, None, "ONVIF rule Field1")),
        ("tns1:RuleEngine/LoiteringDetector/ObjectIsLoitering", ANALYTICS | {"Rule": "Loiter1"},
         {"ObjectId": "4", "IsLoitering": "true"}, "Changed", ("loitering", True, None, None, "ONVIF rule Loiter1")),
        ("tns1:RuleEngine/CountAggregation/Counter", ANALYTICS | {"Rule": "Count1"}, {"Count": "17"}, "Changed",
         ("counting", None, None, 17.0, "ONVIF rule Count1")),
        ("tns1:Door/State/DoorAlarm", {"DoorToken": "Door1"}, {"State": "DoorForcedOpen"}, "Changed",
         ("door_alarm", True, "forced open", None, "ONVIF door Door1")),
        ("tns1:Door/State/DoorAlarm", {"DoorToken": "Door1"}, {"State": "DoorOpenTooLong"}, "Changed",
         ("door_alarm", True, "held open", None, "ONVIF door Door1")),
        ("tns1:Door/State/DoorAlarm", {"DoorToken": "Door1"}, {"State": "Normal"}, "Changed",
         ("door_alarm", False, None, None, "ONVIF door Door1")),
        ("tns1:Door/State/DoorTamper", {"DoorToken": "Door1"}, {"State": "TamperDetected"}, "Changed",
         ("door_alarm", True, "tampered", None, "ONVIF door Door1")),
        ("tns1:AccessControl/Duress", {"AccessPointToken": "AP1"}, {}, None,
         ("door_alarm", None, "duress", None, "ONVIF access point AP1")),
        ("tns1:AccessControl/AccessGranted/Credential", {"AccessPointToken": "AP1"}, {"CredentialToken": "C7"}, None,
         ("access", None, "granted", None, "ONVIF access point AP1")),
        ("tns1:AccessControl/Denied/CredentialNotFound/Card", {"AccessPointToken": "AP1"}, {"Card": "0102"}, None,
         ("access", None, "denied", None, "ONVIF access point AP1")),
        # Deleted: the property is gone, whatever it said is over (no State needed)
        ("tns1:RuleEngine/FieldDetector/ObjectsInside", ANALYTICS | {"Rule": "Field1"}, None, "Deleted",
         ("field", False, None, None, "ONVIF rule Field1")),
    ],
)  # fmt: skip
def test_known_topics_become_signals(
    topic: str,
    source: dict[str, str],
    data: dict[str, str] | None,
    operation: str | None,
    expected: tuple[str, bool | None, str | None, float | None, str],
) -> None:
    sig = parse(notification(topic, T, source=source, data=data, operation=operation))
    assert isinstance(sig, CameraSignal), sig
    assert (sig.kind, sig.active, sig.cause, sig.value, sig.origin) == expected
    assert sig.at == T and sig.camera == "cam1" and sig.topic == topic.removeprefix("tns1:")
    assert sig.initialized == (operation == "Initialized")
    assert dict(sig.source) == source
    assert sig.rule == source.get("Rule")


def test_key_tells_rules_and_sources_apart() -> None:
    a = parse(notification("tns1:RuleEngine/LineDetector/Crossed", T, source=ANALYTICS | {"Rule": "Line1"}))
    b = parse(notification("tns1:RuleEngine/LineDetector/Crossed", T, source=ANALYTICS | {"Rule": "Line2"}))
    a2 = parse(notification("tns1:RuleEngine/LineDetector/Crossed", T, source={"Rule": "Line1"} | ANALYTICS))
    assert isinstance(a, CameraSignal) and isinstance(b, CameraSignal) and isinstance(a2, CameraSignal)
    assert a.key != b.key and a.key == a2.key  # item order does not matter


def test_every_topic_in_the_table_parses() -> None:
    for spec in TOPICS:
        topic = "tns1:" + spec.topic + ("Sub" if spec.topic.endswith("/") else "")
        data = {"State": next(iter(spec.states))} if spec.states else {n: "true" for n in spec.state[:1]}
        data |= {n: "3" for n in spec.value[:1]}
        sig = parse(notification(topic, T, source={"Rule": "R"}, data=data))
        assert isinstance(sig, CameraSignal) and sig.kind == spec.kind, (spec, sig)
    assert {s.kind for s in TOPICS} == set(CAMERA_SIGNAL_KINDS)


@pytest.mark.parametrize(
    ("topic", "nsmap", "expected"),
    [
        ("tns1:VideoSource/SignalLoss", {"tns1": TNS1}, "VideoSource/SignalLoss"),
        ("tnsaxis:CameraApplicationPlatform/VMD/Camera1Profile1", {"tnsaxis": "http://www.axis.com/2009/event/topics"},
         "tnsaxis:CameraApplicationPlatform/VMD/Camera1Profile1"),
        # the ONVIF namespace under another prefix is still ONVIF's
        ("ev:RuleEngine/Recognition/Face", {"ev": TNS1}, "RuleEngine/Recognition/Face"),
    ],
)  # fmt: skip
def test_unknown_topics_are_named(topic: str, nsmap: dict[str, str], expected: str) -> None:
    msg = notification("tns1:RuleEngine/LineDetector/Crossed", T, source={"Rule": "x"})
    topic_el = msg.find(f"{{{WSNT}}}Topic")
    holder = etree.Element(msg.tag, nsmap={**msg.nsmap, **nsmap})
    for child in msg:
        holder.append(child)
    holder.find(f"{{{WSNT}}}Topic").text = topic
    assert topic_el is not None
    assert parse(holder) == UnknownTopic(expected)


def _raw(topic: str = "tns1:RuleEngine/CellMotionDetector/Motion", message: str | None = None) -> bytes:
    inner = (
        message
        if message is not None
        else (
            '<tt:Message UtcTime="2026-11-29T14:03:05Z"><tt:Data><tt:SimpleItem Name="IsMotion" Value="true"/>'
            "</tt:Data></tt:Message>"
        )
    )
    return (
        f'<wsnt:NotificationMessage xmlns:wsnt="{WSNT}" xmlns:tt="{TT}" xmlns:tns1="{TNS1}">'
        f'<wsnt:Topic Dialect="{CONCRETE_SET}">{topic}</wsnt:Topic><wsnt:Message>{inner}</wsnt:Message>'
        "</wsnt:NotificationMessage>"
    ).encode()


def _msg(attrs: str = 'UtcTime="2026-11-29T14:03:05Z"', data: str = '<tt:SimpleItem Name="IsMotion" Value="true"/>'):
    return f"<tt:Message {attrs}><tt:Data>{data}</tt:Data></tt:Message>"


@pytest.mark.parametrize(
    ("raw", "reason", "schema_valid"),
    [
        (_raw(message=_msg(attrs="")), "tt:Message has no UtcTime", False),
        (_raw(message=_msg(attrs='UtcTime="yesterday"')), "UtcTime 'yesterday' is not a date-time", False),
        (_raw(message=_msg(attrs='UtcTime="0001-01-01T00:00:00Z"')), "is not a date-time", True),
        (_raw(message=_msg(data='<tt:SimpleItem Name="IsMotion" Value="maybe"/>')),
         "Data item IsMotion is 'maybe', not a boolean", True),
        (_raw(message=_msg(data='<tt:SimpleItem Name="Speed" Value="3"/>')), "no Data item IsMotion", True),
        (_raw(message=_msg(data='<tt:SimpleItem Name="IsMotion"/>')), "Data item 'IsMotion' has no Value", False),
        (_raw(message=_msg(data='<tt:SimpleItem Value="true"/>')), "a Data SimpleItem has no Name", False),
        (_raw(message=_msg(attrs='UtcTime="2026-11-29T14:03:05Z" PropertyOperation="Exploded"')),
         "PropertyOperation 'Exploded' is not Initialized, Changed or Deleted", False),
        (_raw("tns1:Door/State/DoorAlarm", _msg(data='<tt:SimpleItem Name="State" Value="Ajar"/>')),
         "State 'Ajar' is not one of Normal, DoorForcedOpen, DoorOpenTooLong", True),
        (_raw("tns1:RuleEngine/CountAggregation/Counter", _msg(data='<tt:SimpleItem Name="Count" Value="lots"/>')),
         "Data item Count is 'lots', not a number", True),
        (_raw("tns1:RuleEngine/CountAggregation/Counter", _msg(data='<tt:SimpleItem Name="Count" Value="NaN"/>')),
         "not a finite number", True),
        (_raw(message=""), "no tt:Message in wsnt:Message", False),
        (_raw("tns1:RuleEngine//."), "Topic is an expression, not one topic", True),
        (_raw("tns1:RuleEngine/*"), "Topic is an expression, not one topic", True),
        (_raw("tns1:Rule Engine/Motion"), "Topic level 'tns1:Rule Engine' is not a name", True),
        (_raw("  "), "empty Topic", True),
        (b"<wsnt:NotificationMessage", "not well-formed XML", False),
        (b"<Hello/>", "not a wsnt:NotificationMessage", False),
    ],
)  # fmt: skip
def test_bad_messages_are_rejected_with_a_reason(raw: bytes, reason: str, schema_valid: bool) -> None:
    result = parse_notification_xml(raw, "cam1")
    assert isinstance(result, Rejected), result
    assert reason in result.reason
    if not raw.startswith(b"<wsnt:") or raw.endswith(b">"):
        # what the schema says of the same message: the parser rejects what it forbids, and more
        try:
            valid = not validation_errors(etree.fromstring(raw))
        except etree.XMLSyntaxError:
            valid = False
        assert valid == schema_valid


def test_times_without_zone_are_utc_and_long_fractions_are_read() -> None:
    sig = parse_notification_xml(_raw(message=_msg(attrs='UtcTime="2026-11-29T14:03:05.1234567"')), "cam1")
    assert isinstance(sig, CameraSignal)
    assert sig.at == T.replace(microsecond=123456)
    sig = parse_notification_xml(_raw(message=_msg(attrs='UtcTime="2026-11-29T15:03:05+01:00"')), "cam1")
    assert isinstance(sig, CameraSignal) and sig.at == T and sig.at.tzinfo == UTC


def test_pull_response_faults_and_garbage() -> None:
    fault = (
        b'<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body><env:Fault><env:Code>'
        b"<env:Value>env:Sender</env:Value><env:Subcode><env:Value>wsrf-rw:ResourceUnknownFault</env:Value>"
        b'</env:Subcode></env:Code><env:Reason><env:Text xml:lang="en">gone</env:Text></env:Reason></env:Fault>'
        b"</env:Body></env:Envelope>"
    )
    with pytest.raises(EventsProtocolError, match="wsrf-rw:ResourceUnknownFault: gone"):
        parse_pull_response(fault, "cam1")
    for garbage, why in [(b"", "not XML"), (b"<a/>", "not a SOAP envelope"), (b"\xff\xfe<", "not XML")]:
        with pytest.raises(EventsProtocolError, match=why):
            parse_pull_response(garbage, "cam1")


# --- property tests: never crash, reject with a reason ------------------------------------------------------------

_xml_text = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"), max_size=24)
_topics = st.one_of(
    st.sampled_from(["tns1:" + s.topic + ("X" if s.topic.endswith("/") else "") for s in TOPICS]),
    st.lists(st.one_of(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True), _xml_text), max_size=5).map(
        lambda parts: "/".join(parts)
    ),
    _xml_text,
)
_items = st.dictionaries(
    st.one_of(st.sampled_from(["IsMotion", "State", "IsInside", "Count", "Rule", "IsTamper"]), _xml_text),
    st.one_of(st.sampled_from(["true", "false", "1", "0", "17", "-3.5", "Normal", "DoorForcedOpen"]), _xml_text),
    max_size=4,
)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    topic=_topics,
    utc=st.one_of(st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()), _xml_text, st.none()),
    operation=st.one_of(st.none(), st.sampled_from(["Initialized", "Changed", "Deleted"]), _xml_text),
    source=st.one_of(st.none(), _items),
    data=st.one_of(st.none(), _items),
)
def test_parser_property_structured(
    topic: str, utc: str | None, operation: str | None, source: dict[str, str] | None, data: dict[str, str] | None
) -> None:
    msg = etree.Element(f"{{{WSNT}}}NotificationMessage", nsmap={"wsnt": WSNT, "tt": TT, "tns1": TNS1})
    etree.SubElement(msg, f"{{{WSNT}}}Topic", Dialect=CONCRETE_SET).text = topic
    inner = etree.SubElement(etree.SubElement(msg, f"{{{WSNT}}}Message"), f"{{{TT}}}Message")
    if utc is not None:
        inner.set("UtcTime", utc)
    if operation is not None:
        inner.set("PropertyOperation", operation)
    for name, items in (("Source", source), ("Data", data)):
        if items is not None:
            lst = etree.SubElement(inner, f"{{{TT}}}{name}")
            for n, v in items.items():
                etree.SubElement(lst, f"{{{TT}}}SimpleItem", Name=n, Value=v)
    result = parse(msg)
    _check(result)
    # and the same message as text, as it comes over the wire
    _check(parse_notification_xml(etree.tostring(msg), "cam1"))


def _check(result: Any) -> None:
    assert isinstance(result, CameraSignal | UnknownTopic | Rejected)
    if isinstance(result, Rejected):
        assert result.reason
    if isinstance(result, CameraSignal):
        assert result.at.tzinfo is not None and result.kind in CAMERA_SIGNAL_KINDS
        assert result.active in (True, False, None)


_VALID = [
    etree.tostring(notification("tns1:RuleEngine/LineDetector/Crossed", T, source=ANALYTICS | {"Rule": "Line1"},
                                data={"ObjectId": "3"}, validate=False)),
    etree.tostring(notification("tns1:Door/State/DoorAlarm", T, source={"DoorToken": "D1"},
                                data={"State": "DoorForcedOpen"}, validate=False)),
]  # fmt: skip


@settings(max_examples=200, deadline=None, database=None)
@given(
    base=st.sampled_from(_VALID),
    edits=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 3), st.binary(max_size=4)), min_size=1, max_size=6),
)
def test_parser_property_garbled_bytes(base: bytes, edits: list[tuple[float, int, bytes]]) -> None:
    data = bytearray(base)
    for where, cut, insert in edits:
        i = int(where * len(data))
        data[i : i + cut] = insert
    _check(parse_notification_xml(bytes(data), "cam1"))
    envelope = (
        b'<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body>'
        b'<tev:PullMessagesResponse xmlns:tev="http://www.onvif.org/ver10/events/wsdl">'
        b"<tev:CurrentTime>2026-11-29T14:03:05Z</tev:CurrentTime>"
        b"<tev:TerminationTime>2026-11-29T14:04:05Z</tev:TerminationTime>"
        + bytes(data)
        + b"</tev:PullMessagesResponse>"
        b"</e:Body></e:Envelope>"
    )
    try:
        batch = parse_pull_response(envelope, "cam1")
    except EventsProtocolError:
        return  # a reply that is not XML any more: the client re-subscribes
    for item in batch.parsed:
        _check(item)


@settings(max_examples=150, deadline=None, database=None)
@given(st.binary(max_size=300))
def test_parser_property_random_bytes(data: bytes) -> None:
    _check(parse_notification_xml(data, "cam1"))
    with contextlib.suppress(EventsProtocolError):
        parse_pull_response(data, "cam1")


def _wrapped(inner: bytes) -> bytes:
    """`inner` inside the Message of a DoorAlarm notification (a known topic: the parser reads what is inside)."""
    head = (
        f'<wsnt:NotificationMessage xmlns:wsnt="{WSNT}" xmlns:tt="{TT}" xmlns:tns1="{TNS1}">'
        f'<wsnt:Topic Dialect="{CONCRETE_SET}">tns1:Door/State/DoorAlarm</wsnt:Topic><wsnt:Message>'
        '<tt:Message UtcTime="2026-11-29T14:03:05Z"><tt:Source><tt:SimpleItem Name="DoorToken" Value="D1"/>'
        "</tt:Source><tt:Data>"
    ).encode()
    return head + inner + b"</tt:Data></tt:Message></wsnt:Message></wsnt:NotificationMessage>"


_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">'
    b'<!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;"><!ENTITY x SYSTEM "file:///etc/passwd">]>'
)
_hostile_messages = st.one_of(
    st.integers(1, 2000).map(lambda n: _wrapped(b"<tt:X>" * n + b"</tt:X>" * n)),  # deeper than lxml's 256
    st.integers(0, 3000).map(
        lambda n: _wrapped(b'<tt:SimpleItem Name="State" Value="DoorForcedOpen"/>' * n)  # the same item again
    ),
    st.integers(0, 200_000).map(lambda n: _wrapped(b'<tt:SimpleItem Name="State" Value="' + b"x" * n + b'"/>')),
    st.sampled_from([b"&e;", b"&x;", b'<tt:SimpleItem Name="State" Value="&x;"/>']).map(
        lambda ref: _LAUGHS + _wrapped(ref)
    ),
    st.binary(max_size=64).map(lambda junk: _wrapped(junk)),
)


def _hostile_property(data: bytes) -> None:
    result = parse_notification_xml(data, "cam1")
    _check(result)
    assert "root:" not in repr(result)  # an external entity is never read
    assert len(repr(result)) < 10_000  # what is kept of a message is bounded, whatever its size


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(_hostile_messages)
def test_parser_property_hostile_structure(data: bytes) -> None:
    _hostile_property(data)


@pytest.mark.slow
@settings(max_examples=2000, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(_hostile_messages)
def test_parser_property_hostile_structure_many(data: bytes) -> None:
    _hostile_property(data)


# --- signals to incidents -----------------------------------------------------------------------------------------


def _signal(kind: Any, active: bool | None, at: datetime = T, key: str = "k", **kw: Any) -> CameraSignal:
    return CameraSignal("cam1", kind, at, "Topic/X", key, active, origin=kw.pop("origin", "ONVIF rule R1"), **kw)


def test_forwarded_state_opens_and_closes_once() -> None:
    sigs = CameraSignals("cam1", forward=["field"])
    assert [h.state for h in sigs.update(_signal("field", True))] == ["start"]
    assert sigs.update(_signal("field", True, T + timedelta(seconds=1))) == []  # repeated report: still open
    (end,) = sigs.update(_signal("field", False, T + timedelta(seconds=9)))
    assert (end.state, end.type, end.rule_id, end.track_ids, end.started_at) == ("end", "onvif_field",
                                                                               "onvif-field", (), T)  # fmt: skip
    assert end.facts["duration_s"] == 9
    assert sigs.update(_signal("field", False, T + timedelta(seconds=10))) == []


def test_instants_open_and_close_at_once_and_unforwarded_kinds_only_update_state() -> None:
    sigs = CameraSignals("cam1", forward=["line_crossing"])
    start, end = sigs.update(_signal("line_crossing", None))
    assert (start.state, end.state, start.key) == ("start", "end", end.key)
    assert sigs.update(_signal("motion", True)) == []
    assert sigs.motion_active and sigs.last_motion_at == T
    assert sigs.motion_within(T + timedelta(seconds=60), 1)
    sigs.update(_signal("motion", False, T + timedelta(seconds=4)))
    assert not sigs.motion_active and sigs.last_motion_at == T + timedelta(seconds=4)
    assert sigs.motion_within(T + timedelta(seconds=5), 2) and not sigs.motion_within(T + timedelta(seconds=7), 2)
    assert sigs.counts == {"line_crossing": 1, "motion": 2}


def test_state_resyncs_from_initialized_reports_and_stays_bounded() -> None:
    from plugin.pipeline.camera_signals import MAX_KEYS

    sigs = CameraSignals("cam1", forward=["field"])
    assert len(sigs.update(_signal("field", True))) == 1
    # after a re-subscription the camera reports its properties again (PropertyOperation="Initialized"):
    # still on is no new incident, off (missed while the subscription was lost) ends the open one
    assert sigs.update(_signal("field", True, T + timedelta(seconds=5), initialized=True)) == []
    (end,) = sigs.update(_signal("field", False, T + timedelta(seconds=9), initialized=True))
    assert end.state == "end"
    for i in range(MAX_KEYS + 10):
        sigs.update(_signal("field", True, key=f"k{i}"))
    assert len(sigs.active()) == MAX_KEYS and sigs.counts["field"] == MAX_KEYS + 13


@pytest.mark.parametrize(
    ("kind", "active", "cause", "value", "ended", "expected"),
    [
        ("line_crossing", None, None, None, False, "Camera cam1 reported line crossing (ONVIF rule R1) at 14:03:05"),
        ("counting", None, None, 17.0, False, "Camera cam1 reported a count 17 (ONVIF rule R1) at 14:03:05"),
        ("door_alarm", True, "forced open", None, False,
         "Camera cam1 reports a door alarm: forced open (ONVIF rule R1) since 14:03:05"),
        ("door_alarm", True, "forced open", None, True,
         "Camera cam1 reported a door alarm: forced open (ONVIF rule R1), 14:03:05-14:03:20 (15 s)"),
        ("motion", True, None, None, False, "Camera cam1 reports motion (ONVIF rule R1) since 14:03:05"),
        ("tamper", True, "image too dark", None, False,
         "Camera cam1 reports tampering: image too dark (ONVIF rule R1) since 14:03:05"),
        ("field", True, None, None, False, "Camera cam1 reports an object in a field (ONVIF rule R1) since 14:03:05"),
        ("loitering", True, None, None, False, "Camera cam1 reports loitering (ONVIF rule R1) since 14:03:05"),
        ("access", None, "denied", None, False,
         "Camera cam1 reported an access event: denied (ONVIF rule R1) at 14:03:05"),
    ],
)  # fmt: skip
def test_every_kind_has_an_explanation(
    kind: Any, active: bool | None, cause: str | None, value: float | None, ended: bool, expected: str
) -> None:
    sigs = CameraSignals("cam1", forward=CAMERA_SIGNAL_KINDS)
    hits = sigs.update(_signal(kind, active, cause=cause, value=value))
    if ended:
        hits = sigs.update(_signal(kind, False, T + timedelta(seconds=15)))
    hit = hits[-1] if ended else hits[0]
    facts = dict(hit.facts) | {"camera": "cam1", "zone": None, "start": hit.started_at, "end": hit.at,
                               "ended": hit.state == "end", "schedule": None}  # fmt: skip
    assert Explainer("UTC").render(hit.type, facts) == expected


def test_events_config() -> None:
    doc = {"cameras": [{"id": "cam1", "onvif": {"host": "10.0.0.5", "events": {"forward": ["line_crossing"]}}}]}
    cam = parse_config(doc).cameras[0]
    assert cam.onvif is not None and cam.onvif.events is not None
    assert (cam.onvif.events.enabled, cam.onvif.events.forward, cam.onvif.events.severity) == (
        True, ["line_crossing"], "warning")  # fmt: skip
    for bad, message in [
        ({"forward": ["line-crossing"]}, "cameras[0].onvif.events.forward[0]: "),
        ({"forward": ["motion", "motion"]}, "cameras[0].onvif.events.forward: lists a kind twice"),
        ({"enable": True}, "cameras[0].onvif.events.enable: unknown key"),
    ]:
        doc["cameras"][0]["onvif"]["events"] = bad
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            parse_config(doc)


# --- the PullPoint client against the responder -------------------------------------------------------------------


async def until(done: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait (polling) until `done()`."""
    async with asyncio.timeout(timeout_s):
        while True:
            if done():
                return
            await asyncio.sleep(0.02)


class Client:
    """An events client running in the background, collecting what it delivers."""

    def __init__(self, responder: EventsResponder, password: str = PASSWORD, **kw: Any) -> None:
        self.signals: list[CameraSignal] = []
        config = OnvifConfig(host="127.0.0.1", port=responder.port, username=USER, password=password, timeout_s=5)
        kw = {"subscription_s": 30.0, "pull_timeout_s": 1.0, "retry_start_s": 0.1, "retry_max_s": 0.5} | kw
        self.client = OnvifEventsClient("cam1", config, self._on, **kw)
        self.task = asyncio.create_task(self.client.run())

    async def _on(self, signal: CameraSignal) -> None:
        self.signals.append(signal)

    async def until(self, done: Callable[[], bool], timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not done():
                if self.task.done():
                    self.task.result()
                    assert done(), "the client stopped"
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
async def responder() -> AsyncIterator[EventsResponder]:
    async with EventsResponder(USER, PASSWORD) as r:
        yield r
    assert r.errors == [], "requests or replies event.wsdl does not allow"


def crossing(rule: str = "Line1", at: datetime | None = None) -> Any:
    return notification("tns1:RuleEngine/LineDetector/Crossed", at, source=ANALYTICS | {"Rule": rule},
                        data={"ObjectId": "7"})  # fmt: skip


@onvif
async def test_subscribes_pulls_and_unsubscribes(responder: EventsResponder, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "adapters.cameras.onvif.events")
    c = Client(responder)
    try:
        await c.until(lambda: c.client.status.state == "subscribed")
        unknown = notification("tns1:VideoSource/SignalLoss", source={"Source": "VS1"}, data={"State": "true"})
        responder.publish(crossing(), unknown, unknown)
        await c.until(lambda: c.client.status.unknown == 2)
        responder.publish(unknown, notification("tns1:VideoSource/MotionAlarm", source={"Source": "VS1"},
                                                data={"State": "true"}))  # fmt: skip
        await c.until(lambda: len(c.signals) == 2)
    finally:
        await c.stop()
    assert [s.kind for s in c.signals] == ["line_crossing", "motion"]
    assert c.signals[0].rule == "Line1" and c.signals[1].active is True
    assert c.client.status.unknown == 3 and c.client.status.unknown_topics == {"VideoSource/SignalLoss"}
    said = [r for r in caplog.records if "VideoSource/SignalLoss" in r.getMessage()]
    assert len(said) == 1, "an unknown topic is logged once"
    assert responder.counts["CreatePullPointSubscription"] == 1 and responder.counts["Unsubscribe"] == 1
    assert responder.subscriptions == {}
    assert c.client.status.state == "stopped"
    assert all(r.authenticated for r in responder.requests if r.operation != "GetSystemDateAndTime")
    assert PASSWORD not in caplog.text


@onvif
async def test_a_bad_message_is_rejected_and_the_loop_goes_on(
    responder: EventsResponder, caplog: pytest.LogCaptureFixture
) -> None:
    c = Client(responder)
    try:
        await c.until(lambda: c.client.status.state == "subscribed")
        responder.publish(crossing("Line1"))
        responder.queue_raw(_raw(message=_msg(data='<tt:SimpleItem Name="IsMotion" Value="maybe"/>')))
        responder.publish(crossing("Line2"))
        await c.until(lambda: len(c.signals) == 2)
        # a reply that is not XML at all: the client treats the subscription as broken and makes a new one
        responder.queue_raw(b"<wsnt:NotificationMessage")
        await c.until(lambda: c.client.status.subscriptions == 2)
        responder.publish(crossing("Line3"))
        await c.until(lambda: len(c.signals) == 3)
    finally:
        await c.stop()
    assert [s.rule for s in c.signals] == ["Line1", "Line2", "Line3"]
    assert c.client.status.rejected == 1
    assert "Data item IsMotion is 'maybe', not a boolean" in (c.client.status.last_rejection or "")
    assert "rejected a message on RuleEngine/CellMotionDetector/Motion" in caplog.text


@onvif
async def test_renews_before_the_subscription_ends(responder: EventsResponder) -> None:
    # 2 s subscriptions, which the responder ends unless renewed (pulls do not extend them)
    c = Client(responder, subscription_s=2.0, pull_timeout_s=1.0)
    try:
        await c.until(lambda: c.client.status.state == "subscribed")
        await asyncio.sleep(4.5)  # more than two subscription lengths
        responder.publish(crossing())
        await c.until(lambda: len(c.signals) == 1)
    finally:
        await c.stop()
    assert c.client.status.renewals >= 3
    assert c.client.status.subscriptions == 1, "never lost: renewed in time"
    assert responder.counts["Renew"] == c.client.status.renewals


@onvif
async def test_resubscribes_after_the_subscription_is_lost(
    responder: EventsResponder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "adapters.cameras.onvif.events")
    c = Client(responder)
    try:
        await c.until(lambda: c.client.status.state == "subscribed")
        responder.lose()
        await c.until(lambda: c.client.status.subscriptions == 2)
        assert c.client.status.state == "subscribed"
        responder.publish(crossing())
        await c.until(lambda: len(c.signals) == 1)
    finally:
        await c.stop()
    # the camera's fault is what told the client (its status forgets the error once subscribed again)
    lost = [r.getMessage() for r in caplog.records if "subscribing again" in r.getMessage()]
    assert len(lost) == 1 and "ResourceUnknownFault" in lost[0], lost


@onvif
async def test_resubscribes_after_the_camera_reboots(responder: EventsResponder) -> None:
    c = Client(responder)
    try:
        await c.until(lambda: c.client.status.state == "subscribed")
        reboot = asyncio.create_task(responder.restart(down_s=1.0))
        await c.until(lambda: c.client.status.state == "reconnecting")
        assert "not reachable" in (c.client.status.last_error or "") or "PullMessages" in (
            c.client.status.last_error or ""
        )
        await reboot
        await c.until(lambda: c.client.status.subscriptions == 2 and c.client.status.state == "subscribed")
        responder.publish(crossing())
        await c.until(lambda: len(c.signals) == 1)
    finally:
        await c.stop()


@onvif
async def test_wrong_password_stops_without_retrying(responder: EventsResponder) -> None:
    c = Client(responder, password="not-the-password")
    await asyncio.wait_for(c.task, 10)  # returns by itself
    assert c.client.status.state == "failed"
    assert "rejected the login for user 'admin'" in (c.client.status.last_error or "")
    assert "not-the-password" not in (c.client.status.last_error or "")
    assert "CreatePullPointSubscription" not in responder.counts
    assert responder.counts["GetServices"] == 1  # asked once, not again and again (cameras lock accounts)


@onvif
async def test_a_device_without_an_event_service_is_reported_once() -> None:
    async with EventsResponder(USER, PASSWORD, events_service=False) as r:
        c = Client(r)
        await asyncio.wait_for(c.task, 10)
    assert c.client.status.state == "unsupported"
    assert c.client.status.last_error == "the device has no event service"


@onvif
async def test_message_times_are_put_on_our_clock_when_the_camera_is_off() -> None:
    async with EventsResponder(USER, PASSWORD, clock_offset_s=3600) as r:
        c = Client(r)
        try:
            await c.until(lambda: c.client.status.state == "subscribed")
            r.publish(crossing(at=r.now()))  # the camera stamps it with its own clock, an hour ahead
            await c.until(lambda: len(c.signals) == 1)
        finally:
            await c.stop()
        assert r.errors == []
    assert abs((c.signals[0].at - datetime.now(UTC)).total_seconds()) < 5


@onvif
async def test_a_forwarded_camera_event_becomes_an_incident(responder: EventsResponder, tmp_path: Path) -> None:
    doc = {
        "site": {"timezone": "UTC"},
        "cameras": [{"id": "cam1", "onvif": {
            "host": "127.0.0.1", "port": responder.port, "username": USER, "password": PASSWORD, "timeout_s": 5,
            "events": {"forward": ["line_crossing", "door_alarm"], "severity": "critical"}}}],
    }  # fmt: skip
    config = parse_config(doc)
    database = AsyncDatabase(tmp_path / "db.sqlite")
    incidents = IncidentManager(database, tmp_path / "evidence", Explainer("UTC"), [])
    parts = PipelineParts(
        detector=config.detector, pose_config=config.pose, rules=[], client=None,  # type: ignore[arg-type]
        incidents=incidents, metrics=Metrics(), insights=None, presence=PresenceLog(), rule_context=RuleContext(),
        make_source=camera_source,
    )  # fmt: skip
    fleet = CameraFleet()
    supervisor = Supervisor(fleet, config.cameras, parts, once=False, ready_timeout_s=5, make_events=events_source)
    task = asyncio.create_task(supervisor.camera_events("cam1"))
    try:
        await until(lambda: "cam1" in fleet.events and fleet.events["cam1"].status.state == "subscribed")
        responder.publish(
            crossing("Line1", at=T),
            notification("tns1:VideoSource/MotionAlarm", T, source={"Source": "VS1"}, data={"State": "true"}),
            notification("tns1:Door/State/DoorAlarm", T, source={"DoorToken": "Door1"},
                         data={"State": "DoorForcedOpen"}),
            notification("tns1:Door/State/DoorAlarm", T + timedelta(seconds=20), source={"DoorToken": "Door1"},
                         data={"State": "Normal"}),
        )  # fmt: skip
        await until(lambda: fleet.signals["cam1"].counts.total() == 4)
        rows = await database.call(database.sync.incidents)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await database.close()
    by_type = {r["type"]: r for r in rows}
    assert set(by_type) == {"onvif_line_crossing", "onvif_door_alarm"}  # motion is not forwarded
    line = by_type["onvif_line_crossing"]
    assert line["explanation"] == "Camera cam1 reported line crossing (ONVIF rule Line1) at 14:03:05"
    assert (line["track_ids"], line["rule_id"], line["severity"], line["state"]) == ([], "onvif-line-crossing",
                                                                                    "critical", "end")  # fmt: skip
    door = by_type["onvif_door_alarm"]
    assert door["state"] == "end"
    assert door["explanation"] == (
        "Camera cam1 reported a door alarm: forced open (ONVIF door Door1), 14:03:05-14:03:25 (20 s)"
    )
    signals = fleet.signals["cam1"]
    assert signals.last_motion_at == T and signals.motion_active  # motion is kept for gating
    assert fleet.events["cam1"].describe()["state"] == "stopped"


# --- subscriptions told apart by a WS-Addressing reference parameter ----------------------------------------------

WSA10 = "http://www.w3.org/2005/08/addressing"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"


def _create_reply(params: str) -> Any:
    return etree.fromstring(
        f'<env:Envelope xmlns:env="{SOAP12}"><env:Body><tev:CreatePullPointSubscriptionResponse '
        f'xmlns:tev="http://www.onvif.org/ver10/events/wsdl" xmlns:wsa="{WSA10}" xmlns:wsnt="{WSNT}">'
        f"<tev:SubscriptionReference><wsa:Address>http://cam/onvif/services</wsa:Address>{params}"
        "</tev:SubscriptionReference><wsnt:CurrentTime>2026-11-29T14:00:00Z</wsnt:CurrentTime>"
        "<wsnt:TerminationTime>2026-11-29T14:01:00Z</wsnt:TerminationTime>"
        "</tev:CreatePullPointSubscriptionResponse></env:Body></env:Envelope>"
    )


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ("", []),
        ("<wsa:ReferenceParameters/>", []),
        (f'<wsa:ReferenceParameters><dom0:SubscriptionId xmlns:dom0="{SUBSCRIPTION_NS}">297'
         "</dom0:SubscriptionId></wsa:ReferenceParameters>", [(f"{{{SUBSCRIPTION_NS}}}SubscriptionId", "297")]),
        ('<wsa:ReferenceParameters><v:Session xmlns:v="urn:vendor" v:kind="pull"><v:Id>7</v:Id></v:Session><!-- c -->'
         '<Plain>x</Plain></wsa:ReferenceParameters>', [("{urn:vendor}Session", None), ("Plain", "x")]),
        ("<wsa:ReferenceParameters>" + "<n>1</n>" * 9 + "</wsa:ReferenceParameters>", EventsProtocolError),
        (f"<wsa:ReferenceParameters><big>{'x' * 5000}</big></wsa:ReferenceParameters>", EventsProtocolError),
    ],
)  # fmt: skip
def test_reference_parameters_become_marked_header_blocks(params: str, expected: Any) -> None:
    reply = _create_reply(params)
    if expected is EventsProtocolError:
        with pytest.raises(EventsProtocolError, match="reference parameters"):
            reference_parameters(reply)
        return
    headers = reference_parameters(reply)
    assert [(h.tag, h.text) for h in headers] == expected
    assert all(h.get(f"{{{WSA10}}}IsReferenceParameter") == "true" for h in headers)
    for h in headers:  # copies, with their content and namespaces: the reply itself is left as it was
        assert h.getparent() is None
        assert etree.fromstring(etree.tostring(h)).tag == h.tag
    if expected and expected[0][0] == "{urn:vendor}Session":
        assert headers[0].findtext("{urn:vendor}Id") == "7" and headers[0].get("{urn:vendor}kind") == "pull"
    assert not reply.xpath("//*[@wsa:IsReferenceParameter]", namespaces={"wsa": WSA10})


def _soap(body: str, header: str = "") -> bytes:
    return (
        f'<env:Envelope xmlns:env="{SOAP12}" xmlns:tev="{TEV}" xmlns:wsa="{WSA10}" '
        f'xmlns:dom0="{SUBSCRIPTION_NS}"><env:Header>{header}</env:Header><env:Body>{body}</env:Body></env:Envelope>'
    ).encode()


PULL = "<tev:PullMessages><tev:Timeout>PT0S</tev:Timeout><tev:MessageLimit>1</tev:MessageLimit></tev:PullMessages>"


@onvif
async def test_the_responder_needs_the_reference_parameter() -> None:
    # the camera this section's client tests run against: it must refuse what a client without the echo sends
    async with EventsResponder(reference_parameters=True) as r, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{r.port}"
        create = "<tev:CreatePullPointSubscription><tev:InitialTerminationTime>PT60S</tev:InitialTerminationTime>"
        async with http.post(f"{base}/onvif/events", data=_soap(create + "</tev:CreatePullPointSubscription>")) as resp:
            reply = etree.fromstring(await resp.read())
        address = reply.findtext(f".//{{{WSA10}}}Address")
        (ident,) = reply.iterfind(f".//{{{WSA10}}}ReferenceParameters/{{{SUBSCRIPTION_NS}}}SubscriptionId")
        marked = f'<dom0:SubscriptionId wsa:IsReferenceParameter="true">{ident.text}</dom0:SubscriptionId>'
        cases = [
            (address, "", 400, "ter:InvalidArgs"),
            (address, f"<dom0:SubscriptionId>{ident.text}</dom0:SubscriptionId>", 400, "ter:InvalidArgs"),  # unmarked
            (address, '<dom0:SubscriptionId wsa:IsReferenceParameter="true">99</dom0:SubscriptionId>', 400,
             "ResourceUnknownFault"),
            (f"{base}/onvif/pullpoint/{ident.text}", marked, 500, "ActionNotSupported"),
            (address, marked, 200, "PullMessagesResponse"),
        ]  # fmt: skip
        for url, header, status, text in cases:
            async with http.post(url, data=_soap(PULL, header)) as resp:
                assert (resp.status, text in await resp.text()) == (status, True), header
    assert address == f"http://127.0.0.1:{r.port}/onvif/subscription"
    assert r.errors == []


@onvif
async def test_subscriptions_on_one_address_are_told_apart_by_their_reference_parameter(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "adapters.cameras.onvif.events")
    async with EventsResponder(USER, PASSWORD, reference_parameters=True) as r:
        # two subscriptions on the one address; a's are short, so it renews
        a = Client(r, subscription_s=2.0, pull_timeout_s=1.0)
        b = Client(r)
        try:
            await a.until(lambda: a.client.status.state == "subscribed")
            await b.until(lambda: b.client.status.state == "subscribed")
            await asyncio.sleep(3.0)  # longer than a's subscription: only renewals (with the header) keep it
            r.publish(crossing("Line1"))
            await a.until(lambda: len(a.signals) == 1)
            await b.until(lambda: len(b.signals) == 1)
            ids = set(r.subscriptions)
        finally:
            await a.stop()
        # a's Unsubscribe named a's subscription: b's is still there, and b still gets messages
        assert len(ids) == 2 and len(r.subscriptions) == 1
        try:
            r.publish(crossing("Line2"))
            await b.until(lambda: len(b.signals) == 2)
        finally:
            await b.stop()
        assert r.subscriptions == {}
    assert r.errors == []
    assert a.client.status.renewals >= 1 and a.client.status.subscriptions == 1, "renewed, never lost"
    assert b.client.status.subscriptions == 1 and [s.rule for s in b.signals] == ["Line1", "Line2"]
    shared = [q for q in r.requests if q.path == "/onvif/subscription"]
    assert {q.operation for q in shared} == {"PullMessages", "Renew", "Unsubscribe"}
    for q in shared:  # every request to a subscription echoed exactly one id, marked, of a live subscription
        (ref,) = q.reference_parameters
        assert ref.startswith(f"{{{SUBSCRIPTION_NS}}}SubscriptionId=") and int(ref.split("=")[1]) in ids
    assert {q.reference_parameters for q in shared if q.operation == "Unsubscribe"} == {
        (f"{{{SUBSCRIPTION_NS}}}SubscriptionId={i}",) for i in ids
    }
    assert not [q for q in r.requests if q.path.startswith("/onvif/pullpoint/")]
    assert "1 reference parameter(s)" in caplog.text


@onvif
async def test_without_the_echo_such_a_camera_refuses_every_pull(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # what the client did before: the address only. The camera faults each pull and no message arrives.
    import adapters.cameras.onvif.events as events

    monkeypatch.setattr(events, "reference_parameters", lambda envelope: ())
    async with EventsResponder(USER, PASSWORD, reference_parameters=True) as r:
        c = Client(r)
        try:
            await c.until(lambda: c.client.status.state == "subscribed")
            r.publish(crossing())
            # stopped while it waits to subscribe again, not in the middle of making a subscription
            await c.until(lambda: c.client.status.subscriptions >= 3 and c.client.status.state == "reconnecting")
        finally:
            await c.stop()
        pulls = [q for q in r.requests if q.operation == "PullMessages"]
    assert "PullMessages: SOAP fault env:Sender / ter:InvalidArgs" in caplog.text
    assert c.signals == [] and pulls and all(q.reference_parameters == () for q in pulls)
