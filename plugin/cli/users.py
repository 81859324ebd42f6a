"""`storesight users add|passwd|role|remove|list` and `storesight audit`: the console's users and the audit log, in
the database, with or without the bridge running. Passwords never come from argv: $STORESIGHT_PASSWORD,
--password-stdin, or a prompt."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any, TypeVar

from plugin.config.loader import load_config
from plugin.errors import StoreSightError
from plugin.incidents.database import AsyncDatabase
from plugin.web.auth.passwords import check_policy
from plugin.web.auth.roles import BRIDGE_ROLES
from plugin.web.auth.sqlite import SqliteAuthStore
from plugin.web.auth.users import INITIAL_PASSWORD_FILE, Actor, add_user, remove_user, set_password, set_role

PASSWORD_ENV = "STORESIGHT_PASSWORD"
T = TypeVar("T")


def _actor() -> Actor:
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = str(os.getuid())
    return Actor(f"cli:{who}", "cli", "local")


def read_password(args: argparse.Namespace) -> str:
    """The new password: $STORESIGHT_PASSWORD, one line of stdin (--password-stdin), or typed twice at a prompt."""
    env = os.environ.get(PASSWORD_ENV)
    if env:
        password = env
    elif args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif not sys.stdin.isatty():
        raise StoreSightError(f"no terminal to ask for the password: set ${PASSWORD_ENV} or use --password-stdin")
    else:
        password = getpass.getpass("new password: ")
        if getpass.getpass("again: ") != password:
            raise StoreSightError("the two passwords differ")
    try:
        check_policy(password)
    except ValueError as exc:
        raise StoreSightError(str(exc)) from None
    return password


def _with_store(args: argparse.Namespace, fn: Callable[[SqliteAuthStore], Awaitable[T]], create: bool = False) -> T:
    """Run `fn` with the auth store on the config's database (which must exist unless `create`)."""
    config = load_config(args.config)
    path = config.storage.path / "storesight.db"
    if not create and not path.exists():
        raise StoreSightError(f"no database yet at {path}")

    async def run() -> T:
        db = AsyncDatabase(path)
        try:
            return await fn(SqliteAuthStore(db))
        finally:
            await db.close()

    return asyncio.run(run())


def _stores(text: str | None) -> list[str] | None:
    return None if text is None else [s.strip() for s in text.split(",") if s.strip()]


def cmd_users(args: argparse.Namespace) -> int:
    """Add, change, remove or list console users."""
    command, actor = args.users_command, _actor()
    if command == "add":
        password = read_password(args)
        stores = _stores(args.stores) or []
        user = _with_store(
            args, lambda s: add_user(s, BRIDGE_ROLES, actor, args.name, args.role, password, stores), create=True
        )
        print(f"added {user.name} ({user.role}, stores {','.join(user.stores)})")
    elif command == "passwd":
        password = read_password(args)
        ended = _with_store(args, lambda s: set_password(s, actor, args.name, password))
        initial = load_config(args.config).storage.path / INITIAL_PASSWORD_FILE
        if args.name == "admin" and initial.exists():
            initial.unlink()
            print(f"deleted {initial}")
        print(f"password of {args.name} changed; {ended} session(s) ended")
    elif command == "role":
        new_stores = _stores(args.stores)
        user = _with_store(args, lambda s: set_role(s, BRIDGE_ROLES, actor, args.name, args.role, new_stores))
        print(f"{user.name} is now {user.role} (stores {','.join(user.stores)}); their sessions ended")
    elif command == "remove":
        _with_store(args, lambda s: remove_user(s, actor, args.name))
        print(f"removed {args.name} and their sessions")
    else:
        users = _with_store(args, lambda s: s.list_users())
        rows = [
            {"name": u.name, "role": u.role, "stores": list(u.stores), "created": u.created.isoformat()} for u in users
        ]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for r in rows:
                print(f"{r['name']:<24} {r['role']:<10} {','.join(r['stores']):<16} {r['created']}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """Print the audit log, newest first."""
    entries = _with_store(args, lambda s: s.audit_entries(args.limit))
    if args.json:
        docs: list[dict[str, Any]] = [{**asdict(e), "time": e.time.isoformat()} for e in entries]
        print(json.dumps(docs, indent=2))
        return 0
    for e in entries:
        who = f"{e.actor} ({e.role or e.actor_kind})"
        print(f"{e.time.isoformat(timespec='seconds')}  {who:<32} {e.action:<28} {e.target:<28} {e.outcome:<14} "
              f"{e.remote or ''}")  # fmt: skip
    return 0
