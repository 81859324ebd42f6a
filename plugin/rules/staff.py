"""Staff handling: a track whose first confirmed sighting is in one of the camera's staff zones is staff, and the
rules that ask for it (`exclude_staff`) are fed an observation without staff.

Done once per frame in the pipeline rather than inside each rule, so every customer rule (loitering, intrusion,
journeys, queues) agrees on who is staff and stays unaware of it. The price is that the decision is only as good as
the track: an employee whose track is lost on the shop floor comes back as a new id, a customer; a customer whose
track is born inside a staff zone is staff for as long as that track lives. So a staff zone must be a place where
customers never appear first (a stockroom door, behind the till), not the shop floor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

import numpy as np

from plugin.rules.base import Observation

FORGET_AFTER_S = 60.0  # the tracker drops a track after 1.5 s unseen and never reuses its id: a minute is ample


class StaffFilter:
    """Remembers which tracks are staff; hands customer rules the observation without them."""

    def __init__(self, staff_zones: Sequence[str]) -> None:
        self.zones = tuple(staff_zones)
        self._last_seen: dict[int, datetime] = {}
        self._staff: set[int] = set()

    def is_staff(self, track_id: int) -> bool:
        """Whether this (live) track started in a staff zone."""
        return track_id in self._staff

    def customers(self, obs: Observation) -> Observation:
        """Classify tracks seen for the first time; the observation without staff (the same one when none)."""
        dets = obs.detections
        if not self.zones or dets.track_ids is None:
            return obs
        ids = dets.track_ids
        in_staff_zone = np.zeros(len(dets), bool)
        for zone in self.zones:
            in_staff_zone |= obs.inside.get(zone, np.zeros(len(dets), bool))
        for i, tid in enumerate(ids.tolist()):
            if tid not in self._last_seen and in_staff_zone[i]:
                self._staff.add(tid)
            self._last_seen[tid] = obs.t
        for tid, seen in list(self._last_seen.items()):
            if (obs.t - seen).total_seconds() > FORGET_AFTER_S:
                del self._last_seen[tid]
                self._staff.discard(tid)
        keep = ~np.isin(ids, np.fromiter(self._staff, np.int64, len(self._staff)))
        if keep.all():
            return obs
        return replace(obs, detections=dets[keep], inside={z: m[keep] for z, m in obs.inside.items()})
