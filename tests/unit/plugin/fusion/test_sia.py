"""Alarm panels: the SIA DC-09 receiver on real loopback TCP and UDP sockets, fed by a panel-side encoder written
here from the standard's framing, and video verification of its alarms with the presence log.

The encoder is independent of the receiver (table-driven CRC, its own AES padding) and is checked against the
worked frames of INTEGRATIONS.md 8.1 and against pysiaalarm's parser.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import random
import socket
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from Crypto.Cipher import AES
from helpers import WebhookReceiver
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pysiaalarm.account import SIAAccount
from pysiaalarm.event import SIAEvent

from adapters.business.alarm.dc09_framing import MAX_FRAME_BYTES, FrameSplitter, crc16_arc
from adapters.business.alarm.sia_dc09 import SiaDc09Receiver, classify
from plugin.app import build_app
from plugin.config.loader import parse_config
from plugin.errors import ConfigError
from plugin.fusion.alarms import AlarmVerifier, PanelStates
from plugin.fusion.hub import BusinessHub
from plugin.incidents.database import AsyncDatabase
from plugin.incidents.explain import Explainer
from plugin.incidents.manager import IncidentManager
from plugin.inference.server import free_port
from plugin.pipeline.presence import PresenceLog
from plugin.rules.base import Observation, RuleContext, RuleHit
from plugin.rules.registry import build_rule
from plugin.types import BusinessEvent, Detections, Frame
from plugin.web.keys import DATABASE

pytestmark = pytest.mark.alarm

T0 = datetime(2026, 11, 29, 22, 30, 0, tzinfo=UTC)
KEY_HEX = "000102030405060708090A0B0C0D0E0F"  # AES-128, written in hex (key_format: hex)
KEY_TEXT = "ABCDEF0123456789ABCDEF01"  # 24 characters used as the AES-192 key bytes (key_format: text)
ZONE = [[0.0, 0.5], [0.5, 0.5], [0.5, 1.0], [0.0, 1.0]]


# -- the panel side: a DC-09 encoder written from the standard ------------------------------------------------------


def crc16(data: bytes) -> int:
    """CRC-16/ARC bit by bit, independent of the receiver's table (adapters/business/alarm/dc09_framing.py)."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def test_the_frame_check_is_crc16_arc() -> None:
    assert crc16(b"123456789") == crc16_arc(b"123456789") == 0xBB3D  # the catalogue's check value


def stamp(t: datetime) -> str:
    return t.astimezone(UTC).strftime("_%H:%M:%S,%m-%d-%Y")


def dc09(
    token: str,
    seq: int,
    data: str,
    *,
    account: str | None = "1234",
    receiver: str | None = "1",
    line: str = "1",
    at: datetime | None = None,
    key: bytes | None = None,
    crc: int | None = None,
    length: int | None = None,
    pad_rng: random.Random | None = None,
) -> bytes:
    """One frame as a panel sends it: LF, CRC, 0LLL, "id", seq, Rrcvr, Lline, #acct, [data], timestamp, CR.
    With a key, the part after '[' is AES-CBC (zero IV) of random pad + '|' + data + ']' + timestamp, in hex."""
    route = (f"R{receiver}" if receiver else "") + f"L{line}"
    acct = f"#{account}" if account else ""
    ts = stamp(at) if at else ""
    if key is None:
        body = f'"{token}"{seq:04d}{route}{acct}[{data}]{ts}'
    else:
        plain = f"|{data}]{ts}"
        rng = pad_rng or random.Random()
        allowed = [c for c in map(chr, range(0x21, 0x7F)) if c not in "|[]"]
        pad = "".join(rng.choice(allowed) for _ in range(16 - len(plain) % 16))
        sealed = AES.new(key, AES.MODE_CBC, iv=bytes(16)).encrypt((pad + plain).encode("ascii"))
        body = f'"*{token}"{seq:04d}{route}{acct}[{sealed.hex().upper()}'
    raw = body.encode("ascii")
    head = f"{crc16(raw) if crc is None else crc:04X}{len(raw) if length is None else length:04X}"
    return b"\n" + head.encode("ascii") + raw + b"\r"


def sia(seq: int, code: str, zone: str = "15", area: str = "1", **kw: Any) -> bytes:
    """A SIA DC-03 event ("Nri1/BA15")."""
    account = kw.get("account", "1234")
    data = f"Nri{area}/{code}{zone}" if kw.get("key") else f"#{account}|Nri{area}/{code}{zone}"
    return dc09("SIA-DCS", seq, data, **kw)


def cid(seq: int, event: str, partition: str = "01", zone: str = "015", **kw: Any) -> bytes:
    """A Contact ID event ("1130 01 015": new burglary, partition 1, zone 15)."""
    account = kw.get("account", "1234")
    data = f"{event} {partition} {zone}" if kw.get("key") else f"#{account}|{event} {partition} {zone}"
    return dc09("ADM-CID", seq, data, **kw)


@dataclass(frozen=True)
class Reply:
    raw: bytes
    token: str
    body: str

    @property
    def timestamp(self) -> str:
        return self.body[self.body.rindex("]") + 1 :]


def parse_reply(raw: bytes) -> Reply:
    """Check a receiver answer's framing (LF, CRC, length, CR) and return its token."""
    assert raw[:1] == b"\n" and raw[-1:] == b"\r", raw
    text = raw[1:-1].decode("ascii")
    body = text[8:]
    assert int(text[:4], 16) == crc16(body.encode()), f"bad CRC in answer {raw!r}"
    assert int(text[4:8], 16) == len(body), f"bad length in answer {raw!r}"
    return Reply(raw, body[1 : body.index('"', 1)], body)


def open_ack(reply: Reply, key: bytes) -> str:
    """Decrypt an encrypted ACK's data: it must end with ']' and the receiver's timestamp."""
    sealed = bytes.fromhex(reply.body[reply.body.index("[") + 1 :])
    return AES.new(key, AES.MODE_CBC, iv=bytes(16)).decrypt(sealed).decode("ascii")


# -- the encoder against the standard's worked frames and against pysiaalarm ----------------------------------------


def test_encoder_matches_the_worked_frames() -> None:
    at = datetime(2024, 9, 25, 14, 12, 4, tzinfo=UTC)
    assert sia(1, "BA", "01", at=at) == b'\n2372003B"SIA-DCS"0001R1L1#1234[#1234|Nri1/BA01]_14:12:04,09-25-2024\r'
    assert cid(2, "1130", at=at + timedelta(seconds=1)) == (
        b'\nA985003D"ADM-CID"0002R1L1#1234[#1234|1130 01 015]_14:12:05,09-25-2024\r'
    )
    # pysiaalarm's own test vector: CRC 5715 is right, the length (0x47) is written in decimal
    assert crc16(b'"ADM-CID"0247R4F39L4F39#4F39[#4F39|3401 01 057]') == 0x5715


def test_encoder_agrees_with_pysiaalarm() -> None:
    plain = SIAEvent.from_line(sia(7, "BA", "15", at=T0)[1:-1].decode(), {"1234": SIAAccount("1234")})
    assert plain.valid_message and plain.code == "BA" and plain.message == "15" and plain.timestamp == T0
    account = SIAAccount("5678", allowed_timeband=None)
    account.key_b = bytes.fromhex(KEY_HEX)
    sealed = SIAEvent.from_line(cid(8, "1130", account="5678", key=account.key_b, at=T0)[1:-1].decode(),
                                {"5678": account})  # fmt: skip
    assert sealed.valid_message and sealed.code == "BA" and sealed.ri == "015" and sealed.timestamp == T0


# -- the receiver on real sockets -----------------------------------------------------------------------------------


class Clock:
    """The receiver's clock, set by the test."""

    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


def config_doc(port: int) -> dict[str, Any]:
    return {
        "site": {"id": "store-042"},
        "cameras": [
            {
                "id": "cam1",
                "source": "cam1.mp4",
                "zones": [{"id": "stockroom-door", "polygon": ZONE}, {"id": "till", "polygon": ZONE}],
            },
            {"id": "cam2", "source": "cam2.mp4", "zones": [{"id": "backdoor", "polygon": ZONE}]},
        ],
        "rules": [
            {
                "id": "after-hours",
                "type": "zone_intrusion",
                "camera": "cam1",
                "zone": "stockroom-door",
                "armed_by": "shop-panel",
            },
        ],
        "alarm_panels": [
            {
                "id": "shop-panel",
                "protocol": "sia_dc09",
                "port": port,
                "accounts": [
                    {
                        "account": "1234",
                        "zone_map": {
                            "15": {"camera": "cam1", "zone": "stockroom-door"},
                            "016": [{"camera": "cam2", "zone": "backdoor"}],
                            "17": [{"camera": "cam1", "zone": "till"}, {"camera": "cam2", "zone": "backdoor"}],
                        },
                    },
                    {"account": "5678", "key": KEY_HEX, "zone_map": {"15": {"camera": "cam1", "zone": "till"}}},
                    {"account": "ABC", "key": KEY_TEXT, "key_format": "text", "site": "store-043"},
                    {"account": "4F39"},
                ],
            }
        ],
    }


async def send_tcp(port: int, *data: bytes, replies: int | None = None, pause_s: float = 0.0) -> list[Reply]:
    """A panel on one TCP connection: write each chunk (pausing between), then read `replies` answers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for i, chunk in enumerate(data):
            if i and pause_s:
                await asyncio.sleep(pause_s)
            writer.write(chunk)
            await writer.drain()
        out = []
        for _ in range(len(data) if replies is None else replies):
            out.append(parse_reply(await asyncio.wait_for(reader.readuntil(b"\r"), 5)))
        return out
    finally:
        writer.close()
        await writer.wait_closed()


@dataclass
class Rig:
    """A real store, hub, presence log, incident manager, verifier and receiver on a loopback port."""

    database: AsyncDatabase
    hub: BusinessHub
    receiver: SiaDc09Receiver
    verifier: AlarmVerifier
    presence: PresenceLog
    panels: PanelStates
    clock: Clock
    port: int

    async def send(self, *data: bytes, replies: int | None = None, pause_s: float = 0.0) -> list[Reply]:
        """Write each chunk on one TCP connection (pausing between), then read `replies` answers."""
        return await send_tcp(self.port, *data, replies=replies, pause_s=pause_s)

    async def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return await self.database.call(self.database.sync.business_events, "2000", "2100", kind)

    async def incidents(self, count: int, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        """The stored incidents (newest first) once there are `count` of them."""
        rows: list[dict[str, Any]] = []
        for _ in range(int(timeout_s / 0.05)):
            rows = await self.database.call(self.database.sync.incidents)
            if len(rows) >= count:
                return rows
            await asyncio.sleep(0.05)
        raise AssertionError(f"{len(rows)} incidents, expected {count}: {rows}")


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    port = free_port()
    config = parse_config(config_doc(port))
    database = AsyncDatabase(tmp_path / "db.sqlite")
    hub = BusinessHub(database)
    presence = PresenceLog()
    incidents = IncidentManager(database, tmp_path / "evidence", Explainer("UTC"), [])
    panels = PanelStates()
    clock = Clock(T0)
    # the verifier's clock is an hour on: every alarm's window has passed, so it judges at once
    verifier = AlarmVerifier(
        config.alarm_panels,
        config.cameras,
        presence,
        incidents,
        panels,
        now=lambda: clock() + timedelta(hours=1),
        video_lag_max_s=0.0,
    )
    hub.subscribe(verifier.on_event)
    receiver = SiaDc09Receiver(config.alarm_panels[0], hub, config.site.id, now=clock)
    await receiver.start()
    try:
        yield Rig(database, hub, receiver, verifier, presence, panels, clock, port)
    finally:
        await receiver.close()
        await verifier.close()
        await database.close()


async def test_alarm_is_acknowledged_only_once_stored(rig: Rig) -> None:
    [ack] = await rig.send(sia(1, "BA", "15", at=T0))
    assert ack.raw == b'\nD2770014"ACK"0001R1L1#1234[]\r'  # the worked ACK of INTEGRATIONS.md 8.1
    # the ACK has been read: the event must already be committed
    [row] = await rig.events()
    assert row["kind"] == "alarm.burglary" and row["source"] == "shop-panel" and row["site"] == "store-042"
    p = row["payload"]
    assert (p["account"], p["zone"], p["area"], p["code"], p["sequence"]) == ("1234", "15", "1", "BA", "0001")
    assert p["panel_time"] == T0.isoformat() and p["transport"] == "tcp"


async def test_ack_waits_for_a_slow_store_and_a_failed_store_gets_no_answer(rig: Rig) -> None:
    ingest = rig.hub.ingest

    stored: list[str] = []

    async def slow(event: BusinessEvent, dedupe_key: str | None = None) -> tuple[str, bool]:
        await asyncio.sleep(0.4)  # a slow disk: an ACK sent before the store returned would arrive first
        result = await ingest(event, dedupe_key)
        stored.append(result[0])
        return result

    rig.hub.ingest = slow  # type: ignore[method-assign]
    [ack] = await rig.send(sia(2, "BA", "15", at=T0))
    # ordering, not timing: when the ACK arrives the store has already returned
    assert ack.token == "ACK" and len(stored) == 1 and len(await rig.events()) == 1

    async def broken(event: BusinessEvent, dedupe_key: str | None = None) -> tuple[str, bool]:
        raise sqlite3.OperationalError("disk I/O error")

    rig.hub.ingest = broken  # type: ignore[method-assign]
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(rig.send(sia(3, "PA", "15", at=T0)), 1.0)
    rig.hub.ingest = ingest  # the panel resends; now it is stored and acknowledged
    [ack] = await rig.send(sia(3, "PA", "15", at=T0))
    assert ack.token == "ACK" and [r["kind"] for r in await rig.events()] == ["alarm.burglary", "alarm.panic"]


@pytest.mark.parametrize(
    ("frame", "token"),
    [
        (sia(4, "BA", crc=0x1234, at=T0), "NAK"),  # wrong CRC
        (sia(4, "BA", at=T0 - timedelta(seconds=41)), "NAK"),  # older than the window
        (sia(4, "BA", at=T0 + timedelta(seconds=21)), "NAK"),  # ahead of the window
        (sia(4, "BA", at=T0 - timedelta(seconds=39)), "ACK"),
        (sia(4, "BA", at=T0 + timedelta(seconds=19)), "ACK"),
        (sia(4, "BA"), "ACK"),  # a plain frame may leave out the timestamp
        (sia(4, "BA", length=0x10, at=T0), "ACK"),  # a wrong length is tolerated
        (sia(4, "BA", account="9999", at=T0), "DUH"),  # unknown account
        (sia(4, "AQ", at=T0), "DUH"),  # a code SIA does not define
        (cid(4, "1999", at=T0), "DUH"),  # unknown Contact ID event
        (dc09("SIA-DCX", 4, "#1234|Nri1/BA15", at=T0), "DUH"),  # unsupported message type
        (sia(4, "BA", key=bytes.fromhex(KEY_HEX), at=T0), "DUH"),  # encrypted frame for a plain account
        (sia(4, "BA", account="5678", at=T0), "DUH"),  # plain frame for an encrypted account
        (sia(4, "BA", account="5678", key=bytes(16), at=T0), "NAK"),  # wrong key: cannot be decrypted
        (sia(4, "BA", account="5678", key=bytes.fromhex(KEY_HEX)), "NAK"),  # encrypted without a timestamp
        (b"\nhello panel\r", "NAK"),  # no DC-09 header
    ],
)
async def test_answers(rig: Rig, frame: bytes, token: str) -> None:
    [reply] = await rig.send(frame)
    assert reply.token == token, reply
    assert len(await rig.events()) == (1 if token == "ACK" else 0)
    if token == "NAK":  # the receiver's time, so the panel can set its clock
        assert reply.body.startswith('"NAK"0000R') and reply.timestamp == stamp(T0)
    if token == "DUH" and b"9999" not in frame:
        assert reply.body.split('"')[2].startswith("0004R1L1")  # sequence, receiver and line echoed


async def test_pipelined_frames_in_one_segment_and_a_frame_over_two_reads(rig: Rig) -> None:
    burst = sia(10, "BA", "15", at=T0) + cid(11, "1130", zone="016", at=T0) + dc09("NULL", 12, "", at=T0)
    replies = await rig.send(burst, replies=3)
    assert [r.body[:9] for r in replies] == ['"ACK"0010', '"ACK"0011', '"ACK"0012']
    whole = sia(13, "TA", "15", at=T0)
    [reply] = await rig.send(whole[:20], whole[20:], replies=1, pause_s=0.2)
    assert reply.body.startswith('"ACK"0013')
    kinds = [r["kind"] for r in await rig.events()]
    assert sorted(kinds) == ["alarm.burglary", "alarm.burglary", "alarm.tamper"]  # the NULL link test is not stored


async def test_encrypted_accounts(rig: Rig) -> None:
    key = bytes.fromhex(KEY_HEX)
    [ack] = await rig.send(cid(20, "1130", account="5678", key=key, at=T0))
    assert ack.body.startswith('"*ACK"0020R1L1#5678[')
    opened = open_ack(ack, key)
    assert opened.endswith("]" + stamp(T0)) and "|" not in opened  # pad, ']' and our timestamp
    text_key = KEY_TEXT.encode()
    [ack] = await rig.send(sia(21, "CL", "3", account="ABC", key=text_key, at=T0 + timedelta(seconds=5)))
    assert ack.token == "*ACK" and open_ack(ack, text_key).endswith(stamp(T0))
    rows = await rig.events()
    assert [(r["kind"], r["payload"]["account"], r["site"]) for r in rows] == [
        ("alarm.burglary", "5678", "store-042"), ("alarm.arm", "ABC", "store-043")
    ]  # fmt: skip
    assert rows[0]["payload"]["contact_id"] == "1130 01 015" and rows[0]["payload"]["encrypted"] is True


async def test_decimal_length_vector_from_pysiaalarm_is_accepted(rig: Rig) -> None:
    [ack] = await rig.send(b'\n57150047"ADM-CID"0247R4F39L4F39#4F39[#4F39|3401 01 057]\r')
    assert ack.body == '"ACK"0247R4F39L4F39#4F39[]'
    [row] = await rig.events()
    assert row["kind"] == "alarm.arm" and row["payload"]["user"] == "57" and row["payload"]["area"] == "1"


async def test_repeats_are_acknowledged_and_stored_once(rig: Rig) -> None:
    key = bytes.fromhex(KEY_HEX)
    first = cid(30, "1130", account="5678", key=key, at=T0)
    again = cid(30, "1130", account="5678", key=key, at=T0 + timedelta(seconds=2))  # new pad and timestamp
    assert first != again
    replies = await rig.send(first, again, sia(31, "BA", at=T0), sia(31, "BA", at=T0))
    assert [r.token for r in replies] == ["*ACK", "*ACK", "ACK", "ACK"]
    newer = sia(31, "BR", at=T0)  # the same sequence number with other content is a new report
    assert [r.token for r in await rig.send(newer)] == ["ACK"]
    assert [r["kind"] for r in await rig.events()] == ["alarm.burglary", "alarm.burglary", "alarm.restore"]
    assert rig.receiver.counts["duplicates"] == 2 and rig.hub.duplicates == 0  # caught before the store


async def test_udp(rig: Rig) -> None:
    loop = asyncio.get_running_loop()
    answers: asyncio.Queue[bytes] = asyncio.Queue()

    class Panel(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            answers.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(Panel, remote_addr=("127.0.0.1", rig.port))
    try:
        transport.sendto(sia(40, "PA", "15", at=T0))
        ack = parse_reply(await asyncio.wait_for(answers.get(), 5))
        assert ack.body.startswith('"ACK"0040') and [r["kind"] for r in await rig.events()] == ["alarm.panic"]
        transport.sendto(sia(41, "PA", crc=0, at=T0))
        assert parse_reply(await asyncio.wait_for(answers.get(), 5)).token == "NAK"
    finally:
        transport.close()
    [row] = await rig.events()
    assert row["payload"]["transport"] == "udp"


async def test_garbage_on_a_connection_is_nakked_and_the_connection_keeps_working(rig: Rig) -> None:
    noise = bytes(random.Random(5).randrange(256) for _ in range(5000)).replace(b"\r", b"")
    replies = await rig.send(noise, sia(50, "BA", at=T0), replies=1)
    assert [r.token for r in replies] == ["ACK"]  # the overlong run is dropped unanswered; the frame after it counts
    assert rig.receiver.counts["oversize"] == 1


# -- armed state -----------------------------------------------------------------------------------------------------


async def test_arm_and_disarm_set_the_armed_state_that_rules_follow(rig: Rig, tmp_path: Path) -> None:
    assert not rig.panels.armed("shop-panel", T0)
    await rig.send(cid(60, "3401", partition="02", zone="007", at=T0))  # closing by user 7, partition 2: armed
    assert rig.panels.armed("shop-panel", T0 + timedelta(seconds=1))
    assert not rig.panels.armed("shop-panel", T0 - timedelta(seconds=1))  # history: not armed before
    rig.clock.t = T0 + timedelta(minutes=5)
    await rig.send(sia(61, "OP", "7", area="2", at=rig.clock.t))  # opening: disarmed
    assert not rig.panels.armed("shop-panel", rig.clock.t + timedelta(seconds=1))
    assert rig.panels.armed("shop-panel", T0 + timedelta(minutes=2))
    # a restart replays the stored reports
    replayed = PanelStates()
    assert await replayed.load(rig.database, ["shop-panel"]) == 2
    assert replayed.armed("shop-panel", T0 + timedelta(minutes=2)) and not replayed.armed("shop-panel", rig.clock.t)

    config = parse_config(config_doc(rig.port))
    rule = build_rule(config.rules[0], RuleContext(panels=rig.panels))

    def person_at(t: datetime) -> list[RuleHit]:
        dets = Detections.from_arrays([[10, 10, 20, 50]], [0.9], [0], [1])
        return list(rule.update(Observation("cam1", t, dets, {"stockroom-door": np.array([True])})))

    assert person_at(T0 - timedelta(seconds=5)) == [] and person_at(T0 - timedelta(seconds=4)) == []  # disarmed
    hits = person_at(T0 + timedelta(seconds=10))  # the panel armed at T0
    assert [h.state for h in hits] == ["start"]
    explanation = Explainer("UTC").render("zone_intrusion", {**hits[0].facts, "camera": "cam1",
        "zone": "stockroom-door", "start": hits[0].started_at, "end": hits[0].at, "ended": False})  # fmt: skip
    assert "while armed (by panel shop-panel)" in explanation


# -- video verification ----------------------------------------------------------------------------------------------


def record(log: PresenceLog, camera: str, zone: str, seconds: list[float], people: dict[int, list[int]]) -> None:
    """Analysed frames of one camera zone at T0 + s; `people` gives the track ids inside per whole second."""
    image = np.full((432, 768, 3), 90, np.uint8)
    for s in seconds:
        ids = people.get(int(s // 1), [])
        track_ids = np.asarray([*ids, 99], np.int32)  # 99 is elsewhere in the view
        mask = np.array([True] * len(ids) + [False], bool)
        log.record(Frame(camera, int(s * 10), T0 + timedelta(seconds=s), 0.0, image), {zone: mask}, track_ids)


def every(start: float, end: float, fps: float = 5.0) -> list[float]:
    return [round(start + i / fps, 3) for i in range(int((end - start) * fps) + 1)]


async def test_person_in_the_mapped_zone_verifies_the_alarm(rig: Rig) -> None:
    record(rig.presence, "cam1", "stockroom-door", every(-15, 35), {12: [7], 13: [7, 8], 14: [7]})
    [ack] = await rig.send(sia(70, "BA", "15", at=T0))
    assert ack.token == "ACK"
    [inc] = await rig.incidents(1)
    assert inc["type"] == "alarm_verified" and inc["camera"] == "cam1" and inc["zone"] == "stockroom-door"
    assert inc["track_ids"] == [7, 8] and inc["state"] == "end" and inc["severity"] == "critical"
    assert inc["details"]["avs_level"] == 2 and inc["details"]["business_event_id"]
    assert inc["explanation"] == (
        "Burglary alarm from panel shop-panel zone 15 (account 1234, BA) at 22:30:00 verified by video: 2 people "
        "seen in zone stockroom-door on cam1, 22:29:50-22:30:30; AVS-01 level 2 (human presence confirmed)"
    )
    assert inc["start"] == (T0 - timedelta(seconds=10)).isoformat()
    assert inc["end"] == (T0 + timedelta(seconds=30)).isoformat()
    assert await asyncio.to_thread(Path(inc["snapshot"]).is_file)  # the frame where the person was seen


async def test_watching_camera_without_a_person_leaves_the_alarm_unverified(rig: Rig) -> None:
    record(rig.presence, "cam1", "stockroom-door", every(-15, 35), {})
    [ack] = await rig.send(cid(71, "1130", zone="015", at=T0))
    assert ack.token == "ACK"
    [inc] = await rig.incidents(1)
    assert inc["type"] == "alarm_unverified" and inc["track_ids"] == [] and inc["details"]["avs_level"] == 1
    assert (
        "not verified by video: no person seen in zone stockroom-door on cam1 (watched 100% of the window)"
        in (inc["explanation"])
    )
    assert "AVS-01 level 1 (alarm without video confirmation)" in inc["explanation"]
    assert inc["severity"] == "warning"
    assert await asyncio.to_thread(Path(inc["snapshot"]).is_file)  # the empty view at the alarm


async def test_camera_not_watching_means_video_unavailable_not_no_intruder(rig: Rig) -> None:
    record(rig.presence, "cam2", "backdoor", every(-300, -200), {})  # video stopped minutes before the alarm
    [ack] = await rig.send(sia(72, "PA", "016", at=T0))
    assert ack.token == "ACK"
    [inc] = await rig.incidents(1)
    assert inc["type"] == "alarm_unverified" and inc["camera"] == "cam2" and inc["details"]["avs_level"] == 1
    assert "video unavailable: cam2 did not analyse zone backdoor (watched 0% of the window)" in inc["explanation"]
    assert "no person seen" not in inc["explanation"]
    assert inc["severity"] == "critical"  # a panic alarm stays critical without video
    assert inc["snapshot"] is None


async def test_several_views_and_unmapped_zones(rig: Rig) -> None:
    record(rig.presence, "cam1", "till", every(-15, 35), {})
    record(rig.presence, "cam2", "backdoor", every(-15, 35), {20: [3]})  # someone at the back door after the alarm
    await rig.send(sia(73, "BA", "17", at=T0), sia(74, "BA", "99", at=T0), sia(75, "FA", "15", at=T0))
    [inc] = await rig.incidents(1)
    assert inc["type"] == "alarm_verified" and inc["camera"] == "cam2" and inc["track_ids"] == [3]
    assert inc["details"]["cameras"] == ["cam1", "cam2"]
    await asyncio.sleep(0.2)
    assert len(await rig.database.call(rig.database.sync.incidents)) == 1  # zone 99 has no camera; fire is not verified
    assert len(await rig.events()) == 3


async def test_the_window_includes_video_after_the_alarm(tmp_path: Path) -> None:
    """With the real clock: the verdict waits for the window to pass, so a person seen after the alarm counts."""
    config = parse_config(config_doc(free_port()))
    panel = config.alarm_panels[0].model_copy(update={"verify_before_s": 1.0, "verify_after_s": 1.0})
    config = config.model_copy(update={"alarm_panels": [panel]})
    database = AsyncDatabase(tmp_path / "db.sqlite")
    presence = PresenceLog()
    incidents = IncidentManager(database, tmp_path / "evidence", Explainer("UTC"), [])
    verifier = AlarmVerifier(
        config.alarm_panels, config.cameras, presence, incidents, PanelStates(), video_lag_max_s=2.0
    )
    try:
        now = datetime.now(UTC)
        alarm = BusinessEvent("shop-panel", "store-042", now, "alarm.burglary",
                              {"panel": "shop-panel", "account": "1234", "zone": "15", "code": "BA"})  # fmt: skip
        await verifier.on_event("ev-1", alarm)
        image = np.zeros((432, 768, 3), np.uint8)
        for i in range(15):  # video arrives live: nobody, then a person from 0.6 s after the alarm
            t = now + timedelta(seconds=-0.8 + i * 0.2)
            inside = np.array([i >= 7], bool)
            presence.record(Frame("cam1", i, t, 0.0, image), {"stockroom-door": inside}, np.array([4], np.int32))
            await asyncio.sleep(max((t - datetime.now(UTC)).total_seconds(), 0.0))
        await verifier.close()
        [inc] = await database.call(database.sync.incidents)
        assert inc["type"] == "alarm_verified" and inc["track_ids"] == [4]
    finally:
        await database.close()


# -- config ------------------------------------------------------------------------------------------------------------


def _mutate(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        target: Any = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


ACCOUNTS = ["alarm_panels", 0, "accounts"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_mutate(["alarm_panels", 0, "protocol"], "contact_id"), "alarm_panels[0].protocol: input should be"),
        (_mutate(["alarm_panels", 0, "port"], 0), "alarm_panels[0].port: must be >= 1"),
        (_mutate(["alarm_panels", 0, "portt"], 1), "alarm_panels[0].portt: unknown key"),
        (_mutate([*ACCOUNTS, 0, "account"], "12G4"), "alarm_panels[0].accounts[0].account: does not match"),
        (_mutate([*ACCOUNTS, 1, "key"], "00112233"), "alarm_panels[0].accounts[1].key: needs 32, 48 or 64 hex"),
        (_mutate([*ACCOUNTS, 2, "key"], "short"), "alarm_panels[0].accounts[2].key: key_format text needs 16"),
        (
            _mutate([*ACCOUNTS, 3, "account"], "1234"),
            "alarm_panels[0].accounts[3].account: account 1234 is listed twice",
        ),
        (
            _mutate([*ACCOUNTS, 0, "zone_map", "15", "camera"], "cam9"),
            "alarm_panels[0].accounts[0].zone_map.15[0].camera: unknown camera 'cam9'",
        ),
        (
            _mutate([*ACCOUNTS, 0, "zone_map", "15", "zone"], "roof"),
            "alarm_panels[0].accounts[0].zone_map.15[0].zone: camera 'cam1' has no zone 'roof'",
        ),
        (
            _mutate([*ACCOUNTS, 0, "zone_map", "0015"], {"camera": "cam1", "zone": "till"}),
            "zone_map.0015: the same panel zone as '15'",
        ),
        (_mutate(["rules", 0, "armed_by"], "other-panel"), "rules[0].armed_by: unknown alarm panel 'other-panel'"),
    ],
)
def test_config_errors_name_the_path(mutate: Callable[[dict[str, Any]], None], expected: str) -> None:
    doc = config_doc(12000)
    mutate(doc)
    with pytest.raises(ConfigError) as err:
        parse_config(doc, "store.yaml")
    assert expected in str(err.value), str(err.value)


def test_config_second_panel_on_the_same_port_is_refused() -> None:
    doc = config_doc(12000)
    second = copy.deepcopy(doc["alarm_panels"][0]) | {"id": "other", "transports": ["udp"]}
    doc["alarm_panels"].append(second)
    with pytest.raises(ConfigError, match=r"alarm_panels\[1\]\.port: udp 12000 is taken by panel 'shop-panel'"):
        parse_config(doc)
    second["port"] = 12001
    config = parse_config(doc)
    assert config.alarm_panels[0].accounts[0].zone_map["16"][0].zone == "backdoor"  # "016" is zone 16
    assert "000102" not in repr(config) and config.alarm_panels[0].accounts[1].key_bytes() == bytes(range(16))


# -- hostile peers and limits ----------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def limited(tmp_path: Path, **panel: Any) -> AsyncIterator[Rig]:
    """A receiver (real store and hub) with `panel` keys set on the panel's config."""
    port = free_port()
    doc = config_doc(port)
    doc["alarm_panels"][0].update(panel)
    config = parse_config(doc)
    database = AsyncDatabase(tmp_path / "limits.sqlite")
    hub = BusinessHub(database)
    clock = Clock(T0)
    receiver = SiaDc09Receiver(config.alarm_panels[0], hub, config.site.id, now=clock)
    await receiver.start()
    try:
        yield Rig(database, hub, receiver, None, PresenceLog(), PanelStates(), clock, port)  # type: ignore[arg-type]
    finally:
        await receiver.close()
        await database.close()


class UdpPanel(asyncio.DatagramProtocol):
    """A panel (or a spoofed sender) on UDP: what it sends and every answer it gets."""

    def __init__(self) -> None:
        self.answers: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.answers.put_nowait(data)

    @classmethod
    async def open(cls, port: int, source: str = "127.0.0.1") -> tuple[asyncio.DatagramTransport, UdpPanel]:
        loop = asyncio.get_running_loop()
        return await loop.create_datagram_endpoint(cls, local_addr=(source, 0), remote_addr=("127.0.0.1", port))


async def until(check: Callable[[], bool], timeout_s: float = 15.0) -> None:
    """Poll `check()` (a state the receiver reaches) until it holds."""
    for _ in range(int(timeout_s / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not reached in {timeout_s} s")


async def closed_by_server(reader: asyncio.StreamReader, timeout_s: float = 15.0) -> bool:
    """The receiver closed the connection (EOF or reset) within `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s):
            return await reader.read() == b""
    except ConnectionError:
        return True


async def test_a_datagram_gets_at_most_one_answer(tmp_path: Path) -> None:
    """b"x\\r" * 32000 in one datagram got 32,000 NAKs (a 23x reflection towards a spoofed sender): now a datagram
    over 2 KB is dropped, one that is not a DC-09 frame gets no answer, and one holding two frames gets one ACK.
    Each hostile datagram is followed by a good one: the first answer that comes back is the good one's."""
    async with limited(tmp_path) as rig:
        transport, panel = await UdpPanel.open(rig.port)
        try:
            for n, hostile in enumerate([b"x\r" * 32000, b"x\r" * 1000, b"\n0000" * 300 + b"\r"]):
                transport.sendto(hostile)
                transport.sendto(sia(100 + n, "BA", at=T0))
                reply = parse_reply(await asyncio.wait_for(panel.answers.get(), 5))
                assert (reply.token, reply.body[5:9]) == ("ACK", f"{100 + n:04d}")
            transport.sendto(sia(110, "BA", at=T0) + sia(111, "PA", at=T0))  # two frames, one datagram
            assert parse_reply(await asyncio.wait_for(panel.answers.get(), 5)).body[5:9] == "0110"
            transport.sendto(sia(112, "BA", at=T0))
            assert parse_reply(await asyncio.wait_for(panel.answers.get(), 5)).body[5:9] == "0112"
        finally:
            transport.close()
        counts = rig.receiver.counts
        assert counts["oversize"] == 1 and counts["unanswered"] == 2 and counts["udp_trailing"] == 2
        assert counts["ack"] == 5 and counts["nak"] == 0
        assert [r["payload"]["sequence"] for r in await rig.events()] == ["0100", "0101", "0102", "0110", "0112"]


async def test_frames_over_2_kb_are_dropped_and_unknown_accounts_cost_no_crc(tmp_path: Path) -> None:
    async with limited(tmp_path) as rig:
        big = sia(120, "BA", zone="1" * 2100, at=T0)  # a well-formed frame, CRC and all, of 2.1 kB
        [ack] = await rig.send(big, sia(121, "BA", at=T0), replies=1)
        assert ack.body[5:9] == "0121" and rig.receiver.counts["oversize"] == 1
        # an unknown account is answered DUH from its header: the CRC (wrong here) is never computed
        [duh] = await rig.send(sia(122, "BA", account="9999", crc=0, at=T0))
        assert duh.token == "DUH"
        [nak] = await rig.send(sia(123, "BA", crc=0, at=T0))  # a known account's wrong CRC is still a NAK
        assert nak.token == "NAK"


async def test_the_allow_list_drops_other_senders(tmp_path: Path) -> None:
    async with limited(tmp_path, allow_from=["127.0.0.1"]) as rig:
        transport, panel = await UdpPanel.open(rig.port, "127.0.0.2")
        try:
            transport.sendto(sia(130, "OP", "7", at=T0))  # a forged disarm from elsewhere: no answer, not stored
        finally:
            transport.close()
        await until(lambda: rig.receiver.counts["udp_refused"] == 1)
        reader, writer = await asyncio.open_connection("127.0.0.1", rig.port, local_addr=("127.0.0.2", 0))
        assert await closed_by_server(reader)
        writer.close()
        [ack] = await rig.send(sia(131, "BA", at=T0))  # the panel itself, on 127.0.0.1
        assert ack.token == "ACK"
        assert [r["kind"] for r in await rig.events()] == ["alarm.burglary"] and panel.answers.empty()


async def test_idle_sockets_cannot_hold_every_slot(tmp_path: Path) -> None:
    """64 idle sockets held every slot: now one address holds at most max_connections_per_address (a new one
    replaces its oldest), a connection must send a frame within first_frame_timeout_s, and a full receiver refuses
    only addresses that have no connection to replace."""
    async with limited(tmp_path, max_connections=3, max_connections_per_address=2, first_frame_timeout_s=0.5) as rig:
        slots = rig.receiver.slots
        idle = [await asyncio.open_connection("127.0.0.1", rig.port, local_addr=("127.0.0.2", 0)) for _ in range(64)]
        await until(lambda: slots.replaced == 62)
        assert len(slots) <= 2
        other = await asyncio.open_connection("127.0.0.1", rig.port, local_addr=("127.0.0.3", 0))
        await until(lambda: len(slots) == 3)
        refused = await asyncio.open_connection("127.0.0.1", rig.port, local_addr=("127.0.0.4", 0))
        assert await closed_by_server(refused[0])  # full, and 127.0.0.4 has nothing to replace
        # the idle ones have sent no frame: closed after first_frame_timeout_s, and the panel gets in
        for reader, _ in idle[-2:]:
            assert await closed_by_server(reader)
        [ack] = await rig.send(sia(140, "BA", at=T0))
        assert ack.token == "ACK"
        # dribbling bytes without ever finishing a frame does not hold a slot either
        reader, writer = await asyncio.open_connection("127.0.0.1", rig.port)
        for _ in range(40):
            if reader.at_eof():
                break
            writer.write(b"0")
            await asyncio.sleep(0.05)
        assert await closed_by_server(reader)
        assert rig.receiver.counts["timeouts"] >= 4 and slots.refused == 1
        for _, w in (*idle, other, refused, (reader, writer)):
            w.close()


async def test_a_peer_that_reads_no_answers_is_closed(tmp_path: Path) -> None:
    """drain() has a time limit: a peer that sends frames and never reads the answers is cut off after
    write_timeout_s, instead of holding its connection (and its frames) for good."""
    async with limited(tmp_path, write_timeout_s=0.5) as rig:
        assert rig.receiver._server is not None  # small kernel buffers on both ends, so the answers back up soon
        rig.receiver._server.sockets[0].setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", rig.port))
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock)
        link_test = dc09("NULL", 1, "", at=T0)
        with contextlib.suppress(ConnectionError):
            for _ in range(1000):
                if rig.receiver.counts["timeouts"]:
                    break
                writer.write(link_test * 100)
                await writer.drain()
        await until(lambda: rig.receiver.counts["timeouts"] == 1, timeout_s=60)
        assert await closed_by_server(reader)
        writer.close()


@pytest.mark.parametrize(
    ("panel", "expected"),
    [
        ({"host": "0.0.0.0"}, "alarm_panels[0].allow_from: required when listening on 0.0.0.0 with a plain"),
        ({"host": "192.168.1.10"}, "(unencrypted) account (1234, 4F39)"),
        ({"host": "0.0.0.0", "allow_from": ["10.0.0.0/33"]}, "allow_from[0]: '10.0.0.0/33' is not an IP address or"),
    ],
)
def test_a_plain_account_on_the_lan_needs_an_allow_list(panel: dict[str, Any], expected: str) -> None:
    doc = config_doc(12000)
    doc["alarm_panels"][0].update(panel)
    with pytest.raises(ConfigError) as err:
        parse_config(doc, "store.yaml")
    assert expected in str(err.value), str(err.value)


def test_a_lan_bind_is_fine_with_an_allow_list_or_only_encrypted_accounts() -> None:
    doc = config_doc(12000)
    doc["alarm_panels"][0].update(host="0.0.0.0", allow_from=["192.168.1.20", "10.1.0.0/16"])
    assert [str(n) for n in parse_config(doc).alarm_panels[0].allow_from] == ["192.168.1.20/32", "10.1.0.0/16"]
    doc = config_doc(12000)
    panel = doc["alarm_panels"][0]
    panel["host"] = "0.0.0.0"
    panel["accounts"] = [a for a in panel["accounts"] if "key" in a]
    assert all(a.key is not None for a in parse_config(doc).alarm_panels[0].accounts)


# -- properties ------------------------------------------------------------------------------------------------------


class RecordingHub:
    """Stands in for BusinessHub in property tests: remembers what would have been stored."""

    def __init__(self) -> None:
        self.events: list[BusinessEvent] = []

    async def ingest(self, event: BusinessEvent, dedupe_key: str | None = None) -> tuple[str, bool]:
        self.events.append(event)
        return "id", True


def offline_receiver() -> tuple[SiaDc09Receiver, RecordingHub]:
    hub = RecordingHub()
    config = parse_config(config_doc(12000))
    return SiaDc09Receiver(config.alarm_panels[0], hub, "store-042", now=Clock(T0)), hub  # type: ignore[arg-type]


def answer(receiver: SiaDc09Receiver, data: bytes) -> Reply | None:
    raw = asyncio.run(receiver.handle_frame(data))
    return None if raw is None else parse_reply(raw)


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.binary(max_size=400))
def test_random_bytes_never_crash_and_are_never_acknowledged(data: bytes) -> None:
    receiver, hub = offline_receiver()
    reply = answer(receiver, data)
    assert reply is None or reply.token in ("NAK", "DUH")
    assert hub.events == []


FRAMES = [
    sia(1, "BA", at=T0),
    cid(2, "1130", at=T0),
    cid(3, "1130", account="5678", key=bytes.fromhex(KEY_HEX), at=T0, pad_rng=random.Random(1)),
    dc09("NULL", 4, "", at=T0),
]


@SETTINGS
@given(st.sampled_from(FRAMES), st.data())
def test_a_changed_byte_is_never_acknowledged(frame: bytes, data: st.DataObject) -> None:
    receiver, hub = offline_receiver()
    at = data.draw(st.integers(9, len(frame) - 2), label="position")  # in the body: the CRC covers it
    new = data.draw(st.integers(0, 255).filter(lambda b: b != frame[at]), label="byte")
    reply = answer(receiver, frame[:at] + bytes([new]) + frame[at + 1 : -1])
    # NAK for the CRC; DUH when the byte changed the account to one this receiver does not know (checked first)
    assert reply is None or reply.token in ("NAK", "DUH")
    assert hub.events == []


@SETTINGS
@given(st.sampled_from(FRAMES), st.integers(0, 0xFFFF))
def test_any_length_field_is_tolerated(frame: bytes, length: int) -> None:
    receiver, _ = offline_receiver()
    reply = answer(receiver, frame[:5] + f"{length:04X}".encode() + frame[9:-1])
    assert reply is not None and reply.token in ("ACK", "*ACK")


@SETTINGS
@given(st.lists(st.sampled_from(FRAMES), min_size=1, max_size=4), st.data())
def test_splitting_a_stream_anywhere_yields_the_same_frames(frames: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8), label="cuts"))
    splitter = FrameSplitter()
    out: list[bytes] = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += splitter.feed(stream[a:b])
    assert out == [f[:-1] for f in frames]


@SETTINGS
@given(st.sampled_from(["SIA-DCS", "ADM-CID"]), st.from_regex(r"\A[ -~]{0,40}\Z"))
def test_well_framed_random_data_gets_a_valid_answer(token: str, data: str) -> None:
    receiver, _ = offline_receiver()
    reply = answer(receiver, dc09(token, 5, data.replace("]", "").replace("[", ""), at=T0)[:-1])
    assert reply is not None and reply.token in ("ACK", "NAK", "DUH")


def _one_datagram_property(receiver: SiaDc09Receiver, hub: RecordingHub, datagram: bytes) -> None:
    reply = asyncio.run(receiver.answer_datagram(datagram, "127.0.0.1:5000"))
    assert reply is None or isinstance(reply, bytes)  # one answer at most, whatever the datagram holds
    if reply is not None:
        assert parse_reply(reply).token in ("ACK", "*ACK", "NAK", "DUH")
        assert len(reply) <= 200  # an answer is never the datagram's size: no amplification by content
    if datagram.partition(b"\r")[0].count(b'"') < 2:
        assert reply is None  # not a DC-09 frame: no answer over UDP (a spoofed sender's target gets nothing)
    assert len(hub.events) <= 1


_datagrams = st.one_of(
    st.binary(max_size=3000),
    st.lists(st.sampled_from([*FRAMES, b"x\r", b"\r", b"\n", b"0000"]), max_size=40).map(b"".join),
    st.builds(lambda frame, n: frame * n, st.sampled_from(FRAMES), st.integers(1, 60)),
)


@SETTINGS
@given(_datagrams)
def test_any_datagram_gets_at_most_one_answer(datagram: bytes) -> None:
    _one_datagram_property(*offline_receiver(), datagram)


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_datagrams)
def test_any_datagram_gets_at_most_one_answer_many(datagram: bytes) -> None:
    _one_datagram_property(*offline_receiver(), datagram)


@SETTINGS
@given(st.lists(st.one_of(st.binary(max_size=3000), st.sampled_from(FRAMES)), max_size=12), st.data())
def test_a_stream_of_noise_never_yields_an_oversize_frame(chunks: list[bytes], data: st.DataObject) -> None:
    """Whatever a TCP peer sends, in whatever pieces: no frame over 2 KB comes out, the buffer stays bounded, and
    a good frame after noise (its LF starts it) still comes out whole."""
    stream = b"".join(chunks)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8), label="cuts"))
    splitter = FrameSplitter()
    out: list[bytes] = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += splitter.feed(stream[a:b])
        assert len(splitter._buffer) <= MAX_FRAME_BYTES + (b - a)
    assert all(len(f) <= MAX_FRAME_BYTES for f in out)
    for chunk in chunks:
        if chunk in FRAMES:  # a frame's LF is the last one before its CR, whatever came before it
            assert any(f.endswith(chunk[:-1]) for f in out)


def test_classify_covers_the_kinds() -> None:
    def kind(frame: bytes) -> str | None:
        return classify(SIAEvent.from_line(frame[1:-1].decode(), {"1234": SIAAccount("1234")}))

    assert [kind(sia(1, c)) for c in ("BA", "PA", "HA", "FA", "TA", "CL", "OP", "AT", "BR", "RP", "MA")] == [
        "burglary", "panic", "panic", "fire", "tamper", "arm", "disarm", "trouble", "restore", "test", "other"
    ]  # fmt: skip
    assert [kind(cid(1, e)) for e in ("1130", "3130", "1146", "1120", "1401", "3401", "1301", "1602", "6130")] == [
        "burglary", "restore", "burglary", "panic", "disarm", "arm", "trouble", "test", "other"
    ]  # fmt: skip


# -- end to end: the real pipeline on the real clip -------------------------------------------------------------------


@pytest.mark.triton
@pytest.mark.slow
async def test_real_clip_verifies_an_alarm_and_the_vms_gets_it(triton: Any, clip: Path, tmp_path: Path) -> None:
    """The bridge as `run` builds it, with the real Triton on the real clip (a person at the table from ~7 s to
    ~18 s media time): a burglary on the panel zone mapped to the table is verified (level 2) and reaches the
    webhook sink; one on a zone whose camera is switched off is unverified, video unavailable."""
    port = free_port()
    table = [[0.39, 0.67], [0.83, 0.67], [0.83, 1.0], [0.39, 1.0]]
    start = datetime.now(UTC) - timedelta(seconds=10)  # the person reaches the table ~3 s before the alarm
    with WebhookReceiver() as hook:
        doc = {
            "storage": {"path": str(tmp_path / "data")},
            "triton": {"url": triton.grpc_url},
            "cameras": [
                {
                    "id": "cam1",
                    "source": str(clip),
                    "fps": 5,
                    "start_time": start.isoformat(),
                    "zones": [{"id": "table", "polygon": table}],
                },
                {"id": "cam2", "source": str(clip), "enabled": False, "zones": [{"id": "backdoor", "polygon": ZONE}]},
            ],
            "sinks": [{"kind": "webhook", "id": "soc", "url": hook.url}],
            "alarm_panels": [
                {
                    "id": "shop-panel",
                    "protocol": "sia_dc09",
                    "port": port,
                    "verify_after_s": 5,
                    "accounts": [
                        {
                            "account": "1234",
                            "zone_map": {
                                "15": {"camera": "cam1", "zone": "table"},
                                "16": {"camera": "cam2", "zone": "backdoor"},
                            },
                        }
                    ],
                },
            ],
        }
        app = build_app(parse_config(doc))
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            now = datetime.now(UTC)
            replies = await send_tcp(port, sia(1, "BA", "15", at=now), sia(2, "BA", "16", at=now))
            assert [r.token for r in replies] == ["ACK", "ACK"]
            rows: list[dict[str, Any]] = []
            for _ in range(240):
                rows = [
                    r for r in await app[DATABASE].call(app[DATABASE].sync.incidents) if r["type"].startswith("alarm_")
                ]
                delivered = {r["body"]["incident"]["type"] for r in hook.requests}
                if len(rows) == 2 and {"alarm_verified", "alarm_unverified"} <= delivered:
                    break
                await asyncio.sleep(0.25)
            by_zone = {r["zone"]: r for r in rows}
            assert set(by_zone) == {"table", "backdoor"}, rows
            verified, blind = by_zone["table"], by_zone["backdoor"]
            assert verified["type"] == "alarm_verified" and verified["details"]["avs_level"] == 2, verified
            assert len(verified["track_ids"]) >= 1 and await asyncio.to_thread(Path(verified["snapshot"]).is_file)
            assert blind["type"] == "alarm_unverified" and "video unavailable: cam2" in blind["explanation"]
            assert {"alarm_verified", "alarm_unverified"} <= {r["body"]["incident"]["type"] for r in hook.requests}
        finally:
            await runner.cleanup()
