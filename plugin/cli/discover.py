"""`storesight discover`: ONVIF devices on the network (WS-Discovery, then each probed when asked), the cameras of the
configured VMSs (each sink module's own listing, through the sink registry), reported and written as a config
skeleton (plugin/cli/skeleton.py).

VMS listings use the sink modules' own calls and log-ins: Nx devices (`GET /rest/v4/devices`), ZoneMinder monitors
(`monitors.json`, with each monitor's source URL), Frigate cameras (`/api/config`), Milestone XProtect cameras (the
API Gateway's `GET /api/rest/v1/cameras` with the identity provider's bearer token) and Genetec Security Center
cameras (the Web SDK's EntityConfiguration report and entity queries). Each camera's VMS id goes into its sink's
`cameras` map.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.cameras.onvif.device import pick_analysis_profile, pick_evidence_profile
from adapters.cameras.onvif.discovery import (
    DISCOVERY_TIMEOUT_S,
    FoundDevice,
    probe_devices,
    ws_discover,
)
from adapters.sinks.registry import BY_KEY as SINKS
from plugin.cli.skeleton import VmsListing, build_skeleton, raw_sinks, write_skeleton
from plugin.config.root import Config, SinkConfig
from plugin.errors import SinkAuthError, SinkNotReady, SinkRejected, StoreSightError
from plugin.redact import redact_url


async def list_vms_cameras(sink: SinkConfig) -> VmsListing:
    """The cameras a configured VMS sink can see (kinds whose module has a listing call)."""
    spec = SINKS[sink.kind]
    listing = VmsListing(sink.id, sink.kind)
    if spec.list_cameras is None:
        listing.error = f"listing cameras is not supported for {sink.kind} sinks yet: map cameras by hand"
        return listing
    try:
        listing.cameras += await spec.list_cameras(sink)
    except (SinkAuthError, SinkNotReady, SinkRejected, StoreSightError) as exc:
        listing.error = f"{spec.product}: {redact_url(str(exc))}"
    return listing


async def list_configured_vms(config: Config) -> list[VmsListing]:
    """Listings of every sink that is a VMS (webhook and MQTT sinks have no cameras)."""
    vms = [s for s in config.sinks if SINKS[s.kind].list_cameras is not None]
    return list(await asyncio.gather(*(list_vms_cameras(s) for s in vms)))


# --- the command --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiscoverOptions:
    """What `storesight discover` was asked."""

    target: str | None = None  # HOST[:PORT] for a directed probe; None: multicast
    timeout_s: float = DISCOVERY_TIMEOUT_S
    probe: bool = False  # ask each device for its profiles
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    vms_only: bool = False
    config_path: Path | None = None
    write_config: Path | None = None


@dataclass
class DiscoveryResult:
    """What was found, before it is reported."""

    found: list[FoundDevice]
    listings: list[VmsListing]


async def discover(opts: DiscoverOptions, config: Config | None) -> DiscoveryResult:
    """Probe the network (unless VMS only), the devices (when asked) and the configured VMSs, concurrently."""
    if opts.vms_only and config is None:
        raise StoreSightError("--vms-only needs -c FILE with the VMS sinks to list")

    async def onvif() -> list[FoundDevice]:
        if opts.vms_only:
            return []
        devices = await ws_discover(opts.target, opts.timeout_s)
        if not opts.probe:
            return [FoundDevice(d) for d in devices]
        from adapters.cameras.onvif.device import PROBE_TIMEOUT_S

        return await probe_devices(devices, opts.username, opts.password, PROBE_TIMEOUT_S)

    async def vms() -> list[VmsListing]:
        return await list_configured_vms(config) if config is not None else []

    found, listings = await asyncio.gather(onvif(), vms())
    return DiscoveryResult(found, listings)


def _profile(p: Any) -> dict[str, Any]:
    return {"token": p.token, "name": p.name, "encoding": p.encoding, "width": p.width, "height": p.height,
            "fps": p.fps, "stream_uri": None if p.stream_uri is None else redact_url(p.stream_uri)}  # fmt: skip


def report(result: DiscoveryResult) -> dict[str, Any]:
    """The findings as JSON-able data, credentials redacted."""
    onvif = []
    for f in result.found:
        d, cam = f.device, f.camera
        probed = None
        if cam is not None:
            analysis, evidence = pick_analysis_profile(cam.profiles), pick_evidence_profile(cam.profiles)
            probed = {
                "manufacturer": cam.manufacturer,
                "model": cam.model,
                "firmware": cam.firmware,
                "serial": cam.serial,
                "analysis_profile": analysis.token if analysis else None,
                "evidence_profile": evidence.token if evidence else None,
                "profiles": [_profile(p) for p in cam.profiles],
            }
        onvif.append(
            {
                "endpoint": d.endpoint,
                "name": d.name,
                "hardware": d.hardware,
                "location": d.location,
                "device_url": d.device_url,
                "xaddrs": list(d.xaddrs),
                "types": list(d.types),
                "scopes": list(d.scopes),
                "answered_from": d.answered_from,
                "probe": probed,
                "error": None if f.error is None else redact_url(f.error),
            }
        )
    vms = [
        {
            "sink": listing.sink_id,
            "kind": listing.kind,
            "error": listing.error,
            "cameras": [
                {
                    "ref": c.ref,
                    "name": c.name,
                    "note": c.note,
                    "todo": c.todo,
                    "stream": None if c.stream_url is None else redact_url(c.stream_url),
                }
                for c in listing.cameras
            ],
        }
        for listing in result.listings
    ]
    return {"onvif": onvif, "vms": vms, "config_written": None, "env": []}


def report_and_write(result: DiscoveryResult, opts: DiscoverOptions) -> dict[str, Any]:
    """The report, after writing the skeleton when `opts.write_config` asks for one."""
    out = report(result)
    out["probed"] = None if opts.vms_only else (f"directed probe to {opts.target}" if opts.target else "multicast")
    out["timeout_s"] = opts.timeout_s
    if opts.write_config is not None:
        skeleton = build_skeleton(
            result.found,
            result.listings,
            onvif_username=opts.username,
            raw_sinks=raw_sinks(opts.config_path) if opts.config_path else (),
        )
        sources = [] if opts.vms_only else [f"WS-Discovery ({out['probed']})"]
        if opts.config_path is not None:
            sources.append(f"the VMS sinks of {opts.config_path}")
        write_skeleton(skeleton, opts.write_config, " and ".join(sources))
        out["config_written"] = str(opts.write_config)
        out["env"] = skeleton.env
    return out


def format_report(rep: Mapping[str, Any]) -> str:
    """The report for people."""
    lines = []
    if rep.get("probed"):
        lines.append(f"ONVIF devices ({rep['probed']}, {rep['timeout_s']:g} s): {len(rep['onvif'])}")
    for d in rep["onvif"]:
        label = " ".join(x for x in (d["name"], f"({d['hardware']})" if d["hardware"] else None) if x)
        lines.append(f"  {label or d['endpoint']}  {d['device_url'] or 'no device URL'}")
        if d["probe"] is not None:
            p = d["probe"]
            sizes = ", ".join(f"{x['token']} {x['width']}x{x['height']}" for x in p["profiles"] if x["width"])
            lines.append(f"    {p['manufacturer']} {p['model']}, firmware {p['firmware']}: {sizes or 'no video'}")
        if d["error"]:
            lines.append(f"    probe failed: {d['error']}")
    for v in rep["vms"]:
        lines.append(f"VMS sink {v['sink']} ({v['kind']}): " + (v["error"] or f"{len(v['cameras'])} camera(s)"))
        for c in v["cameras"]:
            note = f"  ({c['note']})" if c["note"] else ""
            lines.append(f"  {c['ref']:<36}  {c['name']!r}  {c['stream'] or '-'}{note}")
    if rep.get("config_written"):
        env = rep["env"]
        lines.append(f"wrote {rep['config_written']}" + (f"; set {', '.join(env)} before using it" if env else ""))
    return "\n".join(lines)
