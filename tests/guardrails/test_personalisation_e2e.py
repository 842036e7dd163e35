"""Personalisation only with consent: without it the generic variant goes out, rendered from
traits alone; the consent-aligned personalisation rate recomputed from the log is 100%, and
a send that was personalised without consent would show up in it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from momently.domain.event import derived_event
from tests.flows.conftest import FlowEnv
from tests.flows.test_dispatch_e2e import dispatch, log_of
from tests.webhook_receiver import Receiver, webhook_env


@pytest.fixture
def env(database_url: str, receiver: Receiver, tmp_path: Path) -> Iterator[FlowEnv]:
    with webhook_env(database_url, receiver) as e:
        with e.admin() as c:  # this workspace asks for explicit personalisation consent
            c.put("/v1/consent/policy", json={"optIn": {"personalisation": ["*"]}})
        yield e


TIP = """
id: tip
trigger: {event: Feature Used}
reentry: every_time
channels: [webhook]
message:
  variants:
    - id: tailored
      body: "You used {{ event.properties.feature }}: try the shortcut, {{ traits.name }}."
    - id: plain
      generic: true
      body: "Tips for getting more done, {{ traits.name | default: 'there' }}."
"""


def use(env: FlowEnv, user: str, **traits: object) -> None:
    env.send(
        {"type": "identify", "userId": user, "traits": {"name": user.title(), **traits}},
        {"type": "track", "userId": user, "event": "Feature Used", "properties": {"feature": "export"}},
    )
    dispatch(env)
    env.settle()


def test_the_generic_variant_without_consent_and_the_rate_from_the_log(
    env: FlowEnv, receiver: Receiver
) -> None:
    env.flow("tip", TIP)
    use(env, "ada", personalisation_opt_in=True)
    use(env, "bob")
    bodies = {m["person"]["userId"]: m["message"]["body"] for m in receiver.received}
    assert bodies == {
        "ada": "You used export: try the shortcut, Ada.",
        "bob": "Tips for getting more done, Bob.",  # nothing inferred from behaviour
    }
    sent = {e["variant"]: e["personalised"] for e in log_of(env, "Message Sent")}
    assert sent == {"tailored": True, "plain": False}
    with env.admin() as c:
        report = c.get("/v1/consent/alignment").json()
    assert report == {
        "sent": 2,
        "personalised": 1,
        "aligned": 1,
        "rate": 1.0,
        "unmarked": 0,
        "misaligned": [],
    }

    # the check is real: a personalised send to bob, who never agreed, is caught
    now = env.clock.now()
    forged = derived_event(
        message_id="forged-1",
        name="Message Sent",
        user_id="bob",
        anonymous_id=None,
        at=now,
        received_at=now,
        properties={"channel": "webhook", "personalised": True, "delivery_key": "tip:forged"},
    )
    with env.services.db.write() as conn:
        env.services.events.append(conn, [("acme", forged)])
    with env.admin() as c:
        report = c.get("/v1/consent/alignment").json()
    assert report["rate"] == 0.5
    assert report["misaligned"] == ["tip:forged"]


def test_revoking_personalisation_switches_to_generic(env: FlowEnv, receiver: Receiver) -> None:
    env.flow("tip", TIP)
    use(env, "ada", personalisation_opt_in=True)
    env.advance(seconds=1)
    use(env, "ada", personalisation_opt_in=False)
    assert [m["message"]["variant"] for m in receiver.received] == ["tailored", "plain"]


def test_transactional_messages_always_use_the_event(env: FlowEnv, receiver: Receiver) -> None:
    env.flow("tip", TIP.replace("id: tip", "id: tip\ntier: A"))
    use(env, "bob")  # no personalisation consent: a receipt still says what it is about
    [m] = receiver.received
    assert m["message"]["body"] == "You used export: try the shortcut, Bob."
