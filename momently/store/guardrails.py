"""The guardrail policy table. Reads are cached for ``cache_seconds`` (2 s by default), so a
pause or a new cap reaches every dispatcher within seconds without a query per message."""

from __future__ import annotations

from collections.abc import Callable

from momently.domain.guardrails import Policy
from momently.store.database import Database
from momently.store.policies import PolicyTable
from momently.store.schema import guardrail_policies


class GuardrailPolicies(PolicyTable[Policy]):
    def __init__(self, db: Database, *, cache_seconds: float = 2.0) -> None:
        super().__init__(db, guardrail_policies, Policy.from_json, Policy, cache_seconds=cache_seconds)

    def update(self, workspace_id: str, change: Callable[[Policy], Policy], *, now_ms: int) -> Policy:
        """Read, change and store (pause/resume a channel without restating the whole policy)."""
        return self.put(workspace_id, change(self.get(workspace_id, fresh=True)), now_ms=now_ms)
