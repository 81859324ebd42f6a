"""Milestone XProtect Transact (INTEGRATIONS.md section 3.10): a TCP server for Transact's standard "TCP client
connector", which connects to us and reads raw text. Each stored transaction of the served lanes is written to
every connected client as normalised receipt text (plugin/pos.py `render_receipt`), one line per item, so a single
Transact definition fits every register: start mask `TXN *`, stop mask `END TXN *`, and transaction events on the
keywords `*** VOID ***`, `NO SALE`, `REFUND NO RCPT`, `POST VOID`, `PRICE OVERRIDE`, `EMPLOYEE DISCOUNT`.

Card numbers are masked before the text exists. Transact keeps nothing that was sent while it was disconnected (it
records live text against live video), so a client that is away misses those transactions; one that cannot keep up
loses whole transactions (never half of one), counted in `dropped`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from plugin.config.pos import PosTransactConfig
from plugin.fusion.pos.model import Transaction, TransactionIntake

log = logging.getLogger(__name__)

CLIENT_QUEUE = 200  # transactions waiting per client; a client this far behind is stuck, not slow


class TransactServer:
    """One `pos.transact` entry: a listener serving the receipt text of its lanes."""

    def __init__(self, config: PosTransactConfig, service: TransactionIntake) -> None:
        self.config = config
        self.service = service
        self.server: asyncio.Server | None = None
        self._clients: set[asyncio.Queue[bytes]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
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
        lanes = ", ".join(self.config.lanes) or "all lanes"
        log.info("pos: XProtect Transact feed on %s:%d (%s)", self.config.host, self.port, lanes)

    async def close(self) -> None:
        """Stop listening and disconnect the clients."""
        if self.publish in self.service.listeners:
            self.service.listeners.remove(self.publish)
        if self.server is not None:
            self.server.close()
            for writer in list(self._writers):
                writer.close()  # Server.close_clients() is Python 3.13+
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
        peer = writer.get_extra_info("peername")
        if len(self._clients) >= self.config.max_clients:
            log.warning("pos: Transact connection from %s refused: %d clients already", peer, len(self._clients))
            writer.close()
            return
        queue: asyncio.Queue[bytes] = asyncio.Queue(CLIENT_QUEUE)
        self._clients.add(queue)
        self._writers.add(writer)
        log.info("pos: Transact connector %s connected", peer)
        # the connector only reads; its EOF (or reset) is how we learn it left
        gone = asyncio.create_task(reader.read(), name=f"transact-eof-{peer}")
        try:
            while not gone.done():
                get = asyncio.create_task(queue.get())
                await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    get.cancel()
                    break
                writer.write(get.result())
                await writer.drain()
                self.sent += 1
        except ConnectionError:
            pass
        finally:
            self._clients.discard(queue)
            self._writers.discard(writer)
            gone.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await gone
            writer.close()
            log.info("pos: Transact connector %s left", peer)
