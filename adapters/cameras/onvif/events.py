"""ONVIF events: a PullPoint subscription to a camera's event service, whose NotificationMessages become StoreSight
camera signals (plugin/types.py `CameraSignal`, kept per camera by plugin/pipeline/camera_signals.py).

The operations are ONVIF Core's event service, as `../shared/specs/onvif/event.wsdl` defines them:
CreatePullPointSubscription, then a loop of PullMessages long polls on the returned subscription, Renew before the
termination time, Unsubscribe on the way out. When the subscription is lost (a fault on PullMessages or Renew, the
camera rebooted or unreachable), a new one is created, with backoff.

Why not onvif-zeep-async's PullPointManager (4.3.0, checked in its source): it renews on a timer of its own and
never less than 48 s apart (60 s floor x 0.8), restarts 40 s after an error, and does not pull; a pull that fails
because the camera rebooted is not its business. Driving the operations here keeps renewal, pulling and recovery in
one task with one notion of time. The library still does the parts it does well: WS-Security with the camera's
clock offset, WS-Addressing headers, service creation from the subscription reference.

Which subscription a request is for: per WS-Addressing, the SubscriptionReference is an endpoint reference, its
Address plus optional ReferenceParameters, and a client must echo each reference parameter as a SOAP header block
marked `wsa:IsReferenceParameter="true"` in every message to that endpoint (WS-Addressing 1.0 SOAP Binding, 3.4).
Many cameras (Axis's `dom0:SubscriptionId`, for one) give all subscriptions one address and tell them apart only
by that header; without it a pull gets a fault. The parameters are read from the raw reply (zeep turns an element
it happens to know into an object, which cannot be echoed as it came) and sent, copied verbatim, on PullMessages,
Renew and Unsubscribe. A reference without them is addressed by its URL alone, as before.

The replies are parsed by messages.py.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from onvif import ONVIFCamera
from onvif.exceptions import ONVIFError
from zeep.settings import Settings

from adapters.cameras.onvif.device import (
    PROTOCOL_EXCEPTIONS,
    UNREACHABLE_EXCEPTIONS,
    WSDL_DIR,
    _describe,
    _is_auth_failure,
)
from adapters.cameras.onvif.messages import (
    EVENTS_NS,
    PULLPOINT_NS,
    EventsFault,
    EventsProtocolError,
    EventsUnsupported,
    Parsed,
    PullBatch,
    Rejected,
    UnknownTopic,
    parse_pull_response,
    reference_parameters,
)
from plugin.config.cameras import OnvifConfig
from plugin.errors import CameraAuthError, SourceError
from plugin.redact import redact_url
from plugin.types import CameraSignal

log = logging.getLogger(__name__)


# A subscription ends this long after its last renewal: long enough that one lost Renew does not end it, short
# enough that a camera frees the pull point soon after a bridge dies (cameras allow only a few: MaxPullPoints).
SUBSCRIPTION_S = 120.0
# One PullMessages waits this long for a message. Longer means fewer requests; ONVIF devices must accept a minute,
# but a NAT or proxy in between may drop an idle HTTP request sooner.
PULL_TIMEOUT_S = 20.0
MESSAGE_LIMIT = 100  # per pull; a camera with more queued answers again at once
RENEW_MARGIN_S = 10.0  # renew when less than a pull plus this is left (capped at a quarter of the subscription)
RETRY_START_S = 2.0  # first wait after losing the subscription; doubles to RETRY_MAX_S
RETRY_MAX_S = 60.0
UNSUBSCRIBE_TIMEOUT_S = 2.0  # a courtesy on the way out: never hold up shutdown for it
CLOCK_TRUST_S = 5.0  # the camera's clock offset is measured to ~1 s; correct message times only beyond this
MAX_REMEMBERED = 256  # distinct unknown topics / rejection reasons logged; beyond it a noisy camera stays quiet

# what an awaited call to the camera raises when it goes wrong (adapters/onvif.py explains each)
CALL_EXCEPTIONS: tuple[type[Exception], ...] = (*UNREACHABLE_EXCEPTIONS, *PROTOCOL_EXCEPTIONS)


# --- the client ---------------------------------------------------------------------------------------------------


class SubscriptionLost(SourceError):
    """The subscription ended under us: the camera dropped it, rebooted, or stopped answering."""


EventsState = Literal["starting", "subscribed", "reconnecting", "failed", "unsupported", "stopped"]


@dataclass
class EventsStatus:
    """What the events client is doing, for readiness and tests."""

    state: EventsState = "starting"
    subscriptions: int = 0  # successful CreatePullPointSubscription calls
    renewals: int = 0
    pulls: int = 0
    signals: int = 0  # messages delivered as signals
    unknown: int = 0  # messages on topics StoreSight does not use
    rejected: int = 0  # messages that could not be read
    last_error: str | None = None
    last_rejection: str | None = None
    last_signal_at: datetime | None = None  # our clock, when the last signal arrived
    unknown_topics: set[str] = field(default_factory=set)  # logged once each


SignalHandler = Callable[[CameraSignal], Awaitable[None]]


def _remaining(current: Any, termination: Any) -> float | None:
    """TerminationTime - CurrentTime from a zeep reply (datetimes, either may be missing or naive)."""
    if not isinstance(current, datetime) or not isinstance(termination, datetime):
        return None
    if (current.tzinfo is None) != (termination.tzinfo is None):
        current, termination = current.replace(tzinfo=UTC), termination.replace(tzinfo=UTC)
    return float((termination - current).total_seconds())


class _LastReply:
    """A zeep plugin that keeps the last reply envelope as received (zeep calls both hooks of every plugin)."""

    def __init__(self) -> None:
        self.envelope: Any = None

    def ingress(self, envelope: Any, http_headers: Any, operation: Any) -> tuple[Any, Any]:
        self.envelope = envelope
        return envelope, http_headers

    def egress(self, envelope: Any, http_headers: Any, operation: Any, binding_options: Any) -> tuple[Any, Any]:
        return envelope, http_headers


def _raw_replies(service: Any) -> None:
    """Make `service` hand back HTTP replies unparsed. Its own Settings object: the library shares one among all
    services, and zeep's settings() context manager is per thread, not per task, so it would leak to other cameras'
    calls made during a long poll."""
    settings = Settings(strict=False, raw_response=True)
    service.zeep_client.settings = settings
    service.zeep_client_authless.settings = settings


class OnvifEventsClient:
    """Keeps a PullPoint subscription to one camera alive and hands each parsed message to `on_signal`."""

    def __init__(
        self,
        camera_id: str,
        config: OnvifConfig,
        on_signal: SignalHandler,
        *,
        subscription_s: float = SUBSCRIPTION_S,
        pull_timeout_s: float = PULL_TIMEOUT_S,
        retry_start_s: float = RETRY_START_S,
        retry_max_s: float = RETRY_MAX_S,
    ) -> None:
        self.camera_id = camera_id
        self.config = config
        self.on_signal = on_signal
        self.subscription_s = subscription_s
        self.pull_timeout_s = pull_timeout_s
        self.renew_margin_s = min(RENEW_MARGIN_S, subscription_s / 4)
        self.retry_start_s = retry_start_s
        self.retry_max_s = retry_max_s
        self.status = EventsStatus()
        self.where = f"{camera_id}: ONVIF events at {config.host}:{config.port}"
        self._cam: ONVIFCamera | None = None
        self._pullpoint: Any = None
        self._subscription: Any = None
        self._reference: tuple[Any, ...] = ()  # SOAP header blocks every request to the subscription carries
        self._expires = 0.0  # monotonic
        self._rejections_logged: set[str] = set()

    def describe(self) -> dict[str, object]:
        """The status for /readyz (no secrets: errors are redacted where they are made)."""
        st = self.status
        return {
            "state": st.state,
            "subscriptions": st.subscriptions,
            "renewals": st.renewals,
            "signals": st.signals,
            "unknown": st.unknown,
            "rejected": st.rejected,
            "error": st.last_error,
            "last_rejection": st.last_rejection,
            "last_signal_at": None if st.last_signal_at is None else st.last_signal_at.isoformat(),
        }

    def crashed(self, reason: str) -> None:
        """`run()` ended in an unexpected error: its supervisor restarts it; readiness says why meanwhile."""
        self.status.state, self.status.last_error = "reconnecting", reason

    # -- the loop --

    async def run(self) -> None:
        """Subscribe and pull until cancelled; re-subscribe with backoff when the subscription is lost. Returns
        (status failed or unsupported) only when the camera rejects the login or has no event service."""
        delay = self.retry_start_s
        lost_at: float | None = None
        try:
            while True:
                try:
                    await self._subscribe()
                    if lost_at is not None:
                        log.info("%s: subscribed again after %.0f s", self.where, time.monotonic() - lost_at)
                    lost_at, delay = None, self.retry_start_s
                    await self._pull_loop()
                except CameraAuthError as exc:
                    self.status.state, self.status.last_error = "failed", str(exc)
                    log.error("%s: %s (not retried: cameras lock accounts)", self.where, exc)
                    return
                except EventsUnsupported as exc:
                    self.status.state, self.status.last_error = "unsupported", str(exc)
                    log.warning("%s: %s; camera events are off for this camera", self.where, exc)
                    return
                except SourceError as exc:
                    self.status.state, self.status.last_error = "reconnecting", str(exc)
                    if lost_at is None:
                        lost_at = time.monotonic()
                        log.warning("%s: %s; subscribing again", self.where, exc)
                    else:
                        log.debug("%s: still no subscription: %s", self.where, exc)
                await self._teardown(unsubscribe=False)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # jitter: cameras of a store rebooted together
                delay = min(delay * 2, self.retry_max_s)
        finally:
            await self._teardown(unsubscribe=self.status.state == "subscribed")
            if self.status.state in ("starting", "subscribed", "reconnecting"):
                self.status.state = "stopped"

    async def _subscribe(self) -> None:
        cfg = self.config
        password = cfg.password.get_secret_value() if cfg.password is not None else None
        # a fresh device each time: after a reboot the camera may have a new clock, new addresses, new services
        cam = self._cam = ONVIFCamera(
            cfg.host, cfg.port, cfg.username or "", password or "", wsdl_dir=WSDL_DIR, no_cache=True, adjust_time=True
        )
        interval = timedelta(seconds=self.subscription_s)
        try:
            async with asyncio.timeout(cfg.timeout_s):
                await cam.update_xaddrs()
                if EVENTS_NS not in cam.xaddrs:
                    raise EventsUnsupported("the device has no event service")
                events = await cam.create_events_service()
                reply = _LastReply()
                events.zeep_client.plugins.append(reply)
                # relative InitialTerminationTime, so the camera's clock does not matter (the library switches to
                # absolute times for devices that get relative ones wrong)
                result = await events.CreatePullPointSubscription(
                    {"InitialTerminationTime": cam.get_next_termination_time(interval)}
                )
                address = getattr(getattr(result.SubscriptionReference, "Address", None), "_value_1", None)
                if not address:
                    raise EventsProtocolError("CreatePullPointSubscription answered without an address")
                self._reference = reference_parameters(reply.envelope)
                cam.xaddrs[PULLPOINT_NS] = cam.rewrite_url(str(address).strip())
                self._subscription = await cam.create_subscription_service("PullPointSubscription")
                self._pullpoint = await cam.create_pullpoint_service()
                _raw_replies(self._pullpoint)
                if cam.has_broken_relative_time(interval, result.CurrentTime, result.TerminationTime):
                    result = await self._subscription.Renew(
                        self._addressed({"TerminationTime": cam.get_next_termination_time(interval)})
                    )
        except TimeoutError:
            raise SourceError(f"no answer within {cfg.timeout_s:g} s") from None
        except UNREACHABLE_EXCEPTIONS as exc:
            raise SourceError(f"not reachable: {redact_url(_describe(exc))}") from None
        except PROTOCOL_EXCEPTIONS as exc:
            if _is_auth_failure(exc):
                raise CameraAuthError(
                    f"rejected the login for user {cfg.username!r} ({redact_url(_describe(exc))})"
                    if cfg.username
                    else f"requires a login: set onvif.username and onvif.password ({redact_url(_describe(exc))})"
                ) from None
            if isinstance(exc, ONVIFError) and "support service" in str(exc):
                raise EventsUnsupported("the device has no event service") from None
            raise SourceError(f"could not subscribe: {redact_url(_describe(exc))}") from None
        self._expire_in(_remaining(result.CurrentTime, result.TerminationTime))
        self.status.subscriptions += 1
        self.status.state, self.status.last_error = "subscribed", None
        log.info(
            "%s: subscribed (pull point %s%s, ends in %.0f s unless renewed)",
            self.where, redact_url(cam.xaddrs[PULLPOINT_NS]),
            f", {len(self._reference)} reference parameter(s)" if self._reference else "",
            self._expires - time.monotonic(),
        )  # fmt: skip

    def _addressed(self, params: dict[str, Any]) -> dict[str, Any]:
        """A request's parameters with the subscription's reference parameters as SOAP headers (zeep copies them
        into each envelope), when it has any."""
        return params | {"_soapheaders": list(self._reference)} if self._reference else params

    def _expire_in(self, remaining: float | None) -> None:
        # relative to our monotonic clock: the camera's clock may be anywhere
        left = self.subscription_s if remaining is None else max(remaining, 1.0)
        self._expires = time.monotonic() + left

    async def _pull_loop(self) -> None:
        while True:
            left = self._expires - time.monotonic()
            if left <= self.pull_timeout_s + self.renew_margin_s:
                await self._renew()
                left = self._expires - time.monotonic()
            timeout = max(1.0, min(self.pull_timeout_s, left - self.renew_margin_s))
            batch = await self._pull(timeout)
            if batch.remaining_s is not None:
                # the camera's own view of the end; some extend it on every pull, which spares a Renew
                self._expire_in(batch.remaining_s)
            for item in batch.parsed:
                await self._handle(item)

    async def _renew(self) -> None:
        assert self._cam is not None and self._subscription is not None
        interval = timedelta(seconds=self.subscription_s)
        try:
            async with asyncio.timeout(self.config.timeout_s):
                result = await self._subscription.Renew(
                    self._addressed({"TerminationTime": self._cam.get_next_termination_time(interval)})
                )
        except TimeoutError:
            raise SubscriptionLost(f"Renew: no answer within {self.config.timeout_s:g} s") from None
        except CALL_EXCEPTIONS as exc:
            raise SubscriptionLost(f"Renew failed: {redact_url(_describe(exc))}") from None
        self._expire_in(_remaining(getattr(result, "CurrentTime", None), getattr(result, "TerminationTime", None)))
        self.status.renewals += 1
        log.debug("%s: renewed, ends in %.0f s", self.where, self._expires - time.monotonic())

    async def _pull(self, timeout_s: float) -> PullBatch:
        request: dict[str, Any] = {"Timeout": timedelta(seconds=int(timeout_s)), "MessageLimit": MESSAGE_LIMIT}
        try:
            # the camera answers within the Timeout; the extra is for the network and a busy camera
            async with asyncio.timeout(timeout_s + self.config.timeout_s):
                reply = await self._pullpoint.PullMessages(self._addressed(request))
        except TimeoutError:
            raise SubscriptionLost(f"PullMessages: no answer within {timeout_s + self.config.timeout_s:g} s") from None
        except CALL_EXCEPTIONS as exc:
            raise SubscriptionLost(f"PullMessages failed: {redact_url(_describe(exc))}") from None
        self.status.pulls += 1
        content = bytes(getattr(reply, "content", b"") or b"")
        status = int(getattr(reply, "status_code", 0))
        try:
            batch = parse_pull_response(content, self.camera_id)
        except EventsFault as exc:
            raise SubscriptionLost(f"PullMessages: {exc}") from None
        except EventsProtocolError as exc:
            raise SubscriptionLost(f"PullMessages: HTTP {status}: {exc}") from None
        if status != 200:
            raise SubscriptionLost(f"PullMessages: HTTP {status}")
        return batch

    async def _handle(self, item: Parsed) -> None:
        if isinstance(item, UnknownTopic):
            self.status.unknown += 1
            seen = self.status.unknown_topics
            if item.topic not in seen and len(seen) < MAX_REMEMBERED:
                seen.add(item.topic)
                log.info("%s: ignoring topic %s (not a signal StoreSight uses; said once)", self.where, item.topic)
            return
        if isinstance(item, Rejected):
            self.status.rejected += 1
            self.status.last_rejection = f"{item.topic or 'message'}: {item.reason}"
            if item.reason not in self._rejections_logged and len(self._rejections_logged) < MAX_REMEMBERED:
                self._rejections_logged.add(item.reason)
                log.warning("%s: rejected a message on %s: %s", self.where, item.topic or "no topic", item.reason)
            return
        signal = item
        offset = self._cam.dt_diff if self._cam is not None else None
        if offset is not None and abs(offset.total_seconds()) > CLOCK_TRUST_S:
            # the camera's clock is off: put its times on ours, so incidents line up with the video and the VMS
            signal = _shifted(signal, -offset)
        self.status.signals += 1
        self.status.last_signal_at = datetime.now(UTC)
        await self.on_signal(signal)

    async def _teardown(self, unsubscribe: bool) -> None:
        cam, subscription, addressed = self._cam, self._subscription, self._addressed({})
        self._cam = self._pullpoint = self._subscription = None
        self._reference = ()
        if cam is None:
            return
        if unsubscribe and subscription is not None:
            try:
                async with asyncio.timeout(UNSUBSCRIBE_TIMEOUT_S):
                    await subscription.Unsubscribe(addressed)
            except CALL_EXCEPTIONS as exc:
                # the pull point expires by itself at its termination time
                log.debug("%s: Unsubscribe failed: %s", self.where, redact_url(_describe(exc)))
        await cam.close()


def _shifted(signal: CameraSignal, by: timedelta) -> CameraSignal:
    return replace(signal, at=signal.at + by)
