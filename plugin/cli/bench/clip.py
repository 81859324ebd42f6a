"""The bench's clip: found, probed, and looped long enough for a run."""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import cv2

from plugin.errors import SourceError
from plugin.inference.assets import DEMO_MEDIA
from plugin.resources import checkout_root

log = logging.getLogger(__name__)

# --- the clip ------------------------------------------------------------------------------------------------


def default_clip() -> tuple[Path | None, list[Path]]:
    """The demo clip from $STORESIGHT_MEDIA_DIR or storesight-data/media (here, or in the checkout), and the places
    looked at."""
    env = os.environ.get("STORESIGHT_MEDIA_DIR")
    dirs = [Path(env)] if env else []
    root = checkout_root()
    dirs += [Path("storesight-data") / "media", *([root / "storesight-data" / "media"] if root else [])]
    looked = [d / DEMO_MEDIA.name for d in dirs]
    return next((p for p in looked if p.is_file()), None), looked


def resolve_clip(clip: Path | None) -> Path:
    """The clip to serve; a clear error when it is missing."""
    if clip is not None:
        if not clip.is_file():
            raise SourceError(f"--clip: no such video file: {clip}")
        return clip.resolve()
    found, looked = default_clip()
    if found is None:
        places = ", ".join(str(p) for p in dict.fromkeys(looked))
        raise SourceError(
            f"no demo clip found (looked for {places}); run `storesight media fetch`, set STORESIGHT_MEDIA_DIR "
            "or pass --clip PATH"
        )
    return found.resolve()


@dataclass(frozen=True)
class ClipInfo:
    """What the benchmark needs to know about the clip."""

    path: Path
    width: int
    height: int
    fps: float
    duration_s: float


def probe_clip(path: Path) -> ClipInfo:
    """Size, native rate and length of a video file (blocking)."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not cap.isOpened():
            raise SourceError(f"--clip: cannot decode {path}")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        count = float(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0)
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        cap.release()
    if fps <= 0 or count <= 0:
        raise SourceError(f"--clip: {path} reports no frame rate or length; re-mux it (ffmpeg -i IN -c copy OUT.mp4)")
    return ClipInfo(path, width, height, fps, count / fps)


def loop_clip(clip: ClipInfo, needed_s: float, workdir: Path) -> ClipInfo:
    """A copy of the clip joined end to end (no re-encoding) when one play is shorter than a trial (blocking)."""
    loops = math.ceil(needed_s / clip.duration_s) - 1
    if loops <= 0:
        return clip
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise SourceError(
            f"a {needed_s:.0f} s trial is longer than the clip ({clip.duration_s:.0f} s) and looping it needs ffmpeg "
            "on PATH (apt-get install ffmpeg); or pass a shorter --duration"
        )
    dst = workdir / f"{clip.path.stem}-x{loops + 1}.mp4"
    # A long file rather than looping in the reader or in GStreamer: timestamps keep rising, nothing restarts.
    cmd = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-stream_loop", str(loops)]
    cmd += ["-i", str(clip.path), "-map", "0:v:0", "-c", "copy", "-f", "mp4", str(dst)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SourceError(f"ffmpeg could not loop {clip.path}: {result.stderr.strip()}")
    return ClipInfo(dst, clip.width, clip.height, clip.fps, clip.duration_s * (loops + 1))
