"""Line-oriented receipt text over TCP, the way DVR and VMS POS integrations take it: the register (or a
serial-to-IP converter on its printer port) connects to a port here and writes the receipt as it prints; start and
end patterns cut the stream into transactions (as XProtect Transact's start and stop masks do), and per-line
patterns read items, voids, returns, no-sales, overrides, totals and tenders (`pos.text[].patterns`).

Every line is masked (card numbers) the moment it is decoded, before it is parsed, kept or logged. Several
transactions in one TCP segment are cut at their markers like any others. TCP has no acknowledgement to give, so
the connection is simply read in order: the next line is read only after the previous transaction is stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from plugin.config.pos import DEFAULT_TEXT_PATTERNS, PosTextFeedConfig
from plugin.fusion.pos.model import Transaction, TransactionIntake, TxnType
from plugin.redact import mask_pans

log = logging.getLogger(__name__)

SOURCE = "pos.text"
MAX_LINE_BYTES = 4096  # receipt printers are 40-80 columns; a longer "line" is a stream without line breaks
RECEIPT_COLUMNS = 400  # what is kept of one line (the model's limit); the rest is not receipt text


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Draft:
    header: dict[str, str]
    started: datetime
    lines: list[str] = field(default_factory=list)
    arrivals: list[datetime] = field(default_factory=list)
    ended: datetime | None = None


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
        self._draft: _Draft | None = None
        self.stray = 0  # lines outside any transaction

    @property
    def open(self) -> bool:
        """A transaction has started and not ended."""
        return self._draft is not None

    def feed_line(self, line: str) -> list[Transaction | TextError]:
        """One line of text (without its line break)."""
        line = mask_pans(line.rstrip("\r\n"))[:RECEIPT_COLUMNS]
        now = self.clock()
        out: list[Transaction | TextError] = []
        start = self.p["start"].search(line)
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
        if self.p["end"].search(line) or len(self._draft.lines) >= self.feed.max_lines:
            out.append(self._close(now))
        return out

    def flush(self) -> list[Transaction | TextError]:
        """End the open transaction as it is (idle timeout, connection closed)."""
        return [] if self._draft is None else [self._close(self.clock())]

    def _close(self, now: datetime) -> Transaction | TextError:
        draft, self._draft = self._draft, None
        assert draft is not None
        draft.ended = now
        try:
            return self._read(draft)
        except (ValueError, ValidationError) as exc:
            reason = str(exc).splitlines()[0] if not isinstance(exc, ValidationError) else "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )  # fmt: skip
            return TextError(mask_pans(reason), tuple(draft.lines))

    def _read(self, draft: _Draft) -> Transaction:
        p = self.p
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
            if m := p["post_void"].search(text):
                kind = "post_void"
                if m.groupdict().get("link"):
                    link = {"id": m.group("link"), "reason": "PostVoid"}
            elif p["no_sale"].search(text):
                kind = "no_sale"
            elif p["cancelled"].search(text):
                kind = "void"
            elif m := p["item"].search(text):
                linked = p["linked"].search(text)
                lines.append(
                    {
                        "kind": "return" if p["return"].search(text) else "sale",
                        "description": m.group("description")[:200],
                        "amount": abs(float(m.group("amount"))),
                        "voided": bool(p["void"].search(text)),
                        "linked": linked is not None,
                        "time": arrived + shift if p["void"].search(text) else None,
                    }
                )
                if linked is not None and linked.groupdict().get("link") and link is None:
                    link = {"id": linked.group("link"), "reason": "Return"}
            elif (m := p["price_override"].search(text)) and lines:
                lines[-1].update(
                    price_override=True, regular_price=float(m.group("regular")), unit_price=float(m.group("actual"))
                )
            elif (m := p["employee_discount"].search(text)) and lines:
                value = float(m.group("amount"))
                lines[-1].update(employee_discount=value, discount=lines[-1].get("discount", 0.0) + value)
                if m.groupdict().get("employee"):
                    lines[-1]["employee_id"] = m.group("employee")
            elif m := p["total"].search(text):
                total = float(m.group("amount"))
            elif m := p["tender"].search(text):
                tenders.append({"type": m.group("type").lower(), "amount": float(m.group("amount"))})
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

    def __init__(self, feed: PosTextFeedConfig, service: TransactionIntake) -> None:
        self.feed = feed
        self.service = service
        self.server: asyncio.Server | None = None
        self.received = 0
        self.errors: list[TextError] = []  # the last few, for diagnostics
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the one picked for port 0)."""
        assert self.server is not None and self.server.sockets
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Listen."""
        self.server = await asyncio.start_server(self._client, self.feed.host, self.feed.port, limit=MAX_LINE_BYTES)
        log.info("pos: receipt text on %s:%d (lane %s)", self.feed.host, self.port, self.feed.lane or "from text")

    async def close(self) -> None:
        """Stop listening and drop the connections."""
        if self.server is not None:
            self.server.close()
            for writer in list(self._writers):
                writer.close()  # Server.close_clients() is Python 3.13+
            await self.server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        parser = ReceiptTextParser(self.feed, self.service.tz)
        self._writers.add(writer)
        try:
            while True:
                try:
                    async with asyncio.timeout(self.feed.idle_timeout_s if parser.open else None):
                        raw = await reader.readline()
                except TimeoutError:
                    await self._submit(parser.flush(), peer)
                    continue
                except ValueError:  # longer than MAX_LINE_BYTES without a line break: dropped, the rest goes on
                    log.warning("pos: text from %s: a line over %d bytes was dropped", peer, MAX_LINE_BYTES)
                    continue
                if not raw:
                    break
                await self._submit(parser.feed_line(raw.decode(self.feed.encoding, errors="replace")), peer)
        except ConnectionError as exc:
            log.info("pos: text from %s: connection lost: %s", peer, exc)
        finally:
            self._writers.discard(writer)
            await self._submit(parser.flush(), peer)
            writer.close()

    async def _submit(self, items: list[Transaction | TextError], peer: object) -> None:
        for item in items:
            if isinstance(item, TextError):
                self.errors = [*self.errors[-19:], item]
                log.warning("pos: text from %s: a transaction could not be read: %s", peer, item.reason)
                continue
            await self.service.submit(item, SOURCE)
            self.received += 1
