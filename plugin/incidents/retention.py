"""Retention: each kind of data is kept for `storage.retention` days and then purged by a background task, so
nothing StoreSight keeps grows without bound: ended incidents (with their delivery records), evidence images,
business events, hourly rollups, the POS drop folder's done/ and rejected/ copies, and the embedded Triton's logs.
Presence (who was where, a small frame per second) lives in memory for minutes only (plugin/pipeline/presence.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import stat
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from plugin.config.service import RetentionConfig
from plugin.incidents.database import AsyncDatabase

log = logging.getLogger(__name__)

DAY_FOLDER = re.compile(r"^\d{4}-\d{2}-\d{2}$")  # evidence/<YYYY-MM-DD>/, by the incident's start (UTC)
TRITON_LOG_DAYS = 14.0  # the embedded server's logs (one per run) under storage/triton


class Retention:
    """Purges what `RetentionConfig` no longer keeps: `purge` once, `run` every `interval_h` (first at once)."""

    def __init__(
        self,
        config: RetentionConfig,
        db: AsyncDatabase,
        evidence_dir: Path,
        pos_folders: Sequence[Path] = (),
        triton_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.evidence_dir = evidence_dir
        self.pos_folders = list(pos_folders)
        self.triton_dir = triton_dir
        self.passes = 0
        self.last: dict[str, int] = {}  # what the latest pass removed, by kind
        self.error: str | None = None  # why the latest pass failed
        self.done = asyncio.Event()  # set after each pass (tests wait on it)

    def _cutoff(self, now: datetime, days: float) -> datetime | None:
        return None if days <= 0 else now - timedelta(days=days)

    async def purge(self, now: datetime | None = None) -> dict[str, int]:
        """One pass: rows first (one transaction), then the files whose rows no longer name them."""
        now = now or datetime.now(UTC)
        c = self.config
        incidents = self._cutoff(now, c.incidents_days)
        evidence = self._cutoff(now, c.evidence_days)
        if evidence is not None:  # whole days: evidence is filed in folders by the incident's start day (UTC)
            evidence = evidence.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        events = self._cutoff(now, c.business_events_days)
        rollups = self._cutoff(now, c.rollups_days)

        def iso(t: datetime | None) -> str | None:
            return None if t is None else t.isoformat()

        gone = await self.db.call(self.db.sync.purge, iso(incidents), iso(evidence), iso(events), iso(rollups))
        if evidence is not None:
            gone["evidence_files"] = await asyncio.to_thread(self._purge_evidence, evidence)
        pos = self._cutoff(now, c.pos_files_days)
        if pos is not None:
            gone["pos_files"] = await asyncio.to_thread(self._purge_old_files, self.pos_folders, pos, "*")
        if self.triton_dir is not None:
            logs = now - timedelta(days=TRITON_LOG_DAYS)
            gone["triton_logs"] = await asyncio.to_thread(
                self._purge_old_files, [self.triton_dir], logs, "tritonserver-*.log"
            )
        return gone

    def _purge_evidence(self, before: datetime) -> int:
        """Remove the evidence day folders before the cutoff (a midnight UTC: a folder holds the incidents that
        started that UTC day)."""
        if not self.evidence_dir.is_dir():
            return 0
        first_kept = before.astimezone(UTC).strftime("%Y-%m-%d")
        removed = 0
        for day in sorted(self.evidence_dir.iterdir()):
            if not DAY_FOLDER.match(day.name) or day.name >= first_kept or day.is_symlink() or not day.is_dir():
                continue
            removed += sum(1 for f in day.iterdir() if f.is_file())
            shutil.rmtree(day)
        return removed

    def _purge_old_files(self, folders: Sequence[Path], before: datetime, pattern: str) -> int:
        """Remove regular files (never what a link points to) last changed before the cutoff."""
        limit = before.timestamp()
        removed = 0
        for folder in folders:
            if not folder.is_dir():
                continue
            for f in folder.glob(pattern):
                try:
                    st = f.lstat()
                    if stat.S_ISREG(st.st_mode) and st.st_mtime < limit:
                        os.unlink(f)
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed

    async def run(self) -> None:
        """Purge now and then every `interval_h`, until cancelled; a failed pass is logged and tried next time."""
        while True:
            t0 = time.monotonic()
            try:
                gone = await self.purge()
            except Exception as exc:  # the database busy or failing, a file system error: next time
                self.error = f"{type(exc).__name__}: {exc}"
                log.error("retention: purge failed, tried again in %.1f h: %s", self.config.interval_h, exc)
            else:
                self.error, self.last = None, gone
                removed = {k: v for k, v in gone.items() if v}
                if removed:
                    log.info("retention: purged %s in %.2f s", removed, time.monotonic() - t0)
            self.passes += 1
            self.done.set()
            await asyncio.sleep(self.config.interval_h * 3600.0)
            self.done.clear()
