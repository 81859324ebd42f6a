"""`storesight run`, `detect` and `check-config`: the bridge itself, the detector alone, a config's validity."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydantic import ValidationError

from plugin.config.loader import format_validation_error, load_config
from plugin.config.root import Config
from plugin.config.service import WebConfig
from plugin.errors import ConfigError, SourceError
from plugin.types import ImageArray
from plugin.web.auth.transport import server_ssl_context

if TYPE_CHECKING:
    from plugin.pipeline.supervisor import CameraFleet


log = logging.getLogger("storesight")


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate a config file."""
    config = load_config(args.file)
    print(
        f"{args.file}: OK ({len(config.cameras)} camera(s), {len(config.rules)} rule(s), {len(config.sinks)} sink(s))"
    )
    return 0


async def _detect(config: Config, images: Sequence[str]) -> list[dict[str, Any]]:
    import cv2

    from plugin.inference.repository import default_model_repository
    from plugin.inference.server import EmbeddedTriton
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
            model_repository=(tc.model_repository or default_model_repository()).resolve(),
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


async def _run(config: Config, once: bool, config_file: Path | None = None) -> int:
    from aiohttp import web

    from plugin.app import build_app
    from plugin.web.keys import CAMERAS, OUTBOX, SINKS

    app = build_app(config, once=once, config_file=config_file)
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
            w = config.web
            tls = None if w.tls is None else server_ssl_context(w.tls.cert, w.tls.key)
            site = web.TCPSite(runner, w.host, w.port, ssl_context=tls)
            await site.start()
            where = f"[{w.host}]" if ":" in w.host else w.host or "0.0.0.0"
            token = "from the config" if w.token else "in $STORESIGHT_API_TOKEN or storage/api_token"
            log.info("console at %s://%s:%d/ (sign in; the admin API token %s)", "https" if tls else "http", where,
                     w.port, token)  # fmt: skip
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
        config = config.model_copy(update={"web": _listen(config.web, args.listen)})
    if not args.once and config.web.tls is not None:  # a bad certificate fails now, before Triton and the cameras
        server_ssl_context(config.web.tls.cert, config.web.tls.key)
    return asyncio.run(_run(config, once=args.once, config_file=Path(args.config).resolve()))


def _listen(web_cfg: WebConfig, listen: str) -> WebConfig:
    """`--listen HOST:PORT` over the config's web section, checked like the file (TLS beyond loopback)."""
    host, _, port = listen.rpartition(":")
    if not port.isdigit():
        raise ConfigError(f"--listen: {listen!r} is not HOST:PORT")
    doc = web_cfg.model_dump() | {"host": host.strip("[]") or "127.0.0.1", "port": int(port)}
    try:
        return WebConfig.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "--listen")) from None
