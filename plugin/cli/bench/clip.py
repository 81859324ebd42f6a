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
import numpy as np
import numpy.typing as npt

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
    codec: str = ""
    converted_from: Path | None = None  # the file the user gave, when the bench had to convert it


# What the RTSP stand-in serves without re-encoding: H.264 or H.265 in MP4/MOV.
SERVABLE_CODECS = frozenset({"h264", "hevc"})
SERVABLE_CONTAINERS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2"})


def _codec_and_container(path: Path) -> tuple[str, str]:
    """The first video stream's codec and the container format, as FFmpeg names them ("", "" if unreadable)."""
    import av

    try:
        with av.open(str(path)) as container:
            video = container.streams.video
            return (video[0].codec_context.name if video else ""), container.format.name
    except (av.FFmpegError, OSError):
        return "", ""


def _ffmpeg(args: list[str], missing: str, failed: str) -> None:
    """ffmpeg, quiet and overwriting, with `args` (blocking); SourceError `missing` when it is not on PATH, `failed`
    with its own message when it fails."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise SourceError(missing)
    cmd = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SourceError(f"{failed}: {result.stderr.strip()}")


def servable_clip(path: Path, workdir: Path) -> tuple[Path, Path | None]:
    """`path` when the RTSP stand-in can serve it as it is (H.264/H.265 in MP4), else an H.264 MP4 copy made with
    ffmpeg in `workdir` (OpenCV's vtest.avi is MPEG-4 part 2 in AVI), and the original (blocking)."""
    codec, container = _codec_and_container(path)
    if codec in SERVABLE_CODECS and container in SERVABLE_CONTAINERS:
        return path, None
    dst = workdir / f"{path.stem}-h264.mp4"
    # camera-like H.264: no B-frames, a keyframe every 2 s, no audio; quality high enough that the detector sees
    # what it would in the original
    args = ["-i", str(path), "-map", "0:v:0", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-bf", "0"]
    args += ["-g", "20", "-pix_fmt", "yuv420p", "-f", "mp4", str(dst)]
    log.info("bench: converting %s (%s in %s) to H.264 MP4", path, codec, container)
    _ffmpeg(
        args,
        missing=f"--clip: {path.name} is {codec or 'not a readable video'} in {container or 'an unknown container'}; "
        "converting it to H.264 MP4 needs ffmpeg on PATH (apt-get install ffmpeg)",
        failed=f"--clip: ffmpeg could not convert {path} to H.264 MP4",
    )
    return dst, path


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
    return ClipInfo(path, width, height, fps, count / fps, _codec_and_container(path)[0])


def first_frame(path: Path) -> npt.NDArray[np.uint8]:
    """The clip's first frame as BGR (blocking): the image the calibration sends to the detector."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        ok, image = cap.read()
    finally:
        cap.release()
    if not ok or image is None:
        raise SourceError(f"--clip: cannot decode a frame of {path}")
    return np.asarray(image, np.uint8)


# Where camera i starts the clip, as a share of one play: the golden ratio's multiples modulo 1 spread any number of
# cameras evenly without depending on how many there are, so one trial's files serve the next.
_GOLDEN = (5**0.5 - 1) / 2


def stagger_offset(index: int, period_s: float) -> float:
    """Seconds into the clip where camera `index` starts (camera 0 at the start)."""
    return (index * _GOLDEN) % 1.0 * period_s


def staggered_clips(clip: ClipInfo, period_s: float, cameras: int, cache: Path) -> list[Path]:
    """One file per camera, camera i's starting `stagger_offset(i)` into `clip` (cut at the keyframe before it, no
    re-encoding; kept in `cache` for later trials), so the cameras do not all see the same people at the same moment
    as real cameras would not (blocking). `clip` must last a period longer than a trial needs."""
    cache.mkdir(parents=True, exist_ok=True)
    paths = [clip.path]
    for i in range(1, cameras):
        dst = cache / f"cam{i:02d}-{clip.path.stem}.mp4"
        if not dst.is_file():
            offset = stagger_offset(i, period_s)
            _ffmpeg(
                ["-ss", f"{offset:.3f}", "-i", str(clip.path), "-map", "0:v:0", "-c", "copy", "-f", "mp4", str(dst)],
                missing="staggering the cameras needs ffmpeg on PATH (apt-get install ffmpeg); or pass --no-stagger",
                failed=f"ffmpeg could not cut {clip.path} at {offset:.1f} s",
            )
        paths.append(dst)
    return paths


def loop_clip(clip: ClipInfo, needed_s: float, workdir: Path) -> ClipInfo:
    """A copy of the clip joined end to end (no re-encoding) when one play is shorter than a trial (blocking)."""
    loops = math.ceil(needed_s / clip.duration_s) - 1
    if loops <= 0:
        return clip
    dst = workdir / f"{clip.path.stem}-x{loops + 1}.mp4"
    # A long file rather than looping in the reader or in GStreamer: timestamps keep rising, nothing restarts.
    _ffmpeg(
        ["-stream_loop", str(loops), "-i", str(clip.path), "-map", "0:v:0", "-c", "copy", "-f", "mp4", str(dst)],
        missing=f"a {needed_s:.0f} s trial is longer than the clip ({clip.duration_s:.0f} s) and looping it needs "
        "ffmpeg on PATH (apt-get install ffmpeg); or pass a shorter --duration",
        failed=f"ffmpeg could not loop {clip.path}",
    )
    return ClipInfo(
        dst, clip.width, clip.height, clip.fps, clip.duration_s * (loops + 1), clip.codec, clip.converted_from
    )
