"""Line-oriented receipt text over TCP, the way DVR and VMS POS integrations take it: the register (or a
serial-to-IP converter on its printer port) connects to a port here and writes the receipt as it prints; start and
end patterns cut the stream into transactions (as XProtect Transact's start and stop masks do), and per-line
patterns read items, voids, returns, no-sales, overrides, totals and tenders (`pos.text[].patterns`).

Every line is masked (card numbers) the moment it is decoded, before it is parsed, kept or logged. Several
transactions in one TCP segment are cut at their markers like any others. TCP has no acknowledgement to give, so
the connection is simply read in order: the next line is read only after the previous transaction is stored.

The port is open to the network, so: only `allow_from` addresses are served, `max_connections` at once (a
reconnecting register replaces its own oldest connection, adapters/business/listeners.py); every read has a time
limit (`idle_timeout_s` closes an open transaction, `connection_idle_s` the connection); the patterns run in a worker
thread (the `regex` module releases the GIL while matching) with a time limit per match (`pattern_timeout_ms`); a
transaction that cannot be read or stored is appended to the dead-letter file; and the transaction id is only the
register's word, so the dedupe key also carries a digest of the receipt: a forged "TXN <id>" sent first is stored
beside the real one and never makes it a duplicate.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import regex
from pydantic import ValidationError

from adapters.business.listeners import ConnectionSlots, DeadLetters, peer_host
from plugin.config.pos import DEFAULT_TEXT_PATTERNS, PosTextFeedConfig
from plugin.fusion.pos.model import Transaction, TransactionIntake, TxnType
from plugin.redact import PAN_MAX, mask_pans

log = logging.getLogger(__name__)

SOURCE = "pos.text"
MAX_LINE_BYTES = 4096  # receipt printers are 40-80 columns; a longer "line" is a stream without line breaks
RECEIPT_COLUMNS = 400  # what is kept of one line (the model's limit); the rest is not receipt text
# masked before the cut, over enough more that a card number across column 400 is seen whole (19 digits, 18 gaps)
_MASK_COLUMNS = RECEIPT_COLUMNS + 2 * PAN_MAX


class PatternTimeout(ValueError):
    """A pattern took longer than `pattern_timeout_ms` on one line."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Draft:
    header: dict[str, str]
    started: datetime
    lines: list[str] = field(default_factory=list)
    arrivals: list[datetime] = field(default_factory=list)
    ended: datetime | None = None


def _number(m: regex.Match[str], group: str) -> float:
    text = m.group(group)
    if text is None:
        raise ValueError(f"a line matched without its {group}")
    return float(text)


@dataclass(frozen=True)
class TextError:
    """A transaction cut from the stream that could not be read."""

    reason: str
    lines: tuple[str, ...]


class ReceiptTextParser:
    """Pure: feed it lines (with their arrival time), get transactions back when they end."""

    def __init__(self, feed: PosTextFeedConfig, tz: ZoneInfo, clock: Callable[[], datetime] = _now) -> None:
        self.feed = feed
        self.tz = tz
        self.clock = clock
        self.p = {name: feed.pattern(name) for name in DEFAULT_TEXT_PATTERNS}
        self.timeout_s = feed.pattern_timeout_ms / 1000
        self._draft: _Draft | None = None
        self.stray = 0  # lines outside any transaction

    def _search(self, name: str, text: str) -> regex.Match[str] | None:
        try:
            return self.p[name].search(text, timeout=self.timeout_s)
        except TimeoutError:
            raise PatternTimeout(
                f"pattern {name} took over {self.feed.pattern_timeout_ms:g} ms on one line "
                f"(pos.text[].patterns.{name}, pattern_timeout_ms)"
            ) from None

    @property
    def open(self) -> bool:
        """A transaction has started and not ended."""
        return self._draft is not None

    def feed_line(self, line: str) -> list[Transaction | TextError]:
        """One line of text (without its line break). CPU-bound on hostile text: run it in a thread."""
        line = mask_pans(line.rstrip("\r\n")[:_MASK_COLUMNS])[:RECEIPT_COLUMNS]
        now = self.clock()
        out: list[Transaction | TextError] = []
        try:
            start = self._search("start", line)
        except PatternTimeout as exc:
            return [self._broken(line, now, exc)]
        if start is not None:
            if self._draft is not None:  # no end marker before the next start: the previous one ends here
                out.append(self._close(now))
            self._draft = _Draft({k: v for k, v in start.groupdict().items() if v}, now, [line], [now])
            return out
        if self._draft is None:
            if line.strip():
                self.stray += 1
            return out
        self._draft.lines.append(line)
        self._draft.arrivals.append(now)
        try:
            ended = self._search("end", line) is not None
        except PatternTimeout as exc:
            return [self._broken(None, now, exc)]
        if ended or len(self._draft.lines) >= self.feed.max_lines:
            out.append(self._close(now))
        return out

    def _broken(self, line: str | None, now: datetime, exc: PatternTimeout) -> TextError:
        """A line the start or end pattern could not judge: it ends the open transaction as unreadable."""
        draft, self._draft = self._draft, None
        lines = (*(draft.lines if draft is not None else ()), *((line,) if line is not None else ()))
        return TextError(str(exc), lines)

    def flush(self) -> list[Transaction | TextError]:
        """End the open transaction as it is (idle timeout, connection closed)."""
        return [] if self._draft is None else [self._close(self.clock())]

    def _close(self, now: datetime) -> Transaction | TextError:
        draft, self._draft = self._draft, None
        assert draft is not None
        draft.ended = now
        try:
            return self._read(draft)
        except (ValueError, ValidationError, OverflowError) as exc:  # OverflowError: a stamp near year 1 or 9999
            reason = str(exc).splitlines()[0] if not isinstance(exc, ValidationError) else "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )  # fmt: skip
            return TextError(mask_pans(reason), tuple(draft.lines))

    def _read(self, draft: _Draft) -> Transaction:
        find = self._search
        header = draft.header
        lane = self.feed.lane or header.get("lane")
        if not lane:
            raise ValueError("no lane: set pos.text[].lane or capture (?P<lane>...) in the start pattern")
        end = draft.ended or draft.started
        shift = timedelta(0)
        if header.get("time"):
            # the register's own clock wins; the arrival times keep their spacing (the window, each void's moment)
            stamped = datetime.fromisoformat(header["time"].replace(" ", "T"))
            stamped = stamped.replace(tzinfo=self.tz) if stamped.tzinfo is None else stamped
            shift = stamped - end
        kind: TxnType | None = None
        link: dict[str, Any] | None = None
        lines: list[dict[str, Any]] = []
        tenders: list[dict[str, Any]] = []
        total = None
        for text, arrived in zip(draft.lines[1:], draft.arrivals[1:], strict=True):
            if m := find("post_void", text):
                kind = "post_void"
                if m.groupdict().get("link"):
                    link = {"id": m.group("link"), "reason": "PostVoid"}
            elif find("no_sale", text):
                kind = "no_sale"
            elif find("cancelled", text):
                kind = "void"
            elif m := find("item", text):
                linked = find("linked", text)
                lines.append(
                    {
                        "kind": "return" if find("return", text) else "sale",
                        "description": (m.group("description") or "")[:200],
                        "amount": abs(_number(m, "amount")),
                        "voided": bool(find("void", text)),
                        "linked": linked is not None,
                        "time": arrived + shift if find("void", text) else None,
                    }
                )
                if linked is not None and linked.groupdict().get("link") and link is None:
                    link = {"id": linked.group("link"), "reason": "Return"}
            elif (m := find("price_override", text)) and lines:
                lines[-1].update(
                    price_override=True, regular_price=_number(m, "regular"), unit_price=_number(m, "actual")
                )
            elif (m := find("employee_discount", text)) and lines:
                value = _number(m, "amount")
                lines[-1].update(employee_discount=value, discount=lines[-1].get("discount", 0.0) + value)
                if m.groupdict().get("employee"):
                    lines[-1]["employee_id"] = m.group("employee")
            elif m := find("total", text):
                total = _number(m, "amount")
            elif m := find("tender", text):
                tenders.append({"type": (m.group("type") or "unknown").lower(), "amount": _number(m, "amount")})
        if kind is None:
            kind = "return" if any(ln["kind"] == "return" and not ln["voided"] for ln in lines) else "sale"
        if kind != "post_void" and link is not None and not any(ln["kind"] == "return" for ln in lines):
            link = None
        if kind == "return" and link is not None and not all(ln["linked"] for ln in lines if ln["kind"] == "return"):
            link = None  # a link on one line is not a receipt for the others
        begin, end = draft.started + shift, end + shift
        ident = header.get("id") or hashlib.sha1("\n".join(draft.lines).encode()).hexdigest()[:16]
        return Transaction.model_validate(
            {
                "id": ident, "lane": lane, "type": kind, "begin": begin, "end": end,
                "operator": header.get("operator"), "lines": lines, "tenders": tenders, "total": total,
                "link": link, "receipt": draft.lines,
            }
        )  # fmt: skip


class ReceiptTextServer:
    """The TCP listener of one `pos.text` entry."""

    def __init__(self, feed: PosTextFeedConfig, service: TransactionIntake, dead_letters: Path) -> None:
        self.feed = feed
        self.service = service
        self.server: asyncio.Server | None = None
        self.received = 0
        self.errors: list[TextError] = []  # the last few, for diagnostics; every one is in the dead-letter file
        self.dead_letters = DeadLetters(dead_letters)
        self.slots = ConnectionSlots(f"pos: text port {feed.port}", feed.allow_from, feed.max_connections)
        self._label = f"{feed.host}:{feed.port}"

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the one picked for port 0)."""
        assert self.server is not None and self.server.sockets
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Listen."""
        self.server = await asyncio.start_server(self._client, self.feed.host, self.feed.port, limit=MAX_LINE_BYTES)
        self._label = f"{self.feed.host}:{self.port}"
        self.slots.label = f"pos: text on {self._label}"
        log.info("pos: receipt text on %s (lane %s)", self._label, self.feed.lane or "from text")

    async def close(self) -> None:
        """Stop listening and drop the connections."""
        if self.server is not None:
            self.server.close()
            self.slots.close_all()  # Server.close_clients() is Python 3.13+
            await self.server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = peer_host(writer)
        if not self.slots.admit(writer):
            writer.transport.abort()
            return
        parser = ReceiptTextParser(self.feed, self.service.tz)
        try:
            while True:
                # every read is bounded: an open transaction is closed after idle_timeout_s, a silent connection
                # after connection_idle_s (a slot held by nothing is a slot a register cannot have)
                open_txn = parser.open
                try:
                    async with asyncio.timeout(self.feed.idle_timeout_s if open_txn else self.feed.connection_idle_s):
                        raw = await reader.readline()
                except TimeoutError:
                    if not open_txn:
                        log.info("pos: text from %s: silent for %.0f s, closed", peer, self.feed.connection_idle_s)
                        break
                    await self._submit(await asyncio.to_thread(parser.flush), peer)
                    continue
                except ValueError:  # longer than MAX_LINE_BYTES without a line break: dropped, the rest goes on
                    log.warning("pos: text from %s: a line over %d bytes was dropped", peer, MAX_LINE_BYTES)
                    continue
                if not raw:
                    break
                text = raw.decode(self.feed.encoding, errors="replace")
                # off the event loop: a hostile line must not stall cameras, deliveries and alarm ACKs
                await self._submit(await asyncio.to_thread(parser.feed_line, text), peer)
        except ConnectionError as exc:
            log.info("pos: text from %s: connection lost: %s", peer, exc)
        finally:
            self.slots.release(writer)
            writer.transport.abort()
            await self._submit(await asyncio.to_thread(parser.flush), peer)

    async def _submit(self, items: list[Transaction | TextError], peer: str) -> None:
        for item in items:
            if isinstance(item, TextError):
                self.errors = [*self.errors[-19:], item]
                log.warning("pos: text from %s: a transaction could not be read: %s", peer, item.reason)
                await self._dead_letter(f"not read: {item.reason}", peer, item.lines)
                continue
            # the id is only the register's word: the receipt's digest joins the dedupe key (module docstring)
            digest = hashlib.sha256("\n".join(item.receipt).encode()).hexdigest()[:16]
            try:
                await self.service.submit(item, SOURCE, origin=f"text:{digest}")
            except Exception as exc:  # the database failing: nothing acknowledged it, so it must be kept here
                log.error("pos: text from %s: transaction %s not stored: %s", peer, item.id, exc)
                await self._dead_letter(f"not stored: {exc}", peer, item.receipt, item.payload())
                continue
            self.received += 1

    async def _dead_letter(
        self, reason: str, peer: str, lines: tuple[str, ...], transaction: dict[str, Any] | None = None
    ) -> None:
        try:
            await self.dead_letters.add(
                mask_pans(reason), feed=self._label, lane=self.feed.lane, peer=peer, lines=list(lines),
                transaction=transaction,
            )  # fmt: skip
        except OSError as exc:  # the disk itself failing: the log is the last place it can be seen
            log.error("pos: text from %s: dead-letter file %s not written (%s): %s", peer, self.dead_letters.path,
                      exc, " | ".join(lines))  # fmt: skip
