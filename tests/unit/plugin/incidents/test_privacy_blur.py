"""`privacy: blur` per sink: the incident's snapshot gets a copy with the people pixelated, made with the original;
a blur sink is handed that copy (never the original, none when there is no copy), an `original` sink the evidence
itself, and the local snapshot stays the original for investigators."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import WebhookReceiver

from adapters.sinks.webhook import WebhookSink, WebhookSinkConfig
from plugin.config.loader import parse_config
from plugin.config.service import OutboxConfig
from plugin.errors import ConfigError
from plugin.incidents.database import AsyncDatabase
from plugin.incidents.evidence import BLUR_MARGIN, blur_people, blurred_path, encode_jpeg
from plugin.incidents.explain import Explainer
from plugin.incidents.manager import IncidentManager
from plugin.incidents.outbox import OutboxWorker
from plugin.metrics import Metrics
from plugin.protocols import IncidentSink
from plugin.rules.base import RuleHit
from plugin.types import Frame

T0 = datetime(2026, 12, 7, 14, 0, tzinfo=UTC)
W, H = 768, 432
PEOPLE = [(0.10, 0.20, 0.25, 0.90), (0.60, 0.30, 0.72, 0.95)]  # two people, 0..1 of the frame
MCU = 16  # JPEG codes 16x16 blocks (4:2:0): a block that touches a blurred box may code differently


def _image() -> np.ndarray:
    """A detailed frame (noise over a gradient): any blur shows, and JPEG keeps it."""
    rng = np.random.default_rng(3)
    ramp = np.linspace(0, 200, W, dtype=np.float32)[None, :, None]
    return np.clip(ramp + rng.normal(0, 40, (H, W, 3)), 0, 255).astype(np.uint8)


def _grown(box: tuple[float, float, float, float], w: int, h: int, margin_px: int = 0) -> tuple[int, int, int, int]:
    """A person's box as blur_people grows it, in pixels, plus a margin."""
    x1, y1, x2, y2 = box
    mx, my = BLUR_MARGIN * (x2 - x1), BLUR_MARGIN * (y2 - y1)
    left, top = max(0, int((x1 - mx) * w) - margin_px), max(0, int((y1 - my) * h) - margin_px)
    right, bottom = min(w, int(np.ceil((x2 + mx) * w)) + margin_px), min(h, int(np.ceil((y2 + my) * h)) + margin_px)
    return left, top, right, bottom


def _masks(w: int, h: int, margin_px: int) -> tuple[np.ndarray, np.ndarray]:
    """(inside the people's boxes, outside them by `margin_px`)."""
    inside = np.zeros((h, w), bool)
    near = np.zeros((h, w), bool)
    for box in PEOPLE:
        x1, y1, x2, y2 = _grown(box, w, h)
        inside[y1:y2, x1:x2] = True
        a1, b1, a2, b2 = _grown(box, w, h, margin_px)
        near[b1:b2, a1:a2] = True
    return inside, ~near


def test_blurring_changes_the_people_and_not_one_pixel_elsewhere() -> None:
    image = _image()
    out = blur_people(image, PEOPLE)
    inside, outside = _masks(W, H, 0)
    assert np.array_equal(out[outside], image[outside])
    diff = np.abs(out.astype(np.int16) - image.astype(np.int16))[inside]
    assert diff.mean() > 25  # noise of sigma 40 averaged away: nothing of the person's detail is left
    # pixelated: each box is a handful of flat cells, no face can be read from it
    x1, y1, x2, y2 = _grown(PEOPLE[0], W, H)
    assert len(np.unique(out[y1:y2, x1:x2].reshape(-1, 3), axis=0)) <= 8 * 40
    assert np.array_equal(image, _image())  # the original is untouched (a copy is blurred)


def test_people_unknown_blurs_the_whole_picture() -> None:
    image = _image()
    out = blur_people(image, None)
    assert np.abs(out.astype(np.int16) - image.astype(np.int16)).mean() > 25
    assert np.array_equal(blur_people(image, []), image)  # known to hold nobody: nothing to blur


def _hit() -> RuleHit:
    return RuleHit(
        rule_id="table-dwell", type="camera_tamper", key="1", state="start", camera="cam1", zone=None, track_ids=(1,),
        started_at=T0, at=T0, severity="warning", facts={"reason": "covered", "duration_s": 30.0},
        box=(0.10 * W, 0.20 * H, 0.25 * W, 0.90 * H),
    )  # fmt: skip


async def _deliver(tmp_path: Path, jpeg: bytes | None = None, people: object = PEOPLE) -> dict[str, object]:
    """One incident through the manager and the outbox to three real webhook receivers: blur, original, default.
    Returns the snapshot path each was handed, and the incident."""
    db = AsyncDatabase(tmp_path / "db.sqlite")
    with WebhookReceiver() as blur, WebhookReceiver() as original, WebhookReceiver() as default:
        configs = {
            "blur": {"kind": "webhook", "id": "blur", "url": blur.url, "privacy": "blur"},
            "original": {"kind": "webhook", "id": "original", "url": original.url, "privacy": "original"},
            "default": {"kind": "webhook", "id": "default", "url": default.url},
        }
        models = {k: WebhookSinkConfig.model_validate(v) for k, v in configs.items()}
        sinks: dict[str, IncidentSink] = {k: WebhookSink(m) for k, m in models.items()}
        outbox = OutboxWorker(db, sinks, Metrics(), OutboxConfig(), privacy={k: m.privacy for k, m in models.items()})
        manager = IncidentManager(db, tmp_path / "evidence", Explainer("UTC"), list(sinks), blurred_copies=True)
        try:
            frame = None if jpeg else Frame("cam1", 1, T0, 0.0, _image())
            incident = await manager.handle(_hit(), frame, None, jpeg=jpeg, people=people)  # type: ignore[arg-type]
            assert incident is not None
            assert await outbox.deliver_due() == 3
            got: dict[str, object] = {
                name: r.requests[0]["body"]["incident"]["snapshot"]
                for name, r in (("blur", blur), ("original", original), ("default", default))
            }
            got["incident"] = incident
            return got
        finally:
            for s in sinks.values():
                await s.close()
            await db.close()


def _detail(image: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """How much fine detail (edges: a face's features) a box holds: the variance of the Laplacian inside it."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = _grown(box, w, h)
    grey = cv2.cvtColor(image[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def _read(path: object) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return image


async def test_each_sink_is_handed_the_snapshot_its_privacy_allows(tmp_path: Path) -> None:
    got = await _deliver(tmp_path)
    incident = got["incident"]
    local = Path(incident.snapshot)  # type: ignore[attr-defined]
    assert got["original"] == str(local)  # privacy: original, the evidence as taken
    assert got["blur"] == got["default"] == str(blurred_path(local))  # blur is the default
    original, blurred = await asyncio.to_thread(_read, local), await asyncio.to_thread(_read, blurred_path(local))
    # the blurred copy differs in the people's boxes and is identical elsewhere (JPEG blocks next to a box aside)
    inside, outside = _masks(W, H, MCU)
    assert np.array_equal(blurred[outside], original[outside])
    diff = np.abs(blurred.astype(np.int16) - original.astype(np.int16))
    assert diff[inside].mean() > 20
    for box in PEOPLE:  # what is left inside a box is flat cells: a tenth of the detail, or less
        assert _detail(blurred, box) < 0.1 * _detail(original, box)
    modes = await asyncio.to_thread(lambda: {p.stat().st_mode & 0o777 for p in (local, blurred_path(local))})
    assert modes == {0o600}


async def test_a_business_event_picture_is_blurred_where_its_frame_had_people(tmp_path: Path) -> None:
    """Fusion incidents take their picture from the presence log's small frames, which keep the people's boxes."""
    small = cv2.resize(_image(), (640, 360))
    got = await _deliver(tmp_path, jpeg=encode_jpeg(small), people=PEOPLE)
    local = Path(got["incident"].snapshot)  # type: ignore[attr-defined]
    original, blurred = await asyncio.to_thread(_read, local), await asyncio.to_thread(_read, got["blur"])
    inside, outside = _masks(640, 360, MCU)
    assert np.array_equal(blurred[outside], original[outside])
    assert np.abs(blurred.astype(np.int16) - original.astype(np.int16))[inside].mean() > 8
    for box in PEOPLE:
        assert _detail(blurred, box) < 0.1 * _detail(original, box)


async def test_a_blur_sink_never_gets_the_original_when_there_is_no_blurred_copy(tmp_path: Path) -> None:
    """An incident from before `privacy: blur` was configured (or whose copy could not be written): no picture."""
    db = AsyncDatabase(tmp_path / "db.sqlite")
    try:
        outbox = OutboxWorker(db, {}, Metrics(), privacy={"cloud": "blur", "local": "original"})
        original = tmp_path / "evidence" / "x.jpg"
        original.parent.mkdir()
        original.write_bytes(b"jpeg")
        payload = {"id": "x", "snapshot": str(original)}
        assert outbox.payload_for("cloud", payload)["snapshot"] is None
        assert outbox.payload_for("local", payload)["snapshot"] == str(original)
        assert outbox.payload_for("cloud", {"id": "y", "snapshot": None})["snapshot"] is None
    finally:
        await db.close()


def test_privacy_is_blur_or_original_on_every_sink_kind() -> None:
    doc = {"sinks": [{"kind": "webhook", "id": "w", "url": "http://127.0.0.1:9/x"},
                     {"kind": "mqtt", "id": "m", "host": "127.0.0.1", "privacy": "original"}]}  # fmt: skip
    config = parse_config(doc)
    assert [s.privacy for s in config.sinks] == ["blur", "original"]
    with pytest.raises(ConfigError) as err:
        parse_config({"sinks": [{"kind": "webhook", "id": "w", "url": "http://127.0.0.1:9/x", "privacy": "faces"}]})
    assert "sinks[0]" in str(err.value) and "privacy" in str(err.value)
