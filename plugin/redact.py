"""Secrets never reach logs, the console or diagnostics."""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^@/\s]+)@")
_QUERY_SECRET = re.compile(r"(?P<key>[?&](?:password|passwd|pass|pwd|token|auth|key|_ticket)=)[^&\s]*", re.I)
REDACTED = "**REDACTED**"


def redact_url(url: str) -> str:
    """Remove user:password@ and secret-looking query values from a URL (or any text containing URLs)."""
    url = _USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", url)
    return _QUERY_SECRET.sub(lambda m: f"{m.group('key')}{REDACTED}", url)
