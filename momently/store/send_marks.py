"""Send marks: one tiny query that tells a dispatcher whether anything that decides if a
queued message may go has changed since it last looked.

A dispatch batch loads consent records, policies and paused flows once, then sends for as
long as its channels take. Right before each send the dispatcher compares these marks with
the ones it loaded under; only when one moved does it reload. That is how a stop-contact (a
new ledger record, so a higher ``max(seq)``), a new consent policy, a paused workspace or
channel (the guardrail policy's body) or a paused flow reaches a batch already under way.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import BindParameter, Connection, bindparam, func, select

from momently.store.schema import consent_policies, consent_records, definition_heads, guardrail_policies


@dataclass(frozen=True, slots=True)
class SendMarks:
    consent_seq: int  # the ledger's high-water mark: every grant and revoke raises it
    consent_policy: str | None
    guardrails: str | None
    paused_flows: int
    flows_updated_ms: int


_WS: BindParameter[str] = bindparam("ws")
_QUERY = select(
    select(func.coalesce(func.max(consent_records.c.seq), 0))
    .where(consent_records.c.workspace_id == _WS)
    .scalar_subquery(),
    select(consent_policies.c.body).where(consent_policies.c.workspace_id == _WS).scalar_subquery(),
    select(guardrail_policies.c.body).where(guardrail_policies.c.workspace_id == _WS).scalar_subquery(),
    select(func.count())
    .where(
        definition_heads.c.workspace_id == _WS,
        definition_heads.c.kind == "flow",
        definition_heads.c.status == "paused",
    )
    .scalar_subquery(),
    select(func.coalesce(func.max(definition_heads.c.updated_ms), 0))
    .where(definition_heads.c.workspace_id == _WS, definition_heads.c.kind == "flow")
    .scalar_subquery(),
)


def read_marks(conn: Connection, workspace_id: str) -> SendMarks:
    row = conn.execute(_QUERY, {"ws": workspace_id}).one()
    return SendMarks(int(row[0]), row[1], row[2], int(row[3]), int(row[4]))
