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

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_RANGE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")
HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
Severity = Literal["info", "warning", "critical"]


def yaml_clock_trap(value: Any, fix: str) -> Any:
    """Reject a number where a time of day belongs, saying why and how to fix it: YAML 1.1 (PyYAML) reads an
    unquoted `22:00` as the base-60 integer 1320, so without this the error would call 1320 "not a time" about
    what the admin plainly wrote as one. `fix` is the corrected line, with `{time}` for the time they meant."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if isinstance(value, int) and 0 <= value < 24 * 60:
        hours, minutes = divmod(value, 60)
        raise ValueError(
            f"got the number {value}: YAML 1.1 reads an unquoted {hours}:{minutes:02d} as a base-60 number; "
            f"quote it: {fix.format(time=f'{hours:02d}:{minutes:02d}')}"
        )
    raise ValueError(f"got the number {value!r}: write the time quoted: {fix.format(time='22:00')}")


def _clock_trap(value: Any, info: ValidationInfo) -> Any:
    return yaml_clock_trap(value, f'{info.field_name}: "{{time}}"')


def _range_trap(value: Any, info: ValidationInfo) -> Any:
    return yaml_clock_trap(value, f'{info.field_name}: ["{{time}}-06:00"] (a list of quoted ranges)')


def _check_clock(v: str) -> str:
    if not HHMM.match(v):
        raise ValueError(f'{v!r} is not a time like "22:00"')
    return v


def _check_range(v: str) -> str:
    if not _RANGE.match(v):
        raise ValueError(f'{v!r} is not a range like "22:00-06:00"')
    return v


# Every time-of-day field is one of these two types (tests/unit/plugin/config/test_time_of_day.py walks the models to
# keep it so): the before-validator words the YAML trap, the after-validator the format, the schema tells editors.
TimeOfDay = Annotated[
    str,
    BeforeValidator(_clock_trap),
    AfterValidator(_check_clock),
    WithJsonSchema({"type": "string", "pattern": HHMM.pattern, "examples": ["22:00"]}),
]
TimeRange = Annotated[
    str,
    BeforeValidator(_range_trap),
    AfterValidator(_check_range),
    WithJsonSchema({"type": "string", "pattern": _RANGE.pattern, "examples": ["22:00-06:00", "09:00-17:30"]}),
]


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

    active: list[TimeRange] = Field(min_length=1, description='local time ranges like "22:00-06:00", quoted')
    timezone: str = "UTC"

    @field_validator("active", mode="before")
    @classmethod
    def _one_time(cls, v: Any, info: ValidationInfo) -> Any:
        # `active: 22:00` (one unquoted time, not a list of ranges) would otherwise read "not a valid list (1320)"
        return _range_trap(v, info)

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
