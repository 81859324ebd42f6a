"""What every head-office query module shares about asyncpg: the connection type, and jsonb as Python objects."""

from __future__ import annotations

import json
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# a connection of its own or one borrowed from the pool: queries take either
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"


def _encode(value: object) -> bytes:
    return b"\x01" + json.dumps(value).encode()  # jsonb's binary form: a version byte, then the text


def _decode(data: bytes) -> object:
    return json.loads(data[1:])


async def init_connection(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """Each pooled connection reads and writes jsonb as Python objects (binary: COPY needs it)."""
    await conn.set_type_codec("jsonb", encoder=_encode, decoder=_decode, schema="pg_catalog", format="binary")
