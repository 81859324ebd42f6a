"""Password hashing with argon2id (argon2-cffi, RFC 9106 low-memory profile: 3 passes over 64 MiB, 4 lanes).

One hash costs about 0.12 s of CPU and 64 MiB on a 2-core store PC, so hashing runs off the event loop and at most
`MAX_CONCURRENT` at once: a flood of sign-ins queues instead of taking the cameras' CPU and memory.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024  # argon2 takes any length; a megabyte "password" is just a way to burn CPU
MAX_CONCURRENT = 2

_hasher = PasswordHasher()
# a pool of its own bounds the hashes in flight (an asyncio.Semaphore would tie the module to one event loop)
_pool = ThreadPoolExecutor(max_workers=MAX_CONCURRENT, thread_name_prefix="argon2")
# verified against when the user does not exist, so an unknown name costs as long as a wrong password
_DUMMY_HASH = _hasher.hash("storesight: no such user")


class PasswordPolicyError(ValueError):
    """A new password that the policy refuses (the message says why)."""


def check_policy(password: str) -> None:
    """Raise PasswordPolicyError unless `password` is acceptable as a new password."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"a password may have at most {MAX_PASSWORD_LENGTH} characters")


def hash_password_sync(password: str) -> str:
    """The argon2id hash of a password that passes the policy (blocking: use `hash_password` on the loop)."""
    check_policy(password)
    return _hasher.hash(password)


@dataclass(frozen=True)
class Verified:
    """A password check's outcome; `rehash` when the stored hash has older parameters than today's."""

    ok: bool
    rehash: bool = False


def verify_password_sync(stored_hash: str | None, password: str) -> Verified:
    """Check a password against a stored hash (None: an unknown user, checked against a dummy hash anyway)."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return Verified(False)
    try:
        _hasher.verify(stored_hash or _DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return Verified(False)
    if stored_hash is None:
        return Verified(False)
    return Verified(True, _hasher.check_needs_rehash(stored_hash))


async def hash_password(password: str) -> str:
    """`hash_password_sync` on a worker thread, at most MAX_CONCURRENT at once."""
    check_policy(password)
    return await asyncio.get_running_loop().run_in_executor(_pool, _hasher.hash, password)


async def verify_password(stored_hash: str | None, password: str) -> Verified:
    """`verify_password_sync` on a worker thread, at most MAX_CONCURRENT at once."""
    return await asyncio.get_running_loop().run_in_executor(_pool, verify_password_sync, stored_hash, password)
