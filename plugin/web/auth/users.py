"""Managing users on any `AuthStore` (the bridge's `storesight users`, head office's the same way): each change is
checked (name, role, stores, password policy), audited, and ends the sessions it makes stale."""

from __future__ import annotations

import logging
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from plugin.errors import ConfigError, StoreSightError
from plugin.web.auth.passwords import hash_password
from plugin.web.auth.roles import ALL_STORES, Role, StoreScope
from plugin.web.auth.store import AuditEntry, AuthStore, User

log = logging.getLogger(__name__)

ADMIN_PASSWORD_ENV = "STORESIGHT_ADMIN_PASSWORD"
INITIAL_PASSWORD_FILE = "initial-admin-password"
USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
STORE_ID = re.compile(r"^(\*|[A-Za-z0-9][A-Za-z0-9_.-]{0,63})$")


class UserError(StoreSightError):
    """A user change that cannot be made (the message says why)."""


@dataclass(frozen=True)
class Actor:
    """Who makes a change and from where, for the audit log (the CLI: "cli:<OS user>", "local")."""

    name: str
    kind: str  # cli, system, user
    remote: str | None


def _audit(actor: Actor, action: str, target: str, outcome: str, detail: str | None = None) -> AuditEntry:
    return AuditEntry(datetime.now(UTC), actor.name, actor.kind, None, action, target, outcome, actor.remote, detail)


def check_name(name: str) -> str:
    """A valid user name, or UserError."""
    if not USER_NAME.match(name):
        raise UserError(f"user name {name!r}: 1-64 letters, digits, '_', '.', '@' or '-', starting with a letter/digit")
    return name


def check_role(role: str, roles: Mapping[str, Role]) -> str:
    """A role this application knows, or UserError naming those it does."""
    if role not in roles:
        raise UserError(f"unknown role {role!r} (roles: {', '.join(sorted(roles))})")
    return role


def check_stores(stores: Sequence[str]) -> tuple[str, ...]:
    """Store ids ("*" for every store; nothing means every store), or UserError."""
    for store in stores:
        if not STORE_ID.match(store):
            raise UserError(f"store id {store!r} is not valid")
    return (ALL_STORES,) if ALL_STORES in stores else tuple(StoreScope.of(stores).as_list())


async def add_user(
    store: AuthStore, roles: Mapping[str, Role], actor: Actor, name: str, role: str, password: str,
    stores: Sequence[str] = (),
) -> User:  # fmt: skip
    """Create a user (the password hashed with argon2id)."""
    check_name(name)
    check_role(role, roles)
    scope = check_stores(stores)
    try:
        password_hash = await hash_password(password)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    now = datetime.now(UTC)
    user = User(name, role, scope, password_hash, now, now)
    if not await store.add_user(user):
        await store.add_audit(_audit(actor, "user-add", name, "exists"))
        raise UserError(f"user {name!r} exists already (use passwd to change the password)")
    await store.add_audit(_audit(actor, "user-add", name, "ok", f"role {role}, stores {','.join(scope)}"))
    return user


async def set_password(store: AuthStore, actor: Actor, name: str, password: str) -> int:
    """Change a user's password and end their sessions; how many sessions ended."""
    user = await store.get_user(name)
    if user is None:
        raise UserError(f"no user {name!r}")
    try:
        password_hash = await hash_password(password)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    await store.update_user(replace(user, password_hash=password_hash, updated=datetime.now(UTC)))
    ended = await store.remove_sessions_of(name)
    await store.add_audit(_audit(actor, "user-passwd", name, "ok", f"{ended} session(s) ended"))
    return ended


async def set_role(
    store: AuthStore, roles: Mapping[str, Role], actor: Actor, name: str, role: str, stores: Sequence[str] | None
) -> User:
    """Change a user's role (and stores, when given); their sessions end so the change applies at once."""
    user = await store.get_user(name)
    if user is None:
        raise UserError(f"no user {name!r}")
    check_role(role, roles)
    scope = user.stores if stores is None else check_stores(stores)
    updated = replace(user, role=role, stores=scope, updated=datetime.now(UTC))
    await store.update_user(updated)
    await store.remove_sessions_of(name)
    await store.add_audit(_audit(actor, "user-role", name, "ok", f"role {role}, stores {','.join(scope)}"))
    return updated


async def remove_user(store: AuthStore, actor: Actor, name: str) -> None:
    """Remove a user and their sessions."""
    if not await store.remove_user(name):
        raise UserError(f"no user {name!r}")
    await store.add_audit(_audit(actor, "user-remove", name, "ok"))


async def first_admin(store: AuthStore, roles: Mapping[str, Role], role: str, directory: Path) -> None:
    """With no user yet, create `admin` with `role`: the password from $STORESIGHT_ADMIN_PASSWORD, else a generated
    one written (0600) to `directory`/initial-admin-password, said once in the log."""
    if await store.list_users():
        return
    password = os.environ.get(ADMIN_PASSWORD_ENV)
    generated = not password
    if not password:
        password = secrets.token_urlsafe(15)
    try:
        await add_user(store, roles, Actor("storesight", "system", "local"), "admin", role, password)
    except UserError as exc:
        raise ConfigError(f"${ADMIN_PASSWORD_ENV}: {exc}") from None
    if generated:
        path = directory / INITIAL_PASSWORD_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        log.warning("created the first console user 'admin'; its password is in %s (change it with `storesight "
                    "users passwd admin`, which deletes that file)", path)  # fmt: skip
    else:
        log.info("created the first console user 'admin' with the password in $%s", ADMIN_PASSWORD_ENV)
