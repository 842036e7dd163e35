"""The decision for one enrollment: a pure verdict from the flow, whether the audience
matched, the flow's state and the person's previous enrollments in it.

Consent, caps and quiet hours are applied at send time (``domain.guardrails``). A send goes to
the first channel of the plan at its send time; in an experiment, the person's arm replaces the
flow's variant, channels and delay (``with_arm``), and the holdout is suppressed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from momently.domain.chain import MAX_CHAIN
from momently.domain.experiments import HOLDOUT, Arm
from momently.domain.flow import Flow

Outcome = Literal["send", "suppress"]


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    reason: str | None = None
    channel: str | None = None
    variant: str | None = None
    at_ms: int | None = None
    channels: tuple[str, ...] | None = None  # the plan, when an arm changed the flow's
    arm: str | None = None  # the experiment arm (or ``holdout``)

    def detail(self) -> dict[str, Any]:
        pairs = (("channel", self.channel), ("variant", self.variant), ("at", self.at_ms), ("arm", self.arm))
        return {k: v for k, v in pairs if v}


# Reasons, as recorded on the enrollment and counted by ``flows backtest``.
FLOW_PAUSED = "flow_paused"
AUDIENCE_FALSE = "audience_false"
REENTRY_ONCE = "reentry_once"
REENTRY_PERIOD = "reentry_period"
# the deadline (absence, inactivity) had passed, allowed lateness included, before the event
# that set it arrived: acting now would answer a moment that is gone
LATE_EVENT = "late_event"
CHAIN_TOO_DEEP = "chain_too_deep"  # a follow-up of follow-ups more than MAX_CHAIN deep
HOLDOUT_REASON = HOLDOUT  # in an experiment's holdout: tracked, sent nothing
GLOBAL_CONTROL = "global_control"  # in the workspace's global control group: no tier-B message


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
    global_control: bool = False,
) -> Decision:
    """``last_sent_ms``: when this person was last enrolled with a send in this flow, if ever;
    ``late``: the trigger's deadline had passed, allowed lateness included, when it was set;
    ``chain``: how many flows' messages in a row led to this enrollment (``domain.chain``);
    ``send_at_ms``: when the message is to go (the end of the flow's delay), default now.
    ``global_control``: the person is in the workspace's global control group (tier B only).
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
    if global_control and flow.tier == "B":
        return Decision("suppress", GLOBAL_CONTROL)
    variants = flow.message.get("variants")
    variant = "default"
    if isinstance(variants, list) and variants and isinstance(variants[0], dict):
        variant = str(variants[0].get("id", "default"))
    at = now_ms if send_at_ms is None else send_at_ms
    return Decision("send", channel=flow.channels[0], variant=variant, at_ms=at)


def with_arm(send: Decision, arm: Arm | None, *, send_at_ms: int | None = None) -> Decision:
    """A ``send`` decision as the person's experiment arm has it: the arm's variant, plan and
    send time (``send_at_ms``, when its delay differs from the flow's) replace the flow's; the
    holdout (``arm`` None) is suppressed with reason ``holdout``."""
    if arm is None:
        return Decision("suppress", HOLDOUT_REASON, at_ms=send.at_ms, arm=HOLDOUT)
    channels = arm.channels
    return Decision(
        "send",
        channel=channels[0] if channels else send.channel,
        variant=arm.variant or send.variant,
        at_ms=send.at_ms if send_at_ms is None else send_at_ms,
        channels=channels,
        arm=arm.id,
    )
