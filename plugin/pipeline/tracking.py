"""ByteTrack-style multi-object tracker: constant-velocity Kalman filter, IoU association, pure numpy.

The algorithm follows ByteTrack (Zhang et al., 2022): confident detections are associated first, and
low-score detections are then used only to extend tracks that were visible on the previous update, because
a low score is usually a partly occluded person rather than a false positive. Unlike the reference
implementation, time is measured in seconds of media time, so irregular frame rates and dropped frames are
handled by predicting over the real elapsed time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from plugin.types import Detections

F64Array = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]

# ByteTrack's noise constants are tuned per frame at roughly 30 fps; we keep that tuning and rescale it to the
# actual elapsed time so the filter behaves the same at 5 fps, 30 fps or across a dropped-frame gap.
_REF_DT = 1.0 / 30.0
# Standard deviations as a fraction of the box size: position per measurement, velocity per reference frame.
_STD_POS = 1.0 / 20.0
_STD_VEL = 1.0 / 160.0
# Predicted boxes are kept at least this big so IoU and noise terms stay well defined.
_MIN_SIZE = 1.0
_STATE_DIM = 8  # cx, cy, w, h and their velocities (pixels, pixels per second)


@dataclass(frozen=True)
class TrackerConfig:
    """Thresholds and lifetimes for :class:`Tracker`."""

    high_thresh: float = 0.5  # detections at or above: first association, may start tracks
    low_thresh: float = 0.1  # detections in [low, high): second association only, never start tracks
    match_iou: float = 0.3  # min IoU to associate confident detections
    low_match_iou: float = 0.5  # stricter min IoU for low-score detections, as in ByteTrack
    min_hits: int = 3  # consecutive hits before a track is confirmed; unconfirmed tracks are never output
    max_age_s: float = 1.5  # tracks unseen for longer than this (media seconds) are dropped

    def __post_init__(self) -> None:
        if not 0.0 <= self.low_thresh <= self.high_thresh <= 1.0:
            raise ValueError(f"need 0 <= low_thresh <= high_thresh <= 1, got {self.low_thresh}, {self.high_thresh}")
        for name in ("match_iou", "low_match_iou"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if self.min_hits < 1:
            raise ValueError(f"min_hits must be >= 1, got {self.min_hits}")
        if not self.max_age_s >= 0.0:
            raise ValueError(f"max_age_s must be >= 0, got {self.max_age_s}")


@dataclass(frozen=True)
class TrackActivity:
    """What a motion gate asks the tracker: how fast each confirmed, visible track moves, and how many tracks are
    not settled (tentative, or lost and being searched for)."""

    speeds: F64Array  # person heights per second (Kalman velocity / box height), one per confirmed visible track
    uncertain: int


# --- box geometry -------------------------------------------------------------------------------------------


def _xyxy_to_cxcywh(xyxy: F64Array) -> F64Array:
    """Corner boxes (N, 4) to centre/size boxes (N, 4)."""
    wh = xyxy[:, 2:] - xyxy[:, :2]
    return np.concatenate([xyxy[:, :2] + wh / 2.0, wh], axis=1)


def _cxcywh_to_xyxy(cxcywh: F64Array) -> F64Array:
    """Centre/size boxes (N, 4) to corner boxes (N, 4)."""
    half = cxcywh[:, 2:] / 2.0
    return np.concatenate([cxcywh[:, :2] - half, cxcywh[:, :2] + half], axis=1)


def iou_matrix(a: F64Array, b: F64Array) -> F64Array:
    """Pairwise IoU of corner boxes a (N, 4) and b (M, 4), shape (N, M)."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter_wh = np.clip(bottom_right - top_left, 0.0, None)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    # the floor only matters for degenerate boxes, which would otherwise divide by zero
    result: F64Array = inter / np.maximum(union, 1e-9)
    return result


# --- assignment ---------------------------------------------------------------------------------------------


def greedy_assign(iou: F64Array, min_iou: float) -> tuple[IndexArray, IndexArray]:
    """Match rows to columns greedily by descending IoU, ignoring pairs below min_iou; returns (rows, cols)."""
    rows, cols = np.nonzero(iou >= min_iou)
    # Candidate pairs are sparse (people overlap few others), so only they are sorted and walked in Python.
    # A stable sort makes ties resolve by index order, keeping results deterministic.
    order = np.argsort(-iou[rows, cols], kind="stable")
    row_taken = np.zeros(iou.shape[0], dtype=bool)
    col_taken = np.zeros(iou.shape[1], dtype=bool)
    out_rows: list[int] = []
    out_cols: list[int] = []
    for r, c in zip(rows[order].tolist(), cols[order].tolist(), strict=True):
        if row_taken[r] or col_taken[c]:
            continue
        row_taken[r] = col_taken[c] = True
        out_rows.append(r)
        out_cols.append(c)
    return np.asarray(out_rows, dtype=np.intp), np.asarray(out_cols, dtype=np.intp)


# --- Kalman filter (batched over tracks) --------------------------------------------------------------------


def _size_scale(mean: F64Array) -> F64Array:
    """Per-coordinate noise scale (w, h, w, h) of each state, shape (N, 4)."""
    wh = np.maximum(mean[:, 2:4], _MIN_SIZE)
    return np.concatenate([wh, wh], axis=1)


def _diag(variances: F64Array) -> F64Array:
    """Stack of diagonal matrices (N, D, D) from variances (N, D)."""
    dim = variances.shape[1]
    result: F64Array = variances[:, :, None] * np.eye(dim)
    return result


def kalman_initiate(xyxy: F64Array) -> tuple[F64Array, F64Array]:
    """Initial state mean (N, 8) and covariance (N, 8, 8) for new tracks: at rest, uncertain velocity."""
    n = len(xyxy)
    mean = np.zeros((n, _STATE_DIM))
    mean[:, :4] = _xyxy_to_cxcywh(xyxy)
    scale = _size_scale(mean)
    std = np.concatenate([2.0 * _STD_POS * scale, 10.0 * (_STD_VEL / _REF_DT) * scale], axis=1)
    return mean, _diag(std**2)


def kalman_predict(mean: F64Array, cov: F64Array, dt: float) -> tuple[F64Array, F64Array]:
    """Propagate states by dt seconds with a constant-velocity model."""
    transition = np.eye(_STATE_DIM)
    transition[:4, 4:] = dt * np.eye(4)
    # Process noise is a random walk, so its variance grows linearly with elapsed time.
    steps = dt / _REF_DT
    scale = _size_scale(mean)
    q_std = np.concatenate([_STD_POS * scale, (_STD_VEL / _REF_DT) * scale], axis=1)
    new_mean = mean @ transition.T
    new_mean[:, 2:4] = np.maximum(new_mean[:, 2:4], _MIN_SIZE)
    new_cov = transition @ cov @ transition.T + _diag(q_std**2 * steps)
    return new_mean, new_cov


def kalman_correct(mean: F64Array, cov: F64Array, measured_xyxy: F64Array) -> tuple[F64Array, F64Array]:
    """Fuse measured boxes (N, 4) into states; the measurement is the first four state entries."""
    measurement_var = (_STD_POS * _size_scale(mean)) ** 2
    innovation_cov = cov[:, :4, :4] + _diag(measurement_var)
    cross_cov = cov[:, :, :4]  # P H^T
    # K = P H^T S^-1, computed with a solve rather than an explicit inverse (S is symmetric).
    gain = np.linalg.solve(innovation_cov, cross_cov.transpose(0, 2, 1)).transpose(0, 2, 1)
    innovation = _xyxy_to_cxcywh(measured_xyxy) - mean[:, :4]
    new_mean = mean + (gain @ innovation[:, :, None])[:, :, 0]
    new_cov = cov - gain @ innovation_cov @ gain.transpose(0, 2, 1)
    return new_mean, new_cov


# --- track storage ------------------------------------------------------------------------------------------


@dataclass
class _Tracks:
    """All live tracks as parallel arrays, so prediction and association are vectorised."""

    mean: F64Array
    cov: F64Array
    ids: npt.NDArray[np.int64]
    hits: npt.NDArray[np.int64]
    last_seen: F64Array
    confirmed: BoolArray
    lost: BoolArray  # confirmed but unmatched on the latest update

    @classmethod
    def empty(cls) -> _Tracks:
        """No tracks."""
        return cls.start(np.zeros((0, 4)), np.zeros((0,), np.int64), t=0.0, confirmed=False)

    @classmethod
    def start(cls, xyxy: F64Array, ids: npt.NDArray[np.int64], t: float, confirmed: bool) -> _Tracks:
        """New tracks born from boxes at time t."""
        n = len(xyxy)
        mean, cov = kalman_initiate(xyxy)
        return cls(
            mean=mean,
            cov=cov,
            ids=ids,
            hits=np.ones(n, np.int64),
            last_seen=np.full(n, t),
            confirmed=np.full(n, confirmed),
            lost=np.zeros(n, bool),
        )

    def __len__(self) -> int:
        return len(self.ids)

    def keep(self, mask: BoolArray) -> None:
        """Drop every track where mask is False."""
        self.mean, self.cov, self.ids = self.mean[mask], self.cov[mask], self.ids[mask]
        self.hits, self.last_seen = self.hits[mask], self.last_seen[mask]
        self.confirmed, self.lost = self.confirmed[mask], self.lost[mask]

    def extend(self, other: _Tracks) -> None:
        """Append other's tracks."""
        self.mean = np.concatenate([self.mean, other.mean])
        self.cov = np.concatenate([self.cov, other.cov])
        self.ids = np.concatenate([self.ids, other.ids])
        self.hits = np.concatenate([self.hits, other.hits])
        self.last_seen = np.concatenate([self.last_seen, other.last_seen])
        self.confirmed = np.concatenate([self.confirmed, other.confirmed])
        self.lost = np.concatenate([self.lost, other.lost])

    def predict(self, dt: float) -> None:
        """Move every track forward by dt seconds."""
        # As in ByteTrack, a track we cannot see stops changing size; extrapolating growth through an occlusion
        # makes boxes balloon or vanish and then never match again.
        self.mean[self.lost, 6:8] = 0.0
        self.mean, self.cov = kalman_predict(self.mean, self.cov, dt)

    def boxes(self) -> F64Array:
        """Predicted corner boxes (N, 4)."""
        return _cxcywh_to_xyxy(self.mean[:, :4])

    def correct(self, idx: IndexArray, xyxy: F64Array, t: float, min_hits: int) -> None:
        """Apply matched detection boxes to tracks idx at time t."""
        self.mean[idx], self.cov[idx] = kalman_correct(self.mean[idx], self.cov[idx], xyxy)
        self.hits[idx] += 1
        self.last_seen[idx] = t
        self.lost[idx] = False
        self.confirmed[idx] |= self.hits[idx] >= min_hits


def _without(indices: IndexArray, drop: IndexArray, size: int) -> IndexArray:
    """`indices` (sorted, unique, each < size) less those in `drop`, in order: np.setdiff1d's result for index
    arrays, without its sorting (a tracker update makes three of these on a handful of indices)."""
    dropped = np.zeros(size, dtype=bool)
    dropped[drop] = True
    return indices[~dropped[indices]]


def _match(
    predicted: F64Array, boxes: F64Array, track_idx: IndexArray, det_idx: IndexArray, min_iou: float
) -> tuple[IndexArray, IndexArray]:
    """Associate a subset of tracks with a subset of detections; returns global (track, detection) indices."""
    iou = iou_matrix(predicted[track_idx], boxes[det_idx])
    rows, cols = greedy_assign(iou, min_iou)
    return track_idx[rows], det_idx[cols]


# --- tracker ------------------------------------------------------------------------------------------------


class Tracker:
    """ByteTrack-style tracker over media time; assigns stable, never-reused ids (starting at 1) to detections."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config if config is not None else TrackerConfig()
        self._tracks = _Tracks.empty()
        self._last_t: float | None = None
        self._next_id = 1

    def reset(self) -> None:
        """Forget all tracks; ids keep increasing so downstream state keyed by id is never confused."""
        self._tracks = _Tracks.empty()
        self._last_t = None

    def update(self, detections: Detections, t: float) -> Detections:
        """Track detections captured at media time t (seconds); return those on confirmed tracks, with track ids."""
        cfg = self.config
        dt = self._advance_clock(t)
        tracks = self._tracks
        tracks.keep(t - tracks.last_seen <= cfg.max_age_s)
        tracks.predict(dt)

        boxes = detections.xyxy.astype(np.float64)
        high, low = self._split(detections, boxes)
        predicted = tracks.boxes()
        confirmed = np.flatnonzero(tracks.confirmed)
        tentative = np.flatnonzero(~tracks.confirmed)

        # Stage 1: confident detections against all confirmed tracks, lost ones included, so a person re-appearing
        # after an occlusion is re-associated by predicted motion.
        t1, d1 = _match(predicted, boxes, confirmed, high, cfg.match_iou)
        # Stage 2: low-score detections may only extend tracks visible on the previous update; on their own they are
        # too unreliable to revive lost tracks or start new ones.
        visible = _without(confirmed[~tracks.lost[confirmed]], t1, len(tracks))
        t2, d2 = _match(predicted, boxes, visible, low, cfg.low_match_iou)
        # Stage 3: tentative tracks only get what established tracks left over, so noise cannot steal a person.
        leftover_high = _without(high, d1, len(boxes))
        t3, d3 = _match(predicted, boxes, tentative, leftover_high, cfg.match_iou)

        matched_tracks = np.concatenate([t1, t2, t3])
        matched_dets = np.concatenate([d1, d2, d3])
        tracks.correct(matched_tracks, boxes[matched_dets], t, cfg.min_hits)
        shown = tracks.confirmed[matched_tracks]
        out_dets = [matched_dets[shown]]
        out_ids = [tracks.ids[matched_tracks[shown]]]

        unmatched = np.ones(len(tracks), dtype=bool)
        unmatched[matched_tracks] = False
        tracks.lost |= unmatched & tracks.confirmed
        # A tentative track must be hit on consecutive updates; one miss and it was probably noise.
        tracks.keep(~(unmatched & ~tracks.confirmed))

        born = _without(leftover_high, d3, len(boxes))
        born_ids = np.arange(self._next_id, self._next_id + len(born), dtype=np.int64)
        self._next_id += len(born)
        born_confirmed = cfg.min_hits <= 1
        if len(born):
            tracks.extend(_Tracks.start(boxes[born], born_ids, t, confirmed=born_confirmed))
        if born_confirmed:
            out_dets.append(born)
            out_ids.append(born_ids)

        return self._output(detections, np.concatenate(out_dets), np.concatenate(out_ids))

    def activity(self) -> TrackActivity:
        """Speeds of the confirmed visible tracks and the count of unsettled ones, as of the last update."""
        tracks = self._tracks
        visible = tracks.confirmed & ~tracks.lost
        mean = tracks.mean[visible]
        speeds: F64Array = np.hypot(mean[:, 4], mean[:, 5]) / np.maximum(mean[:, 3], _MIN_SIZE)
        return TrackActivity(speeds, int(len(tracks) - visible.sum()))

    def hold(self, t: float) -> None:
        """A frame without detection because nothing moved (motion gating): the tracks seen on the last update are
        taken as still there at t, so they do not age out; nothing moves and the Kalman clock stays, so the next
        update predicts over the whole gap."""
        if self._last_t is None or t < self._last_t:
            return
        seen = ~self._tracks.lost
        self._tracks.last_seen[seen] = t

    def _advance_clock(self, t: float) -> float:
        """Seconds since the previous update; a clock running backwards means a new stream, so start over."""
        if not math.isfinite(t):
            raise ValueError(f"t must be finite, got {t}")
        if self._last_t is not None and t < self._last_t:
            self.reset()
        dt = 0.0 if self._last_t is None else t - self._last_t
        self._last_t = t
        return dt

    def _split(self, detections: Detections, boxes: F64Array) -> tuple[IndexArray, IndexArray]:
        """Indices of usable high-score and low-score detections."""
        # Degenerate or non-finite boxes would make the Kalman measurement noise zero or NaN.
        valid = np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        scores = detections.scores
        high = np.flatnonzero(valid & (scores >= self.config.high_thresh))
        low = np.flatnonzero(valid & (scores >= self.config.low_thresh) & (scores < self.config.high_thresh))
        return high, low

    @staticmethod
    def _output(detections: Detections, det_idx: IndexArray, ids: npt.NDArray[np.int64]) -> Detections:
        """Selected detections in input order, with their track ids."""
        order = np.argsort(det_idx, kind="stable")
        return detections[det_idx[order]].with_track_ids(ids[order].astype(np.int32))
