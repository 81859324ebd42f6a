"""The POSLog drop folder takes regular files only: a symbolic link (here to the API token, which an older version
copied into rejected/) and a FIFO are rejected unread and removed, the link's target untouched; a good file beside
them is taken as before."""

from __future__ import annotations

import os
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from adapters.business.pos.poslog import PosLogDropFolder, PosLogReader
from plugin.config.pos import PosConfig, PosFileDropConfig
from plugin.fusion.hub import BusinessHub
from plugin.fusion.pos.service import PosService
from plugin.incidents.database import AsyncDatabase
from plugin.pipeline.presence import PresenceLog

pytestmark = [pytest.mark.pos]

SECRET = "api-token-0123456789abcdef"
GOOD = """<POSLog xmlns="http://www.nrf-arts.org/IXRetail/namespace/"><Transaction>
  <WorkstationID>3</WorkstationID><SequenceNumber>42</SequenceNumber>
  <EndDateTime>2026-11-29T14:00:40</EndDateTime><ControlTransaction><NoSale/></ControlTransaction>
</Transaction></POSLog>"""


async def test_links_and_fifos_are_rejected_unread(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    token = data / "api_token"
    token.write_text(SECRET)
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "a-link.xml").symlink_to(token)
    (drop / "b-dangling.xml").symlink_to(tmp_path / "nowhere")
    os.mkfifo(drop / "c-fifo.xml")  # reading it would wait for a writer forever
    (drop / "d-good.xml").write_text(GOOD)
    (drop / "e-folder.xml").mkdir()  # a folder that matches the pattern is left alone
    database = AsyncDatabase(tmp_path / "db.sqlite")
    config = PosConfig(file_drop=PosFileDropConfig(path=drop, settle_s=0))
    service = PosService(config, "store-42", "UTC", BusinessHub(database), PresenceLog(), None)
    assert config.file_drop is not None
    folder = PosLogDropFolder(config.file_drop, service, PosLogReader(config, ZoneInfo("UTC")))
    try:
        taken = await folder.scan()
        rows = await database.call(database.sync.business_events, "2000", "2100", "pos.transaction")
    finally:
        await service.close()
        await database.close()
    assert sorted(p.name for p in taken) == ["a-link.xml", "b-dangling.xml", "c-fifo.xml", "d-good.xml"]
    assert [r["payload"]["id"] for r in rows] == ["42"]
    assert sorted(p.name for p in drop.iterdir()) == ["done", "e-folder.xml", "rejected"]
    rejected = {p.name: p.read_text() for p in (drop / "rejected").iterdir()}
    assert sorted(rejected) == ["a-link.xml.reason", "b-dangling.xml.reason", "c-fifo.xml.reason"]
    assert rejected["a-link.xml.reason"].startswith("a symbolic link: only regular files are taken, unread")
    assert rejected["c-fifo.xml.reason"].startswith("not a regular file")
    everything = "".join(p.read_text() for p in (drop / "rejected").iterdir())
    everything += "".join(p.read_text() for p in (drop / "done").iterdir())
    assert SECRET not in everything
    assert token.read_text() == SECRET  # the link's target is left alone
    assert folder.failed == 3 and folder.processed == 1
