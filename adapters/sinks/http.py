"""The one HTTP client the VMS sinks share: a session per sink with its TLS settings, each reply read in full (JSON
parsed when it is JSON), and the failures that leave no reply mapped to the sink outcomes. What a status code
means stays with each sink, since every product says it differently."""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from adapters.sinks.common import HTTP_EXCEPTIONS, NoAnswer, tls_context
from plugin.errors import SinkAuthError, SinkNotReady, SinkRejected
from plugin.redact import redact_url


@dataclass(frozen=True)
class Reply:
    """One HTTP answer, read in full."""

    status: int
    text: str
    data: Any  # the parsed JSON body; None when it is empty or not JSON
    headers: CIMultiDictProxy[str]

    @property
    def location(self) -> str | None:
        """Where a redirect points."""
        return self.headers.get("Location")


def raise_for_status(reply: Reply, where: str, limit: int) -> None:
    """What a non-2xx answer means to a receiver that is no VMS (a webhook, head office): 401/403 auth (it will not
    fix itself), 408/425/429 and 5xx try again later, any other refused; the body (its first `limit` characters)
    in the message."""
    if 200 <= reply.status < 300:
        return
    text = reply.text[:limit]
    if reply.status in (401, 403):
        raise SinkAuthError(f"{where}: HTTP {reply.status} {text}")
    if reply.status in (408, 425, 429) or reply.status >= 500:
        raise SinkNotReady(f"{where}: HTTP {reply.status} {text}")
    raise SinkRejected(f"{where}: HTTP {reply.status} {text}")


class HttpClient:
    """One product's HTTP endpoint as a sink talks to it."""

    def __init__(
        self,
        base: str,
        where: str,
        *,
        timeout_s: float,
        verify_tls: bool = True,
        ca_bundle: Path | None = None,
        ca_hint: str | None = None,
        unreachable: type[SinkNotReady] = NoAnswer,
        keep_cookies: bool = False,
        follow_redirects: bool = False,
    ) -> None:
        """`where` names the product in every message (never credentials). `ca_hint` tells how to fix an untrusted
        certificate, which is then SinkAuthError (it will not fix itself); without one it is like any unreachable
        server. `unreachable` is what no reply at all raises: NoAnswer where a retry must look before it writes
        again. Sinks that send their credentials with each request keep no cookies."""
        self.base = base
        self.where = where
        self.timeout_s = timeout_s
        self.verify_tls = verify_tls
        self.ca_bundle = ca_bundle
        self.ca_hint = ca_hint
        self.unreachable = unreachable
        self.keep_cookies = keep_cookies
        self.follow_redirects = follow_redirects
        self._session: aiohttp.ClientSession | None = None

    @property
    def opened(self) -> bool:
        """Whether a session was made (and so may hold connections or a login to end)."""
        return self._session is not None

    async def _ssl(self) -> ssl.SSLContext | bool:
        return await tls_context(self.verify_tls, self.ca_bundle, self.where)

    async def session(self) -> aiohttp.ClientSession:
        """The session, made on first use (loading a CA bundle reads a file: not on the event loop)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                connector=aiohttp.TCPConnector(ssl=await self._ssl()),
                cookie_jar=None if self.keep_cookies else aiohttp.DummyCookieJar(),
            )
        return self._session

    async def request(
        self,
        method: str,
        path: str | URL,
        *,
        what: str | None = None,
        json_body: Any = None,
        body: bytes | None = None,
        form: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Reply:
        """One request to `base + path` (a URL object is sent as it is); `what` names it in errors. `body`: bytes
        sent exactly as given (a signed payload)."""
        url: str | URL = path if isinstance(path, URL) else self.base + path
        what = what or f"{method} {path}"
        session = await self.session()
        # aiohttp reads timeout=None as "no timeout at all": leave it out to get the session's
        extra: dict[str, Any] = {} if timeout_s is None else {"timeout": aiohttp.ClientTimeout(total=timeout_s)}
        try:
            async with session.request(
                method, url, json=json_body, data=form if body is None else body, params=params, headers=headers,
                allow_redirects=self.follow_redirects, **extra,
            ) as resp:  # fmt: skip
                text = (await resp.read()).decode("utf-8", "replace")
                try:
                    data = json.loads(text) if text.strip() else None
                except ValueError:
                    data = None
                return Reply(resp.status, text, data, resp.headers)
        except aiohttp.ClientConnectorCertificateError as exc:
            if self.ca_hint is None:
                raise self.unreachable(redact_url(f"{self.where}: {what}: {type(exc).__name__}: {exc}")) from None
            raise SinkAuthError(
                f"{self.where}: the server's TLS certificate is not trusted ({exc.certificate_error}); {self.ca_hint}"
            ) from None
        except HTTP_EXCEPTIONS as exc:
            reason = str(exc) or "no answer in time"
            raise self.unreachable(redact_url(f"{self.where}: {what}: {type(exc).__name__}: {reason}")) from None

    async def close(self) -> None:
        """Release the connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None
