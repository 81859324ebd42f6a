"""Door events as access-control systems send them, and what their adapters hand them to (a pure model: adapters
use it)."""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from plugin.config.access import AccessConfig, door_text
from plugin.fusion.pos.model import Moment
from plugin.private import keyed_digest
from plugin.protocols import SubmitResult

AccessKind = Literal["granted", "denied", "forced", "held", "closed"]
KINDS: tuple[AccessKind, ...] = ("granted", "denied", "forced", "held", "closed")


def badge_digest(key: bytes, badge: str | None) -> str | None:
    """What the database keeps of a badge id: its HMAC-SHA256 under the install key (plugin/private.py), so the
    same badge correlates across events, and nobody without the key can find the badge by trying every number."""
    return keyed_digest(key, badge) if badge else None


def badge_ref(key: bytes, badge: str | None) -> str:
    """What logs and incidents say about a badge: the first 8 hex digits of its digest ("" for none)."""
    digest = badge_digest(key, badge)
    return digest[:8] if digest else ""


class AccessEventIn(BaseModel):
    """One door event as an access-control system posts it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    door: str = Field(min_length=1, max_length=64, description="the door id of `access.doors`")
    kind: AccessKind
    time: Moment = Field(description="when it happened, with a UTC offset (1970-2999)")
    badge: str | None = Field(default=None, min_length=1, max_length=128, description="the credential presented")
    id: str | None = Field(default=None, min_length=1, max_length=128, description="the sender's event id")

    @field_validator("door", mode="before")
    @classmethod
    def _door(cls, v: Any) -> Any:
        return door_text(v)


class DoorEventIntake(Protocol):
    """What the door-event adapters hand events to (the access service): stored before `submit` returns."""

    config: AccessConfig

    async def submit(self, event: AccessEventIn, source: str, origin: str) -> SubmitResult:
        """Store one door event of a configured door."""
        ...
