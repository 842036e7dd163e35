"""Flows decide on event time within an allowed lateness: late and out-of-order events, sent
through the HTTP ingest API on SQLite and PostgreSQL, on virtual time. Each event carries the
time it happened (``timestamp``) and arrives when the test's clock says."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from momently.domain.timestamps import to_millis
from tests.flows.conftest import START, FlowEnv, make_env

CART = """
id: cart-nudge
trigger:
  absence:
    first: {event: Product Added}
    then: {event: Order Completed}
    within: 30m
    key: properties.cart_id
reentry: every_time
"""


def at(minutes: float = 0, *, days: float = 0) -> datetime:
    return START + timedelta(minutes=minutes, days=days)


def track(user: str, event: str, when: datetime, **properties: object) -> dict[str, object]:
    return {
        "type": "track",
        "userId": user,
        "event": event,
        "properties": properties,
        "timestamp": when.isoformat(),
    }


def arrive(env: FlowEnv, when: datetime) -> None:
    """Move the clock to ``when`` and let the engine catch up, as a live server would."""
    env.clock.set(when)
    env.settle()


@pytest.fixture
def late_env(database_url: str) -> Iterator[FlowEnv]:
    with make_env(database_url, allowed_lateness_seconds=300) as e:
        yield e


def test_an_order_stamped_inside_the_window_cancels_the_nudge_though_it_arrives_after_it(
    late_env: FlowEnv,
) -> None:
    env = late_env
    env.flow("cart-nudge", CART)
    env.send(
        track("ada", "Product Added", at(0), cart_id="c1"), track("bob", "Product Added", at(0), cart_id="c2")
    )
    arrive(env, at(31))  # the window closed at 30 min; the deadline waits until 35
    assert env.enrollments("cart-nudge") == []
    # the phone flushes ada's order, placed at 29 min, at 31 min
    env.send(track("ada", "Order Completed", at(29), cart_id="c1"))
    arrive(env, at(36))
    rows = env.enrollments("cart-nudge")
    assert [(r.person_id, r.outcome) for r in rows] == [(env.person("bob"), "send")]
    assert rows[0].decided_ms == to_millis(at(30))  # stamped at the deadline, not its release


def test_an_add_that_arrives_after_its_order_does_not_nudge(late_env: FlowEnv) -> None:
    env = late_env
    env.flow("cart-nudge", CART)
    arrive(env, at(10))
    env.send(track("ada", "Order Completed", at(10), cart_id="c1"))  # the server's event, first
    arrive(env, at(12))
    env.send(track("ada", "Product Added", at(2), cart_id="c1"))  # the phone's, later
    arrive(env, at(120))
    assert env.enrollments("cart-nudge") == []
    assert env.services.engine_state.pending_timers(env.workspace) == 0


def test_an_order_after_the_window_does_not_cancel_it(late_env: FlowEnv) -> None:
    """The absence happened (no order within 30 minutes): the decision stands, in event time."""
    env = late_env
    env.flow("cart-nudge", CART)
    env.send(track("ada", "Product Added", at(0), cart_id="c1"))
    arrive(env, at(32))
    env.send(track("ada", "Order Completed", at(32), cart_id="c1"))
    arrive(env, at(40))
    assert [r.outcome for r in env.enrollments("cart-nudge")] == ["send"]


def test_a_flow_without_lateness_acts_at_the_deadline(late_env: FlowEnv) -> None:
    """``lateness: 0s`` (a tier A flow that must not wait): the order that arrives after the
    deadline is too late for it; that is the documented price of speed."""
    env = late_env
    env.flow("cart-nudge", CART + "lateness: 0s\n")
    env.send(track("ada", "Product Added", at(0), cart_id="c1"))
    arrive(env, at(31))
    env.send(track("ada", "Order Completed", at(29), cart_id="c1"))
    arrive(env, at(40))
    rows = env.enrollments("cart-nudge")
    assert [(r.outcome, r.decided_ms) for r in rows] == [("send", to_millis(at(30)))]


def test_a_window_that_closed_before_its_start_arrived_is_recorded_late_never_sent(
    late_env: FlowEnv,
) -> None:
    env = late_env
    env.flow("cart-nudge", CART)
    arrive(env, at(120))
    env.send(track("ada", "Product Added", at(0), cart_id="c1"))  # flushed two hours late
    arrive(env, at(130))
    rows = env.enrollments("cart-nudge")
    assert [(r.outcome, r.reason) for r in rows] == [("suppress", "late_event")]
    assert env.services.outbox.list(env.workspace) == []


INACTIVE = {
    "winback": "id: winback\ntrigger: {inactivity: {for: 14d}}\nreentry: every_time\n",
    "no-open": "id: no-open\ntrigger: {inactivity: {for: 14d, event: App Opened}}\nreentry: every_time\n",
}


def test_an_old_event_flushed_late_does_not_make_an_active_person_inactive(late_env: FlowEnv) -> None:
    env = late_env
    for flow_id, doc in INACTIVE.items():
        env.flow(flow_id, doc)
    for day in range(0, 11):
        arrive(env, at(days=day))
        env.send(track("ada", "App Opened", at(days=day)))
    # day 10: the phone flushes an App Opened from 14 days ago (day -4)
    env.send(track("ada", "App Opened", at(days=-4)))
    arrive(env, at(days=23))
    assert env.enrollments() == []
    # measured from the latest event time (day 10): inactive on day 24, acted on after the lateness
    arrive(env, at(days=24, minutes=6))
    rows = env.enrollments()
    assert sorted((r.flow_id, r.outcome, r.decided_ms) for r in rows) == [
        ("no-open", "send", to_millis(at(days=24))),
        ("winback", "send", to_millis(at(days=24))),
    ]


def test_a_silence_that_ended_before_its_only_event_arrived_is_recorded_late(late_env: FlowEnv) -> None:
    env = late_env
    for flow_id, doc in INACTIVE.items():
        env.flow(flow_id, doc)
    arrive(env, at(days=20))
    env.send(track("ada", "App Opened", at(days=1)))  # a phone offline for 19 days
    arrive(env, at(days=21))
    rows = env.enrollments()
    assert sorted((r.flow_id, r.outcome, r.reason) for r in rows) == [
        ("no-open", "suppress", "late_event"),
        ("winback", "suppress", "late_event"),
    ]


def test_the_workspace_allowed_lateness_is_a_guardrail(late_env: FlowEnv) -> None:
    env = late_env
    with env.admin() as c:
        r = c.put("/v1/guardrails", json={"allowedLateness": "20m"})
        assert r.status_code == 200, r.text
        assert r.json()["allowedLateness"] == "20m"
        bad = c.put("/v1/guardrails", json={"allowedLateness": "2d"})
        assert bad.status_code == 400
        assert "allowedLateness" in bad.text
    env.flow("cart-nudge", CART)
    env.send(track("ada", "Product Added", at(0), cart_id="c1"))
    arrive(env, at(45))
    env.send(track("ada", "Order Completed", at(25), cart_id="c1"))  # 20 minutes late: still counts
    arrive(env, at(60))
    assert env.enrollments("cart-nudge") == []


QUIET = "id: quiet\ntrigger: {inactivity: {for: 2h, event: App Opened}}\nreentry: every_time\n"
IDLE = "id: idle\ntrigger: {inactivity: {for: 2h}}\nreentry: every_time\n"


def test_a_silence_that_ended_before_the_next_event_still_fires_at_its_release(late_env: FlowEnv) -> None:
    """The next event comes 2 minutes after the silence ended, before its release: the
    silence happened, and the new event starts the next one."""
    env = late_env
    env.flow("quiet", QUIET)
    env.flow("idle", IDLE)
    env.send(track("ada", "App Opened", at(0)))
    arrive(env, at(122))
    env.send(track("ada", "App Opened", at(122)))
    arrive(env, at(130))
    rows = env.enrollments()
    assert sorted((r.flow_id, r.outcome, r.decided_ms) for r in rows) == [
        ("idle", "send", to_millis(at(120))),
        ("quiet", "send", to_millis(at(120))),
    ]


def test_an_event_inside_an_ended_silence_arriving_within_the_lateness_breaks_it(late_env: FlowEnv) -> None:
    env = late_env
    env.flow("quiet", QUIET)
    env.flow("idle", IDLE)
    env.send(track("ada", "App Opened", at(0)))
    arrive(env, at(122))
    env.send(track("ada", "App Opened", at(122)))
    arrive(env, at(123))
    env.send(track("ada", "App Opened", at(100)))  # flushed late, within the lateness
    arrive(env, at(130))
    assert env.enrollments() == []
    arrive(env, at(122 + 126))  # the silence since 122 ends at 242, acted on at 247
    assert sorted((r.flow_id, r.decided_ms) for r in env.enrollments()) == [
        ("idle", to_millis(at(242))),
        ("quiet", to_millis(at(242))),
    ]
