"""Secrets never reach logs, the console or diagnostics."""

from __future__ import annotations

import re
from collections.abc import Iterator

# user:password@ after a scheme: everything up to the LAST '@' of the whitespace-delimited token, because passwords
# carry '@', ':' and '/' unencoded often enough ("rtsp://admin:pa@ss@host" must not leave "ss@host"). The price is
# that an '@' further on (in a path or a query) takes the host with it: more hidden, never less.
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)\S*@")
# key=value pairs whose key ends in a secret word, in a query, a form body or a log line: password, _password,
# api_key, access_token, client_secret, sig, ...; a quoted key may take a colon (JSON: "password": "x").
_SECRET_WORDS = r"pass(?:word|wd)?|pwd|secret|token|auth\w*|key|ticket|credentials?|signature|sig"
_KEY_VALUE = re.compile(
    rf"(?P<key>(?<![A-Za-z0-9])[\w.-]*?(?:{_SECRET_WORDS})(?P<q>[\"'])?\s*(?:=|(?(q):|(?!)))\s*)"
    r"(?:\"[^\"]*\"|'[^']*'|[^\s&;,\"'}]+)",
    re.IGNORECASE,
)
# an HTTP Authorization header as logged, and a bearer token on its own
_AUTH_HEADER = re.compile(
    r"(?P<key>\bAuthorization\s*:\s*(?:(?:Bearer|Basic|Digest|Token)\s+)?|\bBearer\s+)[^\s\"',;]+", re.IGNORECASE
)
REDACTED = "**REDACTED**"


def redact_url(url: str) -> str:
    """Remove user:password@, secret-looking key=value pairs and Authorization values from a URL or any text."""
    url = _USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", url)
    url = _KEY_VALUE.sub(lambda m: f"{m.group('key')}{REDACTED}", url)
    return _AUTH_HEADER.sub(lambda m: f"{m.group('key')}{REDACTED}", url)


# Card numbers (PCI DSS): 13-19 digits, optionally grouped by single spaces or dashes, that pass the Luhn check and
# start like a card brand (2-6: Mastercard, Amex/Diners/JCB, Visa, Mastercard/Maestro, Discover/UnionPay). Every
# window of a longer digit run is tried, so a PAN glued to other digits (fixed-width records) is found too; the
# price is that some long numbers (an EAN-13 starting with 4, one in ten) are masked as well: the safe side.
_DIGIT_RUN = re.compile(r"\d(?:[ -]?\d){12,}")
# magnetic-stripe track 1 (%B<PAN>^NAME^...?) and track 2 (;<PAN>=...?): never kept, not even masked
_TRACK_DATA = re.compile(r"%B\d{12,19}\^[^?\n]{0,100}\?|;\d{12,19}=[0-9=]{0,40}\?")
PAN_MIN, PAN_MAX = 13, 19
TRACK_REMOVED = "[track data removed]"
_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)  # a Luhn digit doubled, its digits summed


def luhn_ok(digits: str) -> bool:
    """True when the digit string passes the Luhn (mod 10) check."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        total += _DOUBLED[d] if i % 2 == 1 else d
    return total % 10 == 0


def _pan_windows(digits: str) -> Iterator[tuple[int, int]]:
    """Every (start, end) of `digits` that is PAN-like: a brand's first digit, 13-19 long, Luhn-valid.

    Prefix sums make each window's Luhn sum O(1), so a 400-digit run costs ~2,700 lookups instead of ~45,000
    digit steps (a receipt line of digits is a hostile input, and masking runs on every line)."""
    n = len(digits)
    # a[k]: the sum over i < k of the digit as it counts when i is even-from-the-window's-end (plain at even i,
    # doubled at odd i); b[k]: the other parity
    a, b = [0] * (n + 1), [0] * (n + 1)
    for i, ch in enumerate(digits):
        d = ord(ch) - 48
        plain, doubled = d, _DOUBLED[d]
        a[i + 1] = a[i] + (plain if i % 2 == 0 else doubled)
        b[i + 1] = b[i] + (doubled if i % 2 == 0 else plain)
    for start in range(n - PAN_MIN + 1):
        if digits[start] not in "23456":
            continue
        for end in range(start + PAN_MIN, min(start + PAN_MAX, n) + 1):
            # the last digit (end - 1) counts plain: same parity as end - 1 is plain
            total = a[end] - a[start] if (end - 1) % 2 == 0 else b[end] - b[start]
            if total % 10 == 0:
                yield start, end


def find_pans(text: str) -> list[str]:
    """Every card-number candidate in `text` (digits only), for tests and audits."""
    found: list[str] = []
    for m in _DIGIT_RUN.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        found += [digits[s:e] for s, e in _pan_windows(digits)]
    return found


def mask_pans(text: str, keep_first: int = 0, keep_last: int = 4) -> str:
    """`text` with every card number masked with '*', keeping at most its first 6 and last 4 digits (PCI DSS
    3.4); magnetic-stripe track data is removed whole. Length and separators are kept."""
    keep_first, keep_last = min(max(keep_first, 0), 6), min(max(keep_last, 0), 4)
    if len(text) < PAN_MIN:
        return text
    text = _TRACK_DATA.sub(TRACK_REMOVED, text)
    out: list[str] | None = None
    for m in _DIGIT_RUN.finditer(text):
        run = m.group()
        where = [m.start() + i for i, ch in enumerate(run) if ch.isdigit()]
        digits = "".join(text[i] for i in where)
        # a difference array: +1 where a hidden range starts, -1 past its end
        edges = [0] * (len(digits) + 1)
        for start, end in _pan_windows(digits):
            if start + keep_first < end - keep_last:
                edges[start + keep_first] += 1
                edges[end - keep_last] -= 1
        depth = 0
        for k, pos in enumerate(where):
            depth += edges[k]
            if depth > 0:
                out = out if out is not None else list(text)
                out[pos] = "*"
    return text if out is None else "".join(out)


def mask_pans_deep(value: object) -> object:
    """Mask card numbers in every string of a JSON-like value (dicts, lists, tuples, strings); keys too."""
    if isinstance(value, str):
        return mask_pans(value)
    if isinstance(value, dict):
        return {mask_pans(k) if isinstance(k, str) else k: mask_pans_deep(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(mask_pans_deep(v) for v in value)
    return value
