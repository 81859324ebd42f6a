"""An incident as XProtect takes it outside its REST APIs: an Analytics Event document (checked against Milestone's
XSD) and a Generic Event string; and the incident fields the Milestone sink reads."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lxml import etree

from adapters.sinks.common import incident_time, normalised_box
from plugin.errors import SinkRejected
from plugin.protocols import is_system_incident, system_caption

NAMESPACE = "urn:milestone-systems"


CAMERA_KIND = "5135BA21-F1DC-4321-806A-6CE2017343C0"  # VideoOS.Platform.Kind.Camera, listed in the XSD


VENDOR = "StoreSight"
# XProtect's default alarm priorities: 1 high, 2 medium, 3 low.
PRIORITY = {"critical": 1, "warning": 2, "info": 3}


# Derives each Analytics Event's ID from its delivery key (uuid5), so a resend is recognisably the same event.
EVENT_ID_NAMESPACE = uuid.UUID("6f1d0c52-3f0e-4f7e-9a57-1b2f5d0c9e11")


def marker(incident_id: str) -> str:
    """What a bookmark carries to be found again: in its reference and on the last line of its description."""
    return f"storesight:{incident_id}"


def iso(t: datetime) -> str:
    """UTC with milliseconds and Z, as XProtect's REST APIs write times."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class IncidentView:
    """The parts of the incident JSON this sink writes, checked once."""

    delivery_key: str
    id: str
    rule_id: str
    type: str
    camera: str
    state: str
    seq: int
    start: datetime
    end: datetime | None
    explanation: str
    severity: str
    zone: str | None
    box: tuple[float, float, float, float] | None
    confidence: float | None
    system_caption: str | None = None  # set for StoreSight's own health incidents, which have no camera

    @classmethod
    def parse(cls, delivery_key: str, doc: Mapping[str, Any]) -> IncidentView:
        """From the stored incident JSON; a document missing what every mode needs is rejected."""
        try:
            incident_id, rule_id, camera = str(doc["id"]), str(doc["rule_id"]), str(doc["camera"])
            start = incident_time(doc["start"], "start", delivery_key)
            seq = int(doc.get("seq") or 0)
        except KeyError as exc:
            raise SinkRejected(f"incident {delivery_key} has no {exc.args[0]!r}") from None
        except (TypeError, ValueError):
            raise SinkRejected(f"incident {delivery_key}: seq {doc.get('seq')!r} is not a number") from None
        details = doc.get("details") or {}
        score = details.get("score") if isinstance(details, Mapping) else None
        return cls(
            delivery_key=delivery_key,
            id=incident_id,
            rule_id=rule_id,
            type=str(doc.get("type") or "incident"),
            camera=camera,
            state=str(doc.get("state") or "start"),
            seq=seq,
            start=start,
            end=None if doc.get("end") is None else incident_time(doc["end"], "end", delivery_key),
            explanation=str(doc.get("explanation") or rule_id),
            severity=str(doc.get("severity") or "warning"),
            zone=None if doc.get("zone") is None else str(doc["zone"]),
            box=normalised_box(details) if isinstance(details, Mapping) else None,
            confidence=float(score) if isinstance(score, int | float) and 0 <= score <= 1 else None,
            system_caption=system_caption(doc) if is_system_incident(doc) else None,
        )

    @property
    def at(self) -> datetime:
        """When this state change happened."""
        return self.end if self.end is not None and self.state != "start" else self.start

    @property
    def description(self) -> str:
        """The explanation, with the marker on its own last line."""
        return f"{self.explanation}\n{marker(self.id)}"


def _el(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    child = etree.SubElement(parent, f"{{{NAMESPACE}}}{tag}")
    if text is not None:
        child.text = text
    return child


def _fqid(parent: etree._Element, camera_guid: str) -> None:
    fqid = _el(parent, "FQID")
    _el(fqid, "ObjectId", camera_guid)
    _el(fqid, "Kind", CAMERA_KIND)


def build_analytics_event(inc: IncidentView, camera_guid: str | None, message: str) -> etree._Element:
    """An AnalyticsEvent document (urn:milestone-systems) for one state change, with the box as overlay; without a
    camera (StoreSight's own health) its source is named "StoreSight" and it references no camera.

    Elements follow the XSD's sequence order, which the schema enforces.
    """
    # None is lxml's key for the default namespace; lxml-stubs 0.5 types the keys as str only
    doc = etree.Element(f"{{{NAMESPACE}}}AnalyticsEvent", nsmap={None: NAMESPACE})  # type: ignore[dict-item]
    header = _el(doc, "EventHeader")
    _el(header, "ID", str(uuid.uuid5(EVENT_ID_NAMESPACE, inc.delivery_key)))
    _el(header, "Timestamp", inc.at.astimezone(UTC).isoformat())
    _el(header, "Class", "Analytics")
    _el(header, "Type", inc.type)
    _el(header, "Version", "1.0")
    _el(header, "Priority", str(PRIORITY.get(inc.severity, 2)))
    _el(header, "Name", inc.rule_id)
    _el(header, "Message", message)
    _el(header, "CustomTag", f"{inc.state}|{inc.id}")
    source = _el(header, "Source")
    if camera_guid is None:
        _el(source, "Name", VENDOR)
    else:
        _el(source, "Name", inc.camera)
        _fqid(source, camera_guid)
    _el(doc, "Description", inc.explanation)
    _el(doc, "StartTime", inc.start.astimezone(UTC).isoformat())
    if inc.end is not None:
        _el(doc, "EndTime", inc.end.astimezone(UTC).isoformat())
    if inc.zone:
        _el(doc, "Location", inc.zone)
    if inc.box is not None:
        x1, y1, x2, y2 = inc.box
        obj = _el(_el(doc, "ObjectList"), "Object")
        _el(obj, "Name", "Person")
        _el(obj, "Type", "person")
        if inc.confidence is not None:
            _el(obj, "Confidence", repr(inc.confidence))
        _el(obj, "AlarmTrigger", "true")
        box = _el(obj, "BoundingBox")
        for tag, value in (("Top", y1), ("Left", x1), ("Bottom", y2), ("Right", x2)):
            _el(box, tag, repr(value))
    if camera_guid is not None:
        _fqid(_el(_el(doc, "ReferenceList"), "Reference"), camera_guid)
    vendor = _el(doc, "Vendor")
    _el(vendor, "Name", VENDOR)
    _el(vendor, "CustomData", json.dumps({"incident_id": inc.id, "delivery_key": inc.delivery_key, "state": inc.state}))
    return doc


def load_schema(path: Path) -> etree.XMLSchema:
    """Milestone's AnalyticsEvent.xsd, parsed (reads the file: call it off the event loop)."""
    return etree.XMLSchema(etree.parse(str(path)))


def generic_event_text(inc: IncidentView) -> str:
    """The Generic Event string: ASCII only, since the Compatible data source reads the server's ANSI code page."""
    return f"{VENDOR}|{inc.rule_id}|{inc.state}|{inc.camera}|{inc.type}|{inc.id}"
