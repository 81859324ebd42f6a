"""Head office's configuration: where its PostgreSQL is, where it listens, what a record may weigh, and the
values the ROI report multiplies by. A YAML file (`storesight hq serve -c hq.yaml`), every key optional;
`$STORESIGHT_HQ_DATABASE_URL` gives the database when the file does not."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from plugin.config.base import Strict
from plugin.errors import ConfigError

DATABASE_ENV = "STORESIGHT_HQ_DATABASE_URL"

# What one confirmed incident of a type is assumed to save (the chain's own figures belong in the config; these
# are placeholders the report shows as such)
DEFAULT_LOSS = {
    "pos_no_sale": 20.0,
    "pos_void": 15.0,
    "pos_post_void": 35.0,
    "pos_refund": 40.0,
    "pos_return": 40.0,
    "pos_price_override": 12.0,
    "pos_employee_discount": 10.0,
    "sweep": 250.0,
    "loitering": 30.0,
    "blocked_exit": 0.0,
    "tailgating": 50.0,
    "alarm_verified": 500.0,
}


class RoiConfig(Strict):
    """The values behind the ROI report's money figures."""

    currency: str = Field(default="EUR", max_length=8)
    loss_per_incident: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_LOSS),
        description="incident type -> estimated loss prevented by one confirmed incident of that type",
    )
    default_loss: float = Field(default=0.0, ge=0, description="for a confirmed type missing above")
    dispatch_fee: float = Field(
        default=150.0, ge=0, description="what one guard or police dispatch costs: each unverified alarm avoided one"
    )


class HqConfig(Strict):
    """The whole head-office file."""

    database_url: str | None = Field(default=None, description=f"postgresql://...; else ${DATABASE_ENV}")
    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=1, le=65535)
    allowed_hosts: list[str] = Field(
        default_factory=list, description="host names people reach head office by (besides the bind address)"
    )
    tls_cert: Path | None = Field(default=None, description="PEM certificate: head office serves HTTPS")
    tls_key: Path | None = None
    plain_http: bool = Field(
        default=False, description="serve plain HTTP on a non-loopback address (behind a TLS-terminating proxy)"
    )
    state_dir: Path = Field(
        default=Path("storesight-data/hq"), description="where the first admin's generated password is written"
    )
    max_record_bytes: int = Field(
        default=4 * 1024 * 1024, ge=64 * 1024, description="a larger record from a store is refused (413)"
    )
    snapshot_max_bytes: int = Field(default=2 * 1024 * 1024, ge=1024, description="one evidence JPEG")
    roi: RoiConfig = Field(default_factory=RoiConfig)

    def dsn(self) -> str:
        """The database to use: the file's, else the environment's; a clear error when neither is set."""
        dsn = self.database_url or os.environ.get(DATABASE_ENV)
        if not dsn:
            raise ConfigError(f"head office needs a PostgreSQL database: set database_url or ${DATABASE_ENV}")
        return dsn


def load_hq_config(path: str | Path | None) -> HqConfig:
    """The file's configuration (defaults without a file); errors name the exact key."""
    if path is None:
        return HqConfig()
    try:
        data: Any = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    try:
        return HqConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ConfigError(f"{path}: {where}: {first['msg']}") from None
