"""The consent ledger's MAC key: kept outside the database, so someone who can write to the
database cannot forge or rewrite a consent record that still verifies.

From ``MOMENTLY_LEDGER_KEY`` when set (at least 32 characters; every process of an install
must use the same value). Unset, a SQLite install keeps a random key in a file next to its
database (``<database>.ledger-key``, mode 0600), created on first use: back it up with the
database, but not in the same place as its copies if you can. PostgreSQL installs must set
the variable, because their processes share no disk; an in-memory SQLite database gets a key
that lives as long as the process.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from momently.store.database import Database

MIN_LENGTH = 32


class LedgerKeyError(ValueError):
    pass


def ledger_key(setting: str | None, db: Database) -> bytes:
    if setting:
        if len(setting) < MIN_LENGTH:
            raise LedgerKeyError(f"MOMENTLY_LEDGER_KEY must be at least {MIN_LENGTH} characters")
        return setting.encode()
    if not db.is_sqlite:
        raise LedgerKeyError(
            "set MOMENTLY_LEDGER_KEY (at least 32 random characters, the same in every process): "
            "with PostgreSQL the consent ledger's key cannot be kept next to the database"
        )
    path = db.sqlite_path
    if not path or path == ":memory:":
        return secrets.token_urlsafe(32).encode()
    return _key_file(Path(f"{path}.ledger-key"))


def _key_file(path: Path) -> bytes:
    """Read the key file, or create it: written whole to a temporary file, then linked into
    place, so two processes starting together agree on one key and neither reads half of it."""
    if not path.exists():
        key = secrets.token_urlsafe(32).encode()
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(key + b"\n")
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
        finally:
            tmp.unlink(missing_ok=True)
    key = path.read_bytes().strip()
    if len(key) < MIN_LENGTH:
        raise LedgerKeyError(f"the ledger key file {path} is too short")
    return key
