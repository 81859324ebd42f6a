"""What every config model shares: strictness (a typo is an error), ids, time-of-day ranges and zones' points, and
errors that know the path of the bad value."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from datetime import datetime, time
from ipaddress import IPv4Network, IPv6Network
from typing import Annotated, Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_RANGE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")
HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
Severity = Literal["info", "warning", "critical"]


class Strict(BaseModel):
    """Base for every config model: unknown keys are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


Point = tuple[Annotated[float, Field(ge=0, le=1)], Annotated[float, Field(ge=0, le=1)]]


class PathError(ValueError):
    """A cross-object error that knows its own path, relative to the model whose validator raised it."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


def _network(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return ipaddress.ip_network(v.strip(), strict=False)
        except ValueError:
            raise ValueError(f"{v!r} is not an IP address or network (10.0.0.7, 10.0.0.0/24, fd00::/8)") from None
    return v


# An entry of an `allow_from` list: one address (10.0.0.7) or a network (10.0.0.0/24); host bits are ignored.
SourceNetwork = Annotated[IPv4Network | IPv6Network, BeforeValidator(_network)]


def binds_beyond_loopback(host: str) -> bool:
    """A listener on `host` is reachable from other machines (a name other than localhost counts as reachable)."""
    bare = host.strip().strip("[]")
    if bare.lower() == "localhost":
        return False
    try:
        return not ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return True


def peer_allowed(peer: str, allow_from: Sequence[IPv4Network | IPv6Network]) -> bool:
    """The peer address is in one of the networks; an empty list allows whoever can reach the listener (the configs
    require a list where that is anyone: a listener beyond loopback)."""
    try:
        address = ipaddress.ip_address(peer.split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d
    if not allow_from:
        return True
    return any(address in network for network in allow_from)


def require_unique(ids: Iterable[str], what: str) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise ValueError(f"{what}: duplicate id {i!r}")
        seen.add(i)


class ScheduleConfig(Strict):
    """When a rule is armed: local time ranges (may cross midnight) in an IANA time zone."""

    active: list[str] = Field(min_length=1, description='ranges like "22:00-06:00"')
    timezone: str = "UTC"

    @field_validator("active")
    @classmethod
    def _ranges(cls, v: list[str]) -> list[str]:
        for item in v:
            if not _RANGE.match(item):
                raise ValueError(f'{item!r} is not a range like "22:00-06:00"')
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return check_tz(v)

    def is_active(self, at: datetime) -> bool:
        """True when `at` (aware) falls in one of the ranges, in the schedule's time zone."""
        local = at.astimezone(ZoneInfo(self.timezone)).time()
        for item in self.active:
            start_s, end_s = item.split("-")
            start, end = parse_hhmm(start_s), parse_hhmm(end_s)
            if start <= end:
                if start <= local < end or (end == time(0, 0) and local >= start):
                    return True
            elif local >= start or local < end:
                return True
        return False


def check_tz(v: str) -> str:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {v!r} (use an IANA name like Europe/London)") from None
    return v


def parse_hhmm(s: str) -> time:
    h, m = (int(x) for x in s.split(":"))
    return time(0, 0) if h == 24 else time(h, m)


def literal_key(model: type[BaseModel], field_name: str) -> str:
    """The single value of a model's `Literal` field: where a rule's or sink's key is declared, once."""
    values = get_args(model.model_fields[field_name].annotation)
    if len(values) != 1 or not isinstance(values[0], str):
        raise TypeError(f"{model.__name__}.{field_name} must be a Literal of one string")
    return values[0]
