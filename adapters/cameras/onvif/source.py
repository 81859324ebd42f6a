"""An ONVIF camera as a camera source: it is asked for its analysis stream at every start, then read with the
camera's decoder (PyAV by default, OpenCV as the fallback)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from adapters.cameras.base import DecodingSource
from adapters.cameras.onvif.device import OnvifCamera, OnvifProfile, probe, same_host, with_credentials
from adapters.cameras.pyav import PyAVSource
from plugin.config.cameras import OnvifConfig
from plugin.errors import SourceError
from plugin.protocols import SourceStatus
from plugin.redact import redact_url
from plugin.types import Frame

log = logging.getLogger(__name__)


class OnvifSource:
    """A CameraSource for an ONVIF camera: probes it at every start, then reads the analysis stream."""

    is_file = False

    def __init__(
        self,
        camera_id: str,
        config: OnvifConfig,
        fps: float,
        decoder: type[DecodingSource[Any]] = PyAVSource,
    ) -> None:
        self.camera_id = camera_id
        self.config = config
        self.fps = fps
        self.status = SourceStatus()
        self.name = f"{camera_id} (ONVIF {config.host}:{config.port})"
        self.device: OnvifCamera | None = None
        self.profile: OnvifProfile | None = None
        self.decoder = decoder
        self._inner: DecodingSource[Any] | None = None

    async def frames(self) -> AsyncIterator[Frame]:
        """Probe the camera, then yield frames from its analysis stream."""
        cfg = self.config
        password = cfg.password.get_secret_value() if cfg.password is not None else None
        try:
            self.device = await probe(cfg.host, cfg.port, cfg.username, password, cfg.timeout_s, name=self.camera_id)
            self.profile = self.device.analysis_profile(cfg.profile)
        except SourceError as exc:
            self.status.connected, self.status.last_error = False, str(exc)
            raise
        assert self.profile.stream_uri is not None  # analysis_profile() guarantees it
        log.info(
            "%s: analysing profile %s (%sx%s): %s",
            self.camera_id, self.profile.token, self.profile.width, self.profile.height,
            redact_url(self.profile.stream_uri),
        )  # fmt: skip
        if cfg.username and not same_host(self.profile.stream_uri, cfg.host):
            log.warning(
                "%s: the camera names another host for its stream (%s, configured %s): its credentials are not sent "
                "there; behind NAT or an NVR, give the camera a `source:` URL instead",
                self.camera_id, redact_url(self.profile.stream_uri), cfg.host,
            )  # fmt: skip
        url = with_credentials(self.profile.stream_uri, cfg.username, password, cfg.host)
        self._inner = self.decoder(self.camera_id, url, self.fps)
        self._inner.status = self.status  # one status object for readiness, whichever stage failed
        async for frame in self._inner.frames():
            yield frame

    async def close(self) -> None:
        """Stop reading the stream."""
        if self._inner is not None:
            await self._inner.close()
