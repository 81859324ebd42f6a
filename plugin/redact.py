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


# Card numbers (PCI DSS): 13-19 digits, optionally grouped by single spaces or dashes, that pass the Luhn check and
# start like a card brand (2-6: Mastercard, Amex/Diners/JCB, Visa, Mastercard/Maestro, Discover/UnionPay). Every
# window of a longer digit run is tried, so a PAN glued to other digits (fixed-width records) is found too; the
# price is that some long numbers (an EAN-13 starting with 4, one in ten) are masked as well: the safe side.
_DIGIT_RUN = re.compile(r"\d(?:[ -]?\d){12,}")
# magnetic-stripe track 1 (%B<PAN>^NAME^...?) and track 2 (;<PAN>=...?): never kept, not even masked
_TRACK_DATA = re.compile(r"%B\d{12,19}\^[^?\n]{0,100}\?|;\d{12,19}=[0-9=]{0,40}\?")
PAN_MIN, PAN_MAX = 13, 19
TRACK_REMOVED = "[track data removed]"


def luhn_ok(digits: str) -> bool:
    """True when the digit string passes the Luhn (mod 10) check."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _pan_like(digits: str) -> bool:
    return digits[0] in "23456" and luhn_ok(digits)


def find_pans(text: str) -> list[str]:
    """Every card-number candidate in `text` (digits only), for tests and audits."""
    found: list[str] = []
    for m in _DIGIT_RUN.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        for start in range(len(digits) - PAN_MIN + 1):
            for end in range(start + PAN_MIN, min(start + PAN_MAX, len(digits)) + 1):
                if _pan_like(digits[start:end]):
                    found.append(digits[start:end])
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
        hide = [False] * len(digits)
        for start in range(len(digits) - PAN_MIN + 1):
            for end in range(start + PAN_MIN, min(start + PAN_MAX, len(digits)) + 1):
                if _pan_like(digits[start:end]):
                    for k in range(start + keep_first, end - keep_last):
                        hide[k] = True
        if any(hide):
            out = out if out is not None else list(text)
            for k, pos in enumerate(where):
                if hide[k]:
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
