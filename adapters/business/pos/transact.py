"""Milestone XProtect Transact (INTEGRATIONS.md section 3.10): a TCP server for Transact's standard "TCP client
connector", which connects to us and reads raw text. Each stored transaction of the served lanes is written to
every connected client as normalised receipt text (plugin/pos.py `render_receipt`), one line per item, so a single
Transact definition fits every register: start mask `TXN *`, stop mask `END TXN *`, and transaction events on the
keywords `*** VOID ***`, `NO SALE`, `REFUND NO RCPT`, `POST VOID`, `PRICE OVERRIDE`, `EMPLOYEE DISCOUNT`.

Card numbers are masked before the text exists. Transact keeps nothing that was sent while it was disconnected (it
records live text against live video), so a client that is away misses those transactions; one that cannot keep up
loses whole transactions (never half of one), counted in `dropped`.

The feed carries every receipt, so only `allow_from` addresses are served; `max_clients` bounds the connectors,
and a connector that reconnects replaces its own oldest connection (adapters/business/listeners.py), so a dead
connection from XProtect's last session never locks it out. Whatever a peer sends is read in bounded chunks and
dropped (the connector only reads): a peer that streams data cannot grow memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from adapters.business.listeners import ConnectionSlots, peer_host
from plugin.config.pos import PosTransactConfig
from plugin.fusion.pos.model import Transaction, TransactionIntake

log = logging.getLogger(__name__)

CLIENT_QUEUE = 200  # transactions waiting per client; a client this far behind is stuck, not slow
READ_CHUNK = 16 * 1024  # what a peer sends is read this much at a time, and dropped
WRITE_TIMEOUT_S = 60.0  # a connector that takes nothing this long is gone (a half-open connection)


async def _until_eof(reader: asyncio.StreamReader) -> None:
    """Read and drop what the peer sends until it closes: how we learn that a connector left."""
    while await reader.read(READ_CHUNK):
        pass


class TransactServer:
    """One `pos.transact` entry: a listener serving the receipt text of its lanes."""

    def __init__(self, config: PosTransactConfig, service: TransactionIntake) -> None:
        self.config = config
        self.service = service
        self.server: asyncio.Server | None = None
        self._clients: set[asyncio.Queue[bytes]] = set()
        self.slots = ConnectionSlots(f"pos: Transact port {config.port}", config.allow_from, config.max_clients)
        self.sent = 0
        self.dropped = 0
        self._eol = "\r\n" if config.line_ending == "crlf" else "\n"
        service.listeners.append(self.publish)

    @property
    def port(self) -> int:
        """The bound port."""
        assert self.server is not None and self.server.sockets
        return int(self.server.sockets[0].getsockname()[1])

    @property
    def clients(self) -> int:
        """Connected Transact connectors."""
        return len(self._clients)

    async def start(self) -> None:
        """Listen."""
        self.server = await asyncio.start_server(self._client, self.config.host, self.config.port)
        self.slots.label = f"pos: Transact on {self.config.host}:{self.port}"
        lanes = ", ".join(self.config.lanes) or "all lanes"
        log.info("pos: XProtect Transact feed on %s:%d (%s)", self.config.host, self.port, lanes)

    async def close(self) -> None:
        """Stop listening and disconnect the clients."""
        if self.publish in self.service.listeners:
            self.service.listeners.remove(self.publish)
        if self.server is not None:
            self.server.close()
            self.slots.close_all()  # Server.close_clients() is Python 3.13+
            await self.server.wait_closed()

    def publish(self, txn: Transaction, lines: list[str]) -> None:
        """Queue one transaction's receipt for every client (called after it is stored)."""
        if self.config.lanes and txn.lane not in self.config.lanes:
            return
        data = (self._eol.join(lines) + self._eol).encode(self.config.encoding, errors="replace")
        for queue in self._clients:
            try:
                queue.put_nowait(data)
            except asyncio.QueueFull:
                self.dropped += 1
                log.warning("pos: Transact client too slow: transaction %s on lane %s not sent", txn.id, txn.lane)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = peer_host(writer)
        if not self.slots.admit(writer):
            writer.transport.abort()
            return
        queue: asyncio.Queue[bytes] = asyncio.Queue(CLIENT_QUEUE)
        self._clients.add(queue)
        log.info("pos: Transact connector %s connected", peer)
        gone = asyncio.create_task(_until_eof(reader), name=f"transact-eof-{peer}")
        try:
            while not gone.done():
                get = asyncio.create_task(queue.get())
                await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    get.cancel()
                    break
                writer.write(get.result())
                async with asyncio.timeout(WRITE_TIMEOUT_S):
                    await writer.drain()
                self.sent += 1
        except (ConnectionError, TimeoutError):
            pass
        finally:
            self._clients.discard(queue)
            self.slots.release(writer)
            gone.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await gone
            writer.transport.abort()
            log.info("pos: Transact connector %s left", peer)
