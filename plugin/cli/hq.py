"""`storesight hq`: head office (serve, migrate, add a store). The only bridge module that imports plugin.hq."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from plugin.errors import StoreSightError

log = logging.getLogger(__name__)


def add_hq_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `hq` command group."""
    hq = sub.add_parser("hq", help="head office: the chain's dashboards (PostgreSQL)")
    cmds = hq.add_subparsers(dest="hq_command", required=True)
    serve = cmds.add_parser("serve", help="run head office: ingest from stores, dashboards, reports")
    serve.add_argument("-c", "--config", help="head-office YAML (default: every key's default)")
    serve.add_argument("--listen", help="HOST:PORT (overrides host/port)")
    serve.set_defaults(func=cmd_hq_serve)
    mig = cmds.add_parser("migrate", help="bring the database's schema up to date and exit")
    mig.add_argument("-c", "--config")
    mig.set_defaults(func=cmd_hq_migrate)
    add = cmds.add_parser("add-store", help="register a store (or renew its token); prints the token once")
    add.add_argument("-c", "--config")
    add.add_argument("store_id")
    add.add_argument("--name", required=True)
    add.add_argument("--timezone", required=True, help="IANA zone, e.g. Europe/Berlin")
    add.add_argument("--token-file", help="write the token to this file (0600) instead of printing it")
    add.set_defaults(func=cmd_hq_add_store)
    users = cmds.add_parser("users", help="head office's users").add_subparsers(dest="users_command", required=True)
    ua = users.add_parser("add", help="add a user (password from $STORESIGHT_NEW_PASSWORD, else asked for)")
    ua.add_argument("-c", "--config")
    ua.add_argument("name")
    ua.add_argument("--role", required=True, choices=["admin", "analyst", "store_manager"])
    ua.add_argument("--stores", default="", help="store ids, comma-separated: a store manager's stores")
    ua.set_defaults(func=cmd_hq_users_add)
    b = cmds.add_parser("bench", help="measure head office under a chain's load (a throwaway PostgreSQL by default)")
    b.add_argument("--stores", type=int, default=500)
    b.add_argument("--days", type=int, default=90, help="days of history to bulk-load before timing pages (0: none)")
    b.add_argument("--ingest-seconds", type=float, default=60.0)
    b.add_argument("--concurrency", type=int, default=16, help="stores posting at once")
    b.add_argument("--page-samples", type=int, default=40)
    b.add_argument("--database-url", help="an existing, empty database (default: a throwaway local PostgreSQL)")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_hq_bench)
    d = cmds.add_parser("demo", help="head office for the demo: a throwaway PostgreSQL, sample stores, loopback only")
    d.add_argument("--data", default="storesight-data/demo-hq", help="where the stores' token files go")
    d.add_argument("--listen", default="127.0.0.1:8090", help="HOST:PORT on loopback")
    d.add_argument("--store", action="append", default=[], help="ID:NAME:TIMEZONE (repeatable)")
    d.add_argument("--sample-stores", type=int, default=8, help="synthetic stores with history (named '(sample)')")
    d.add_argument("--sample-days", type=int, default=28)
    d.set_defaults(func=cmd_hq_demo)


def cmd_hq_demo(args: argparse.Namespace) -> int:
    """The demo's head office (plugin/cli/hq_demo.py), imported only when asked for."""
    from plugin.cli.hq_demo import run_demo

    return run_demo(args)


def cmd_hq_bench(args: argparse.Namespace) -> int:
    """The load benchmark (plugin/cli/hq_bench.py), imported only when asked for."""
    from plugin.cli.hq_bench import report

    return report(args)


def cmd_hq_serve(args: argparse.Namespace) -> int:
    """Serve head office until interrupted."""
    import ipaddress

    from aiohttp import web

    from plugin.hq.app import new_hq_app
    from plugin.hq.config import load_hq_config
    from plugin.web.auth.transport import server_ssl_context

    config = load_hq_config(args.config)
    host, port = config.host, config.port
    if args.listen:
        host, _, p = args.listen.rpartition(":")
        if not host or not p.isdigit():
            raise StoreSightError(f"--listen {args.listen!r}: expected HOST:PORT")
        port = int(p)
        config = config.model_copy(update={"host": host, "port": port})
    ssl = None
    if config.tls_cert is not None:
        if config.tls_key is None:
            raise StoreSightError("tls_cert is set without tls_key")
        ssl = server_ssl_context(config.tls_cert, config.tls_key, "tls_key")
    else:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback and not config.plain_http:
            raise StoreSightError(
                f"head office would serve plain HTTP on {host}: set tls_cert and tls_key, or "
                "plain_http: true behind a proxy that terminates TLS"
            )
    log.info("head office on %s://%s:%d", "https" if ssl else "http", host, port)
    web.run_app(new_hq_app(config), host=host, port=port, ssl_context=ssl, print=None, access_log=None)
    return 0


def cmd_hq_migrate(args: argparse.Namespace) -> int:
    """Migrate and report the version."""
    from plugin.hq.config import load_hq_config
    from plugin.hq.db import HqDatabase
    from plugin.hq.migrations import current_version

    config = load_hq_config(args.config)

    async def run() -> int:
        db = await HqDatabase.open(config.dsn(), min_size=1, max_size=1)
        try:
            async with db.pool.acquire() as conn:
                return await current_version(conn)
        finally:
            await db.close()

    print(f"head-office schema at version {asyncio.run(run())}")
    return 0


def cmd_hq_add_store(args: argparse.Namespace) -> int:
    """Register a store and hand out its token (head office keeps only a hash)."""
    import os

    from plugin.hq.config import load_hq_config
    from plugin.hq.db import HqDatabase

    config = load_hq_config(args.config)

    async def run() -> str:
        db = await HqDatabase.open(config.dsn(), min_size=1, max_size=1)
        try:
            return await db.add_store(args.store_id, args.name, args.timezone)
        finally:
            await db.close()

    token = asyncio.run(run())
    if args.token_file:
        path = Path(args.token_file)
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        print(f"store {args.store_id}: token written to {path}", file=sys.stderr)
    else:
        print(token)
    return 0


def cmd_hq_users_add(args: argparse.Namespace) -> int:
    """Add a head-office user through the shared login (argon2id hash, audit row)."""
    import getpass
    import os

    from plugin.hq.access import ALL_STORE_ROLES, HQ_ROLES
    from plugin.hq.auth_store import PgAuthStore
    from plugin.hq.config import load_hq_config
    from plugin.hq.db import HqDatabase
    from plugin.web.auth.users import Actor, add_user

    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if args.role not in ALL_STORE_ROLES and not stores:
        raise StoreSightError(f"--stores: a {args.role} sees only the stores listed; name at least one")
    password = os.environ.get("STORESIGHT_NEW_PASSWORD") or getpass.getpass(f"password for {args.name}: ")
    config = load_hq_config(args.config)

    async def run() -> None:
        db = await HqDatabase.open(config.dsn(), min_size=1, max_size=1)
        try:
            actor = Actor(f"cli:{getpass.getuser()}", "cli", "local")
            await add_user(PgAuthStore(db), HQ_ROLES, actor, args.name, args.role, password, stores)
        finally:
            await db.close()

    asyncio.run(run())
    print(f"user {args.name} added ({args.role}{', stores ' + ','.join(stores) if stores else ''})")
    return 0
