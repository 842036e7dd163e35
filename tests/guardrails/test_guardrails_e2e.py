"""Quiet hours (across a daylight-saving change), frequency caps with defer and drop,
priorities, and kill switches, through the HTTP API on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.flows.conftest import FlowEnv
from tests.flows.test_dispatch_e2e import dispatch, log_of
from tests.webhook_receiver import Receiver, webhook_env

FLOW = """
id: %(id)s
tier: %(tier)s
priority: %(priority)d
trigger: {event: Feature Used}
reentry: every_time
channels: [webhook]
%(extra)s
message:
  variants:
    - id: main
      body: "A tip"
"""


def flow(id_: str, *, tier: str = "B", priority: int = 0, extra: str = "") -> str:
    return FLOW % {"id": id_, "tier": tier, "priority": priority, "extra": extra}


@pytest.fixture
def env(database_url: str, receiver: Receiver, tmp_path: Path) -> Iterator[FlowEnv]:
    with webhook_env(database_url, receiver) as e:
        yield e


def policy(env: FlowEnv, doc: dict[str, Any]) -> None:
    with env.admin() as c:
        r = c.put("/v1/guardrails", json=doc)
    assert r.status_code == 200, r.text


def use(env: FlowEnv, user: str = "ada") -> None:
    env.send(
        {"type": "identify", "userId": user, "traits": {"timezone": "Europe/Amsterdam"}},
        {"type": "track", "userId": user, "event": "Feature Used"},
    )
    dispatch(env)


def jump_to(env: FlowEnv, when: datetime) -> None:
    env.clock.set(when)
    env.settle()
    dispatch(env)


def test_quiet_hours_defer_to_the_local_morning_across_a_dst_change(env: FlowEnv, receiver: Receiver) -> None:
    env.flow("tip", flow("tip"))
    policy(env, {"quietHours": {"start": "21:00", "end": "08:00"}})
    # Saturday 27 March 2027, 21:30 in Amsterdam (CET, UTC+1); clocks go forward that night
    jump_to(env, datetime(2027, 3, 27, 20, 30, tzinfo=UTC))
    use(env)
    assert receiver.received == []
    [deferred] = log_of(env, "Message Deferred")
    assert deferred["reason"] == "quiet_hours_deferred"
    morning = datetime(2027, 3, 28, 6, 0, tzinfo=UTC)  # 08:00 CEST: nine and a half hours later
    assert deferred["until"] == int(morning.timestamp() * 1000)
    jump_to(env, datetime(2027, 3, 28, 5, 59, tzinfo=UTC))
    assert receiver.received == []
    jump_to(env, morning)
    assert len(receiver.received) == 1


def test_tier_a_may_bypass_quiet_hours(env: FlowEnv, receiver: Receiver) -> None:
    env.flow("eta", flow("eta", tier="A", extra="quiet_hours: bypass"))
    policy(env, {"quietHours": {"start": "21:00", "end": "08:00"}})
    jump_to(env, datetime(2027, 3, 27, 21, 30, tzinfo=UTC))
    use(env)
    assert len(receiver.received) == 1
    r = env.put("flow", "nudge", flow("nudge", extra="quiet_hours: bypass"))
    assert r.status_code == 400
    assert "only transactional (tier A) flows may bypass" in r.text


def test_a_cap_defers_to_the_first_allowed_moment(env: FlowEnv, receiver: Receiver) -> None:
    env.flow("tip", flow("tip"))
    policy(env, {"caps": [{"limit": 1, "per": "1d"}]})
    use(env)
    first_sent = env.services.outbox.list(env.workspace)[0].updated_ms
    env.advance(hours=1)
    use(env)
    assert len(receiver.received) == 1
    [waiting] = [d for d in env.services.outbox.list(env.workspace) if d.status == "pending"]
    assert waiting.next_attempt_ms == first_sent + 86_400_000  # when the first leaves the window
    [deferred] = log_of(env, "Message Deferred")
    assert deferred["reason"] == "frequency_cap"
    env.advance(hours=22, minutes=59)
    dispatch(env)
    assert len(receiver.received) == 1
    env.advance(minutes=1)
    dispatch(env)
    assert len(receiver.received) == 2


def test_a_rolling_cap_defers_messages_decided_together_by_default(env: FlowEnv, receiver: Receiver) -> None:
    # Given a cap of one a rolling day, the default on_cap (defer up to 1d), and two messages
    # decided at the same moment, sent a second later
    env.flow("tip", flow("tip"))
    policy(env, {"caps": [{"limit": 1, "per": "1d"}]})
    env.send(*[{"type": "track", "userId": "ada", "event": "Feature Used"} for _ in range(2)])
    env.advance(seconds=1)
    dispatch(env)
    # Then the second waits for the first to leave the window instead of being dropped
    assert len(receiver.received) == 1
    assert log_of(env, "Message Suppressed") == []
    [deferred] = log_of(env, "Message Deferred")
    assert deferred["reason"] == "frequency_cap"
    [sent] = [d.updated_ms for d in env.services.outbox.list(env.workspace) if d.status == "sent"]
    [waiting] = [d for d in env.services.outbox.list(env.workspace) if d.status == "pending"]
    assert waiting.next_attempt_ms == sent + 86_400_000
    env.advance(days=1)
    dispatch(env)
    assert len(receiver.received) == 2


def test_a_cap_drops_when_asked_and_tier_a_is_exempt_but_counted(env: FlowEnv, receiver: Receiver) -> None:
    env.flow("promo", flow("promo", extra="on_cap: {action: drop}"))
    policy(env, {"caps": [{"limit": 1, "per": "1d"}]})
    use(env)
    env.flow("receipt", flow("receipt", tier="A"))
    env.advance(hours=1)
    use(env)
    assert sorted(m["flow"] for m in receiver.received) == ["promo", "receipt"]
    [dropped] = log_of(env, "Message Suppressed")
    assert (dropped["reason"], dropped["detail"]) == ("frequency_cap", "1 per 86400s (all messages)")
    env.advance(hours=23, minutes=30)  # the promo has left the window; the receipt has not
    use(env)
    assert [m["flow"] for m in receiver.received].count("promo") == 1


def test_the_higher_priority_flow_wins_the_last_place(env: FlowEnv, receiver: Receiver) -> None:
    env.flow("minor", flow("minor", priority=1))
    env.flow("major", flow("major", priority=50))
    policy(env, {"caps": [{"limit": 1, "per": "1d"}]})
    use(env)
    assert [m["flow"] for m in receiver.received] == ["major"]
    [minor] = [d for d in env.services.outbox.list(env.workspace) if d.flow_id == "minor"]
    assert minor.status == "pending"
    assert (minor.last_error or "").startswith("lower_priority")


def test_kill_switches_hold_queued_messages_until_resumed_or_too_old(
    env: FlowEnv, receiver: Receiver
) -> None:
    env.flow("tip", flow("tip"))
    with env.admin() as c:
        assert c.post("/v1/guardrails/pause", json={"channel": "webhook"}).json()["pausedChannels"] == [
            "webhook"
        ]
    use(env)
    for _ in range(3):  # rechecked every few seconds while paused: one event, not one per check
        env.advance(seconds=4)
        dispatch(env)
    assert receiver.received == []
    assert [e["reason"] for e in log_of(env, "Message Deferred")] == ["paused"]
    with env.admin() as c:
        c.post("/v1/guardrails/resume", json={"channel": "webhook"})
    env.advance(seconds=4)
    dispatch(env)
    assert len(receiver.received) == 1

    with env.admin() as c:  # a paused flow holds what it had already queued
        use(env, "bob")
        assert c.post("/v1/flows/tip/pause").status_code == 200
    env.send({"type": "track", "userId": "cy", "event": "Feature Used"})
    dispatch(env)
    assert len(receiver.received) == 1 + 1  # bob's went before the pause; cy was never enrolled

    with env.admin() as c:  # the whole workspace, until the message is too old to send
        c.post("/v1/flows/tip/resume")
        c.post("/v1/guardrails/pause", json={})
    use(env, "dee")
    env.advance(hours=25)
    dispatch(env)
    [dee] = [d for d in env.services.outbox.list(env.workspace) if d.person_id == env.person("dee")]
    assert dee.status == "expired"
    assert len(receiver.received) == 2


def test_policy_errors_are_clear(env: FlowEnv) -> None:
    with env.admin() as c:
        r = c.put("/v1/guardrails", json={"caps": [{"limit": 1, "per": "daily"}]})
        assert r.status_code == 400
        assert r.json()["code"] == "invalid_guardrails"
        assert "per must be a duration" in r.json()["message"]


def test_a_flows_max_age_expires_what_waited_too_long(env: FlowEnv, receiver: Receiver) -> None:
    env.flow("flash", flow("flash", extra="max_age: 1h"))
    with env.admin() as c:
        c.post("/v1/guardrails/pause", json={})
    use(env)
    env.advance(minutes=50)
    dispatch(env)
    [d] = env.services.outbox.list(env.workspace)
    assert d.status == "pending"  # still waiting: younger than its max age
    env.advance(minutes=11)
    dispatch(env)
    [d] = env.services.outbox.list(env.workspace)
    assert d.status == "expired"
    [gone] = log_of(env, "Message Suppressed")
    assert gone["reason"] == "paused"
    with env.admin() as c:
        c.post("/v1/guardrails/resume", json={})
    dispatch(env)
    assert receiver.received == []
