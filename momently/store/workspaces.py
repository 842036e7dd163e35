"""Workspaces and their credentials."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from momently.domain.credentials import KeyKind, display_prefix, hash_secret, new_secret
from momently.domain.timestamps import to_millis
from momently.store.database import Database
from momently.store.schema import api_keys, identity_secrets, signing_keys, workspaces

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class WorkspaceError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Workspace:
    id: str
    name: str
    created_ms: int
    last_seq: int
    rate_limit: float | None
    retention_days: int | None = None


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    workspace_id: str
    kind: KeyKind
    label: str
    prefix: str
    created_ms: int
    revoked_ms: int | None


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key just created: the only moment its secret is known."""

    key: ApiKey
    secret: str


class Workspaces:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._keys: dict[str, str] = {}
        self._identity: dict[str, tuple[str, float]] = {}

    IDENTITY_CACHE_SECONDS = 5.0  # a rotated identity secret is in force everywhere within this

    def identity_secret(self, workspace_id: str, *, now: datetime) -> str:
        """The secret the workspace's backend signs user tokens with (identity verification),
        created on first use. Kept apart from the link-signing key so rotating one leaves the
        other's links and tokens valid."""
        cached = self._identity.get(workspace_id)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        found = self._secret(identity_secrets, workspace_id, _identity_secret, now)
        self._identity[workspace_id] = (found, time.monotonic() + self.IDENTITY_CACHE_SECONDS)
        return found

    def rotate_identity_secret(self, workspace_id: str, *, now: datetime) -> str:
        """A new identity secret: every user token made with the old one stops working."""
        if self.get(workspace_id) is None:
            raise WorkspaceError(f"no workspace {workspace_id!r}")
        secret = _identity_secret()
        insert_ = postgresql.insert if self.db.dialect == "postgresql" else sqlite.insert
        stmt = insert_(identity_secrets).values(
            workspace_id=workspace_id, secret=secret, created_ms=to_millis(now)
        )
        with self.db.write() as conn:
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["workspace_id"],
                    set_={"secret": stmt.excluded.secret, "created_ms": stmt.excluded.created_ms},
                )
            )
        self._identity.pop(workspace_id, None)
        return secret

    def signing_key(self, workspace_id: str, *, now: datetime) -> str:
        """The workspace's secret for signed links, created on first use and kept."""
        cached = self._keys.get(workspace_id)
        if cached is not None:
            return cached
        found = self._secret(signing_keys, workspace_id, lambda: secrets.token_urlsafe(48), now)
        self._keys[workspace_id] = found
        return found

    def _secret(self, table: Table, workspace_id: str, make: Callable[[], str], now: datetime) -> str:
        """A per-workspace secret row (``workspace_id``, ``secret``, ``created_ms``), made by
        ``make`` on first use; two processes racing to make it agree on the one stored first."""
        query = select(table.c.secret).where(table.c.workspace_id == workspace_id)
        with self.db.read() as conn:
            found = conn.execute(query).scalar()
        if found is None:
            insert_ = postgresql.insert if self.db.dialect == "postgresql" else sqlite.insert
            with self.db.write() as conn:
                conn.execute(
                    insert_(table)
                    .values(workspace_id=workspace_id, secret=make(), created_ms=to_millis(now))
                    .on_conflict_do_nothing()
                )
                found = conn.execute(query).scalar()
        return str(found)

    def create(
        self, workspace_id: str, *, name: str | None, now: datetime, rate_limit: float | None = None
    ) -> Workspace:
        if not _SLUG.match(workspace_id):
            raise WorkspaceError(
                f"invalid workspace id {workspace_id!r}: use 1-64 lowercase letters, digits, '-' or '_'"
            )
        if rate_limit is not None and rate_limit <= 0:
            raise WorkspaceError("rate limit must be a positive number of events per second")
        row = {
            "id": workspace_id,
            "name": name or workspace_id,
            "created_ms": to_millis(now),
            "last_seq": 0,
            "rate_limit": rate_limit,
        }
        try:
            with self.db.write() as conn:
                conn.execute(insert(workspaces).values(**row))
        except IntegrityError:
            raise WorkspaceError(f"workspace {workspace_id!r} already exists") from None
        return Workspace(**row)  # type: ignore[arg-type]

    def get(self, workspace_id: str) -> Workspace | None:
        with self.db.read() as conn:
            row = conn.execute(select(workspaces).where(workspaces.c.id == workspace_id)).first()
        return Workspace(**row._mapping) if row else None

    def all(self) -> list[Workspace]:
        with self.db.read() as conn:
            rows = conn.execute(select(workspaces).order_by(workspaces.c.id)).all()
        return [Workspace(**r._mapping) for r in rows]

    def set_rate_limit(self, workspace_id: str, rate_limit: float | None) -> None:
        self._set(workspace_id, rate_limit=rate_limit)

    def set_retention(self, workspace_id: str, days: int | None) -> None:
        self._set(workspace_id, retention_days=days)

    def _set(self, workspace_id: str, **values: object) -> None:
        with self.db.write() as conn:
            done = conn.execute(
                update(workspaces)
                .where(workspaces.c.id == workspace_id)
                .values(**values)
                .returning(workspaces.c.id)
            ).first()
        if done is None:
            raise WorkspaceError(f"no workspace {workspace_id!r}")

    def issue_key(self, workspace_id: str, kind: KeyKind, *, label: str, now: datetime) -> IssuedKey:
        if self.get(workspace_id) is None:
            raise WorkspaceError(f"no workspace {workspace_id!r}")
        secret = new_secret(kind)
        prefix, created_ms = display_prefix(secret), to_millis(now)
        with self.db.write() as conn:
            inserted = conn.execute(
                insert(api_keys).values(
                    workspace_id=workspace_id,
                    kind=kind.value,
                    label=label,
                    prefix=prefix,
                    secret_hash=hash_secret(secret),
                    created_ms=created_ms,
                )
            )
        key_id = int(inserted.inserted_primary_key[0])  # type: ignore[index]
        key = ApiKey(key_id, workspace_id, kind, label, prefix, created_ms, revoked_ms=None)
        return IssuedKey(key=key, secret=secret)

    def list_keys(self, workspace_id: str) -> list[ApiKey]:
        with self.db.read() as conn:
            rows = conn.execute(
                select(api_keys).where(api_keys.c.workspace_id == workspace_id).order_by(api_keys.c.id)
            ).all()
        return [_key(dict(r._mapping)) for r in rows]

    def revoke_key(self, key_id: int, *, now: datetime) -> ApiKey:
        with self.db.write() as conn:
            conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_ms.is_(None))
                .values(revoked_ms=to_millis(now))
            )
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
        if row is None:
            raise WorkspaceError(f"no key with id {key_id}")
        return _key(dict(row._mapping))

    def authenticate(self, secret: str, kind: KeyKind) -> str | None:
        """The workspace a live key of this kind belongs to, or None."""
        key = self.lookup(secret, (kind,))
        return key.workspace_id if key else None

    def lookup(self, secret: str, kinds: Collection[KeyKind]) -> ApiKey | None:
        """The live key with this secret, if it is of one of ``kinds``."""
        with self.db.read() as conn:
            row = conn.execute(
                select(api_keys).where(
                    api_keys.c.secret_hash == hash_secret(secret),
                    api_keys.c.kind.in_([k.value for k in kinds]),
                    api_keys.c.revoked_ms.is_(None),
                )
            ).first()
        return _key(dict(row._mapping)) if row else None


def _identity_secret() -> str:
    return "ids_" + secrets.token_urlsafe(32)


def _key(m: Mapping[str, Any]) -> ApiKey:
    return ApiKey(
        id=int(m["id"]),
        workspace_id=m["workspace_id"],
        kind=KeyKind(m["kind"]),
        label=m["label"],
        prefix=m["prefix"],
        created_ms=m["created_ms"],
        revoked_ms=m["revoked_ms"],
    )
