"""Flow and segment definitions with every version kept, and their status (active, paused,
archived). Applying an unchanged document is a no-op, so ``flows apply`` is idempotent."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from sqlalchemy import Connection, and_, bindparam, insert, select, update

from momently.store.database import Database
from momently.store.schema import definition_heads, definitions

Kind = Literal["flow", "segment", "events"]  # events: a catalog of names flows may use
Status = Literal["active", "paused", "archived"]


# read by the engine on every batch: built once
_STATES = select(
    definition_heads.c.kind, definition_heads.c.id, definition_heads.c.version, definition_heads.c.status
).where(definition_heads.c.workspace_id == bindparam("ws"))


class UnknownDefinition(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class Stored:
    kind: str
    id: str
    version: int
    status: str
    updated_ms: int
    body: dict[str, Any]
    source: str = ""
    created_ms: int = 0


@dataclass(frozen=True, slots=True)
class Applied:
    kind: str
    id: str
    version: int
    changed: bool


def digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


class Definitions:
    def __init__(self, db: Database) -> None:
        self.db = db

    def apply(
        self, workspace_id: str, kind: Kind, id_: str, body: dict[str, Any], *, source: str, now_ms: int
    ) -> Applied:
        """Store ``body`` as the next version unless it equals the current one. An archived
        definition applied again becomes active; a paused one stays paused."""
        d = digest(body)
        with self.db.write() as conn:
            head = conn.execute(
                select(definition_heads.c.version, definition_heads.c.status).where(
                    _key(definition_heads, workspace_id, kind, id_)
                )
            ).first()
            if head is not None:
                current = conn.execute(
                    select(definitions.c.digest).where(
                        _key(definitions, workspace_id, kind, id_), definitions.c.version == head.version
                    )
                ).scalar()
                if current == d and head.status != "archived":
                    return Applied(kind, id_, int(head.version), changed=False)
            version = 1 if head is None else int(head.version) + 1
            conn.execute(
                insert(definitions).values(
                    workspace_id=workspace_id,
                    kind=kind,
                    id=id_,
                    version=version,
                    body=orjson.dumps(body).decode(),
                    digest=d,
                    source=source,
                    created_ms=now_ms,
                )
            )
            if head is None:
                conn.execute(
                    insert(definition_heads).values(
                        workspace_id=workspace_id,
                        kind=kind,
                        id=id_,
                        version=version,
                        status="active",
                        updated_ms=now_ms,
                    )
                )
            else:
                status = "active" if head.status == "archived" else head.status
                conn.execute(
                    update(definition_heads)
                    .where(_key(definition_heads, workspace_id, kind, id_))
                    .values(version=version, status=status, updated_ms=now_ms)
                )
        return Applied(kind, id_, version, changed=True)

    def set_status(self, workspace_id: str, kind: Kind, id_: str, status: Status, *, now_ms: int) -> Stored:
        with self.db.write() as conn:
            done = conn.execute(
                update(definition_heads)
                .where(_key(definition_heads, workspace_id, kind, id_))
                .values(status=status, updated_ms=now_ms)
                .returning(definition_heads.c.version)
            ).first()
        if done is None:
            raise UnknownDefinition(f"no {kind} '{id_}' in workspace '{workspace_id}'")
        return self.get(workspace_id, kind, id_)

    def get(self, workspace_id: str, kind: Kind, id_: str, version: int | None = None) -> Stored:
        with self.db.read() as conn:
            head = conn.execute(
                select(definition_heads).where(_key(definition_heads, workspace_id, kind, id_))
            ).first()
            if head is None:
                raise UnknownDefinition(f"no {kind} '{id_}' in workspace '{workspace_id}'")
            row = conn.execute(
                select(definitions).where(
                    _key(definitions, workspace_id, kind, id_),
                    definitions.c.version == (version if version is not None else head.version),
                )
            ).first()
        if row is None:
            raise UnknownDefinition(f"{kind} '{id_}' has no version {version}")
        return Stored(
            kind,
            id_,
            int(row.version),
            str(head.status),
            int(head.updated_ms),
            orjson.loads(row.body),
            str(row.source),
            int(row.created_ms),
        )

    def versions(self, workspace_id: str, kind: Kind, id_: str) -> list[Stored]:
        self.get(workspace_id, kind, id_)  # raises when unknown
        with self.db.read() as conn:
            rows = conn.execute(
                select(definitions)
                .where(_key(definitions, workspace_id, kind, id_))
                .order_by(definitions.c.version)
            ).all()
        return [
            Stored(kind, id_, int(r.version), "", 0, orjson.loads(r.body), str(r.source), int(r.created_ms))
            for r in rows
        ]

    def heads(self, workspace_id: str, kind: Kind, *, conn: Connection | None = None) -> list[Stored]:
        """The current version of every definition of ``kind``, archived ones included."""
        query = (
            select(definition_heads, definitions.c.body, definitions.c.source, definitions.c.created_ms)
            .select_from(
                definition_heads.join(
                    definitions,
                    and_(
                        definitions.c.workspace_id == definition_heads.c.workspace_id,
                        definitions.c.kind == definition_heads.c.kind,
                        definitions.c.id == definition_heads.c.id,
                        definitions.c.version == definition_heads.c.version,
                    ),
                )
            )
            .where(definition_heads.c.workspace_id == workspace_id, definition_heads.c.kind == kind)
            .order_by(definition_heads.c.id)
        )
        if conn is None:
            with self.db.read() as c:
                rows = c.execute(query).all()
        else:
            rows = conn.execute(query).all()
        return [
            Stored(
                kind,
                str(r.id),
                int(r.version),
                str(r.status),
                int(r.updated_ms),
                orjson.loads(r.body),
                str(r.source),
                int(r.created_ms),
            )
            for r in rows
        ]

    def states(self, conn: Connection, workspace_id: str) -> list[tuple[str, str, int, str]]:
        """(kind, id, version, status) of every definition: cheap enough for the engine to
        read every batch, so a pause or a new version takes effect at once."""
        rows = conn.execute(_STATES, {"ws": workspace_id}).all()
        return [(str(r[0]), str(r[1]), int(r[2]), str(r[3])) for r in rows]

    def body(self, conn: Connection, workspace_id: str, kind: str, id_: str, version: int) -> dict[str, Any]:
        raw = conn.execute(
            select(definitions.c.body).where(
                _key(definitions, workspace_id, kind, id_), definitions.c.version == version
            )
        ).scalar()
        if raw is None:
            raise UnknownDefinition(f"{kind} '{id_}' has no version {version}")
        loaded: dict[str, Any] = orjson.loads(raw)
        return loaded


def _key(table: Any, workspace_id: str, kind: str, id_: str) -> Any:
    return and_(table.c.workspace_id == workspace_id, table.c.kind == kind, table.c.id == id_)
