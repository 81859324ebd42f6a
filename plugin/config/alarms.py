"""The `alarm_panels:` section: intrusion panels reporting over SIA DC-09, their accounts and zone-to-camera maps."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from plugin.config.base import ID_PATTERN, PathError, SourceNetwork, Strict, binds_beyond_loopback


def normalise_panel_zone(zone: str) -> str:
    """A panel zone as the zone map keys it: "015", "15" and "0015" are one zone (Contact ID pads to 3 digits,
    SIA to 2 or more); letters are upper-cased."""
    zone = zone.strip()
    return str(int(zone)) if zone.isdigit() else zone.upper()


class AlarmZoneView(Strict):
    """A camera zone that shows a panel zone: where video verification looks when that zone alarms."""

    camera: str
    zone: str = Field(description="a zone of that camera (presence is kept per camera zone)")


class AlarmAccountConfig(Strict):
    """One panel account (the `#acct` of DC-09 frames): its encryption key, site and zone-to-camera map."""

    account: str = Field(pattern=r"^[0-9A-Fa-f]{3,16}$", description="3-16 hex digits, as programmed in the panel")
    key: SecretStr | None = Field(
        default=None,
        description="AES key of an encrypted account; frames from it must be encrypted (never logged)",
    )
    key_format: Literal["hex", "text"] = Field(
        default="hex",
        description="hex: 32, 48 or 64 hex digits are the 128/192/256-bit key; text: 16, 24 or 32 characters are "
        "the key bytes themselves (the convention of pysiaalarm and Home Assistant's SIA integration)",
    )
    site: str | None = Field(
        default=None, pattern=ID_PATTERN, description="the store this account reports; default site.id"
    )
    zone_map: dict[str, list[AlarmZoneView]] = Field(
        default_factory=dict,
        description='panel zone -> camera zone(s) that show it, e.g. "15": {camera: cam1, zone: stockroom-door}',
    )

    @field_validator("account")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.upper()

    @field_validator("zone_map", mode="before", json_schema_input_type=dict[str, AlarmZoneView | list[AlarmZoneView]])
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        out: dict[Any, Any] = {}
        for zone, views in v.items():
            key = normalise_panel_zone(str(zone))
            if not re.match(r"^[0-9A-Z]{1,8}$", key):
                raise PathError(str(zone), "a panel zone is 1-8 digits or letters")
            if key in out:
                raise PathError(str(zone), f"the same panel zone as {key!r} (leading zeros do not count)")
            out[key] = [views] if isinstance(views, dict) else views
        return out

    @model_validator(mode="after")
    def _key_shape(self) -> AlarmAccountConfig:
        if self.key is None:
            return self
        key = self.key.get_secret_value()
        if self.key_format == "hex":
            if not re.match(r"^[0-9A-Fa-f]*$", key) or len(key) not in (32, 48, 64):
                raise PathError("key", f"needs 32, 48 or 64 hex digits (AES-128/192/256), got {len(key)} characters")
        elif not key.isascii() or not key.isprintable() or len(key) not in (16, 24, 32):
            raise PathError("key", f"key_format text needs 16, 24 or 32 printable ASCII characters, got {len(key)}")
        return self

    def key_bytes(self) -> bytes | None:
        """The AES key, or None for a plain account."""
        if self.key is None:
            return None
        key = self.key.get_secret_value()
        return bytes.fromhex(key) if self.key_format == "hex" else key.encode("ascii")


AlarmTransport = Literal["tcp", "udp"]


ALARM_TRANSPORTS: tuple[AlarmTransport, ...] = ("tcp", "udp")


class AlarmPanelConfig(Strict):
    """An intrusion alarm panel reporting to StoreSight, usually as a second path next to the monitoring centre."""

    id: str = Field(pattern=ID_PATTERN)
    protocol: Literal["sia_dc09"] = Field(description="SIA DC-09 (SIA DC-03 or Contact ID data, plain or AES)")
    host: str = Field(default="127.0.0.1", min_length=1, description="address to listen on; 0.0.0.0 for LAN panels")
    port: int = Field(ge=1, le=65535, description="the receiver port programmed in the panel (TCP and UDP)")
    transports: list[AlarmTransport] = Field(default_factory=lambda: list(ALARM_TRANSPORTS), min_length=1)
    accounts: list[AlarmAccountConfig] = Field(min_length=1)
    timestamp_past_s: float = Field(
        default=40.0, ge=0, description="NAK frames stamped more than this before the receiver's clock (DC-09: 40 s)"
    )
    timestamp_future_s: float = Field(
        default=20.0, ge=0, description="NAK frames stamped more than this after the receiver's clock (DC-09: 20 s)"
    )
    verify_before_s: float = Field(
        default=10.0, ge=0, le=60, description="video verification looks from this long before the alarm"
    )
    verify_after_s: float = Field(
        default=30.0,
        ge=0,
        le=90,
        description="to this long after it; the verified or unverified alarm incident is sent once this has passed",
    )
    allow_from: list[SourceNetwork] = Field(
        default_factory=list,
        description="addresses or networks of the panels: frames from any other address get no answer (UDP) or their "
        "connection closed (TCP). Required on a bind beyond loopback when an account is plain (unencrypted): anyone "
        "could send its disarm. Empty: whoever reaches the port",
    )
    max_connections: int = Field(default=64, ge=1, le=4096, description="TCP connections at once, all panels")
    max_connections_per_address: int = Field(
        default=4, ge=1, le=1024, description="TCP connections at once from one address; one more replaces that "
        "address's oldest (a panel reconnecting over its own dead connection)",
    )  # fmt: skip
    first_frame_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="a TCP connection that sends no complete frame this long is closed"
    )
    idle_timeout_s: float = Field(
        default=600.0, gt=0, le=86400, description="a TCP connection silent this long is closed (panels on a "
        "persistent link poll every few minutes)",
    )  # fmt: skip
    write_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="an answer the panel does not take in this long closes the connection"
    )

    @model_validator(mode="after")
    def _unique(self) -> AlarmPanelConfig:
        seen: set[str] = set()
        for j, account in enumerate(self.accounts):
            if account.account in seen:
                raise PathError(f"accounts[{j}].account", f"account {account.account} is listed twice")
            seen.add(account.account)
        if len(set(self.transports)) != len(self.transports):
            raise PathError("transports", "lists a transport twice")
        plain = [a.account for a in self.accounts if a.key is None]
        if plain and binds_beyond_loopback(self.host) and not self.allow_from:
            raise PathError(
                "allow_from", f"required when listening on {self.host} with a plain (unencrypted) account "
                f"({', '.join(plain)}): list the panels' addresses, or give each account its AES key; anyone on the "
                "network could otherwise send a disarm and turn off armed_by rules",
            )  # fmt: skip
        return self
