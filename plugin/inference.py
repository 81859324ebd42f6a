"""InferenceClient: the bridge's only view of the detector, through Triton's tensor contract (ARCHITECTURE.md)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from plugin.errors import InferenceUnavailable, ModelError
from plugin.types import Detections, ImageArray

log = logging.getLogger(__name__)

PAD_VALUE = 114


class InferenceClient(Protocol):
    """What pipelines need from a detector."""

    async def ready(self) -> bool:
        """True when the server is up and the model loaded."""
        ...

    async def detect(self, images: Sequence[ImageArray]) -> list[Detections]:
        """Detections in each image's own pixel coordinates."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


@dataclass(frozen=True)
class Letterbox:
    """How a frame was fitted into the square model input (top-left, uniform scale)."""

    scale: float

    def to_frame(self, boxes: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Map input-pixel boxes back to frame pixels."""
        return (boxes / self.scale).astype(np.float32)


def letterbox(image: ImageArray, size: int) -> tuple[ImageArray, Letterbox]:
    """Resize keeping aspect ratio into a size x size uint8 canvas, top-left, padded with 114 (as YOLOX trained)."""
    h, w = image.shape[:2]
    scale = min(size / h, size / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    canvas = np.full((size, size, 3), PAD_VALUE, np.uint8)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    canvas[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=interp)
    return canvas, Letterbox(scale)


@dataclass(frozen=True)
class ModelInfo:
    """What the bridge reads from the model's config at start."""

    name: str
    input_size: int
    max_batch_size: int
    class_names: tuple[str, ...]


def _short_error(exc: BaseException) -> str:
    """The first line of an error, cut short: gRPC's run to several lines of debug detail."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= 160 else text[:159] + "…"


def _parse_url(url: str) -> tuple[str, str]:
    scheme, _, rest = url.partition("://")
    return scheme, rest


class TritonInferenceClient:
    """A tritonclient aio client (gRPC or HTTP) shared by all cameras so dynamic batching sees them together."""

    def __init__(self, url: str, model: str, request_timeout_s: float = 10.0) -> None:
        self.url = url
        self.model = model
        self.request_timeout_s = request_timeout_s
        self.scheme, self._address = _parse_url(url)
        self.info: ModelInfo | None = None
        self.last_error: str | None = None  # why the last ready() was False, for the system_inference_down text
        self._client: Any = None

    def _make_client(self) -> Any:
        if self.scheme == "grpc":
            import tritonclient.grpc.aio as grpcclient

            return grpcclient.InferenceServerClient(self._address)
        import tritonclient.http.aio as httpclient

        return httpclient.InferenceServerClient(self._address, ssl=self.scheme == "https")

    def _module(self) -> Any:
        if self.scheme == "grpc":
            import tritonclient.grpc.aio as grpcclient

            return grpcclient
        import tritonclient.http.aio as httpclient

        return httpclient

    async def _ensure(self) -> Any:
        if self._client is None:
            self._client = self._make_client()
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
        from tritonclient.utils import InferenceServerException

        assert self.info is not None
        boxed = [letterbox(img, self.info.input_size) for img in images]
        batch = np.stack([b[0] for b in boxed])
        mod = self._module()
        inp = mod.InferInput("images_u8", list(batch.shape), "UINT8")
        inp.set_data_from_numpy(batch)
        outputs = [mod.InferRequestedOutput(n) for n in ("boxes", "scores", "classes", "count")]
        client = await self._ensure()
        try:
            result = await asyncio.wait_for(
                client.infer(self.model, [inp], outputs=outputs), timeout=self.request_timeout_s
            )
        except TimeoutError:
            raise InferenceUnavailable(f"Triton at {self.url}: no answer in {self.request_timeout_s:.0f} s") from None
        except InferenceServerException as exc:
            raise InferenceUnavailable(f"Triton at {self.url}: {exc.message()}") from None
        except OSError as exc:
            raise InferenceUnavailable(f"Triton at {self.url}: {exc}") from None
        boxes = result.as_numpy("boxes")
        scores = result.as_numpy("scores")
        classes = result.as_numpy("classes")
        counts = result.as_numpy("count").reshape(-1)
        dets = []
        for i, (_, lb) in enumerate(boxed):
            n = int(counts[i])
            dets.append(Detections.from_arrays(lb.to_frame(boxes[i, :n]), scores[i, :n], classes[i, :n]))
        return dets

    async def close(self) -> None:
        """Close the underlying client (Triton waits on open connections when it shuts down)."""
        if self._client is not None:
            await self._client.close()
            self._client = None
