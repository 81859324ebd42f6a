"""`storesight models verify`: does a Triton server serve a detector the bridge can use? Checked the way the bridge
will use it: the server answers, the model is loaded and ready, its config honours the tensor contract
(ARCHITECTURE.md), and known frames give the expected people through the bridge's own client.

Each check gives one line of report; a check that cannot run because an earlier one failed says so and fails too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from plugin.errors import SourceError, StoreSightError
from plugin.inference.triton import TritonInferenceClient, triton_aio_client
from plugin.types import ImageArray

log = logging.getLogger(__name__)

CONTRACT_K = 100  # rows per image (ARCHITECTURE.md: K = 100)
# name -> (data type, dims after the batch dimension, with "K" for the contract's row count)
CONTRACT_OUTPUTS: dict[str, tuple[str, tuple[int | str, ...]]] = {
    "boxes": ("TYPE_FP32", ("K", 4)),
    "scores": ("TYPE_FP32", ("K",)),
    "classes": ("TYPE_INT32", ("K",)),
    "count": ("TYPE_INT32", (1,)),  # [batch] in the contract; Triton needs [batch, 1] on a batched output
}
REQUIRED_PARAMETERS = ("class_names", "score_threshold", "nms_iou")
MATCH_IOU = 0.5  # an expected person counts as found by a detection overlapping it this much


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class KnownFrame:
    """An image and the people a working detector finds in it (boxes in image pixels, counted by eye)."""

    label: str
    image: ImageArray
    people: int
    boxes: tuple[tuple[float, float, float, float], ...] = ()  # empty: only the count is checked


@dataclass
class Report:
    """Every check, in order."""

    url: str
    model: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """All checks passed."""
        return bool(self.checks) and all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> bool:
        """Record a check; returns `ok` so a caller can stop after a failure."""
        self.checks.append(Check(name, ok, detail))
        return ok

    def text(self) -> str:
        """The report as the command prints it."""
        lines = [f"verify {self.url}, model {self.model}"]
        lines += [f"  {'ok  ' if c.ok else 'FAIL'}  {c.name:<10} {c.detail}" for c in self.checks]
        failed = sum(not c.ok for c in self.checks)
        lines.append(f"all {len(self.checks)} checks passed" if self.ok else f"{failed} of {len(self.checks)} failed")
        return "\n".join(lines)


def _dims(raw: Sequence[Any]) -> list[int]:
    """Config dims as ints (gRPC's JSON gives int64 fields as strings)."""
    return [int(d) for d in raw]


def _show(dims: Sequence[int | str]) -> str:
    return "[batch," + ",".join(str(d) for d in dims) + "]"


def check_contract(config: dict[str, Any]) -> list[Check]:
    """The model config against the detector contract: input, outputs, batching and the parameters the bridge reads.
    `config` is Triton's model config as JSON (either protocol)."""
    checks = []
    batch = int(config.get("max_batch_size", 0))
    inputs = {i["name"]: i for i in config.get("input", [])}
    size = 0
    problems = []
    if "images_u8" not in inputs:
        problems.append(f"no input 'images_u8' (inputs: {', '.join(sorted(inputs)) or 'none'})")
    else:
        spec = inputs["images_u8"]
        dtype, dims = spec.get("data_type", ""), _dims(spec.get("dims", []))
        if dtype != "TYPE_UINT8":
            problems.append(f"images_u8 is {dtype}, the contract says TYPE_UINT8")
        if len(dims) != 3 or dims[0] != dims[1] or dims[2] != 3 or dims[0] <= 0:
            problems.append(f"images_u8 dims {dims}, the contract says [S,S,3] (square, BGR)")
        else:
            size = dims[0]
    if batch < 1:
        problems.append(f"max_batch_size {batch}: the contract's batch dimension must be dynamic (at least 1)")
    shown_input = f"images_u8 TYPE_UINT8 {_show([size, size, 3])}, max batch {batch}"
    checks.append(Check("input", not problems, "; ".join(problems) or shown_input))
    outputs = {o["name"]: o for o in config.get("output", [])}
    problems, shown = [], []
    for name, (want_type, want_dims) in CONTRACT_OUTPUTS.items():
        if name not in outputs:
            problems.append(f"no output {name!r}")
            continue
        dtype, dims = outputs[name].get("data_type", ""), _dims(outputs[name].get("dims", []))
        want = [CONTRACT_K if d == "K" else d for d in want_dims]
        if dtype != want_type:
            problems.append(f"{name} is {dtype}, the contract says {want_type}")
        if dims != want:
            problems.append(f"{name} dims {dims}, the contract says {want}")
        shown.append(f"{name} {dtype.removeprefix('TYPE_')} {_show(dims)}")
    checks.append(Check("outputs", not problems, "; ".join(problems) or ", ".join(shown)))
    params = {k: v.get("string_value", v.get("stringValue", "")) for k, v in config.get("parameters", {}).items()}
    missing = [p for p in REQUIRED_PARAMETERS if not params.get(p)]
    names = [n.strip() for n in params.get("class_names", "").split(",") if n.strip()]
    if missing:
        checks.append(Check("parameters", False, f"missing parameter(s): {', '.join(missing)}"))
    elif "person" not in names:
        checks.append(Check("parameters", False, f"class_names has no 'person' ({len(names)} classes)"))
    else:
        detail = f"{len(names)} class names, person = {names.index('person')}; score_threshold "
        detail += f"{params['score_threshold']}, nms_iou {params['nms_iou']}"
        checks.append(Check("parameters", True, detail))
    return checks


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _people(n: int) -> str:
    return f"{n} person" if n == 1 else f"{n} people"


def judge_people(frame: KnownFrame, boxes: npt.NDArray[np.float32], min_score_note: str) -> Check:
    """Whether the detected person boxes (frame pixels) are the people expected in the frame."""
    found = len(boxes)
    if found != frame.people:
        detail = f"{frame.label}: {_people(found)} found, {frame.people} expected ({min_score_note})"
        return Check("people", False, detail)
    unmatched = [
        want for want in frame.boxes if not any(_iou(want, [float(v) for v in got]) >= MATCH_IOU for got in boxes)
    ]
    if unmatched:
        where = ", ".join("[" + ", ".join(f"{v:.0f}" for v in b) + "]" for b in unmatched)
        return Check("people", False, f"{frame.label}: nobody found at {where} (IoU {MATCH_IOU} with a detection)")
    placed = f", each where expected (IoU >= {MATCH_IOU})" if frame.boxes else ""
    return Check("people", True, f"{frame.label}: {_people(found)}, as expected{placed}")


async def verify(
    url: str, model: str, frames: Callable[[], Sequence[KnownFrame]], min_score: float, timeout_s: float = 10.0
) -> Report:
    """Run every check against the Triton at `url`; `frames` loads the known frames (only when the checks before
    the inference got that far)."""
    report = Report(url, model)
    scheme, _, address = url.partition("://")
    client = triton_aio_client(scheme, address)
    try:
        try:
            live = await client.is_server_live()
            ready = await client.is_server_ready()
            meta = await client.get_server_metadata()
        except Exception as exc:  # tritonclient, grpc and aiohttp each raise their own connection errors
            text = (str(exc).strip().splitlines() or [repr(exc)])[0]
            report.add("server", False, f"no answer from {url}: {text}")
            return report
        version = meta.version if hasattr(meta, "version") else meta.get("version", "?")
        if not report.add("server", live and ready, f"Triton {version}: live {live}, ready {ready}"):
            return report
        if not await client.is_model_ready(model):
            report.add("model", False, await _why_not_ready(client, scheme, model))
            return report
        if scheme == "grpc":
            config = (await client.get_model_config(model, as_json=True))["config"]
        else:
            config = await client.get_model_config(model)
        where = config.get("platform") or config.get("backend") or "?"
        report.add("model", True, f"{model} ready ({where}, max batch {config.get('max_batch_size', 0)})")
        contract = check_contract(config)
        report.checks.extend(contract)
        if not all(c.ok for c in contract):
            report.add("people", False, "not run: the model does not follow the contract (above)")
            return report
    finally:
        await client.close()
    await _check_people(report, url, model, frames, min_score, timeout_s)
    return report


async def _why_not_ready(client: Any, scheme: str, model: str) -> str:
    """The repository's word on a model that is not ready: absent, or its state and reason."""
    if scheme == "grpc":
        entries = (await client.get_model_repository_index(as_json=True)).get("models", [])
    else:
        entries = await client.get_model_repository_index()
    mine = [e for e in entries if e.get("name") == model]
    if not mine:
        names = sorted({e.get("name", "?") for e in entries})
        return f"no model {model!r} in the server's repository (it has: {', '.join(names) or 'nothing'})"
    entry = mine[0]
    return f"{model} is {entry.get('state') or 'not ready'}: {entry.get('reason') or 'no reason given'}"


async def _check_people(
    report: Report, url: str, model: str, frames: Callable[[], Sequence[KnownFrame]], min_score: float, timeout_s: float
) -> None:
    """The known frames through the bridge's own client (letterbox, contract, mapping back to frame pixels)."""
    try:
        known = frames()
    except (SourceError, OSError) as exc:
        report.add("people", False, f"no known frame to check: {exc}")
        return
    client = TritonInferenceClient(url, model, timeout_s)
    try:
        info = await client.wait_ready(timeout_s)
        person = info.class_names.index("person")
        results = await client.detect([f.image for f in known])
    except StoreSightError as exc:
        report.add("people", False, str(exc))
        return
    finally:
        await client.close()
    for frame, dets in zip(known, results, strict=True):
        keep = (dets.class_ids == person) & (dets.scores >= min_score)
        check = judge_people(frame, dets.xyxy[keep], f"person score >= {min_score:g}")
        report.checks.append(check)


# --- the known frames: the demo clip ---------------------------------------------------------------------------

# Frame 300 of the demo clip (one-by-one-person-detection.mp4, the pinned sha256): one man stands at the table, his
# box by eye about x 382-546, y 4-380 in the 768x432 frame; frame 900: the room is empty. Frames are counted from
# 0, reading the file in order.
DEMO_FRAMES = ((300, 1, ((382.0, 4.0, 546.0, 380.0),)), (900, 0, ()))


def demo_frames(clip: Path) -> list[KnownFrame]:
    """The known frames from the demo clip, after checking it is the pinned file."""
    import cv2

    from plugin.inference.assets import DEMO_MEDIA, sha256_of

    if not clip.is_file():
        raise SourceError(f"{clip} not found")
    if sha256_of(clip) != DEMO_MEDIA.sha256:
        raise SourceError(f"{clip} is not the pinned demo clip (sha256 differs); run `storesight media fetch`")
    wanted = {index: (people, boxes) for index, people, boxes in DEMO_FRAMES}
    out: list[KnownFrame] = []
    cap = cv2.VideoCapture(str(clip), cv2.CAP_FFMPEG)
    try:
        index = -1
        while len(out) < len(wanted):
            ok, image = cap.read()
            if not ok:
                raise SourceError(f"{clip} ended before frame {max(wanted)}")
            index += 1
            if index in wanted:
                people, boxes = wanted[index]
                out.append(KnownFrame(f"demo clip frame {index}", cast(ImageArray, image), people, boxes))
    finally:
        cap.release()
    return out


def image_frame(path: Path, people: int) -> list[KnownFrame]:
    """An image of the caller's with the number of people in it."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SourceError(f"{path}: not a readable image")
    return [KnownFrame(path.name, cast(ImageArray, image), people)]
