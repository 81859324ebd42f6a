"""What the business TCP listeners share (receipt text, the Transact feed, the DC-09 receiver): who may connect
(an allow list, connection slots) and where input that could not be taken is kept (a dead-letter file).

Slots: a listener holds at most `max_total` connections, and at most `per_address` from one address. A new
connection from an address at its limit, or from an address that already has one when the listener is full,
replaces that address's oldest connection: a register, panel or XProtect server that reconnects after a network
blip is never locked out by its own dead connection (a half-open TCP connection is only noticed when written to).
A connection from an address with none when the listener is full is refused, so the slots cannot be taken from
the devices already connected either.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any

from plugin.config.base import peer_allowed

log = logging.getLogger(__name__)


def peer_host(writer: asyncio.StreamWriter) -> str:
    """The peer's address (no port) of a connection; "" when the transport does not say."""
    name = writer.get_extra_info("peername")
    return str(name[0]) if isinstance(name, tuple) and name else ""


class ConnectionSlots:
    """The connections of one listener, by peer address, with the admission policy in the module docstring."""

    def __init__(
        self,
        label: str,
        allow_from: Sequence[IPv4Network | IPv6Network],
        max_total: int,
        per_address: int | None = None,
    ) -> None:
        self.label = label
        self.allow_from = list(allow_from)
        self.max_total = max_total
        self.per_address = per_address or max_total
        self._by_host: dict[str, list[asyncio.StreamWriter]] = {}
        self.refused = 0
        self.replaced = 0
        self._warned: set[tuple[str, str]] = set()

    def __len__(self) -> int:
        return sum(len(w) for w in self._by_host.values())

    def admit(self, writer: asyncio.StreamWriter) -> bool:
        """Take the connection (closing the one it replaces), or refuse it: False, and the caller closes it."""
        host = peer_host(writer)
        if not peer_allowed(host, self.allow_from):
            self._refuse(host, "not on allow_from")
            return False
        mine = self._by_host.setdefault(host, [])
        if len(mine) >= self.per_address or (len(self) >= self.max_total and mine):
            old = mine.pop(0)
            old.transport.abort()  # a dead connection is not flushed first: it would wait for a peer that is gone
            self.replaced += 1
            log.info("%s: a new connection from %s replaces its oldest", self.label, host)
        elif len(self) >= self.max_total:
            self._refuse(host, f"{self.max_total} connections already")
            if not mine:
                del self._by_host[host]
            return False
        mine.append(writer)
        return True

    def release(self, writer: asyncio.StreamWriter) -> None:
        """The connection ended (a replaced one was released when it was replaced)."""
        host = peer_host(writer)
        mine = self._by_host.get(host, [])
        if writer in mine:
            mine.remove(writer)
        if not mine:
            self._by_host.pop(host, None)

    def close_all(self) -> None:
        """Drop every connection (the listener is closing)."""
        for writers in self._by_host.values():
            for writer in writers:
                writer.transport.abort()
        self._by_host.clear()

    def _refuse(self, host: str, why: str) -> None:
        self.refused += 1
        key = (host, why)
        if key in self._warned:  # a scanner retries a lot: say it once per address and reason
            log.debug("%s: connection from %s refused: %s", self.label, host, why)
        else:
            self._warned.add(key)
            log.warning("%s: connection from %s refused: %s", self.label, host, why)


class DeadLetters:
    """An append-only JSON-lines file of input that was received but could not be parsed or stored, so an operator
    can see it and replay it: one object per line, with the time, the reason and the (masked) text."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0

    async def add(self, reason: str, **fields: Any) -> None:
        """Append one record (in a thread: it is synced to disk before this returns)."""
        record = {"at": datetime.now(UTC).isoformat(), "reason": reason, **fields}
        line = (json.dumps(record, default=str, ensure_ascii=False) + "\n").encode()
        await asyncio.to_thread(self._append, line)
        self.count += 1

    def _append(self, line: bytes) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)  # one write per record: concurrent appends never interleave inside a line
            os.fsync(fd)
        finally:
            os.close(fd)
