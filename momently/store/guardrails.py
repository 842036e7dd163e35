"""The guardrail policy table. Reads are cached for ``cache_seconds`` (2 s by default), so a
pause or a new cap reaches every dispatcher within seconds without a query per message."""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from momently.domain.guardrails import Policy
from momently.store.database import Database
from momently.store.schema import guardrail_policies


class GuardrailPolicies:
    def __init__(self, db: Database, *, cache_seconds: float = 2.0) -> None:
        self.db = db
        self.cache_seconds = cache_seconds
        self._insert = postgresql.insert if db.dialect == "postgresql" else sqlite.insert
        self._cache: dict[str, tuple[Policy, float]] = {}

    def get(self, workspace_id: str, *, fresh: bool = False) -> Policy:
        now = time.monotonic()
        cached = self._cache.get(workspace_id)
        if cached is not None and cached[1] > now and not fresh:
            return cached[0]
        with self.db.read() as conn:
            body = conn.execute(
                select(guardrail_policies.c.body).where(guardrail_policies.c.workspace_id == workspace_id)
            ).scalar_one_or_none()
        policy = Policy.from_json(orjson.loads(body)) if body else Policy()
        self._cache[workspace_id] = (policy, now + self.cache_seconds)
        return policy

    def put(self, workspace_id: str, policy: Policy, *, now_ms: int) -> Policy:
        body = orjson.dumps(policy.as_json()).decode()
        stmt = self._insert(guardrail_policies).values(
            workspace_id=workspace_id, body=body, updated_ms=now_ms
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[guardrail_policies.c.workspace_id], set_={"body": body, "updated_ms": now_ms}
        )
        with self.db.write() as conn:
            conn.execute(stmt)
        self._cache.pop(workspace_id, None)
        return policy

    def update(self, workspace_id: str, change: Callable[[Policy], Policy], *, now_ms: int) -> Policy:
        """Read, change and store (pause/resume a channel without restating the whole policy)."""
        return self.put(workspace_id, change(self.get(workspace_id, fresh=True)), now_ms=now_ms)
