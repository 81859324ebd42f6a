"""System shared memory for detector inputs when Triton runs on the same host (ARCHITECTURE.md: InferenceClient).

A letterboxed 416x416 frame is 519 kB. Over gRPC it is copied into a protobuf, through the socket and out again on
the server; in a registered shared memory region the bridge writes it once and the request carries only the
region's name. Each in-flight request owns one region (a slot) from letterboxing until its answer, so concurrent
cameras never write into a batch Triton is still reading. Regions are created on demand up to `max_slots`;
beyond that, or when shared memory cannot be had at all (Triton in another container or host, /dev/shm full), a
request goes over the wire, and the reason is logged once.

A region is unregistered only once Triton lets it go: a request the bridge cancelled or timed out still runs to
the end on the server, which refuses to unregister a region such a request reads ("currently in use") and keeps
the registration, and its mapping, for its lifetime if nobody asks again. Triton announces no release, so the
pool asks again until it succeeds (bounded by the request timeout), in a task a second cancellation cannot stop,
and `close` waits for those tasks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from plugin.errors import InferenceUnavailable

log = logging.getLogger(__name__)

SharedMemoryMode = Literal["auto", "on", "off"]
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
SHM_DIR = "/dev/shm"
# gRPC statuses that mean "the server is not answering now" rather than "it answered and refused the region"
UNREACHABLE_STATUSES = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED")
# Triton's answer to unregistering a region an unfinished request still holds (2.51: INTERNAL status)
IN_USE = "currently in use"
# how often to ask Triton again for a region it still holds: the first retry soon (a cancelled request finishes
# within one inference), then less often
RETRY_FIRST_S = 0.005
RETRY_MAX_S = 0.2


def wants_shared_memory(mode: SharedMemoryMode, address: str) -> bool:
    """Whether to try shared memory: `on` always, `off` never, `auto` when the server's host is this host."""
    if mode != "auto":
        return mode == "on"
    if address.startswith("["):
        host = address[: address.find("]") + 1]
    else:
        host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
    return host.lower() in LOOPBACK_HOSTS


@dataclass
class Slot:
    """One registered region and a uint8 [max_batch, S, S, 3] view of it."""

    name: str
    handle: Any
    view: npt.NDArray[np.uint8] | None
    writer: asyncio.Future[Any] | None = None  # the letterbox thread writing into the view, if any


class SharedMemoryPool:
    """Registered system shared memory regions for one client's requests; `acquire` gives None for the wire."""

    def __init__(
        self, client: Any, url: str, shape: tuple[int, int, int, int], timeout_s: float, max_slots: int = 32
    ) -> None:
        self.client = client
        self.url = url
        self.label = f"triton {url}"  # the log prefix
        self.timeout_s = timeout_s
        self.shape = shape
        self.byte_size = int(np.prod(shape))
        self.max_slots = max_slots
        self.failed: str | None = None  # why shared memory is off for good (registration refused)
        self._free: list[Slot] = []
        self._all: list[Slot] = []
        self._full_logged = False
        self._pending: list[Slot] = []  # destroyed later: a worker thread still held a view of the region
        self._retiring: set[asyncio.Task[None]] = set()  # unregistering slots (close waits for them)
        self._closed = False

    @property
    def active(self) -> bool:
        """True while requests can use shared memory."""
        return self.failed is None

    @property
    def closed(self) -> bool:
        """True once `close` began: its regions are going, none is handed out."""
        return self._closed

    async def acquire(self) -> Slot | None:
        """A free slot (registering a new one if needed), or None: send over the wire."""
        if self.failed is not None or self._closed:
            return None
        if self._free:
            return self._free.pop()
        if len(self._all) >= self.max_slots:
            if not self._full_logged:
                log.info(
                    "%s: all %d shared memory slots busy; extra requests go over the wire", self.label, len(self._all)
                )
                self._full_logged = True
            return None
        return await self._register()

    def release(self, slot: Slot) -> None:
        """Give a slot back after its answer arrived."""
        if slot in self._all:
            self._free.append(slot)

    async def discard(self, slot: Slot) -> None:
        """Drop a slot whose request failed or was cancelled: Triton may still read it, so it is never reused;
        it is unregistered once Triton lets it go (a caller cancelled again stops waiting, `close` does not)."""
        if slot in self._all:
            self._all.remove(slot)
            await asyncio.wait({self._retire_soon(slot)})  # wait() never cancels the task it waits on

    def _retire_soon(self, slot: Slot, registering: asyncio.Future[Any] | None = None) -> asyncio.Task[None]:
        """Unregister and destroy a slot in a task of its own: a request cancelled twice (a camera stopped during
        shutdown) must not leave its region registered on the server."""
        task = asyncio.ensure_future(self._retire(slot, registering))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        return task

    async def _retire(self, slot: Slot, registering: asyncio.Future[Any] | None) -> None:
        if slot.writer is not None and not slot.writer.done():  # never unmap under a letterbox thread (SIGSEGV)
            await asyncio.wait({slot.writer})
        if registering is not None:  # a registration cancelled on our side may still have reached the server
            done, _ = await asyncio.wait({registering}, timeout=self.timeout_s)
            if not done:
                registering.cancel()
            elif registering.cancelled() or registering.exception() is not None:
                self._destroy(slot)  # refused or not sent: nothing registered
                return
        await self._unregister(slot)

    async def _register(self) -> Slot | None:
        from tritonclient.utils import InferenceServerException
        from tritonclient.utils import shared_memory as shm

        free = _shm_free_bytes()
        # tmpfs pages are allocated on write: a region larger than what is left would crash the writer (SIGBUS)
        if free is not None and free < 2 * self.byte_size:
            self._fail(f"{SHM_DIR} has {free // (1 << 20)} MiB free, a slot needs {self.byte_size // (1 << 20)} MiB")
            return None
        name = f"storesight_{os.getpid()}_{uuid.uuid4().hex[:12]}"
        try:
            handle = shm.create_shared_memory_region(name, f"/{name}", self.byte_size, create_only=True)
        except shm.SharedMemoryException as exc:
            self._fail(f"cannot create a region: {exc.__cause__ or exc}")
            return None
        slot = Slot(name, handle, None)
        # shielded: cancelled or timed out here, the call goes on and its answer says whether there is anything to
        # unregister (a registration that reached the server stays there otherwise)
        registering = asyncio.ensure_future(self.client.register_system_shared_memory(name, f"/{name}", self.byte_size))
        try:
            async with asyncio.timeout(self.timeout_s):
                await asyncio.shield(registering)
        except InferenceServerException as exc:
            shm.destroy_shared_memory_region(handle)
            if any(s in str(exc.status() or "") for s in UNREACHABLE_STATUSES):  # down now, not unable: retry later
                raise InferenceUnavailable(f"Triton at {self.url}: {exc.message()}") from None
            self._fail(f"Triton cannot map it ({exc.message()}): is it on another host or in another container?")
            return None
        except OSError as exc:
            shm.destroy_shared_memory_region(handle)
            raise InferenceUnavailable(f"Triton at {self.url}: {exc}") from None
        except TimeoutError:
            self._retire_soon(slot, registering)
            raise InferenceUnavailable(f"Triton at {self.url}: no answer to registering shared memory") from None
        except BaseException:  # cancellation: no region left behind, here or on the server
            self._retire_soon(slot, registering)
            raise
        if self._closed:  # the client closed while this registration was on its way
            await asyncio.wait({self._retire_soon(slot)})
            return None
        slot.view = shm.get_contents_as_numpy(handle, np.uint8, self.shape)
        self._all.append(slot)
        return slot

    def _fail(self, reason: str) -> None:
        self.failed = reason
        log.warning("%s: shared memory off, sending frames over the wire: %s", self.label, reason)

    async def reset(self) -> None:
        """Forget every slot (the server lost its registrations, e.g. it restarted); new ones register on demand."""
        slots, self._all, self._free = self._all, [], []
        if slots:
            await asyncio.wait({self._retire_soon(slot) for slot in slots})

    async def close(self) -> None:
        """Unregister and destroy every region, waiting until Triton has let each go."""
        self._closed = True
        await self.reset()
        while self._retiring:  # slots of cancelled requests and registrations, retiring in their own tasks
            await asyncio.wait(set(self._retiring))
        if self._pending:  # a worker thread was still letterboxing into one of them: it is done within ms
            await asyncio.sleep(0.05)
            pending, self._pending = self._pending, []
            for slot in pending:
                self._destroy(slot)

    async def _unregister(self, slot: Slot) -> None:
        """Unregister a region, asking again while Triton still reads it; then unmap it here."""
        from tritonclient.utils import InferenceServerException

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        delay = RETRY_FIRST_S
        while True:
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self.client.unregister_system_shared_memory(slot.name)
            except InferenceServerException as exc:
                if IN_USE not in exc.message():  # already gone (restarted server): nothing to undo there
                    log.debug("%s: unregister %s: %s", self.label, slot.name, exc.message())
                elif loop.time() < deadline:  # a cancelled or timed-out request Triton is still running
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, RETRY_MAX_S)
                    continue
                else:
                    log.warning(
                        "%s: Triton still holds shared memory region %s after %.0f s; it stays registered there",
                        self.label, slot.name, self.timeout_s,
                    )  # fmt: skip
            except (TimeoutError, OSError) as exc:  # a server that is down forgets its regions anyway
                log.debug("%s: unregister %s: %r", self.label, slot.name, exc)
            except Exception as exc:  # in a task of its own: say so rather than "exception never retrieved"
                log.warning("%s: cannot unregister shared memory region %s: %r", self.label, slot.name, exc)
            break
        self._destroy(slot)

    def _destroy(self, slot: Slot) -> None:
        from tritonclient.utils import shared_memory as shm

        slot.view = None  # the mapping cannot close while a numpy view of it is alive
        try:
            shm.destroy_shared_memory_region(slot.handle)
        except BufferError:
            # a cancelled request's letterbox thread still holds a view; retried at close, else the mapping
            # lives until the process exits (the handle stays referenced so its finaliser never runs half-way)
            self._pending.append(slot)


def _shm_free_bytes() -> int | None:
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize
