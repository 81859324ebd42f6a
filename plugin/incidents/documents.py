"""An incident's public JSON shape (API, CLI, webhook payloads, the database's stored document) and back."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from plugin.types import Incident


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(UTC).isoformat()


def incident_to_json(incident: Incident) -> dict[str, Any]:
    """The public JSON shape of an incident (API, CLI, webhook payload)."""
    return {
        "id": incident.id,
        "rule_id": incident.rule_id,
        "type": incident.type,
        "camera": incident.camera,
        "zone": incident.zone,
        "severity": incident.severity,
        "state": incident.state,
        "seq": incident.seq,
        "track_ids": list(incident.track_ids),
        "start": _iso(incident.start),
        "end": _iso(incident.end),
        "explanation": incident.explanation,
        "snapshot": incident.snapshot,
        "details": dict(incident.details),
    }


def incident_from_json(doc: Mapping[str, Any]) -> Incident:
    """The inverse of `incident_to_json`: an Incident from its stored public shape."""
    return Incident(
        id=str(doc["id"]),
        rule_id=str(doc["rule_id"]),
        type=str(doc["type"]),
        camera=str(doc["camera"]),
        start=datetime.fromisoformat(str(doc["start"])),
        state=doc["state"],
        seq=int(doc["seq"]),
        explanation=str(doc["explanation"]),
        end=None if doc.get("end") is None else datetime.fromisoformat(str(doc["end"])),
        severity=str(doc["severity"]),
        zone=doc.get("zone"),
        track_ids=tuple(int(t) for t in doc.get("track_ids") or ()),
        snapshot=doc.get("snapshot"),
        details=dict(doc.get("details") or {}),
    )
