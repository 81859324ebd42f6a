"""SIA DC-09's wire framing (adapters/business/alarm/sia_dc09.py uses it): the frame check (CRC-16/ARC), framing an
answer (LF, CRC, length, body, CR), the header's fields, the timestamp, and cutting a TCP byte stream into frames."""

from __future__ import annotations

import re
from datetime import UTC, datetime

MAX_FRAME_BYTES = 2048  # a DC-09 frame is 60-300 bytes with x-data: a longer one is dropped unanswered

# CRC, length, the quoted message type, sequence number, receiver and line, account, then the data block
HEADER = re.compile(
    r'(?P<crc>[0-9A-Fa-f]{4})(?P<length>[0-9A-Fa-f]{4})"(?P<star>\*?)(?P<token>[A-Z0-9-]{1,16})"'
    r"(?P<seq>[0-9]{4})(?:R(?P<rcv>[0-9A-Fa-f]{1,6}))?L(?P<line>[0-9A-Fa-f]{1,6})"
    r"(?:#(?P<account>[0-9A-Fa-f]{3,16}))?\["
)


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16_arc(data: bytes) -> int:
    """CRC-16/ARC (reflected polynomial 0xA001, initial value 0): the DC-09 frame check (a byte per step)."""
    crc = 0
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def frame(body: str) -> bytes:
    """A DC-09 frame around `body` (from its first quote): LF, CRC, length, body, CR."""
    data = body.encode("ascii")
    return b"\n" + f"{crc16_arc(data):04X}{len(data):04X}".encode("ascii") + data + b"\r"


def sia_time(t: datetime) -> str:
    """The DC-09 timestamp, in UTC: _HH:MM:SS,MM-DD-YYYY."""
    return t.astimezone(UTC).strftime("_%H:%M:%S,%m-%d-%Y")


class FrameSplitter:
    """Cuts a TCP byte stream into frames at CR: several frames in one read, or one frame over several reads. A
    frame starts after its LF, so a run of noise over `max_bytes` is dropped (counted in `dropped`) while a frame
    that follows it after an LF is kept; the buffer never holds more than `max_bytes` plus one read."""

    def __init__(self, max_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._skipping = False  # the buffer's start is inside a run already counted as dropped
        self.dropped = 0

    def feed(self, data: bytes) -> list[bytes]:
        """The complete frames (without their CR) that `data` finished."""
        self._buffer += data
        frames: list[bytes] = []
        while (end := self._buffer.find(b"\r")) >= 0:
            chunk = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            skipping, self._skipping = self._skipping, False
            if skipping or len(chunk) > self.max_bytes:
                lf = chunk.rfind(b"\n")
                if not skipping:
                    self.dropped += 1
                if lf < 0 or len(chunk) - lf > self.max_bytes:
                    continue  # all noise
                chunk = chunk[lf:]  # a frame after the noise
            frames.append(chunk)
        if len(self._buffer) > self.max_bytes:
            if not self._skipping:
                self.dropped += 1
            self._skipping = True
            lf = self._buffer.rfind(b"\n")
            if lf >= 0 and len(self._buffer) - lf <= self.max_bytes:
                del self._buffer[:lf]  # keep what may be the start of a frame
            else:
                self._buffer.clear()
        return frames
