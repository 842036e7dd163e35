"""A per-workspace policy document (consent policy, guardrails) stored as JSON, read through
a short cache: every dispatcher and engine batch consults it, and a change must still reach
them within seconds."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

import orjson
from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite

from momently.store.database import Database


class Document(Protocol):
    def as_json(self) -> dict[str, Any]: ...


P = TypeVar("P", bound=Document)


class PolicyTable(Generic[P]):
    """``table`` has ``workspace_id``, ``body`` (JSON text) and ``updated_ms``; a workspace
    without a row gets ``default()``."""

    def __init__(
        self,
        db: Database,
        table: Table,
        parse: Callable[[Mapping[str, Any]], P],
        default: Callable[[], P],
        *,
        cache_seconds: float,
    ) -> None:
        self.db = db
        self.table = table
        self.parse = parse
        self.default = default
        self.cache_seconds = cache_seconds
        self._insert = postgresql.insert if db.dialect == "postgresql" else sqlite.insert
        self._cache: dict[str, tuple[P, float]] = {}
        self._parsed: dict[str, P] = {}

    def get(self, workspace_id: str, *, fresh: bool = False) -> P:
        now = time.monotonic()
        cached = self._cache.get(workspace_id)
        if cached is not None and cached[1] > now and not fresh:
            return cached[0]
        with self.db.read() as conn:
            body = conn.execute(
                select(self.table.c.body).where(self.table.c.workspace_id == workspace_id)
            ).scalar_one_or_none()
        policy = self.parse(orjson.loads(body)) if body else self.default()
        self._cache[workspace_id] = (policy, now + self.cache_seconds)
        return policy

    def of_body(self, body: str | None) -> P:
        """The policy stored as ``body`` (read by the caller, e.g. with the dispatcher's send
        marks, so it is exactly as fresh as they are), parsed once per distinct body."""
        if not body:
            return self.default()
        policy = self._parsed.get(body)
        if policy is None:
            if len(self._parsed) > 1000:
                self._parsed.clear()
            policy = self._parsed[body] = self.parse(orjson.loads(body))
        return policy

    def put(self, workspace_id: str, policy: P, *, now_ms: int) -> P:
        body = orjson.dumps(policy.as_json()).decode()
        stmt = self._insert(self.table).values(workspace_id=workspace_id, body=body, updated_ms=now_ms)
        stmt = stmt.on_conflict_do_update(
            index_elements=[self.table.c.workspace_id], set_={"body": body, "updated_ms": now_ms}
        )
        with self.db.write() as conn:
            conn.execute(stmt)
        self._cache.pop(workspace_id, None)
        return policy
