"""Faults on demand for the HTTP emulators of products that cannot run here (Genetec, Frigate): an error status, a
request that hangs, a reply lost after the write was done; and the record of what each emulator received."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

# How long a hung request waits when the emulator is not closed first: longer than any client timeout in the tests.
HANG_S = 60.0


@dataclass
class Fault:
    """What to do to the next `remaining` requests matching method and `path` (a substring of the raw path and
    query, so a Genetec action can be told apart by its DSL name)."""

    kind: Literal["status", "hang", "lose_reply"]
    remaining: int
    method: str | None = None
    path: str | None = None
    status: int = 503

    def matches(self, request: web.Request) -> bool:
        """Whether this fault applies to `request`."""
        return (self.method is None or request.method == self.method) and (
            self.path is None or self.path in request.raw_path
        )


@dataclass
class Seen:
    """One request as received (raw path and query, as sent) and the status it got."""

    method: str
    raw_path: str
    status: int = 0
    body: Any = None
    user: str | None = None


@dataclass
class FaultPlan:
    """The faults still to happen; emulators call `take` for each valid request."""

    faults: list[Fault] = field(default_factory=list)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def fail(self, n: int, status: int = 503, method: str | None = None, path: str | None = None) -> None:
        """Answer the next n matching requests with `status` (before doing anything)."""
        self.faults.append(Fault("status", n, method, path, status=status))

    def hang(self, n: int, method: str | None = None, path: str | None = None) -> None:
        """Let the next n matching requests wait without an answer (until the emulator closes)."""
        self.faults.append(Fault("hang", n, method, path))

    def lose_reply(self, n: int, method: str | None = None, path: str | None = None) -> None:
        """Do the next n matching requests, then drop the connection instead of answering."""
        self.faults.append(Fault("lose_reply", n, method, path))

    def take(self, request: web.Request) -> Fault | None:
        """The fault for this request, counted down; None when none applies."""
        fault = next((f for f in self.faults if f.remaining > 0 and f.matches(request)), None)
        if fault is not None:
            fault.remaining -= 1
        return fault

    async def wait_hung(self) -> None:
        """Hold a hung request until the emulator closes (or HANG_S passes)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.released.wait(), HANG_S)

    @property
    def all_used(self) -> bool:
        """Every fault happened as often as asked."""
        return all(f.remaining == 0 for f in self.faults)


def drop_connection(request: web.Request) -> None:
    """The write happened; the client only sees the connection close."""
    assert request.transport is not None
    request.transport.close()
