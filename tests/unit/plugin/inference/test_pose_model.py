"""MoveNet on the real tritonserver: a real person crop from the clip gives a plausible standing pose."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import frame_300, real_pose

from plugin.inference.pose import (
    L_ANKLE,
    L_HIP,
    L_SHOULDER,
    NOSE,
    R_ANKLE,
    R_HIP,
    R_SHOULDER,
    CropWindow,
    crop_person,
)
from plugin.inference.server import EmbeddedTriton

pytestmark = pytest.mark.triton


async def test_real_person_crop_gives_a_standing_pose(triton: EmbeddedTriton, clip: Path) -> None:
    img = frame_300(clip)
    box, kp, pose = await real_pose(triton, img)
    try:
        assert kp.shape == (17, 3) and kp.dtype == np.float32
        x1, y1, x2, y2 = box
        # the body's main joints are found with confidence, inside (a margin around) the person's box
        for j in (NOSE, L_SHOULDER, R_SHOULDER, L_HIP, R_HIP):
            assert kp[j, 2] > 0.3, (j, kp[j])
        confident = kp[kp[:, 2] > 0.3]
        assert len(confident) >= 12
        pad = 0.15 * (y2 - y1)
        assert np.all((confident[:, 0] > x1 - pad) & (confident[:, 0] < x2 + pad))
        assert np.all((confident[:, 1] > y1 - pad) & (confident[:, 1] < y2 + pad))
        # standing: head above shoulders above hips above ankles (image y grows downwards)
        shoulders = kp[[L_SHOULDER, R_SHOULDER], 1].mean()
        hips = kp[[L_HIP, R_HIP], 1].mean()
        assert kp[NOSE, 1] < shoulders < hips
        ankles = kp[[L_ANKLE, R_ANKLE]]
        visible = ankles[ankles[:, 2] > 0.2]
        if len(visible):  # the table may hide the feet in this frame
            assert np.all(visible[:, 1] > hips)
        # the same crop in a batch of three (with a blank frame in the middle) gives the same answer
        blank_box = np.asarray([0, 0, 50, 100], np.float32)
        many = await pose.estimate(img, np.stack([box, blank_box, box]))
        np.testing.assert_allclose(many[0], kp, atol=1e-4)
        np.testing.assert_allclose(many[2], kp, atol=1e-4)
        # asked again, one crop or four per request (what packaging/scripts/pose_latency.py times), the server
        # answers the same pose every time: no state carried between requests
        for _ in range(3):
            np.testing.assert_allclose((await pose.estimate(img, box[None]))[0], kp, atol=1e-4)
            for again in await pose.estimate(img, np.stack([box] * 4)):
                np.testing.assert_allclose(again, kp, atol=1e-4)
    finally:
        await pose.close()


def test_crop_is_square_padded_and_maps_back() -> None:
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, :, 2] = 255  # red in BGR
    crop, win = crop_person(img, (150, 10, 210, 90), size=192, margin=0.0)  # leaves the frame on the right
    assert crop.shape == (192, 192, 3) and crop.dtype == np.uint8
    assert crop[96, 10, 0] == 255 and crop[96, 10, 2] == 0  # RGB now: red first
    assert crop[96, 185].sum() == 0  # the part outside the frame is black padding
    assert win == CropWindow(140.0, 10.0, 80.0)
    # (y, x, score) normalised in the crop -> (x, y, score) in frame pixels
    out = win.to_frame(np.asarray([[0.5, 0.25, 0.9]], np.float32))
    np.testing.assert_allclose(out, [[160.0, 50.0, 0.9]])
