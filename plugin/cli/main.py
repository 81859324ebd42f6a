"""The `storesight` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from zoneinfo import ZoneInfo

from plugin.config.loader import load_config
from plugin.config.root import Config
from plugin.errors import SourceError, StoreSightError
from plugin.redact import redact_url
from plugin.types import ImageArray

if TYPE_CHECKING:
    from adapters.cameras.onvif.device import OnvifCamera, OnvifProfile
    from plugin.pipeline.supervisor import CameraFleet

log = logging.getLogger("storesight")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,  # onvif-zeep-async calls basicConfig when imported; ours wins whatever was imported first
    )
    # onvif/zeep debug logs carry whole SOAP envelopes, WS-Security digests included: never wanted, even with -v
    for noisy in ("aiohttp.access", "onvif", "zeep"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


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
    from adapters.cameras.onvif.discovery import DiscoverOptions, discover, format_report, report_and_write

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


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate a config file."""
    config = load_config(args.file)
    print(
        f"{args.file}: OK ({len(config.cameras)} camera(s), {len(config.rules)} rule(s), {len(config.sinks)} sink(s))"
    )
    return 0


def cmd_models_fetch(args: argparse.Namespace) -> int:
    """Put the model files in place."""
    from plugin.inference.assets import default_models_dir, fetch_models

    source = Path(args.from_dir) if args.from_dir else default_models_dir()
    repository = Path(args.repository) if args.repository else None
    for path in fetch_models(source, args.url, args.accept_sha256, repository, args.model or ()):
        print(f"ok {path}")
    return 0


def cmd_media_fetch(args: argparse.Namespace) -> int:
    """Put the demo clip (or, with --vtest, OpenCV's vtest.avi for the scenario tests) in place."""
    from plugin.inference.assets import fetch_demo_media, fetch_vtest

    env = os.environ.get("STORESIGHT_MEDIA_DIR")
    source = Path(args.from_dir) if args.from_dir else (Path(env) if env else None)
    if args.vtest:
        print(fetch_vtest(source, Path(args.dest)))
        return 0
    print(fetch_demo_media(source, Path(args.dest)))
    return 0


async def _detect(config: Config, images: Sequence[str]) -> list[dict[str, Any]]:
    import cv2

    from plugin.inference.server import DEFAULT_MODEL_REPOSITORY, EmbeddedTriton
    from plugin.inference.triton import TritonInferenceClient

    loaded = []
    for name in images:
        img = cv2.imread(name, cv2.IMREAD_COLOR)
        if img is None:
            raise SourceError(f"{name}: not a readable image")
        loaded.append((name, cast(ImageArray, img)))
    tc = config.triton
    server = None
    url = tc.url
    if url is None:
        server = EmbeddedTriton(
            model_repository=(tc.model_repository or DEFAULT_MODEL_REPOSITORY).resolve(),
            cache_dir=config.storage.path.resolve() / "triton",
        )
        server.start()
        try:
            await asyncio.to_thread(server.wait_ready, tc.model, tc.ready_timeout_s)
        except BaseException:
            server.stop()
            raise
        url = server.grpc_url
    client = TritonInferenceClient(url, tc.model, tc.request_timeout_s, shared_memory=tc.shared_memory)
    try:
        info = await client.wait_ready(tc.ready_timeout_s)
        results = await client.detect([img for _, img in loaded])
    finally:
        await client.close()
        if server is not None:
            await asyncio.to_thread(server.stop)
    out = []
    for (name, _), dets in zip(loaded, results, strict=True):
        rows = [
            {
                "box": [round(float(v), 1) for v in dets.xyxy[i]],
                "class": info.class_names[int(dets.class_ids[i])],
                "score": round(float(dets.scores[i]), 3),
            }
            for i in range(len(dets))
        ]
        out.append({"image": name, "detections": rows})
    return out


def cmd_detect(args: argparse.Namespace) -> int:
    """Run the configured detector on images."""
    config = load_config(args.config) if args.config else Config()
    if args.triton_url:
        config = config.model_copy(update={"triton": config.triton.model_copy(update={"url": args.triton_url})})
    results = asyncio.run(_detect(config, args.images))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(f"{r['image']}: {len(r['detections'])} detection(s)")
            for d in r["detections"]:
                x1, y1, x2, y2 = d["box"]
                print(f"  {d['class']:<14} {d['score']:.2f}  [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}]")
    return 0


def _progress_line(fleet: CameraFleet, started: float) -> str:
    parts = []
    for cid, p in fleet.pipelines.items():
        st = p.source.status
        pos = p.status.media_processed_s
        dur = st.duration_s
        speed = pos / max(time.monotonic() - started, 1e-6)
        where = f"{pos:6.1f}/{dur:.1f} s" if dur else f"{pos:6.1f} s"
        parts.append(f"{cid}: {where} {speed:5.1f}x {p.status.incidents} incident(s)")
    return " | ".join(parts)


def _gating_line(fleet: CameraFleet) -> str:
    """What motion gating saved in a one-shot run: detector calls skipped, and what the gate itself cost."""
    parts = []
    for cid, p in fleet.pipelines.items():
        st = p.status
        share = st.frames_skipped / max(st.frames, 1)
        gate_ms = 1000.0 * st.gate_seconds / max(st.frames, 1)
        parts.append(
            f"{cid}: detector on {st.frames_detected} of {st.frames} frames, {st.frames_skipped} skipped "
            f"({100 * share:.0f}%), gate {gate_ms:.2f} ms/frame"
        )
    return "motion gating: " + ("; ".join(parts) or "no camera")


async def _run(config: Config, once: bool) -> int:
    from aiohttp import web

    from plugin.app import build_app
    from plugin.web.keys import CAMERAS, OUTBOX, SINKS

    app = build_app(config, once=once)
    fleet = app[CAMERAS]
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await runner.setup()  # runs every cleanup context's startup: database, Triton, sinks, cameras
    started = time.monotonic()
    try:
        if once:
            tty = sys.stderr.isatty()
            if tty:
                # log lines first erase the progress line they would otherwise run into
                for handler in logging.getLogger().handlers:
                    handler.setFormatter(logging.Formatter("\r\x1b[K%(asctime)s %(levelname)s %(name)s: %(message)s"))
            while not fleet.done.is_set() and not stop.is_set():
                if tty:
                    print("\r" + _progress_line(fleet, started), end="", file=sys.stderr, flush=True)
                done_wait = asyncio.create_task(fleet.done.wait())
                stop_wait = asyncio.create_task(stop.wait())
                await asyncio.wait({done_wait, stop_wait}, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
                done_wait.cancel()
                stop_wait.cancel()
            if tty:
                print("\r" + _progress_line(fleet, started), file=sys.stderr)
            if app[SINKS]:
                drained = await app[OUTBOX].wait_drained(timeout_s=30.0)
                if not drained:
                    log.warning("some deliveries are still pending; they go out on the next run")
            total = sum(p.status.incidents for p in fleet.pipelines.values())
            print(f"analysed {len(fleet.pipelines)} source(s) in {time.monotonic() - started:.1f} s: "
                  f"{total} incident(s)", file=sys.stderr)  # fmt: skip
            print(_gating_line(fleet), file=sys.stderr)
        else:
            site = web.TCPSite(runner, config.web.host, config.web.port)
            await site.start()
            log.info("console at http://%s:%d/ (API token in %s)", config.web.host, config.web.port,
                     "config" if config.web.token else config.storage.path / "api_token")  # fmt: skip
            await stop.wait()
    finally:
        await runner.cleanup()
    if fleet.fatal is not None:
        raise fleet.fatal
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the bridge."""
    config = load_config(args.config)
    if args.listen:
        host, _, port = args.listen.rpartition(":")
        web_cfg = config.web.model_copy(update={"host": host or "127.0.0.1", "port": int(port)})
        config = config.model_copy(update={"web": web_cfg})
    return asyncio.run(_run(config, once=args.once))


def cmd_incidents(args: argparse.Namespace) -> int:
    """Print stored incidents."""
    from plugin.incidents.database import Database

    config = load_config(args.config)
    db = config.storage.path / "storesight.db"
    rows = Database(db).incidents(limit=args.limit) if db.exists() else []
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['start']}  {r['camera']:<10} {r['rule_id']:<20} {r['state']:<5} {r['explanation']}")
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    """Inspect deliveries, or requeue dead letters."""
    from plugin.incidents.database import Database

    config = load_config(args.config)
    db = config.storage.path / "storesight.db"
    if not db.exists():
        raise StoreSightError(f"no database yet at {db}")
    database = Database(db)
    try:
        if args.outbox_command == "retry":
            n = database.retry_dead(args.sink, args.key)
            print(f"requeued {n} dead-lettered deliver{'y' if n == 1 else 'ies'}; a running bridge sends them now")
            return 0
        rows = database.deliveries(args.state, args.limit)
    finally:
        database.close()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['created']}  {r['sink']:<12} {r['state']:<9} {r['attempts']:>3}  {r['delivery_key']}  "
                  f"{r['last_error'] or ''}")  # fmt: skip
    return 0


def _parse_when(text: str, tz: str, flag: str) -> datetime:
    """An ISO date or date-time; without an offset it is local time of the site."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        example = "e.g. 2026-11-29 or 2026-11-29T09:00"
        raise StoreSightError(f"{flag}: {text!r} is not an ISO date or date-time ({example})") from None
    return value if value.tzinfo else value.replace(tzinfo=ZoneInfo(tz))


def cmd_insights(args: argparse.Namespace) -> int:
    """Footfall, occupancy, incidents and dwell for a time range."""
    from plugin.incidents.database import Database
    from plugin.insights.rollups import hour_bucket, summarise

    config = load_config(args.config)
    tz = config.site.timezone
    start = _parse_when(args.from_, tz, "--from") if args.from_ else datetime(1970, 1, 1, tzinfo=UTC)
    end = _parse_when(args.to, tz, "--to") if args.to else datetime(9999, 1, 1, tzinfo=UTC)
    if end <= start:
        raise StoreSightError("--to must be after --from")
    db = config.storage.path / "storesight.db"
    rows: list[dict[str, Any]] = []
    incidents: list[dict[str, Any]] = []
    resets: list[dict[str, Any]] = []
    if db.exists():
        database = Database(db)
        try:
            rows = database.rollups(hour_bucket(start), end.astimezone(UTC).isoformat())
            incidents = database.incidents_between(start.astimezone(UTC).isoformat(), end.astimezone(UTC).isoformat())
            resets = database.occupancy_resets(start.astimezone(UTC).isoformat(), end.astimezone(UTC).isoformat())
        finally:
            database.close()
    summary = summarise(rows, incidents, resets)
    doc = {"site": config.site.id, "from": start.isoformat(), "to": end.isoformat(), **summary}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"{config.site.id}: {doc['from']} .. {doc['to']}")
    for rule_id, c in doc["lines"].items():
        print(f"  line {rule_id}: in {c['in']}, out {c['out']}")
    for rule_id, o in doc["occupancy"].items():
        print(f"  occupancy {rule_id} (zone {o['zone']}): max {o['max']}, mean {o['avg']}")
    for rule_id, q in doc["queues"].items():
        print(f"  queue {rule_id} (zone {q['zone']}): longest {q['max_length']}, mean {q['avg_length']}; ", end="")
        print(f"wait up to {q['max_wait_s']} s, mean {q['avg_wait_s']} s")
    for store_id, s in doc["store_occupancy"].items():
        print(f"  store occupancy {store_id}: max {s['max']}, mean {s['avg']}, last {s['last']}; drift: ", end="")
        print(f"{s['out_at_zero']} out(s) at zero, {s['removed_at_reset']} removed at {s['resets']} closing reset(s)")
    for zone, d in doc["dwell"].items():
        print(f"  dwell in {zone}: {d['visits']} visit(s) over threshold, mean {d['avg_s']} s, longest {d['max_s']} s")
    for rule_id, n in doc["incidents"].items():
        print(f"  incidents {rule_id}: {n}")
    return 0


async def _vms_test(config: Config, only: str | None) -> int:
    from plugin.app import build_sink
    from plugin.errors import SinkAuthError, SinkNotReady, SinkRejected
    from plugin.incidents.database import AsyncDatabase
    from plugin.protocols import SelfTestingSink

    chosen = [s for s in config.sinks if only is None or s.id == only]
    if not chosen:
        known = ", ".join(s.id for s in config.sinks) or "none"
        raise StoreSightError(f"no sink {only!r} in the config (sinks: {known})" if only else "the config has no sinks")
    database = AsyncDatabase(config.storage.path / "storesight.db")
    failures = 0
    try:
        for sink_config in chosen:
            sink = build_sink(sink_config, database)
            try:
                if not isinstance(sink, SelfTestingSink):
                    print(f"{sink.id} ({sink_config.kind}): no self-test for this kind")
                    continue
                detail = await sink.self_test()
                print(f"{sink.id} ({sink_config.kind}): OK: {detail}")
            except SinkAuthError as exc:
                failures += 1
                print(f"{sink.id} ({sink_config.kind}): FAILED (credentials): {redact_url(str(exc))}")
            except (SinkNotReady, SinkRejected, StoreSightError) as exc:
                failures += 1
                print(f"{sink.id} ({sink_config.kind}): FAILED: {redact_url(str(exc))}")
            finally:
                await sink.close()
    finally:
        await database.close()
    return 1 if failures else 0


def cmd_vms_test(args: argparse.Namespace) -> int:
    """Log in to each sink and write a labelled test entry."""
    return asyncio.run(_vms_test(load_config(args.config), args.sink))


def cmd_bench(args: argparse.Namespace) -> int:
    """Sizing: how many cameras this machine analyses at the target rate, against a naive baseline."""
    from plugin.cli.bench import BenchOptions, Children, format_table, run_bench

    if not args.verbose:
        # per-camera "connected" and per-incident lines would bury the report; progress goes to stderr anyway
        for name in ("plugin", "adapters"):
            logging.getLogger(name).setLevel(logging.WARNING)
    opts = BenchOptions(
        cameras=args.cameras,
        analysis_fps=args.analysis_fps,
        duration_s=args.duration,
        clip=Path(args.clip) if args.clip else None,
        source=args.source,
        triton_url=args.triton_url,
        model=args.model,
        find_max=args.find_max,
        max_time_s=args.max_time,
        max_cameras=args.max_cameras,
        baseline=not args.no_baseline,
        rules=not args.no_rules,
    )
    children = Children()
    try:
        report = asyncio.run(run_bench(opts, children))
    except asyncio.CancelledError:  # SIGTERM
        return 128 + signal.SIGTERM
    finally:
        children.stop_all()  # a second Ctrl-C can cut the async clean-up short
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """All subcommands."""
    p = argparse.ArgumentParser(prog="storesight", description="AI retail security bridge for your VMS")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="analyse cameras, raise incidents, serve the console")
    run.add_argument("-c", "--config", required=True)
    run.add_argument("--once", action="store_true", help="process file sources to their end, then exit")
    run.add_argument("--listen", help="HOST:PORT for the console (overrides web.host/web.port)")
    run.set_defaults(func=cmd_run)

    det = sub.add_parser("detect", help="run the configured detector on images")
    det.add_argument("images", nargs="+")
    det.add_argument("-c", "--config")
    det.add_argument("--triton-url", help="grpc://host:port or http://host:port (default: embedded)")
    det.add_argument("--json", action="store_true")
    det.set_defaults(func=cmd_detect)

    inc = sub.add_parser("incidents", help="list stored incidents")
    inc.add_argument("-c", "--config", required=True)
    inc.add_argument("--json", action="store_true")
    inc.add_argument("--limit", type=int, default=1000)
    inc.set_defaults(func=cmd_incidents)

    ob = sub.add_parser("outbox", help="deliveries to sinks").add_subparsers(dest="outbox_command", required=True)
    ol = ob.add_parser("list", help="list deliveries")
    ol.add_argument("-c", "--config", required=True)
    ol.add_argument("--state", choices=["pending", "delivered", "dead"])
    ol.add_argument("--limit", type=int, default=200)
    ol.add_argument("--json", action="store_true")
    ol.set_defaults(func=cmd_outbox)
    orr = ob.add_parser("retry", help="requeue dead-lettered deliveries (all, or by --sink / --key)")
    orr.add_argument("-c", "--config", required=True)
    orr.add_argument("--sink")
    orr.add_argument("--key", help="one delivery key")
    orr.set_defaults(func=cmd_outbox)

    onvif = sub.add_parser("onvif", help="ONVIF cameras").add_subparsers(dest="onvif_command", required=True)
    op = onvif.add_parser("probe", help="show a camera's identity, profiles and stream URIs (no password shown)")
    op.add_argument("--host", required=True, help="camera address or host name")
    op.add_argument("--port", type=int, default=80, help="ONVIF HTTP port (default 80)")
    op.add_argument("--username")
    op.add_argument("--password", help="or $STORESIGHT_ONVIF_PASSWORD, which keeps it out of the process list")
    op.add_argument("--timeout", type=float, default=10.0, help="seconds for the whole probe (default 10)")
    op.add_argument("--json", action="store_true")
    op.set_defaults(func=cmd_onvif_probe)

    dis = sub.add_parser("discover", help="find ONVIF cameras and the cameras of configured VMSs; write a skeleton")
    dis.add_argument("--target", help="HOST[:PORT]: a directed probe to one device instead of multicast")
    dis.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for answers (default 3)")
    dis.add_argument("--probe", action="store_true", help="also ask each device for its profiles and stream URIs")
    dis.add_argument("--username", help="for --probe, or $STORESIGHT_ONVIF_USERNAME ($STORESIGHT_ONVIF_PASSWORD)")
    dis.add_argument("-c", "--config", help="list the cameras of this config's VMS sinks (all VMS kinds)")
    dis.add_argument("--vms-only", action="store_true", help="with -c: list VMS cameras only, no network probe")
    dis.add_argument("--write-config", metavar="FILE", help="write a config skeleton (credentials as ${ENV} refs)")
    dis.add_argument("--json", action="store_true")
    dis.set_defaults(func=cmd_discover)

    ins = sub.add_parser("insights", help="footfall, occupancy, dwell and incidents for a time range")
    ins.add_argument("-c", "--config", required=True)
    ins.add_argument("--from", dest="from_", help="ISO date or date-time (site time zone unless an offset is given)")
    ins.add_argument("--to", help="ISO date or date-time, exclusive")
    ins.add_argument("--json", action="store_true")
    ins.set_defaults(func=cmd_insights)

    vms = sub.add_parser("vms", help="VMS and other sinks").add_subparsers(dest="vms_command", required=True)
    vt = vms.add_parser("test", help="log in to each sink and write a clearly labelled test bookmark or event")
    vt.add_argument("-c", "--config", required=True)
    vt.add_argument("--sink", help="only this sink id")
    vt.set_defaults(func=cmd_vms_test)

    bn = sub.add_parser("bench", help="sizing: how many cameras this machine analyses at the target rate")
    bn.add_argument("--cameras", type=int, default=4, help="cameras to run; with --find-max, where the search starts")
    bn.add_argument("--analysis-fps", type=float, default=5.0, help="analysed frames per second per camera")
    bn.add_argument("--duration", type=float, default=30.0, help="measured seconds per trial (default 30)")
    bn.add_argument("--clip", help="H.264 MP4 each camera plays (default: the demo clip)")
    bn.add_argument(
        "--source",
        choices=["rtsp", "file"],
        default="rtsp",
        help="rtsp: the real RTSP server, one stream per camera at the clip's rate; file: realtime-paced files",
    )
    bn.add_argument("--triton-url", help="grpc://host:port or http://host:port (default: embedded)")
    bn.add_argument("--model", default="yolox_nano", help="detector in triton_models/cpu (default yolox_nano)")
    bn.add_argument("--find-max", action="store_true", help="search the most cameras that hold the target")
    bn.add_argument("--max-time", type=float, default=900.0, help="--find-max: seconds for the whole search")
    bn.add_argument("--max-cameras", type=int, default=64, help="--find-max: upper bound of the search")
    bn.add_argument("--no-baseline", action="store_true", help="skip the naive in-process baseline")
    bn.add_argument("--no-rules", action="store_true", help="detection and tracking only (no incident latency)")
    bn.add_argument("--json", action="store_true")
    bn.set_defaults(func=cmd_bench)

    chk = sub.add_parser("check-config", help="validate a config file")
    chk.add_argument("file")
    chk.set_defaults(func=cmd_check_config)

    models = sub.add_parser("models", help="model files").add_subparsers(dest="models_command", required=True)
    mf = models.add_parser("fetch", help="put the ONNX files in place (local dir or download), sha256-checked")
    mf.add_argument("--from", dest="from_dir", help="directory holding the files (default: $STORESIGHT_MODELS_DIR)")
    mf.add_argument("--url", help="download URL instead of the upstream release")
    mf.add_argument("--accept-sha256", help="also accept this hash (another export you trust)")
    mf.add_argument("--repository", help="model repository root to fill (default: triton_models/cpu)")
    mf.add_argument(
        "--model",
        action="append",
        help="only this file (repeatable), an error if it cannot be had; default: all, skipping movenet_lightning.onnx "
        "(local directory only) with a warning when no directory holds it",
    )
    mf.set_defaults(func=cmd_models_fetch)

    media = sub.add_parser("media", help="demo media").add_subparsers(dest="media_command", required=True)
    md = media.add_parser("fetch", help="put the demo clip in place, sha256-checked")
    md.add_argument("--from", dest="from_dir", help="directory holding it (default: $STORESIGHT_MEDIA_DIR)")
    md.add_argument("--dest", default="storesight-data/media")
    md.add_argument(
        "--vtest",
        action="store_true",
        help="OpenCV's vtest.avi instead (scenario tests): from --from DIR when it holds it, else unpacked from "
        "Debian's opencv-doc package (apt-get download)",
    )
    md.set_defaults(func=cmd_media_fetch)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: expected errors print one clear message and exit non-zero, without a traceback."""
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        code: int = args.func(args)
        return code
    except StoreSightError as exc:
        print(f"storesight: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
