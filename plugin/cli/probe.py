"""`storesight onvif probe` and `discover`: what a camera is, and which cameras there are."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plugin.config.loader import load_config

if TYPE_CHECKING:
    from adapters.cameras.onvif.device import OnvifCamera, OnvifProfile


def _onvif_report(found: OnvifCamera, analysis: OnvifProfile | None, evidence: OnvifProfile | None) -> dict[str, Any]:
    from plugin.redact import redact_url

    def uri(u: str | None) -> str | None:
        return None if u is None else redact_url(u)  # devices rarely embed credentials, but some do

    return {
        "host": found.host,
        "port": found.port,
        "manufacturer": found.manufacturer,
        "model": found.model,
        "firmware": found.firmware,
        "serial": found.serial,
        "clock_offset_s": found.clock_offset_s,
        "probe_s": round(found.probe_s, 3),
        "analysis_profile": analysis.token if analysis else None,
        "evidence_profile": evidence.token if evidence else None,
        "profiles": [
            {
                "token": p.token,
                "name": p.name,
                "encoding": p.encoding,
                "width": p.width,
                "height": p.height,
                "fps": p.fps,
                "stream_uri": uri(p.stream_uri),
                "snapshot_uri": uri(p.snapshot_uri),
            }
            for p in found.profiles
        ],
    }


def cmd_onvif_probe(args: argparse.Namespace) -> int:
    """Ask an ONVIF camera what it is and which streams it has."""
    from adapters.cameras.onvif.device import pick_analysis_profile, pick_evidence_profile, probe

    password = args.password or os.environ.get("STORESIGHT_ONVIF_PASSWORD") or None
    found = asyncio.run(probe(args.host, args.port, args.username, password, args.timeout))
    report = _onvif_report(found, pick_analysis_profile(found.profiles), pick_evidence_profile(found.profiles))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    offset = report["clock_offset_s"]
    print(f"{found.host}:{found.port}: {found.manufacturer} {found.model}, firmware {found.firmware}, "
          f"serial {found.serial} (probed in {found.probe_s:.2f} s"
          f"{'' if offset is None else f', camera clock {offset:+.0f} s from ours'})")  # fmt: skip
    for p in report["profiles"]:
        role = [r for r in ("analysis", "evidence") if report[f"{r}_profile"] == p["token"]]
        size = f"{p['width']}x{p['height']}" if p["width"] else "no video"
        fps = f" @ {p['fps']:g} fps" if p["fps"] else ""
        print(f"  {p['token']:<16} {p['name']:<16} {p['encoding'] or '-':<6} {size}{fps}"
              f"{'  [' + ', '.join(role) + ']' if role else ''}")  # fmt: skip
        print(f"    stream:   {p['stream_uri'] or '-'}")
        if p["snapshot_uri"]:
            print(f"    snapshot: {p['snapshot_uri']}")
    return 0


def cmd_discover(args: argparse.Namespace) -> int:
    """Find ONVIF cameras (WS-Discovery) and the cameras of the configured VMSs; optionally write a skeleton."""
    from plugin.cli.discover import DiscoverOptions, discover, format_report, report_and_write

    config = load_config(args.config) if args.config else None
    opts = DiscoverOptions(
        target=args.target,
        timeout_s=args.timeout,
        probe=args.probe,
        username=args.username or os.environ.get("STORESIGHT_ONVIF_USERNAME") or None,
        password=os.environ.get("STORESIGHT_ONVIF_PASSWORD") or None,  # never from argv: process lists show it
        vms_only=args.vms_only,
        config_path=Path(args.config) if args.config else None,
        write_config=Path(args.write_config) if args.write_config else None,
    )
    report = report_and_write(asyncio.run(discover(opts, config)), opts)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
