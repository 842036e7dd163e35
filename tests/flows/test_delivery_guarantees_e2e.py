"""The delivery guarantees of docs/channels.md, end to end on SQLite and PostgreSQL, against a
real webhook receiver that answers slowly: a stop-contact or a kill switch reaches a batch
already being sent within a second, and several dispatchers whose sends outlast their lease neither send a
message twice nor let a frequency cap through twice."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from momently.clock import SystemClock
from momently.services import Services
from tests.flows.conftest import FlowEnv
from tests.flows.test_dispatch_e2e import TIP
from tests.webhook_receiver import Receiver, webhook_env


def queue(env: FlowEnv, users: list[str], per_user: int) -> None:
    """``per_user`` messages for each user, waiting in the outbox."""
    env.send(
        *[
            {"type": "track", "userId": u, "event": "Feature Used", "properties": {"feature": f"f{i}"}}
            for u in users
            for i in range(per_user)
        ]
    )
    waiting = env.services.outbox.list(env.workspace, statuses=["pending"], limit=10_000)
    assert len(waiting) == len(users) * per_user


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize(
    ("path", "body", "held"),
    [
        ("/v1/consent/stop", {"userId": "ada"}, ("suppressed", "stop_contact: webhook/marketing")),
        ("/v1/guardrails/pause", {}, ("pending", "paused: workspace")),
    ],
    ids=["stop-contact", "kill-switch"],
)
def test_a_stop_reaches_a_batch_already_being_sent(
    database_url: str, receiver: Receiver, path: str, body: dict[str, Any], held: tuple[str, str]
) -> None:
    # Given 40 messages for Ada, claimed in one batch, and a receiver that takes half a second each
    receiver.delay = 0.5
    with webhook_env(database_url, receiver) as env:
        env.flow("tip", TIP % "[webhook]")
        queue(env, ["ada"], 40)
        sending = threading.Thread(target=env.services.dispatcher.run_once)
        sending.start()
        try:
            wait_for(lambda: len(receiver.arrived) >= 1)
            # When she asks to stop (or the workspace is paused) while the first eight are on the wire
            with env.admin() as c:
                r = c.post(path, json=body)
            acknowledged = time.monotonic()
            assert r.status_code == 200, r.text
        finally:
            sending.join(timeout=60)
        assert not sending.is_alive()
        # Then no send started more than a second after the acknowledgement, and the rest
        # of the batch is held with the reason
        late = [t - acknowledged for t in receiver.arrived if t > acknowledged + 1.0]
        assert late == []
        assert len(receiver.arrived) < 40  # the stop landed in the middle of the batch
        done = Counter((d.status, d.last_error) for d in env.services.outbox.list(env.workspace, limit=100))
        assert done[("sent", None)] == len(receiver.arrived)
        assert done[held] == 40 - len(receiver.arrived)


def test_three_dispatchers_slower_than_their_lease_send_once_and_keep_caps(
    database_url: str, receiver: Receiver
) -> None:
    # Given 15 people with two messages each, a cap of one a day, a receiver that takes 2.5 s
    # a message and three dispatchers holding 2 s leases on batches of two
    receiver.delay = 2.5
    with webhook_env(database_url, receiver) as env:
        env.clock.set(datetime.now(UTC))  # the dispatchers below run on the real clock
        env.flow("tip", TIP % "[webhook]" + "on_cap: {action: drop}\n")
        with env.admin() as c:
            r = c.put("/v1/guardrails", json={"caps": [{"limit": 1, "per": "1d"}]})
            assert r.status_code == 200, r.text
        people = [f"p{i:02d}" for i in range(15)]
        queue(env, people, 2)
        settings = env.services.settings.model_copy(
            update={"dispatch_lease_seconds": 2.0, "dispatch_batch_size": 2}
        )
        workers = [Services.build(settings, clock=SystemClock(), migrate=False) for _ in range(3)]

        def drain(services: Services) -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if services.dispatcher.run_once() == 0:
                    left = services.outbox.list(env.workspace, statuses=["pending", "sending"])
                    if not left:
                        return
                    time.sleep(0.05)

        try:
            # When they drain the outbox together
            threads = [threading.Thread(target=drain, args=(w,)) for w in workers]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=180)
        finally:
            for w in workers:
                w.close()
        # Then every message went out once at most, and each person got exactly one
        assert [k for k, n in Counter(receiver.ids).items() if n > 1] == []
        per_person = Counter(m["person"]["userId"] for m in receiver.received)
        assert per_person == {p: 1 for p in people}
        outcomes = Counter(
            (d.status, (d.last_error or "").split(":")[0])
            for d in env.services.outbox.list(env.workspace, limit=100)
        )
        assert outcomes == {("sent", ""): 15, ("suppressed", "frequency_cap"): 15}
