"""InferenceClient: the bridge's only view of the detector, through Triton's tensor contract (ARCHITECTURE.md)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from plugin.errors import InferenceUnavailable, ModelError
from plugin.inference.shm import SharedMemoryMode, SharedMemoryPool, Slot, wants_shared_memory
from plugin.metrics import ModelStats
from plugin.types import Detections, ImageArray

log = logging.getLogger(__name__)

PAD_VALUE = 114


@dataclass(frozen=True)
class Letterbox:
    """How a frame was fitted into the square model input (top-left, uniform scale)."""

    scale: float

    def to_frame(self, boxes: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Map input-pixel boxes back to frame pixels."""
        return (boxes / self.scale).astype(np.float32)


def letterbox(image: ImageArray, size: int) -> tuple[ImageArray, Letterbox]:
    """Resize keeping aspect ratio into a size x size uint8 canvas, top-left, padded with 114 (as YOLOX trained)."""
    canvas = np.empty((size, size, 3), np.uint8)
    return canvas, letterbox_into(image, canvas)


def letterbox_into(image: ImageArray, canvas: ImageArray) -> Letterbox:
    """`letterbox` written into an existing square canvas (a row of a batch, a shared memory region): no copies."""
    size = canvas.shape[0]
    h, w = image.shape[:2]
    scale = min(size / h, size / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    # Bicubic, not area averaging, to shrink: 0.26 ms instead of 1.27 ms for a 768x432 frame to 352 px (OpenCV's
    # INTER_AREA takes a slow path at non-integer ratios), and no worse on real ground truth (packaging/scripts/
    # evaluate.py, PETS 2009 S3-MF1 at 352 px: precision/recall 0.967/0.935 against 0.970/0.944, both far above the
    # 0.83/0.93 of 416 px with area averaging)
    interp = cv2.INTER_CUBIC if scale < 1 else cv2.INTER_LINEAR
    canvas[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=interp)
    canvas[nh:] = PAD_VALUE
    canvas[:nh, nw:] = PAD_VALUE
    return Letterbox(scale)


def letterbox_batch(images: Sequence[ImageArray], out: ImageArray) -> list[Letterbox]:
    """Letterbox each image into `out[i]` ([N,S,S,3] uint8, N >= len(images)); runs in a worker thread."""
    return [letterbox_into(img, out[i]) for i, img in enumerate(images)]


@dataclass(frozen=True)
class ModelInfo:
    """What the bridge reads from the model's config at start."""

    name: str
    input_size: int
    max_batch_size: int
    class_names: tuple[str, ...]


GRPC_RECONNECT_START_MS = 500
GRPC_RECONNECT_MAX_MS = 2000


def triton_aio_module(scheme: str) -> Any:
    """tritonclient's asyncio module for a URL scheme: grpc, else HTTP (http, https)."""
    if scheme == "grpc":
        import tritonclient.grpc.aio as grpcclient

        return grpcclient
    import tritonclient.http.aio as httpclient

    return httpclient


def triton_aio_client(scheme: str, address: str) -> Any:
    """A tritonclient asyncio client for `address` (host:port) over the URL's scheme."""
    mod = triton_aio_module(scheme)
    if scheme == "grpc":
        keepalive = mod.KeepAliveOptions()
        options = [  # tritonclient's own defaults, plus a short reconnect backoff
            ("grpc.max_send_message_length", mod.MAX_GRPC_MESSAGE_SIZE),
            ("grpc.max_receive_message_length", mod.MAX_GRPC_MESSAGE_SIZE),
            ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
            ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
            # gRPC's default backoff grows to 120 s while a server is down: cameras would stay idle up to two
            # minutes after Triton is back (a restart, an external server's maintenance)
            ("grpc.initial_reconnect_backoff_ms", GRPC_RECONNECT_START_MS),
            ("grpc.max_reconnect_backoff_ms", GRPC_RECONNECT_MAX_MS),
        ]
        return mod.InferenceServerClient(address, channel_args=options)
    return mod.InferenceServerClient(address, ssl=scheme == "https")


def _short_error(exc: BaseException) -> str:
    """The first line of an error, cut short: gRPC's run to several lines of debug detail."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= 160 else text[:159] + "…"


def _parse_url(url: str) -> tuple[str, str]:
    scheme, _, rest = url.partition("://")
    return scheme, rest


def _model_stats(model: str, versions: Sequence[dict[str, Any]]) -> ModelStats:
    """One model's statistics from Triton's JSON (gRPC's as_json writes 64-bit numbers as strings and leaves out
    zeros; HTTP writes numbers), every version added up."""

    def total(entry: dict[str, Any], phase: str, field: str) -> int:
        return int(entry.get("inference_stats", {}).get(phase, {}).get(field, 0))

    def add(field_of: Any) -> int:
        return sum(field_of(v) for v in versions)

    def seconds(phase: str) -> float:
        return add(lambda v: total(v, phase, "ns")) / 1e9

    return ModelStats(
        model=model,
        requests=add(lambda v: total(v, "success", "count")),
        failures=add(lambda v: total(v, "fail", "count")),
        inferences=add(lambda v: int(v.get("inference_count", 0))),
        executions=add(lambda v: int(v.get("execution_count", 0))),
        queue_s=seconds("queue"),
        compute_input_s=seconds("compute_input"),
        compute_infer_s=seconds("compute_infer"),
        compute_output_s=seconds("compute_output"),
    )


class TritonInferenceClient:
    """A tritonclient aio client (gRPC or HTTP) shared by all cameras so dynamic batching sees them together."""

    def __init__(
        self, url: str, model: str, request_timeout_s: float = 10.0, shared_memory: SharedMemoryMode = "auto"
    ) -> None:
        self.url = url
        self.model = model
        self.request_timeout_s = request_timeout_s
        self.scheme, self._address = _parse_url(url)
        self.info: ModelInfo | None = None
        self.last_error: str | None = None  # why the last ready() was False, for the system_inference_down text
        self._client: Any = None
        self._use_shm = wants_shared_memory(shared_memory, self._address)
        self._shm: SharedMemoryPool | None = None
        # letterbox threads writing into shared memory: a region is never unmapped under one (that is a segfault,
        # and tritonclient's numpy views of a region are not tracked by the mapping)
        self._writing: set[asyncio.Future[list[Letterbox]]] = set()

    @property
    def shared_memory_active(self) -> bool:
        """True while inputs travel through registered system shared memory rather than the wire."""
        return self._shm is not None and self._shm.active

    async def _ensure(self) -> Any:
        if self._client is None:
            self._client = triton_aio_client(self.scheme, self._address)
        return self._client

    async def ready(self) -> bool:
        """True when Triton answers and the model is ready; loads the model info the first time."""
        from tritonclient.utils import InferenceServerException

        client = await self._ensure()
        try:
            if not await client.is_model_ready(self.model):
                self.last_error = f"model {self.model!r} not loaded"
                return False
            if self.info is None:
                self.info = await self._load_info(client)
            self.last_error = None
            return True
        except (TimeoutError, InferenceServerException, OSError) as exc:
            log.debug("triton %s not ready: %s", self.url, exc)
            self.last_error = _short_error(exc)
            return False
        except Exception as exc:  # aiohttp/grpc raise their own connection errors; all mean "not ready"
            log.debug("triton %s not ready: %s", self.url, exc)
            self.last_error = _short_error(exc)
            return False

    async def wait_ready(self, timeout_s: float) -> ModelInfo:
        """Poll readiness until `timeout_s`; raise a clear error naming the URL and model otherwise."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            if await self.ready():
                assert self.info is not None
                return self.info
            if loop.time() >= deadline:
                raise InferenceUnavailable(
                    f"Triton at {self.url} is unreachable or model {self.model!r} is not ready after {timeout_s:.0f} s"
                )
            await asyncio.sleep(0.5)

    async def statistics(self, models: Sequence[str]) -> list[ModelStats]:
        """Triton's cumulative statistics of these models (all versions added up); InferenceUnavailable when it
        does not answer."""
        client = await self._ensure()
        out = []
        for model in models:
            try:
                if self.scheme == "grpc":
                    raw = await client.get_inference_statistics(model, as_json=True)
                else:
                    raw = await client.get_inference_statistics(model)
            except Exception as exc:  # grpc, aiohttp and tritonclient raise their own kinds: all mean no answer
                raise InferenceUnavailable(
                    f"Triton at {self.url}: no statistics for {model!r}: {_short_error(exc)}"
                ) from None
            out.append(_model_stats(model, raw.get("model_stats", [])))
        return out

    async def _load_info(self, client: Any) -> ModelInfo:
        if self.scheme == "grpc":
            raw = (await client.get_model_config(self.model, as_json=True))["config"]
        else:
            raw = await client.get_model_config(self.model)
        params = {k: v.get("string_value", v.get("stringValue", "")) for k, v in raw.get("parameters", {}).items()}
        inputs = {i["name"]: i for i in raw.get("input", [])}
        if "images_u8" not in inputs:
            raise ModelError(f"model {self.model!r} does not follow the detector contract: no input 'images_u8'")
        dims = [int(d) for d in inputs["images_u8"]["dims"]]
        if len(dims) != 3 or dims[0] != dims[1] or dims[2] != 3:
            raise ModelError(f"model {self.model!r}: images_u8 must be [S,S,3], got {dims}")
        names = tuple(n.strip() for n in params.get("class_names", "").split(",") if n.strip())
        if not names:
            raise ModelError(f"model {self.model!r} publishes no class_names parameter")
        return ModelInfo(self.model, dims[0], max(1, int(raw.get("max_batch_size", 1))), names)

    async def detect(self, images: Sequence[ImageArray]) -> list[Detections]:
        """Letterbox, send as batches of at most max_batch_size, map boxes back to each image."""
        if not images:
            return []
        if self.info is None:
            await self.wait_ready(self.request_timeout_s)
        assert self.info is not None
        out: list[Detections] = []
        step = self.info.max_batch_size
        for start in range(0, len(images), step):
            out.extend(await self._detect_batch(images[start : start + step]))
        return out

    async def _detect_batch(self, images: Sequence[ImageArray]) -> list[Detections]:
        client = await self._ensure()
        # this request's pool, held here: `close` drops self._shm while the request may still be on its way
        pool = self._pool(client)
        slot = await pool.acquire() if pool is not None else None
        try:
            try:
                result, boxed = await self._infer(client, images, slot)
            except _SharedMemoryLost as lost:
                assert pool is not None
                if pool.closed or self._client is not client:  # closed under this request: its region went too
                    raise InferenceUnavailable(f"Triton at {self.url}: the client closed during the request") from None
                log.warning(
                    "triton %s: %s; registering shared memory again, this request over the wire", self.url, lost
                )
                slot = None
                await pool.reset()
                result, boxed = await self._infer(client, images, None)
        except BaseException:
            if slot is not None and pool is not None:
                await pool.discard(slot)
            raise
        if slot is not None and pool is not None:
            pool.release(slot)
        boxes = result.as_numpy("boxes")
        scores = result.as_numpy("scores")
        classes = result.as_numpy("classes")
        counts = result.as_numpy("count").reshape(-1)
        dets = []
        for i, lb in enumerate(boxed):
            n = int(counts[i])
            dets.append(Detections.from_arrays(lb.to_frame(boxes[i, :n]), scores[i, :n], classes[i, :n]))
        return dets

    def _pool(self, client: Any) -> SharedMemoryPool | None:
        """The shared memory slots for requests, or None when frames go over the wire (off by config)."""
        if not self._use_shm:
            return None
        if self._shm is None:
            assert self.info is not None
            size = self.info.input_size
            shape = (self.info.max_batch_size, size, size, 3)
            self._shm = SharedMemoryPool(client, self.url, shape, self.request_timeout_s)
        return self._shm

    def _wire_input(self, images: Sequence[ImageArray]) -> tuple[Any, list[Letterbox]]:
        """The letterboxed batch as request bytes; runs in a worker thread (resize and serialisation are per-frame
        work that would otherwise hold the event loop every camera shares)."""
        assert self.info is not None
        size = self.info.input_size
        batch = np.empty((len(images), size, size, 3), np.uint8)
        boxed = letterbox_batch(images, batch)
        inp = triton_aio_module(self.scheme).InferInput("images_u8", list(batch.shape), "UINT8")
        inp.set_data_from_numpy(batch)
        return inp, boxed

    async def _letterbox_into_slot(self, images: Sequence[ImageArray], slot: Slot) -> list[Letterbox]:
        """Letterbox into a shared memory slot in a worker thread. Cancelled (shutdown, a timeout further up), it
        still waits for the thread: the caller then discards the slot, which unmaps the region."""
        assert slot.view is not None
        work = asyncio.ensure_future(asyncio.to_thread(letterbox_batch, images, slot.view))
        slot.writer = work  # the pool never unmaps the region under it either (a reset by another request)
        self._writing.add(work)
        work.add_done_callback(self._writing.discard)
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            await asyncio.wait({work})
            raise

    async def _infer(self, client: Any, images: Sequence[ImageArray], slot: Slot | None) -> tuple[Any, list[Letterbox]]:
        """Letterbox (in a worker thread) into the slot or the request, then one Triton call."""
        from tritonclient.utils import InferenceServerException

        assert self.info is not None
        mod = triton_aio_module(self.scheme)
        if slot is not None and slot.view is not None:
            boxed = await self._letterbox_into_slot(images, slot)
            size = self.info.input_size
            inp = mod.InferInput("images_u8", [len(images), size, size, 3], "UINT8")
            inp.set_shared_memory(slot.name, len(images) * size * size * 3)
        else:
            inp, boxed = await asyncio.to_thread(self._wire_input, images)
        outputs = [mod.InferRequestedOutput(n) for n in ("boxes", "scores", "classes", "count")]
        try:
            async with asyncio.timeout(self.request_timeout_s):
                result = await client.infer(self.model, [inp], outputs=outputs)
        except TimeoutError:
            raise InferenceUnavailable(f"Triton at {self.url}: no answer in {self.request_timeout_s:.0f} s") from None
        except InferenceServerException as exc:
            if slot is not None and "shared memory" in exc.message().lower():
                raise _SharedMemoryLost(exc.message()) from None
            raise InferenceUnavailable(f"Triton at {self.url}: {exc.message()}") from None
        except OSError as exc:
            raise InferenceUnavailable(f"Triton at {self.url}: {exc}") from None
        except asyncio.CancelledError:
            # grpc.aio cancels the calls of a channel being closed: this request's caller did not cancel it, so it
            # gets the clear error rather than a cancellation it never asked for (which would end its task)
            task = asyncio.current_task()
            if self._client is not client and task is not None and task.cancelling() == 0:
                raise InferenceUnavailable(f"Triton at {self.url}: the client closed during the request") from None
            raise
        except Exception:
            if self._client is not client:  # grpc's "Channel is closed" or aiohttp's "Session is closed"
                raise InferenceUnavailable(f"Triton at {self.url}: the client closed during the request") from None
            raise
        return result, boxed

    async def close(self) -> None:
        """Unregister shared memory, close the client (Triton waits on open connections when it shuts down)."""
        if self._writing:  # another task's letterbox thread is writing into a region: let it finish first
            await asyncio.wait(set(self._writing))
        if self._shm is not None:
            try:
                await self._shm.close()
            finally:
                self._shm = None
        if self._client is not None:
            # dropped before closing: a request the close cuts off sees at once that the client is gone
            client, self._client = self._client, None
            await client.close()


class _SharedMemoryLost(Exception):
    """Triton no longer knows a region this client registered (it restarted, or someone unregistered it)."""
