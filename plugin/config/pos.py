"""The `pos:` section: lanes (POS register -> camera and zones), intake (POSLog drop folder, receipt text over TCP,
XProtect Transact feed), exception thresholds and which exceptions raise incidents.

The root config (plugin/config/root.py) holds it as its `pos` field; the cross-checks against cameras and
zones live in plugin/config/verify.py (`verify_pos_lanes`), where the whole config is known.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import regex
from pydantic import Field, field_validator, model_validator

from plugin.config.base import PathError, SourceNetwork, Strict, binds_beyond_loopback

Severity = Literal["info", "warning", "critical"]
IncidentSetting = Literal["off", "info", "warning", "critical"]
# a lane is named the way the POS names the register: WorkstationID in POSLog, the lane in a receipt header
_LANE = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
OperatorCategory = Literal["return", "post_void", "void", "no_sale", "line_void", "price_override", "employee_discount"]


# what a lane may be written as: its digits unquoted too (the schema editors read says so)
_LaneInput = Annotated[str, Field(pattern=_LANE)] | int


def _lane_text(v: Any) -> Any:
    # YAML reads `id: 3` as a number; POS systems number their registers, so take it as its digits
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


class PosLaneConfig(Strict):
    """One register and where the camera sees it."""

    id: str = Field(pattern=_LANE, description="the register as the POS names it (POSLog WorkstationID)")
    camera: str = Field(description="the camera that sees this lane")
    customer_zone: str = Field(description="the camera zone where the customer stands (the counter's near side)")
    staff_zone: str | None = Field(default=None, description="the zone behind the till, reported with the count")
    clock_offset_s: float = Field(
        default=0.0, ge=-3600, le=3600, description="added to this register's times: POS clocks drift from the NVR's"
    )

    @field_validator("id", mode="before", json_schema_input_type=_LaneInput)
    @classmethod
    def _lane(cls, v: Any) -> Any:
        return _lane_text(v)


class PosFileDropConfig(Strict):
    """A folder the POS (or its back office) writes POSLog XML files into."""

    path: Path = Field(description="the drop folder; processed files go to done/, bad ones to rejected/ inside it")
    pattern: str = Field(default="*.xml", min_length=1, description="which files to take (glob)")
    poll_s: float = Field(default=2.0, gt=0, le=300, description="how often the folder is scanned")
    settle_s: float = Field(
        default=1.0, ge=0, le=300, description="a file must be unchanged this long: the POS may still be writing it"
    )

    def kept_folders(self) -> list[Path]:
        """Where taken files are kept (done/, rejected/): what retention purges."""
        return [self.path / "done", self.path / "rejected"]


# The receipt text StoreSight itself writes (plugin/pos.py render_receipt) is the default format, so one Transact
# definition and one text listener work with any source normalised here. A register with its own layout gets its
# own patterns: regular expressions (the `regex` module, which reads Python's syntax), matched case-insensitively
# against each line, each match bounded by `pattern_timeout_ms`.
# The defaults are written so that no line can make them backtrack: possessive quantifiers (`\s++`, `\d++`) where
# a run has one reading, an item's description that ends on a non-space, and amounts that start a digit run
# (`(?<!\d)`). A hostile 400-character line costs well under a millisecond (packaging/scripts/bench_feeds.py).
DEFAULT_TEXT_PATTERNS: dict[str, str] = {
    "start": r"^\s*+TXN\s++(?P<id>\S++)(?:\s++LANE\s++(?P<lane>\S++))?(?:\s++OP\s++(?P<operator>\S++))?"
    r"(?:\s++(?P<time>\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d))?",
    "end": r"^\s*+END\s++TXN\b",
    "item": r"^\s*+(?:SALE|RETURN|\*\*\*\s*+VOID\s*+\*\*\*)(?=\s)\s*+(?P<description>(?:.*?\S)?)"
    r"(?:\s++REFUND\s++NO\s++RCPT|\s++ORIG\s++\S++)?(?:\s++|(?<=\s\s))(?P<amount>-?\d++(?:\.\d++)?+)\s*+$",
    "void": r"\*\*\*\s*+VOID\s*+\*\*\*|^\s*+VOID\b",
    "return": r"^\s*+RETURN\b|\bREFUND\b",
    "linked": r"\bORIG(?:INAL)?\s++(?P<link>[^\s?]++)",
    "no_sale": r"^\s*+NO\s++SALE\b",
    "post_void": r"^\s*+POST\s++VOID\b(?:\s++OF(?:\s++TXN)?\s++(?P<link>\S++))?",
    "cancelled": r"^\s*+TRANSACTION\s++CANCEL+ED\b",
    "price_override": r"^\s*+PRICE\s++OVERRIDE\b.*?(?<!\d)(?P<regular>\d++\.\d++)\s*+->\s*+(?P<actual>\d++\.\d++)",
    "employee_discount": r"^\s*+EMPLOYEE\s++DISCOUNT\b.*?(?<!\d)(?P<amount>\d++\.\d++)"
    r"(?:.*?\bEMP\s++(?P<employee>\S++))?",
    "total": r"^\s*+TOTAL\s++(?P<amount>-?\d++(?:\.\d++)?+)",
    "tender": r"^\s*+TENDER\s++(?P<type>\S++)(?:\s++[^\s*]*+\*\S*+)?\s++(?P<amount>-?\d++(?:\.\d++)?+)",
}

# what the reader takes from each pattern's match: a custom pattern must capture these
TEXT_PATTERN_GROUPS: dict[str, tuple[str, ...]] = {
    "item": ("description", "amount"),
    "price_override": ("regular", "actual"),
    "employee_discount": ("amount",),
    "total": ("amount",),
    "tender": ("type", "amount"),
}


class PosTextFeedConfig(Strict):
    """A TCP listener for line-oriented receipt text, the way DVR and VMS POS integrations take it: the register
    (or a serial-to-IP box) connects and writes lines; transactions are cut by start and end patterns."""

    host: str = Field(default="127.0.0.1", description="listen address; a register on the network needs 0.0.0.0")
    port: int = Field(ge=0, le=65535, description="0: any free port (tests)")
    lane: str | None = Field(
        default=None, pattern=_LANE, description="the lane of everything on this port; none: the start line names it"
    )
    encoding: str = Field(default="utf-8", description="the register's text encoding (cp437, latin-1, ...)")
    patterns: dict[str, str] = Field(
        default_factory=dict, description="override the default patterns by name (start, end, item, void, ...)"
    )
    idle_timeout_s: float = Field(
        default=120.0, gt=0, description="a transaction open this long without a line is closed as it is"
    )
    max_lines: int = Field(default=500, ge=1, le=100_000, description="a transaction longer than this is cut")
    allow_from: list[SourceNetwork] = Field(
        default_factory=list,
        description="addresses or networks the registers connect from; any other connection is closed at once. "
        "Required when host is not loopback (0.0.0.0/0 takes anyone, on purpose); empty: whoever reaches the port",
    )
    max_connections: int = Field(
        default=16, ge=1, le=1024, description="connections at once; when full, a new one from an address that "
        "already has one replaces that address's oldest (a register reconnecting), any other is refused",
    )  # fmt: skip
    connection_idle_s: float = Field(
        default=1800.0, gt=0, le=86400, description="a connection that sends nothing this long is closed (every read "
        "is bounded; a register reconnects when it next prints)",
    )  # fmt: skip
    pattern_timeout_ms: float = Field(
        default=50.0, gt=0, le=5000, description="one pattern on one line may take this long; past it the "
        "transaction goes to the dead-letter file naming the pattern (a custom pattern that backtracks)",
    )  # fmt: skip

    @field_validator("lane", mode="before", json_schema_input_type=_LaneInput)
    @classmethod
    def _lane(cls, v: Any) -> Any:
        return _lane_text(v)

    @field_validator("encoding")
    @classmethod
    def _codec(cls, v: str) -> str:
        try:
            codecs.lookup(v)
        except LookupError:
            raise ValueError(f"unknown text encoding {v!r}") from None
        return v

    @field_validator("patterns")
    @classmethod
    def _regexes(cls, v: dict[str, str]) -> dict[str, str]:
        for name, pattern in v.items():
            if name not in DEFAULT_TEXT_PATTERNS:
                raise ValueError(f"unknown pattern {name!r} (known: {', '.join(DEFAULT_TEXT_PATTERNS)})")
            try:
                compiled = regex.compile(pattern)
            except regex.error as exc:
                raise ValueError(f"{name}: not a valid regular expression: {exc}") from None
            missing = [g for g in TEXT_PATTERN_GROUPS.get(name, ()) if g not in compiled.groupindex]
            if missing:
                groups = ", ".join(f"(?P<{g}>...)" for g in missing)
                raise ValueError(f"{name}: needs the named group(s) {groups}")
        return v

    @model_validator(mode="after")
    def _reachable_needs_allow_list(self) -> PosTextFeedConfig:
        if binds_beyond_loopback(self.host) and not self.allow_from:
            raise PathError(
                "allow_from", f"required when listening on {self.host}: list the registers' addresses (anyone who "
                "can connect can write transactions; 0.0.0.0/0 takes any address, on purpose)",
            )  # fmt: skip
        return self

    def pattern(self, name: str) -> regex.Pattern[str]:
        """The compiled pattern `name` (this feed's, else the default)."""
        return regex.compile(self.patterns.get(name, DEFAULT_TEXT_PATTERNS[name]), regex.IGNORECASE)


class PosTransactConfig(Strict):
    """A TCP server that XProtect Transact's "TCP client connector" connects to: it gets the normalised receipt
    text of every transaction of its lanes, one line per item, as the transactions arrive."""

    host: str = Field(default="127.0.0.1", description="listen address; the XProtect server needs 0.0.0.0 or a LAN IP")
    port: int = Field(ge=0, le=65535, description="the port given to the Transact connector; 0: any (tests)")
    lanes: list[str] = Field(default_factory=list, description="lanes served here; empty: all (one source per lane "
                             "in Transact means one server per lane)")  # fmt: skip
    encoding: str = Field(default="utf-8", description="match the Transact definition's encoding")
    line_ending: Literal["crlf", "lf"] = "crlf"
    allow_from: list[SourceNetwork] = Field(
        default_factory=list,
        description="addresses or networks of the XProtect servers; any other connection is closed at once (the "
        "feed carries every receipt). Required when host is not loopback; empty: whoever reaches the port",
    )
    max_clients: int = Field(
        default=4, ge=1, le=64, description="connectors at once; when full, a new one from an address that already "
        "has one replaces that address's oldest (XProtect reconnecting over its own dead connection), any other is "
        "refused",
    )  # fmt: skip

    @field_validator("lanes", mode="before", json_schema_input_type=list[_LaneInput])
    @classmethod
    def _lanes(cls, v: Any) -> Any:
        return [_lane_text(x) for x in v] if isinstance(v, list) else v

    @field_validator("encoding")
    @classmethod
    def _codec(cls, v: str) -> str:
        try:
            codecs.lookup(v)
        except LookupError:
            raise ValueError(f"unknown text encoding {v!r}") from None
        return v

    @model_validator(mode="after")
    def _reachable_needs_allow_list(self) -> PosTransactConfig:
        if binds_beyond_loopback(self.host) and not self.allow_from:
            raise PathError(
                "allow_from", f"required when listening on {self.host}: list the XProtect servers' addresses (the "
                "feed sends every receipt to whoever connects)",
            )  # fmt: skip
        return self


class PosThresholdsConfig(Strict):
    """When a transaction is an exception."""

    line_void_min_amount: float = Field(
        default=20.0, ge=0, description="a voided line (or cancelled transaction) worth at least this is an exception"
    )
    refund_no_receipt_min_amount: float = Field(default=0.0, ge=0, description="refunds without a receipt from this")
    price_override_min_percent: float = Field(
        default=0.0, ge=0, le=100, description="price overrides cutting the price by at least this share"
    )
    override_reason_codes: list[str] = Field(
        default_factory=lambda: ["PriceOverride", "Override", "OVR", "PO"],
        description="POSLog RetailPriceModifier ReasonCodes that mean an operator override (case-insensitive)",
    )


class EmployeeDiscountPolicyConfig(Strict):
    """How an employee discount looks in the POS data and what the policy allows."""

    reason_codes: list[str] = Field(
        default_factory=lambda: ["Employee", "EmployeeDiscount", "EMP"],
        description="RetailPriceModifier ReasonCodes of the employee discount (case-insensitive)",
    )
    promotion_ids: list[str] = Field(default_factory=list, description="or its PromotionIDs")
    max_percent: float = Field(default=20.0, gt=0, le=100, description="the policy's discount share")
    allow_self: bool = Field(
        default=False, description="an operator may ring an employee discount for their own employee id"
    )
    require_employee_id: bool = Field(default=True, description="a discount with no employee id is outside policy")


class OperatorLimitsConfig(Strict):
    """Operator frequency outliers: more than `max[category]` per operator within `window_s`."""

    window_s: float = Field(default=3600.0, gt=0, le=7 * 86400, description="the rolling window (transaction time)")
    max: dict[OperatorCategory, int] = Field(
        default_factory=lambda: dict[OperatorCategory, int]({"return": 3, "post_void": 2, "no_sale": 5}),
        description="per category, the most an operator may do in the window",
    )


class PosIncidentsConfig(Strict):
    """Which exceptions raise an incident, and how severe ('off': kept as a business event only)."""

    line_void: IncidentSetting = "warning"
    txn_void: IncidentSetting = "info"
    post_void: IncidentSetting = "warning"
    refund_no_receipt: IncidentSetting = "warning"
    no_sale: IncidentSetting = "off"
    price_override: IncidentSetting = "info"
    employee_discount: IncidentSetting = "warning"
    operator_frequency: IncidentSetting = "warning"
    refund_no_customer: IncidentSetting = "critical"
    no_sale_nobody: IncidentSetting = "warning"
    void_customer_left: IncidentSetting = "critical"
    unverified: IncidentSetting = Field(
        default="off", description="a refund, no-sale or void whose moment the camera did not watch"
    )


class PosFusionConfig(Strict):
    """How POS times are matched with what the lane camera saw."""

    window_pad_s: float = Field(
        default=5.0, ge=0, le=120, description="the transaction window is widened by this on both sides: a customer "
        "seen just before or after still counts (fewer false alarms, and POS clocks are rarely exact)",
    )  # fmt: skip
    assumed_duration_s: float = Field(
        default=60.0, gt=0, le=3600, description="window length when the POS gives only the end time"
    )
    wait_max_s: float = Field(
        default=30.0, gt=0, le=600, description="wait this long (wall time) for video to be analysed past the "
        "transaction before judging with what there is (a camera that never catches up makes it unverified)",
    )  # fmt: skip


class PosConfig(Strict):
    """Point of sale: intake, exceptions, and fusion with the lane cameras."""

    timezone: str | None = Field(
        default=None, description="for POS times without a UTC offset (POSLog usually); default: site.timezone"
    )
    lanes: list[PosLaneConfig] = Field(default_factory=list)
    file_drop: PosFileDropConfig | None = None
    text: list[PosTextFeedConfig] = Field(default_factory=list, description="receipt text listeners")
    transact: list[PosTransactConfig] = Field(default_factory=list, description="XProtect Transact feeds")
    max_document_bytes: int = Field(
        default=10_000_000, ge=1024, le=200_000_000, description="a larger POSLog file or request is rejected"
    )
    max_xml_depth: int = Field(
        default=40, ge=8, le=256, description="POSLog nests about 8 deep; deeper documents are rejected"
    )
    max_transactions_per_request: int = Field(
        default=1000, ge=1, le=100_000, description="a JSON webhook request with more transactions is refused whole"
    )
    thresholds: PosThresholdsConfig = Field(default_factory=PosThresholdsConfig)
    employee_discount: EmployeeDiscountPolicyConfig = Field(default_factory=EmployeeDiscountPolicyConfig)
    operator_limits: OperatorLimitsConfig = Field(default_factory=OperatorLimitsConfig)
    incidents: PosIncidentsConfig = Field(default_factory=PosIncidentsConfig)
    fusion: PosFusionConfig = Field(default_factory=PosFusionConfig)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {v!r} (use an IANA name like Europe/London)") from None
        return v

    @model_validator(mode="after")
    def _unique_lanes(self) -> PosConfig:
        seen: set[str] = set()
        for lane in self.lanes:
            if lane.id in seen:
                raise ValueError(f"lanes: duplicate id {lane.id!r}")
            seen.add(lane.id)
        return self

    def lane(self, lane_id: str) -> PosLaneConfig | None:
        """The configured lane with this id."""
        return next((lane for lane in self.lanes if lane.id == lane_id), None)
