"""How long N RTSP cameras take to start: the real RTSP stand-in (packaging/dev/rtsp_server.py) serves the clip once
per camera, N camera sources of the chosen decoder start at the same moment, and the time each one's first frame
arrives is printed (and the slowest, which is when the last camera starts analysing).

    .venv/bin/python packaging/scripts/startup_time.py [--cameras 50] [--decoder pyav|opencv] [--clip FILE] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from adapters.cameras.registry import DECODERS
from plugin.cli.bench.clip import loop_clip, probe_clip, resolve_clip
from plugin.cli.bench.rtsp import Children, RtspCameras


async def measure(cameras: int, decoder: str, clip: Path, timeout_s: float) -> dict[str, Any]:
    """Start `cameras` sources at once; seconds until each one's first frame (None: none within `timeout_s`)."""
    children = Children()
    with tempfile.TemporaryDirectory(prefix="storesight-startup-") as tmp:
        info = await asyncio.to_thread(probe_clip, clip)
        served = await asyncio.to_thread(loop_clip, info, timeout_s + 30, Path(tmp))
        rtsp = RtspCameras([served.path] * cameras, Path(tmp), children)
        try:
            await asyncio.to_thread(rtsp.start)
            kind = DECODERS[decoder]  # type: ignore[index]
            sources = [kind(f"cam{i:02d}", rtsp.url(i), 5.0) for i in range(cameras)]
            t0 = time.monotonic()

            async def first(source: Any) -> float | None:
                try:
                    async with asyncio.timeout(timeout_s):
                        await anext(source.frames())
                except TimeoutError:
                    return None
                return round(time.monotonic() - t0, 2)

            firsts = await asyncio.gather(*(first(s) for s in sources))
            for s in sources:
                await s.close()
        finally:
            await asyncio.to_thread(children.stop_all)
    got = sorted(t for t in firsts if t is not None)
    return {
        "cameras": cameras,
        "decoder": decoder,
        "clip": clip.name,
        "started": len(got),
        "first_frame_s": {
            "min": got[0] if got else None,
            "median": got[len(got) // 2] if got else None,
            "max": got[-1] if got else None,
        },
        "all_started_s": got[-1] if len(got) == cameras else None,
        "timeout_s": timeout_s,
    }


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", type=int, default=50)
    parser.add_argument("--decoder", choices=sorted(DECODERS), default="pyav")
    parser.add_argument("--clip", type=Path, default=None, help="H.264/H.265 MP4 (default: the demo clip)")
    parser.add_argument("--timeout", type=float, default=180.0, help="give up on a camera after this long")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = asyncio.run(measure(args.cameras, args.decoder, resolve_clip(args.clip), args.timeout))
    if args.json:
        print(json.dumps(report))
    else:
        ff = report["first_frame_s"]
        print(
            f"{report['started']} of {args.cameras} RTSP cameras ({args.decoder}) had a first frame; "
            f"min {ff['min']} s, median {ff['median']} s, last {ff['max']} s after starting them all at once"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
