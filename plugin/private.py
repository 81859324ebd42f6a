"""Private files: the data folder holds people's pictures, badge digests and secrets, so StoreSight creates its
folders 0700 and its files 0600, whatever the umask; and the per-install key that keyed digests (badge ids) use."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import stat
import tempfile
from pathlib import Path

from plugin.errors import StorageError

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
INSTALL_KEY_FILE = "install_key"


def private_dir(path: Path, warn_if_open: bool = False) -> Path:
    """Create `path` and any missing parent 0700. An existing folder is left as it is (it may be a mount point or a
    folder the operator shares on purpose); `warn_if_open` logs it when others can read it (the data folder)."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(d, DIR_MODE)  # mkdir's mode goes through the umask; chmod does not
    if warn_if_open and not missing and path.stat().st_mode & 0o077:
        log.warning(
            "%s: others can read this folder (mode %o); StoreSight keeps evidence and secrets here: chmod 700 it",
            path, stat.S_IMODE(path.stat().st_mode),
        )  # fmt: skip
    return path


def create_private(path: Path) -> None:
    """Make sure `path` exists as a 0600 file: created empty when missing; an existing one others can read is
    tightened when it is ours to change (another user's file, opened read-only by a CLI command, is left alone)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            with contextlib.suppress(PermissionError):
                os.chmod(path, mode & 0o700)
        return
    try:
        os.fchmod(fd, FILE_MODE)  # O_CREAT's mode goes through the umask
    finally:
        os.close(fd)


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically and durably (a reader never sees half a file, a power cut leaves the old
    one or the new one) as a 0600 file."""
    # a unique temporary name: two writers of one file never share (and truncate) one temporary file
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        os.fchmod(fd, FILE_MODE)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)  # a full disk must not keep half a file
        raise
    os.close(fd)
    tmp.replace(path)


def install_key(folder: Path) -> bytes:
    """This installation's secret key (32 random bytes, kept 0600 in the data folder, made on first use): what
    keyed digests use, so a digest cannot be reversed by trying every badge number without the key."""
    path = folder / INSTALL_KEY_FILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        private_dir(folder)
        key = secrets.token_hex(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileExistsError:  # another process made it meanwhile: use theirs
            return install_key(folder)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
            f.flush()
            os.fsync(f.fileno())  # losing it in a power cut would make every stored digest unmatchable
        log.info("generated this installation's key in %s", path)
        return bytes.fromhex(key)
    try:
        key_bytes = bytes.fromhex(text)
    except ValueError:
        key_bytes = b""
    if len(key_bytes) < 16:
        raise StorageError(f"{path}: not an install key (64 hex digits expected); restore it from a backup")
    return key_bytes


def keyed_digest(key: bytes, text: str) -> str:
    """HMAC-SHA256 of `text` under the install key, as hex: stands for a personal id (a badge) in the database;
    the same id gives the same digest, so events still correlate, and only this installation can compute it."""
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
