"""`storesight models verify`: prove a Triton deployment serves a detector the bridge can use, before stores use it."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from plugin.errors import SourceError

if TYPE_CHECKING:
    from plugin.inference.verify import KnownFrame


def _frames(args: argparse.Namespace) -> Sequence[KnownFrame]:
    """The known frames: the caller's image, else the demo clip (--clip, $STORESIGHT_MEDIA_DIR, storesight-data)."""
    from plugin.cli.bench.clip import default_clip
    from plugin.inference.verify import demo_frames, image_frame

    if args.image:
        return image_frame(Path(args.image), args.expect_people)
    if args.clip:
        return demo_frames(Path(args.clip))
    found, looked = default_clip()
    if found is None:
        places = ", ".join(str(p) for p in dict.fromkeys(looked))
        raise SourceError(
            f"no demo clip (looked for {places}): run `storesight media fetch`, set STORESIGHT_MEDIA_DIR, or pass "
            "--image FILE --expect-people N"
        )
    return demo_frames(found)


def cmd_models_verify(args: argparse.Namespace) -> int:
    """Check a Triton server's detector against the contract and known frames; exit 1 when a check fails."""
    from plugin.inference.verify import verify

    if args.expect_people is not None and not args.image:
        raise SourceError("--expect-people goes with --image")
    if args.image and args.expect_people is None:
        raise SourceError("--image needs --expect-people N (how many people are in it)")
    report = asyncio.run(verify(args.url, args.model, lambda: _frames(args), args.min_score, args.timeout))
    if args.json:
        print(json.dumps({"url": report.url, "model": report.model, "ok": report.ok,
                          "checks": [asdict(c) for c in report.checks]}, indent=2))  # fmt: skip
    else:
        print(report.text())
    return 0 if report.ok else 1
