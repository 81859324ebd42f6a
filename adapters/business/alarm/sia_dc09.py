"""SIA DC-09 receiver over TCP and UDP: intrusion panels report here, and a report is acknowledged only once stored.

pysiaalarm (3.2) parses the frames (SIA DC-03 and Contact ID data blocks), maps Contact ID events to SIA codes and
decrypts AES accounts. Its own asyncio servers answer before the callback has run and read each 1000-byte chunk as
one frame, so this module owns the loop:

- frames are cut at the terminator (CR): several frames in one TCP segment, or one frame over several reads; a
  UDP datagram is one frame and gets at most one answer (a datagram of many CRs is not many frames: answering each
  would reflect a spoofed sender's traffic many times over), and a datagram that is not a DC-09 frame gets none;
- a frame over 2 KB is dropped unanswered (a DC-09 frame is 60-300 bytes);
- the account in the header is checked before the CRC is computed (an unknown account costs no CRC);
- the CRC (CRC-16/ARC) is checked strictly, and a bad one is answered NAK; the length field leniently (some panels
  write it in decimal): a mismatch is logged once and the frame accepted;
- a timestamp outside the window (DC-09: 40 s before to 20 s after the receiver's clock) gets a NAK carrying the
  receiver's time, so the panel can set its clock; an encrypted frame must carry one (it is the replay protection);
- an unknown account, a message type or event code this receiver does not handle, or a plain frame for an
  encrypted account (and the reverse) gets DUH: the panel does not repeat it;
- ACK is written only after the hub's ingest returned, i.e. after the event is committed to SQLite; a frame that
  could not be stored gets no answer, so the panel sends it again;
- a repeat of the last frames of an account (same sequence number, same content: the panel did not hear the ACK)
  is acknowledged again but stored once.

Responses (DC-09 framing: LF, CRC, length, body, CR):
  ACK  "ACK"<seq>R<rcvr>L<line>#<acct>[]        encrypted: "*ACK"<seq>R..L..#<acct>[<AES(pad ] _timestamp)>
  NAK  "NAK"0000R<rcvr>L<line>A0[]_HH:MM:SS,MM-DD-YYYY   (never encrypted: the panel reads the time from it)
  DUH  "DUH"<seq>R<rcvr>L<line>#<acct>[]
Not handled: the RSP reply to an x-data key request (answered ACK), the Osborne-Hoffman "OH" heartbeat (NAK),
and supervising that a panel keeps polling (the last time each account was heard is kept in `status()`).

Who may talk to it: `allow_from` (frames from elsewhere get no answer, TCP connections are closed at once; required
on a LAN bind with a plain account, plugin/config/alarms.py), `max_connections` and `max_connections_per_address`
(a panel reconnecting replaces its own oldest connection, adapters/business/listeners.py); a TCP connection must
complete a frame within `first_frame_timeout_s`, then say something every `idle_timeout_s`, and take each answer
within `write_timeout_s`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pysiaalarm.account import SIAAccount
from pysiaalarm.data.adm_mapping import ADM_MAPPING
from pysiaalarm.data.sia_codes import SIA_CODES
from pysiaalarm.errors import EventFormatError, NoAccountError
from pysiaalarm.event import SIAEvent
from pysiaalarm.utils.enums import MessageTypes

from adapters.business.alarm.dc09_framing import HEADER, MAX_FRAME_BYTES, FrameSplitter, crc16_arc, frame, sia_time
from adapters.business.listeners import ConnectionSlots
from plugin.config.alarms import AlarmAccountConfig, AlarmPanelConfig, normalise_panel_zone
from plugin.config.base import peer_allowed
from plugin.errors import StoreSightError
from plugin.protocols import BusinessIntake
from plugin.types import BusinessEvent

PROTOCOL_KEY = "sia_dc09"

log = logging.getLogger(__name__)

TOKENS = ("SIA-DCS", "ADM-CID", "NULL")  # the message types pysiaalarm parses; any other gets DUH
READ_SIZE = 4096
CLOSE_WAIT_S = 5.0  # closing: connections still storing a frame get this long before they are cancelled
UDP_QUEUE = 256  # datagrams waiting for storage; more are dropped, and the panel's retry brings them back
# A panel repeats a frame it got no ACK for (same sequence number) a few times over some minutes before it reports
# a communication fault; the same sequence number and content within this window is such a repeat.
DEDUPE_WINDOW_S = 600.0
# pysiaalarm raises EventFormatError for data it cannot match, NoAccountError for encrypted data without a key,
# ValueError for ciphertext that is not hex or not whole AES blocks, IndexError for an empty x-data block ("[]").
PARSE_ERRORS = (EventFormatError, NoAccountError, ValueError, IndexError)

_NUMBER = re.compile(r"\s*([0-9A-Za-z]{1,8})")

# SIA codes (pysiaalarm maps Contact ID to these too) to alarm kinds; any other known code is "other".
SIA_KINDS: dict[str, str] = {
    **dict.fromkeys(("BA", "BV", "BM", "BG"), "burglary"),
    **dict.fromkeys(("PA", "HA"), "panic"),  # HA: hold-up / duress
    "FA": "fire",
    **dict.fromkeys(("TA", "ES"), "tamper"),
    **dict.fromkeys(("CL", "CA", "CG", "CQ", "CS", "CF", "CP", "NL"), "arm"),
    **dict.fromkeys(("OP", "OA", "OG", "OQ", "OS", "OR"), "disarm"),
    **dict.fromkeys(("AT", "YT", "YX", "YS", "YC", "XQ", "XT", "YP", "YM", "BT", "FT", "LT"), "trouble"),
    **dict.fromkeys(
        ("BR", "BH", "PH", "HH", "FH", "FR", "TR", "AR", "YR", "YZ", "YK", "XH", "XR", "YQ", "BJ", "FJ", "LR"),
        "restore",
    ),
    **dict.fromkeys(("RP", "RX"), "test"),
}
# Contact ID event codes (INTEGRATIONS.md 8.2) to groups. Qualifier 1 is a new event (an opening: disarm, for the
# open/close group), 3 a restore (a closing: arm), 6 a status report of a condition already reported.
CID_GROUPS: dict[str, str] = {
    **dict.fromkeys(("110", "111", "112", "113", "114", "115", "116", "117", "118"), "fire"),
    **dict.fromkeys(("120", "121", "122", "123"), "panic"),
    # 146 is a silent burglary (pysiaalarm maps it to HA, hold-up; we keep the Contact ID meaning)
    **dict.fromkeys(("130", "131", "132", "133", "134", "135", "139", "146"), "burglary"),
    **dict.fromkeys(("137", "144", "145", "383"), "tamper"),
    **dict.fromkeys(("301", "302", "309", "311", "321", "344", "350", "351", "354", "384"), "trouble"),
    **dict.fromkeys(("400", "401", "403", "407", "408", "409", "441"), "openclose"),
    **dict.fromkeys(("601", "602"), "test"),
}


def classify(event: SIAEvent) -> str | None:
    """The alarm kind of a parsed event; None when this receiver does not handle its code (DUH)."""
    if event.message_type == MessageTypes.ADMCID:
        group = CID_GROUPS.get(event.event_type or "")
        if group is None:
            return "other" if event.event_type in ADM_MAPPING else None
        if event.event_qualifier == "6":
            return "other"  # a status report: no new alarm, no change of the armed state
        if event.event_qualifier not in ("1", "3"):
            return None
        if group == "openclose":
            return "disarm" if event.event_qualifier == "1" else "arm"
        if group == "test":
            return group
        return group if event.event_qualifier == "1" else "restore"
    if event.code is None or event.code not in SIA_CODES:
        return None
    return SIA_KINDS.get(event.code, "other")


def _digest(event: SIAEvent) -> str:
    """What makes a report the same report: its data, not its padding or timestamp (a repeat has new ones)."""
    fields = (event.message_type, event.code, event.ri, event.message, event.event_qualifier, event.event_type,
              event.partition, event.id, event.ti, event.x_data)  # fmt: skip
    return hashlib.sha256(repr(fields).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class _Account:
    config: AlarmAccountConfig
    sia: SIAAccount
    site: str

    @property
    def encrypted(self) -> bool:
        return self.config.key is not None


class SiaDc09Receiver:
    """One `alarm_panels` entry: a TCP server and a UDP endpoint on its port, answering each frame."""

    type_key = PROTOCOL_KEY

    def __init__(
        self,
        config: AlarmPanelConfig,
        hub: BusinessIntake,
        default_site: str,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config
        self.hub = hub
        self._now = now or (lambda: datetime.now(UTC))
        self._accounts: dict[str, _Account] = {}
        for account in config.accounts:
            # the window is checked here (against our clock); the key is read as the config says, where pysiaalarm
            # would take the key's characters as its bytes
            sia = SIAAccount(account.account, allowed_timeband=None)
            sia.key_b = account.key_bytes()
            self._accounts[account.account] = _Account(account, sia, account.site or default_site)
        self._past = timedelta(seconds=config.timestamp_past_s)
        self._future = timedelta(seconds=config.timestamp_future_s)
        self._recent: dict[str, dict[str, tuple[str, float]]] = {}  # account -> sequence -> (digest, monotonic)
        self._said: set[tuple[str, str]] = set()
        self._server: asyncio.Server | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue(UDP_QUEUE)
        self._udp_worker: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self.slots = ConnectionSlots(
            f"{config.id}: SIA DC-09", config.allow_from, config.max_connections, config.max_connections_per_address
        )
        self.counts: Counter[str] = Counter()
        self.last_heard: dict[str, datetime] = {}

    # -- one frame -------------------------------------------------------------------------------------------------

    async def handle_frame(self, raw: bytes, transport: str = "tcp", peer: str = "") -> bytes | None:
        """The answer to one frame (without its CR): ACK once stored, NAK, DUH, or None (nothing to answer)."""
        if len(raw) > MAX_FRAME_BYTES:
            self.counts["oversize"] += 1
            self._say(("oversize", ""), "%s: dropped a frame of %d bytes (over %d) from %s", self.config.id, len(raw),
                      MAX_FRAME_BYTES, peer or "?")  # fmt: skip
            return None
        text = raw[raw.rfind(b"\n") + 1 :].strip()  # a frame starts after its LF; bytes before it are line noise
        if not text:
            return None
        self.counts["frames"] += 1
        try:
            line = text.decode("ascii")
        except UnicodeDecodeError:
            return self._nak(None, "format", "a frame that is not ASCII", quiet=transport == "udp")
        head = HEADER.match(line)
        if head is None:
            return self._nak(None, "format", "a frame without a DC-09 header", quiet=transport == "udp")
        account_id = (head["account"] or "").upper()
        account = self._accounts.get(account_id)
        if account_id and account is None:  # before the CRC: a stranger's frames cost no CRC
            return self._duh(head, f"account {account_id}", f"the unknown account {account_id}")
        body = line[8:]
        if int(head["crc"], 16) != crc16_arc(body.encode("ascii")):
            return self._nak(head, "crc", "a frame with a wrong CRC")
        self._check_length(head, body)
        if head["token"] not in TOKENS:
            return self._duh(head, "token", f"the unsupported message type {head['token']!r}")
        encrypted = bool(head["star"])
        if account is None and encrypted:
            return self._duh(head, "account", "an encrypted frame without an account")
        if account is not None and encrypted != account.encrypted:
            what = "an encrypted frame for a plain" if encrypted else "a plain frame for an encrypted"
            return self._duh(head, f"mode {account_id}", f"{what} account {account_id} (check the panel's key)")
        try:
            event = SIAEvent.from_line(line, {head["account"]: account.sia} if account is not None else None)
        except PARSE_ERRORS as exc:
            what = "decrypted (wrong key?) or parsed" if encrypted else "parsed"
            detail = str(exc).split(", using matcher")[0][:160]  # pysiaalarm appends its whole regex
            return self._nak(head, f"parse {account_id}", f"data that cannot be {what}: {detail}")
        if account is None:  # a plain frame that names its account only in the data block
            account = self._accounts.get((event.account or "").upper())
            if account is None or account.encrypted:
                return self._duh(head, f"account {event.account}", f"the unknown account {event.account}")
            account_id = account.config.account
        now = self._now()
        stamp = event.timestamp if isinstance(event.timestamp, datetime) else None
        if stamp is None and encrypted:
            return self._nak(head, f"time {account_id}", "an encrypted frame without a timestamp", now)
        if stamp is not None and not now - self._past <= stamp <= now + self._future:
            off = (stamp - now).total_seconds()
            return self._nak(head, f"time {account_id}", f"a frame stamped {off:+.0f} s from our clock", now)
        self.last_heard[account_id] = now
        if event.message_type == MessageTypes.NULL:
            self.counts["null"] += 1
            return self._ack(head, event, account_id, now)  # a link test: nothing to store
        kind = classify(event)
        if kind is None:
            if event.event_type:
                what = f"the unsupported Contact ID event {event.event_qualifier}{event.event_type}"
            else:
                what = f"the unsupported SIA code {event.code}" if event.code else "a report without an event code"
            return self._duh(head, f"code {what}", what)
        return await self._store(head, event, account, kind, now, transport, peer)

    async def _store(
        self, head: re.Match[str], event: SIAEvent, account: _Account, kind: str, now: datetime, transport: str,
        peer: str,
    ) -> bytes | None:  # fmt: skip
        account_id = account.config.account
        seq = head["seq"]
        digest = _digest(event)
        recent = self._recent.setdefault(account_id, {})
        mono = time.monotonic()
        seen = recent.get(seq)
        if seen is not None and seen[0] == digest and mono - seen[1] < DEDUPE_WINDOW_S:
            self.counts["duplicates"] += 1
            return self._ack(head, event, account_id, self._now())
        stored = BusinessEvent(self.config.id, account.site, now, f"alarm.{kind}",
                               self._payload(head, event, account_id, kind, transport, peer, digest))  # fmt: skip
        # the durable key catches a repeat that raced this one or came after a restart (within the hour)
        key = f"sia:{self.config.id}:{account_id}:{seq}:{digest}:{now:%Y%m%d%H}"
        try:
            _, new = await self.hub.ingest(stored, dedupe_key=key)
        except sqlite3.Error as exc:
            log.error("%s: account %s sequence %s not stored, so not acknowledged (the panel resends it): %s",
                      self.config.id, account_id, seq, exc)  # fmt: skip
            return None
        for s, (_, t) in list(recent.items()):
            if mono - t >= DEDUPE_WINDOW_S:
                del recent[s]
        recent[seq] = (digest, mono)
        self.counts["duplicates" if not new else kind] += 1
        if new:
            log.info("%s: account %s %s (%s) zone/user %s", self.config.id, account_id, kind, event.code,
                     stored.payload.get("zone") or stored.payload.get("user"))  # fmt: skip
        return self._ack(head, event, account_id, self._now())

    def _payload(
        self, head: re.Match[str], event: SIAEvent, account_id: str, kind: str, transport: str, peer: str, digest: str
    ) -> dict[str, Any]:
        cid = event.message_type == MessageTypes.ADMCID
        if cid:
            number, area = event.ri, event.partition
        else:
            found = _NUMBER.match(event.message or "")
            number, area = (found.group(1) if found else None), event.ri
        number = normalise_panel_zone(number) if number else None
        opening_or_closing = kind in ("arm", "disarm")
        payload: dict[str, Any] = {
            "panel": self.config.id,
            "protocol": PROTOCOL_KEY,
            "account": account_id,
            "sequence": head["seq"],
            "receiver": head["rcv"],
            "line": head["line"],
            "message_type": head["token"],
            "encrypted": bool(head["star"]),
            "transport": transport,
            "peer": peer,
            "code": event.code,
            "code_name": SIA_CODES[event.code].type if event.code in SIA_CODES else None,
            "zone": None if opening_or_closing else number,
            "user": (event.id or number) if opening_or_closing else event.id,
            "area": normalise_panel_zone(area) if area else None,
            "panel_time": event.timestamp.isoformat() if isinstance(event.timestamp, datetime) else None,
            "digest": digest,
        }
        if cid:
            payload["contact_id"] = f"{event.event_qualifier}{event.event_type} {event.partition} {event.ri}"
        elif event.message and event.message.strip() != (number or ""):
            payload["text"] = event.message.strip()
        return payload

    def _check_length(self, head: re.Match[str], body: str) -> None:
        declared = head["length"]
        if int(declared, 16) == len(body):
            return
        how = "in decimal" if declared.isdigit() and int(declared) == len(body) else f"as {declared}"
        self._say(("length", head["account"] or ""), "%s: account %s writes the length field %s (the frame has %d "
                  "characters, %04X): accepted, as DC-09 receivers do", self.config.id, head["account"], how,
                  len(body), len(body))  # fmt: skip

    # -- answers ---------------------------------------------------------------------------------------------------

    def _say(self, key: tuple[str, str], msg: str, *args: object) -> None:
        """Warn once per kind of problem and account; repeats go to debug (a misconfigured panel retries a lot)."""
        if key in self._said:
            log.debug(msg, *args)
        else:
            self._said.add(key)
            log.warning(msg, *args)

    @staticmethod
    def _route(head: re.Match[str]) -> str:
        return (f"R{head['rcv']}" if head["rcv"] else "") + f"L{head['line']}"

    def _ack(self, head: re.Match[str], event: SIAEvent, account_id: str, now: datetime) -> bytes:
        self.counts["ack"] += 1
        start = f"{head['seq']}{self._route(head)}#{head['account'] or account_id}["
        if head["star"]:
            sealed = event.encrypt_content("]" + sia_time(now))  # pysiaalarm pads and encrypts with the account key
            if sealed is None:  # pragma: no cover - an encrypted frame passed only for an account with a key
                raise RuntimeError("encrypted account without a key")
            return frame(f'"*ACK"{start}{sealed}')
        return frame(f'"ACK"{start}]')

    def _nak(
        self, head: re.Match[str] | None, problem: str, what: str, now: datetime | None = None, quiet: bool = False
    ) -> bytes | None:
        """NAK; with `quiet` (UDP input that is not a DC-09 frame at all) nothing: a spoofed sender's target must not
        get answers to noise."""
        if quiet:
            self.counts["unanswered"] += 1
            self._say(("quiet", problem), "%s: no answer over UDP to %s", self.config.id, what)
            return None
        self.counts["nak"] += 1
        self._say(("nak", problem), "%s: NAK for %s", self.config.id, what)
        route = f"R{head['rcv'] or 0}L{head['line']}" if head is not None else "R0L0"
        return frame(f'"NAK"0000{route}A0[]{sia_time(now or self._now())}')

    def _duh(self, head: re.Match[str], problem: str, what: str) -> bytes:
        self.counts["duh"] += 1
        self._say(("duh", problem), "%s: DUH (not handled) for %s", self.config.id, what)
        account = f"#{head['account']}" if head["account"] else ""
        return frame(f'"DUH"{head["seq"]}{self._route(head)}{account}[]')

    # -- transports ------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on the configured port (TCP and/or UDP)."""
        cfg = self.config
        transport = ""
        try:
            if "tcp" in cfg.transports:
                transport = "TCP"
                self._server = await asyncio.start_server(self._serve, cfg.host, cfg.port)
            if "udp" in cfg.transports:
                transport = "UDP"
                loop = asyncio.get_running_loop()
                self._udp, _ = await loop.create_datagram_endpoint(
                    lambda: _Datagrams(self), local_addr=(cfg.host, cfg.port)
                )
                self._udp_worker = asyncio.create_task(self._drain_udp(), name=f"sia-udp-{cfg.id}")
        except OSError as exc:
            await self.close()
            raise StoreSightError(
                f"alarm panel {cfg.id}: cannot listen on {transport} {cfg.host}:{cfg.port}: {exc.strerror or exc}"
            ) from None
        log.info("%s: SIA DC-09 receiver on %s port %d (%s), accounts %s", cfg.id, cfg.host, cfg.port,
                 "/".join(cfg.transports), ", ".join(self._accounts))  # fmt: skip

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        name = writer.get_extra_info("peername")
        peer = f"{name[0]}:{name[1]}" if isinstance(name, tuple) else str(name)
        task = asyncio.current_task()
        if task is None or not self.slots.admit(writer):
            writer.transport.abort()
            return
        cfg = self.config
        self._connections.add(task)
        splitter = FrameSplitter()
        # the first frame must be complete by this deadline; after it, each read waits at most idle_timeout_s
        loop = asyncio.get_running_loop()
        first_by: float | None = loop.time() + cfg.first_frame_timeout_s
        try:
            while True:
                try:
                    deadline = first_by if first_by is not None else loop.time() + cfg.idle_timeout_s
                    async with asyncio.timeout_at(deadline):
                        data = await reader.read(READ_SIZE)
                except TimeoutError:
                    what = "no frame in its first" if first_by is not None else "silent for"
                    limit = cfg.first_frame_timeout_s if first_by is not None else cfg.idle_timeout_s
                    self.counts["timeouts"] += 1
                    log.info("%s: closing the connection from %s: %s %.0f s", cfg.id, peer, what, limit)
                    break
                if not data:
                    break
                for raw in splitter.feed(data):
                    first_by = None
                    reply = await self.handle_frame(raw, "tcp", peer)
                    if reply is not None:
                        writer.write(reply)
                        async with asyncio.timeout(cfg.write_timeout_s):
                            await writer.drain()
                self.counts["oversize"] += splitter.dropped
                splitter.dropped = 0
        except TimeoutError:  # from drain(): a peer that does not read its answers holds nothing here
            self.counts["timeouts"] += 1
            log.info("%s: closing the connection from %s: it took no answer in %.0f s", cfg.id, peer,
                     cfg.write_timeout_s)  # fmt: skip
        except ConnectionError:
            pass  # the panel hung up; what it did not see acknowledged it sends again
        except Exception:  # one connection's failure must not stop the receiver: say it, close that connection
            log.exception("%s: connection from %s failed", cfg.id, peer)
        finally:
            self._connections.discard(task)
            self.slots.release(writer)
            writer.transport.abort()  # not close(): a peer that reads nothing would keep the socket to flush into

    def _datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if not peer_allowed(addr[0], self.config.allow_from):
            self.counts["udp_refused"] += 1
            self._say(("udp-refused", addr[0]), "%s: datagrams from %s ignored: not on allow_from", self.config.id,
                      addr[0])  # fmt: skip
            return
        if len(data) > MAX_FRAME_BYTES + 2:  # not worth a place in the queue (answer_datagram says why)
            self.counts["oversize"] += 1
            return
        try:
            self._udp_queue.put_nowait((data, addr))
        except asyncio.QueueFull:
            self.counts["udp_dropped"] += 1
            self._say(("udp", ""), "%s: UDP backlog full, dropping datagrams (panels resend)", self.config.id)

    async def answer_datagram(self, data: bytes, peer: str) -> bytes | None:
        """The one answer to a UDP datagram, or None: a datagram is one frame (what follows its first CR is not
        read: a frame per CR would be an answer per CR, a reflection of a spoofed sender's traffic)."""
        if len(data) > MAX_FRAME_BYTES + 2:  # the frame, its LF and its CR
            self.counts["oversize"] += 1
            return None
        raw, _, rest = data.partition(b"\r")
        if rest.strip():
            self.counts["udp_trailing"] += 1
        return await self.handle_frame(raw, "udp", peer)

    async def _drain_udp(self) -> None:
        """One datagram at a time, in arrival order: its frame is answered to its sender after storage, once."""
        while True:
            data, addr = await self._udp_queue.get()
            try:
                reply = await self.answer_datagram(data, f"{addr[0]}:{addr[1]}")
            except Exception:  # a bad datagram must not stop the receiver
                log.exception("%s: datagram from %s:%d failed", self.config.id, addr[0], addr[1])
                continue
            if reply is not None and self._udp is not None:
                self._udp.sendto(reply, addr)

    @property
    def tcp_port(self) -> int | None:
        """The bound TCP port (the configured one)."""
        if self._server is None or not self._server.sockets:
            return None
        return int(self._server.sockets[0].getsockname()[1])

    def status(self) -> dict[str, Any]:
        """Counters and when each account was last heard, for readiness and diagnostics."""
        return {
            "port": self.config.port,
            "transports": list(self.config.transports),
            "connections": len(self._connections),
            "refused": self.slots.refused,
            "counts": dict(self.counts),
            "last_heard": {a: t.isoformat() for a, t in self.last_heard.items()},
        }

    async def close(self) -> None:
        """Stop listening and close open connections (an unacknowledged frame is resent by its panel)."""
        if self._server is not None:
            self._server.close()
        if self._udp is not None:
            self._udp.close()
        self.slots.close_all()  # each connection's read ends; a frame being stored finishes first
        connections = list(self._connections)
        if connections:
            _, pending = await asyncio.wait(connections, timeout=CLOSE_WAIT_S)
            connections = list(pending)
        tasks = [*connections, *([self._udp_worker] if self._udp_worker else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, receiver: SiaDc09Receiver) -> None:
        self.receiver = receiver

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.receiver._datagram(data, addr)
