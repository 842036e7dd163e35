"""A flow can follow another flow's messages (step 2 of a sequence), through the HTTP API on
SQLite and PostgreSQL: Momently's own message events trigger flows, loops are refused at
validation, and a chain deeper than ``MAX_CHAIN`` is suppressed at run time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from momently.domain.chain import MAX_CHAIN
from momently.domain.timestamps import to_millis
from tests.flows.conftest import FlowEnv
from tests.flows.test_dispatch_e2e import dispatch, log_of
from tests.webhook_receiver import Receiver, webhook_env


@pytest.fixture
def env(database_url: str, receiver: Receiver, tmp_path: Path) -> Iterator[FlowEnv]:
    with webhook_env(database_url, receiver, console_path=str(tmp_path / "console.jsonl")) as e:
        yield e


TIP = """
id: tip
trigger: {event: Feature Used}
channels: [webhook]
message:
  body: "Try the shortcut next time."
  action: {label: Show me, url: "https://app.example/tips", event: Tip Opened}
"""


def follower(id_: str, event: str, after: str, *, reentry: str = "{once_per: 1d}") -> str:
    return f"""
id: {id_}
trigger:
  event: {event}
  where: {{event: properties.flow_id, equals: {after}}}
channels: [webhook]
reentry: {reentry}
message: {{body: "{id_}"}}
"""


def run(env: FlowEnv, rounds: int = 10) -> None:
    """Dispatch and process the message events the dispatcher wrote, until nothing moves."""
    for _ in range(rounds):
        dispatch(env)
        env.settle()


def used(env: FlowEnv, user: str = "ada") -> None:
    env.send({"type": "track", "userId": user, "event": "Feature Used"})


def test_a_flow_follows_another_flows_sent_message(env: FlowEnv, receiver: Receiver) -> None:
    # Given a tip and a second step that follows the tip's sent message
    env.flow("tip", TIP)
    env.flow("tip-2", follower("tip-2", "Message Sent", "tip"))
    env.flow("other", "id: other\ntrigger: {event: Other Thing}\nchannels: [webhook]\nmessage: {body: Hi}\n")
    # When Ada uses the feature, and Bob gets a message from another flow
    used(env)
    env.send({"type": "track", "userId": "bob", "event": "Other Thing"})
    run(env)
    # Then the second step follows Ada's tip, and only hers
    assert [e.person_id for e in env.sends("tip-2")] == [env.person("ada")]
    [second] = env.sends("tip-2")
    [sent] = [p for p in log_of(env, "Message Sent") if p["flow_id"] == "tip"]
    assert second.occurrence.endswith("~c1")  # one link down the chain
    assert second.trigger_seq is not None
    assert sent["delivery_key"] == f"tip:{env.person('ada')}:e1"
    keys = sorted(m["deliveryKey"].split(":", 1)[1] for m in receiver.received)  # after the workspace
    assert keys == sorted(
        [
            f"other:{env.person('bob')}:e2",
            sent["delivery_key"],
            f"tip-2:{env.person('ada')}:{second.occurrence}",
        ]
    )


def test_a_tap_on_a_message_triggers_the_flow_that_follows_its_click(
    env: FlowEnv, receiver: Receiver
) -> None:
    env.flow("tip", TIP)
    env.flow("tip-clicked", follower("tip-clicked", "Message Clicked", "tip"))
    env.flow("tip-opened", follower("tip-opened", "Tip Opened", "tip"))
    used(env)
    run(env)
    assert env.sends("tip-clicked") == []
    assert env.sends("tip-opened") == []
    [message] = receiver.received
    # When Ada taps the tip's link (what the self-submitting page does)
    assert httpx.post(message["message"]["action"]["url"]).status_code == 303
    env.settle()
    # Then both the click and the action's declared event trigger their followers
    assert [e.occurrence[-3:] for e in env.sends("tip-clicked")] == ["~c1"]
    assert [e.occurrence[-3:] for e in env.sends("tip-opened")] == ["~c1"]


def test_loops_and_engine_bookkeeping_are_refused(env: FlowEnv) -> None:
    env.flow("a", follower("a", "Message Sent", "b"))
    r = env.put("flow", "b", follower("b", "Message Delivered", "a"))
    assert r.status_code == 400
    [problem] = r.json()["problems"]
    assert "loop: b -> a -> b" in problem["message"]
    r = env.put("flow", "c", "id: c\ntrigger: {event: Message Clicked}\n")
    assert r.status_code == 400
    assert "would trigger itself" in r.text
    assert "properties.flow_id" in r.text
    r = env.put("flow", "d", "id: d\ntrigger: {event: Message Decided}\n")
    assert r.status_code == 400
    assert "'Message Decided' is not a trigger" in r.text
    r = env.put("flow", "e", "id: e\ntrigger: {event: Segment Entered}\n")
    assert r.status_code == 400
    assert "use a segment trigger" in r.text
    r = env.put("flow", "f", "id: f\ntrigger: {inactivity: {for: 3d, event: Message Seen}}\n")
    assert r.status_code == 400
    assert "absence trigger" in r.text
    # a flow triggered by the event its own action declares: a tap would enroll it again
    r = env.put(
        "flow", "g", TIP.replace("id: tip", "id: g").replace("event: Feature Used", "event: Tip Opened")
    )
    assert r.status_code == 400
    assert "flow 'g' would trigger itself" in r.text


def test_a_chain_deeper_than_the_limit_is_suppressed(env: FlowEnv) -> None:
    # Given steps 1..MAX_CHAIN+1, each following the one before
    env.flow("step-0", TIP.replace("id: tip", "id: step-0"))
    last = MAX_CHAIN + 1
    for n in range(1, last + 1):
        env.flow(f"step-{n}", follower(f"step-{n}", "Message Sent", f"step-{n - 1}"))
    used(env)
    run(env, rounds=last + 3)
    for n in range(1, MAX_CHAIN + 1):
        [e] = env.enrollments(f"step-{n}")
        assert (e.outcome, e.occurrence.rsplit("~", 1)[1]) == ("send", f"c{n}")
    [too_deep] = env.enrollments(f"step-{last}")
    assert (too_deep.outcome, too_deep.reason) == ("suppress", "chain_too_deep")


def test_a_loop_stored_behind_validations_back_stops_at_the_limit(env: FlowEnv) -> None:
    # Given a loop validation would refuse, stored directly (as an older version might have)
    env.flow("start", TIP.replace("id: tip", "id: start"))
    body = {
        "id": "echo",
        "trigger": {
            "event": "Message Sent",
            "where": {"event": "properties.flow_id", "in": ["start", "echo"]},
        },
        "channels": ["webhook"],
        "reentry": "every_time",
        "message": {"body": "again"},
    }
    now = to_millis(env.clock.now())
    env.services.definitions.apply(env.workspace, "flow", "echo", body, source="test", now_ms=now)
    used(env)
    run(env, rounds=MAX_CHAIN + 5)
    outcomes = [(e.outcome, e.reason) for e in env.enrollments("echo")]
    assert outcomes == [("send", None)] * MAX_CHAIN + [("suppress", "chain_too_deep")]
    assert len([p for p in log_of(env, "Message Sent") if p["flow_id"] == "echo"]) == MAX_CHAIN


UNLESS_TAPPED = """
id: tip-2
trigger:
  absence:
    first: {event: Message Sent, where: {event: properties.flow_id, equals: tip}}
    then: {event: Message Clicked, where: {event: properties.flow_id, equals: tip}}
    within: 1d
channels: [webhook]
message: {body: "Still curious?"}
"""


def test_a_second_step_a_day_later_unless_the_first_was_tapped(env: FlowEnv, receiver: Receiver) -> None:
    env.flow("tip", TIP)
    env.flow("tip-2", UNLESS_TAPPED)
    used(env, "ada")
    used(env, "bob")
    run(env)
    [bobs] = [m for m in receiver.received if m["person"]["userId"] == "bob"]
    assert httpx.post(bobs["message"]["action"]["url"]).status_code == 303
    env.settle()
    env.advance(hours=23)
    assert env.enrollments("tip-2") == []
    env.advance(hours=2)
    [second] = env.sends("tip-2")
    assert second.person_id == env.person("ada")
    assert second.trigger_kind == "absence"
    assert second.occurrence.endswith("~c1")
