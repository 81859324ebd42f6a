"""What every head-office query module shares about asyncpg: the connection type, and jsonb as Python objects."""

from __future__ import annotations

import json
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# a connection of its own or one borrowed from the pool: queries take either
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"


async def init_connection(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """Each pooled connection reads and writes jsonb as Python objects."""
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
