"""The decision for one enrollment: a pure verdict from the flow, whether the audience
matched, the flow's state and the person's previous enrollments in it.

Consent, caps and quiet hours (the guardrails issue) add their reasons here; for now a send
goes to the first channel of the plan, now.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from momently.domain.chain import MAX_CHAIN
from momently.domain.flow import Flow

Outcome = Literal["send", "suppress"]


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    reason: str | None = None
    channel: str | None = None
    variant: str | None = None
    at_ms: int | None = None

    def detail(self) -> dict[str, Any]:
        return {
            k: v for k, v in (("channel", self.channel), ("variant", self.variant), ("at", self.at_ms)) if v
        }


# Reasons, as recorded on the enrollment and counted by ``flows backtest``.
FLOW_PAUSED = "flow_paused"
AUDIENCE_FALSE = "audience_false"
REENTRY_ONCE = "reentry_once"
REENTRY_PERIOD = "reentry_period"
# the deadline (absence, inactivity) had passed, allowed lateness included, before the event
# that set it arrived: acting now would answer a moment that is gone
LATE_EVENT = "late_event"
CHAIN_TOO_DEEP = "chain_too_deep"  # a follow-up of follow-ups more than MAX_CHAIN deep


def decide(
    flow: Flow,
    *,
    now_ms: int,
    audience_ok: bool,
    paused: bool,
    last_sent_ms: int | None,
    late: bool = False,
    chain: int = 0,
    send_at_ms: int | None = None,
) -> Decision:
    """``last_sent_ms``: when this person was last enrolled with a send in this flow, if ever;
    ``late``: the trigger's deadline had passed, allowed lateness included, when it was set;
    ``chain``: how many flows' messages in a row led to this enrollment (``domain.chain``);
    ``send_at_ms``: when the message is to go (the end of the flow's delay), default now.
    Reentry counts from decisions, so a delayed message counts from when it was decided."""
    if late:
        return Decision("suppress", LATE_EVENT)
    if chain > MAX_CHAIN:
        return Decision("suppress", CHAIN_TOO_DEEP)
    if paused:
        return Decision("suppress", FLOW_PAUSED)
    if not audience_ok:
        return Decision("suppress", AUDIENCE_FALSE)
    if last_sent_ms is not None:
        if flow.reentry.mode == "once":
            return Decision("suppress", REENTRY_ONCE)
        if flow.reentry.mode == "once_per" and now_ms - last_sent_ms < flow.reentry.period_ms:
            return Decision("suppress", REENTRY_PERIOD)
    variants = flow.message.get("variants")
    variant = "default"
    if isinstance(variants, list) and variants and isinstance(variants[0], dict):
        variant = str(variants[0].get("id", "default"))
    at = now_ms if send_at_ms is None else send_at_ms
    return Decision("send", channel=flow.channels[0], variant=variant, at_ms=at)
