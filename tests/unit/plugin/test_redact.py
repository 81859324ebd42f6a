"""Secrets out of text: a table of the ways credentials show up in URLs, queries, bodies and headers, each checked
for every secret substring it carries (not only for the marker), and card-number masking against the plain
definition on random digit strings."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugin.redact import REDACTED, find_pans, luhn_ok, mask_pans, redact_url

# (text, the secrets it carries, what must still be there after redaction)
CASES: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    ("rtsp://admin:s3cret@10.0.0.5:554/stream1", ("s3cret", "admin"), ("rtsp://", "10.0.0.5:554/stream1")),
    ("rtsp://admin:pa@ss@host/live", ("pa@ss", "@ss", "ss@"), ("@host/live",)),
    ("rtsp://u:p@ss:w@rd@cam:554/s", ("p@ss", "w@rd", "ss:w"), ("@cam:554/s",)),
    ("opening rtsp://u:p%40ss@host/x failed: 401", ("p%40ss",), ("opening rtsp://", "@host/x failed: 401")),
    ("rtsp://admin:pa/ss@host/x", ("pa/ss", "admin"), ("@host/x",)),  # a '/' typed unencoded
    ("http://cam/snap?user=a&password=hunter2&x=1", ("hunter2",), ("http://cam/snap?user=a&password=", "&x=1")),
    ("http://cam/snap?onvif_password=hunter2", ("hunter2",), ("onvif_password=",)),
    ("GET /api?api_key=AKIA1234567890&page=2", ("AKIA1234567890",), ("api_key=", "&page=2")),
    ("redirect to /cb?access_token=eyJhbGciOi.x.y#state", ("eyJhbGciOi",), ("access_token=",)),
    ("client_id=storesight&client_secret=s3cr3t-v4lue", ("s3cr3t-v4lue",), ("client_id=storesight",)),
    ("secret=topsecret", ("topsecret",), ("secret=",)),
    ("db_password = 'with spaces'", ("with spaces",), ("db_password = ",)),
    ('{"username": "admin", "password": "hunter2"}', ("hunter2",), ('"username": "admin"',)),
    ("{'token': 'abcdef123456', 'n': 3}", ("abcdef123456",), ("'n': 3",)),
    ("https://example.invalid/sas?sig=Zm9vYmFy%3D&se=2026", ("Zm9vYmFy",), ("se=2026",)),
    ("headers {'Authorization': 'Bearer abc.def.ghi'}", ("abc.def.ghi",), ("headers",)),
    ("Authorization: Basic dXNlcjpwYXNz", ("dXNlcjpwYXNz",), ("Authorization: Basic ",)),
    ("curl -H 'Bearer 0123456789abcdef'", ("0123456789abcdef",), ("curl -H",)),
    ("Bearer tok1 then rtsp://a:b@h and passwd=x1y2", ("tok1", "a:b", "x1y2"), ("@h and",)),
]


@pytest.mark.parametrize(("text", "secrets", "kept"), CASES)
def test_no_secret_substring_survives(text: str, secrets: tuple[str, ...], kept: tuple[str, ...]) -> None:
    out = redact_url(text)
    assert REDACTED in out
    for secret in secrets:
        assert secret not in out, f"{secret!r} survived in {out!r}"
    for part in kept:
        assert part in out, f"{part!r} was lost from {out!r}"


@pytest.mark.parametrize(
    "text",
    [
        "rtsp://10.0.0.5:554/stream1",
        "camera cam1: no frames for 12 s",
        "http://cam/snap?user=a&x=1",
        "2026-11-29 14:03:00 TXN 1001 LANE 3 OP 17",
        "the key point is speed",  # a secret word with no value is not a secret
    ],
)
def test_text_without_secrets_is_unchanged(text: str) -> None:
    assert redact_url(text) == text


# what masking means, written the slow way: a brand's first digit, 13-19 digits, the Luhn sum
def _plain_pans(digits: str) -> list[str]:
    return [
        digits[s:e]
        for s in range(len(digits) - 12)
        for e in range(s + 13, min(s + 19, len(digits)) + 1)
        if digits[s] in "23456" and luhn_ok(digits[s:e])
    ]


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="0123456789", min_size=0, max_size=60))
def test_card_number_windows_match_the_definition(digits: str) -> None:
    assert find_pans(digits) == _plain_pans(digits)


def test_masking_a_long_digit_run_hides_every_window() -> None:
    rng = random.Random(7)
    digits = "".join(rng.choice("0123456789") for _ in range(400))
    masked = mask_pans(digits)
    assert len(masked) == 400
    windows = [(s, e) for s in range(388) for e in range(s + 13, min(s + 19, 400) + 1)
               if digits[s] in "23456" and luhn_ok(digits[s:e])]  # fmt: skip
    assert windows  # the random run does hold card-like windows
    for s, e in windows:
        assert set(masked[s : e - 4]) == {"*"}
