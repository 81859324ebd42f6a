"""One typed key per resource the application holds. `plugin.app` builds each (the eager ones at once, the others in
the cleanup context that owns them); handlers, later contexts and the CLI read them. A resource a configuration does
not use is stored as None, so a reader never guesses whether it was set."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from plugin.config.root import Config
from plugin.fusion.access.service import AccessService
from plugin.fusion.alarms import AlarmVerifier, PanelStates
from plugin.fusion.hub import BusinessHub
from plugin.fusion.pos.service import PosService
from plugin.fusion.store_occupancy import StoreOccupancyService
from plugin.incidents.database import AsyncDatabase
from plugin.incidents.manager import IncidentManager
from plugin.incidents.outbox import OutboxWorker
from plugin.incidents.retention import Retention
from plugin.inference.pose import PoseClient
from plugin.inference.server import EmbeddedTriton
from plugin.inference.triton import TritonInferenceClient
from plugin.insights.hq_feed import HourlyRecords
from plugin.insights.rollups import InsightsRecorder
from plugin.insights.system_health import SystemHealthMonitor
from plugin.metrics import Metrics
from plugin.pipeline.presence import PresenceLog
from plugin.pipeline.supervisor import CameraFleet, Supervisor
from plugin.protocols import BusinessEventSource, IncidentSink
from plugin.web.auth.service import AUTH as AUTH  # auth_ctx: sign-in, tokens, audit (the auth package owns its key)

# eager: set when the application is made
CONFIG = web.AppKey("config", Config)
# the file CONFIG was read from (None: made in code); the zone editor rewrites it
CONFIG_FILE: web.AppKey[Path | None] = web.AppKey("config_file")
ONCE = web.AppKey("once", bool)  # a one-shot run over files (`run --once`): no listeners, bounded waits
METRICS = web.AppKey("metrics", Metrics)
PRESENCE = web.AppKey("presence", PresenceLog)  # who was where, for fusion
PANELS = web.AppKey("panels", PanelStates)  # the alarm panels' armed state, for `armed_by` rules
CAMERAS = web.AppKey("cameras", CameraFleet)

# store_ctx
DATABASE = web.AppKey("database", AsyncDatabase)
INSIGHTS = web.AppKey("insights", InsightsRecorder)
HUB = web.AppKey("business_hub", BusinessHub)
# inference_ctx
EMBEDDED_TRITON: web.AppKey[EmbeddedTriton | None] = web.AppKey("embedded_triton")
INFERENCE = web.AppKey("inference", TritonInferenceClient)
POSE: web.AppKey[PoseClient | None] = web.AppKey("pose")  # only when a rule needs keypoints
# sinks_ctx
SINKS: web.AppKey[dict[str, IncidentSink]] = web.AppKey("sinks")
OUTBOX = web.AppKey("outbox", OutboxWorker)
RECORD_SINKS: web.AppKey[list[str]] = web.AppKey("record_sinks")  # sinks that take keyed records (head office)
INCIDENTS = web.AppKey("incidents", IncidentManager)
# retention_ctx (None in one-shot runs)
RETENTION: web.AppKey[Retention | None] = web.AppKey("retention")
# the optional services, each from its own context
SYSTEM: web.AppKey[SystemHealthMonitor | None] = web.AppKey("system_health")
ALARMS: web.AppKey[AlarmVerifier | None] = web.AppKey("alarms")
POS: web.AppKey[PosService | None] = web.AppKey("pos")
POS_INPUTS: web.AppKey[list[BusinessEventSource]] = web.AppKey("pos_inputs")  # drop folder, receipt text, Transact
ACCESS: web.AppKey[AccessService | None] = web.AppKey("access")
OCCUPANCY: web.AppKey[StoreOccupancyService | None] = web.AppKey("store_occupancy")
HOURLY: web.AppKey[HourlyRecords | None] = web.AppKey("hourly_records")  # only with a record sink, not --once
# cameras_ctx: restarts one camera with new zones (the zone editor)
SUPERVISOR = web.AppKey("supervisor", Supervisor)
