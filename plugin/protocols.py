"""The boundaries between the bridge and the outside world, as small protocols (ARCHITECTURE.md "Boundaries"):
camera sources, the detector, incident sinks and business-event sources. Part of the kernel: imports nothing above it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from plugin.types import SYSTEM_CAMERA, BusinessEvent, Detections, Frame, ImageArray

# --- camera sources -------------------------------------------------------------------------------------------


@dataclass
class SourceStatus:
    """Live counters and state of one source (mutated by the source, read by readiness and metrics)."""

    connected: bool = False
    finished: bool = False
    frames_read: int = 0
    frames_delivered: int = 0
    frames_dropped: int = 0
    reconnects: int = 0
    last_error: str | None = None
    last_frame_monotonic: float | None = None  # when the decoder last got a frame (stall and offline detection)
    # files only: media position and length, for progress
    position_s: float = 0.0
    duration_s: float | None = None


class CameraSource(Protocol):
    """Frames from one camera; blocking decode happens off the event loop."""

    camera_id: str
    status: SourceStatus
    is_file: bool

    def frames(self) -> AsyncIterator[Frame]:
        """Frames until the source ends (files) or `close()` (live)."""
        ...

    async def close(self) -> None:
        """Stop reading and release the device or file."""
        ...


class CameraEventSource(Protocol):
    """A camera's own analytics (ONVIF PullPoint events), handed as CameraSignals to the handler it was built with."""

    async def run(self) -> None:
        """Subscribe and deliver until cancelled; returns only when the camera cannot give events at all."""
        ...

    def crashed(self, reason: str) -> None:
        """`run()` failed unexpectedly and will be restarted: say so in `describe()`."""
        ...

    def describe(self) -> dict[str, object]:
        """The state for readiness (no secrets)."""
        ...


# --- the detector ---------------------------------------------------------------------------------------------


class InferenceClient(Protocol):
    """What pipelines need from a detector."""

    async def ready(self) -> bool:
        """True when the server is up and the model loaded."""
        ...

    async def detect(self, images: Sequence[ImageArray]) -> list[Detections]:
        """Detections in each image's own pixel coordinates."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


# --- incident sinks -------------------------------------------------------------------------------------------


def is_system_incident(incident: Mapping[str, Any]) -> bool:
    """StoreSight's own health (camera "system", types `system_*`): it concerns no camera of any VMS, so a sink
    takes its system path (a server-level event, or a skip it says once) instead of looking up its camera map."""
    return incident.get("camera") == SYSTEM_CAMERA


def system_caption(incident: Mapping[str, Any]) -> str:
    """The short title of a system incident ("StoreSight analytics down"), for event captions and alarm names."""
    details = incident.get("details")
    caption = details.get("caption") if isinstance(details, Mapping) else None
    return str(caption) if caption else f"StoreSight {incident.get('type') or 'system event'}"


@dataclass(frozen=True)
class Receipt:
    """What the sink answered (an id it assigned, or a status line)."""

    detail: str


@dataclass
class SinkHealth:
    """Last outcome, shown in /readyz."""

    ok: bool = True
    last_error: str | None = None
    auth_failed: bool = False


class SinkRefs(Protocol):
    """Durable references to what a sink created for an incident (a bookmark id, an event id), so the end of an
    incident updates the VMS object its start created, and a retry after a lost reply finds it instead of
    creating a second one."""

    async def get_ref(self, sink_id: str, incident_id: str) -> str | None:
        """The stored reference, if any."""
        ...

    async def put_ref(self, sink_id: str, incident_id: str, ref: str) -> None:
        """Store (or replace) the reference."""
        ...


@runtime_checkable
class SelfTestingSink(Protocol):
    """A sink that can prove its connection: `storesight vms test` calls this."""

    async def self_test(self) -> str:
        """Log in and write a clearly labelled test bookmark or event; return what was written (raise on failure)."""
        ...


class IncidentSink(Protocol):
    """Delivers incident JSON documents; fed only from the outbox, keyed by the delivery key."""

    kind: str  # the product: its key in the sink registry
    id: str
    health: SinkHealth

    async def publish(self, delivery_key: str, incident: Mapping[str, Any]) -> Receipt:
        """Deliver one incident state change; idempotent for the same delivery key."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class RecordSink(Protocol):
    """A sink that also takes keyed records besides incidents (head office: roll-up hours, POS hours, camera
    health, feedback). The outbox hands it only the rows queued for it, in stored order, like incidents."""

    async def publish_record(self, delivery_key: str, kind: str, record: Mapping[str, Any]) -> Receipt:
        """Deliver one record; idempotent for the same delivery key."""
        ...


# --- live state (what dashboards show now, beside the incidents) ------------------------------------------------


@dataclass(frozen=True)
class CameraLive:
    """One camera now."""

    camera: str
    state: str  # health: starting | online | degraded | offline (files: the pipeline's running | finished ...)
    people: int  # confirmed tracked people in view
    queues: Mapping[str, int] = field(default_factory=dict)  # queue rule id -> people queueing


@dataclass(frozen=True)
class LiveState:
    """The store now: each camera, and each store occupancy count. Handed to sinks that show live state."""

    site: str
    site_name: str | None
    cameras: tuple[CameraLive, ...]
    store_occupancy: Mapping[str, int] = field(default_factory=dict)  # store_occupancy id -> people inside


@runtime_checkable
class LiveStateSink(Protocol):
    """A sink that also shows the store's live state (Home Assistant discovery over MQTT). Best effort, not through
    the outbox: each state replaces the last, so one that fails is simply superseded by the next."""

    wants_live_state: bool  # configured to show it (opt-in)

    async def publish_live(self, state: LiveState) -> None:
        """Show this state; raise SinkNotReady (or another StoreSightError) when the product cannot take it now."""
        ...


# --- business-event sources -----------------------------------------------------------------------------------


class BusinessIntake(Protocol):
    """Where business-event sources hand what they receive (the business hub): stored before it returns."""

    async def ingest(self, event: BusinessEvent, dedupe_key: str | None = None) -> tuple[str, bool]:
        """Store the event; (its id, whether it was new). A repeat of a `dedupe_key` is stored once."""
        ...


@dataclass(frozen=True)
class SubmitResult:
    """What happened to one submitted transaction or door event."""

    event_id: str
    new: bool  # False: a duplicate of one already stored (acknowledge it all the same)


class BusinessEventSource(Protocol):
    """An input that receives business signals (POS, door events, alarm panels) from outside and hands each to its
    intake, acknowledging the sender only once the intake has stored it; started and closed by the app."""

    async def start(self) -> None:
        """Open the listener, folder or connection."""
        ...

    async def close(self) -> None:
        """Stop receiving; what was acknowledged is already stored."""
        ...


# --- camera listings (storesight discover) -------------------------------------------------------------------


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
