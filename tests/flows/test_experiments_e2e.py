"""Experiments through the real HTTP API, on virtual time and both databases: arms get their
variants and channels, the holdout gets nothing and a ``holdout`` suppression, everyone
assigned gets an ``Experiment Viewed``; stop, ship and resume change what is sent and are
recorded in the log; assignments stick across an identity merge; the global control group."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from momently.domain.credentials import KeyKind
from momently.domain.experiments import Experiment, in_global_control
from momently.domain.flow import compile_flow
from momently.domain.timestamps import to_millis
from momently.store.schema import exposures
from tests.flows.conftest import FlowEnv, make_env
from tests.flows.test_dispatch_e2e import dispatch, log_of

CART = """
id: cart-copy
trigger: {event: Product Added}
reentry: every_time
channels: [console]
message:
  variants:
    - {id: short, body: "Cart!"}
    - {id: long, body: "Your cart is still waiting for you."}
experiment:
  name: Cart nudge copy
  salt: "2026-11"
  holdout: 20%
  arms:
    - {id: short, weight: 1, variant: short}
    - {id: long, weight: 1, variant: long, channels: [in_app, console]}
"""
USERS = [f"u{i}" for i in range(40)]


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> Iterator[FlowEnv]:
    with make_env(database_url, console_path=str(tmp_path / "console.jsonl")) as e:
        yield e


def experiment_of(env: FlowEnv, flow_id: str) -> Experiment:
    stored = env.services.definitions.get(env.workspace, "flow", flow_id)
    exp = compile_flow(stored.body, stored.version).experiment
    assert exp is not None
    return exp


def add_to_cart(env: FlowEnv, *users: str) -> None:
    env.send(*({"type": "track", "userId": u, "event": "Product Added"} for u in users))
    dispatch(env)


def sent(env: FlowEnv, since: int = 0) -> dict[str, tuple[str, str]]:
    """userId -> (channel, variant) of the messages sent, from the log."""
    out: dict[str, tuple[str, str]] = {}
    for ev in env.services.events.read(env.workspace, after_seq=since, limit=100_000):
        if ev.name == "Message Sent":
            assert ev.user_id is not None
            out[ev.user_id] = (ev.body["properties"]["channel"], ev.body["properties"]["variant"])
    return out


def last_seq(env: FlowEnv) -> int:
    return env.services.events.read(env.workspace, after_seq=0, limit=100_000)[-1].seq


def exposure_rows(env: FlowEnv) -> dict[str, tuple[str, int]]:
    with env.services.db.read() as conn:
        rows = conn.execute(
            select(exposures.c.person_id, exposures.c.arm, exposures.c.first_exposed_ms).where(
                exposures.c.workspace_id == env.workspace
            )
        ).all()
    return {str(p): (str(a), int(t)) for p, a, t in rows}


def test_arms_get_their_variants_the_holdout_nothing_and_everyone_an_exposure(env: FlowEnv) -> None:
    # Given a flow with two arms and a 20% holdout
    env.flow("cart-copy", CART)
    exp = experiment_of(env, "cart-copy")
    expected = {u: exp.assign(u) for u in USERS}
    assert {"short", "long", "holdout"} == set(expected.values())  # the test covers all three
    decided = to_millis(env.clock.now())
    # When 40 people add to their cart
    add_to_cart(env, *USERS)
    # Then each arm gets its variant on its channel, the holdout gets nothing
    got = sent(env)
    for u, arm in expected.items():
        if arm == "holdout":
            assert u not in got
        else:
            assert got[u] == {"short": ("console", "short"), "long": ("in_app", "long")}[arm], u
    # and the holdout is a recorded suppression; variant and arm are in every detail
    for e in env.enrollments("cart-copy"):
        user = next(u for u in USERS if env.person(u) == e.person_id)
        arm = expected[user]
        assert e.detail["arm"] == arm
        if arm == "holdout":
            assert (e.outcome, e.reason) == ("suppress", "holdout")
        else:
            assert (e.outcome, e.detail["variant"]) == ("send", arm)
    # and an Experiment Viewed for everyone assigned, holdout included
    viewed = {p["person_id"]: p for p in log_of(env, "Experiment Viewed")}
    assert len(viewed) == len(USERS)
    for u, arm in expected.items():
        pid = env.person(u)
        e = next(e for e in env.enrollments("cart-copy") if e.person_id == pid)
        props = {
            "experiment_id": "cart-copy",
            "experiment_name": "Cart nudge copy",
            "variation_id": arm,
            "variation_name": arm,
            "flow_id": "cart-copy",
            "flow_version": 1,
            "occurrence": e.occurrence,
            "person_id": pid,
        }
        if arm != "holdout":
            props["channel"] = {"short": "console", "long": "in_app"}[arm]
        assert viewed[pid] == props
    events = [
        ev
        for ev in env.services.events.read(env.workspace, after_seq=0, limit=10_000)
        if ev.name == "Experiment Viewed"
    ]
    assert {ev.timestamp_ms for ev in events} == {decided}
    assert {ev.body["messageId"] for ev in events} == {
        f"momently:exposure:{env.workspace}:cart-copy:{env.person(u)}:"
        + next(e.occurrence for e in env.enrollments("cart-copy") if e.person_id == env.person(u))
        for u in USERS
    }
    # When they come back, they keep their arm (sticky), and a replay records nothing twice
    env.advance(hours=1)
    add_to_cart(env, *USERS)
    assert {u: exposure_rows(env)[env.person(u)][0] for u in USERS} == expected
    assert len(log_of(env, "Experiment Viewed")) == 2 * len(USERS)
    env.services.projector.replay(env.workspace)
    assert len(log_of(env, "Experiment Viewed")) == 2 * len(USERS)
    assert {u: exposure_rows(env)[env.person(u)][0] for u in USERS} == expected


def test_stop_ship_and_resume_through_the_api(env: FlowEnv) -> None:
    env.flow("cart-copy", CART)
    exp = experiment_of(env, "cart-copy")
    expected = {u: exp.assign(u) for u in USERS}
    held = [u for u, arm in expected.items() if arm == "holdout"]
    with env.admin() as admin:
        listed = admin.get("/v1/experiments").json()["experiments"]
        assert [(x["id"], x["state"], x["flowId"]) for x in listed] == [("cart-copy", "running", "cart-copy")]

        # stopped: everyone, the holdout too, gets the flow's own message; nobody is assigned
        r = admin.post("/v1/experiments/cart-copy/stop", json={"reason": "copy bug"})
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "stopped"
        assert admin.post("/v1/experiments/cart-copy/stop").status_code == 409
        since = last_seq(env)
        add_to_cart(env, *USERS)
        assert sent(env, since) == {u: ("console", "short") for u in USERS}
        assert log_of(env, "Experiment Viewed") == []

        # shipped: arm long to everyone, on its own plan; still nobody assigned
        assert (
            admin.post("/v1/experiments/cart-copy/ship", json={"arm": "nope"}).json()["code"] == "unknown_arm"
        )
        r = admin.post("/v1/experiments/cart-copy/ship", json={"arm": "long", "reason": "long wins"})
        assert (r.status_code, r.json()["state"], r.json()["shippedArm"]) == (200, "shipped", "long")
        env.advance(hours=1)
        since = last_seq(env)
        add_to_cart(env, *USERS)
        assert sent(env, since) == {u: ("in_app", "long") for u in USERS}
        assert log_of(env, "Experiment Viewed") == []

        # resumed: the arms again, and the holdout gets nothing
        r = admin.post("/v1/experiments/cart-copy/resume", json={"reason": "more data"})
        assert r.json()["state"] == "running"
        env.advance(hours=1)
        since = last_seq(env)
        add_to_cart(env, *USERS)
        got = sent(env, since)
        assert set(got) == set(USERS) - set(held)
        assert len(log_of(env, "Experiment Viewed")) == len(USERS)

        # every change is in the log and in the history, with its version, who and why
        key = f"key:{admin_key_id(env)}"
        lifecycle = [
            (name, p)
            for name in (
                "Experiment Started",
                "Experiment Stopped",
                "Experiment Shipped",
                "Experiment Resumed",
            )
            for p in log_of(env, name)
        ]
        assert [
            (n, p["version"], p["by"], p["reason"], p.get("arm"))
            for n, p in sorted(lifecycle, key=lambda x: x[1]["version"])
        ] == [
            ("Experiment Started", 1, key, "flow applied", None),
            ("Experiment Stopped", 2, key, "copy bug", None),
            ("Experiment Shipped", 3, key, "long wins", "long"),
            ("Experiment Resumed", 4, key, "more data", None),
        ]
        assert all(p["experiment_id"] == "cart-copy" for _, p in lifecycle)
        shown = admin.get("/v1/experiments/cart-copy").json()
        assert [(h["version"], h["state"], h["arm"]) for h in shown["history"]] == [
            (1, "running", None),
            (2, "stopped", None),
            (3, "shipped", "long"),
            (4, "running", None),
        ]
        assert sum(shown["assigned"].values()) == len(USERS)
        assert admin.get("/v1/experiments/nope").status_code == 404
        assert admin.post("/v1/experiments/nope/stop").status_code == 404


def admin_key_id(env: FlowEnv) -> int:
    key = env.services.workspaces.lookup(env.admin_token, (KeyKind.ADMIN,))
    assert key is not None
    return int(key.id)


def test_the_earlier_assignment_wins_when_two_people_merge(env: FlowEnv) -> None:
    env.flow("cart-copy", CART.replace("holdout: 20%", "holdout: 0%"))
    exp = experiment_of(env, "cart-copy")
    ann = exp.assign("ann")
    anon = next(a for a in (f"anon-{i}" for i in range(100)) if exp.assign(a) != ann)
    # an anonymous visitor is assigned first, by their anonymousId
    env.send({"type": "track", "anonymousId": anon, "event": "Product Added"})
    first_ms = to_millis(env.clock.now())
    env.advance(minutes=5)
    # Ann, logged in on another device, is assigned later
    add_to_cart(env, "ann")
    assert exposure_rows(env)[env.person("ann")][0] == ann
    # the visitor logs in as Ann: one person, with the visitor's (earlier) arm
    env.advance(minutes=5)
    env.send({"type": "identify", "userId": "ann", "anonymousId": anon, "traits": {}})
    assert exposure_rows(env) == {env.person("ann"): (exp.assign(anon), first_ms)}
    since = last_seq(env)
    add_to_cart(env, "ann")
    variant = exp.assign(anon)
    assert sent(env, since)["ann"][1] == variant
    assert log_of(env, "Experiment Viewed")[-1]["variation_id"] == variant


def test_an_arms_delay_stamps_its_exposure_when_it_sends(env: FlowEnv) -> None:
    flow = CART.replace("reentry: every_time", "reentry: every_time\ndelay: 30m").replace(
        "variant: short}", "variant: short, delay: 2h}"
    )
    env.flow("cart-copy", flow)
    exp = experiment_of(env, "cart-copy")
    now = to_millis(env.clock.now())
    add_to_cart(env, *USERS)
    at = {"short": now + 7_200_000, "long": now + 1_800_000, "holdout": now + 1_800_000}
    for ev in env.services.events.read(env.workspace, after_seq=0, limit=10_000):
        if ev.name == "Experiment Viewed":
            arm = ev.body["properties"]["variation_id"]
            assert ev.timestamp_ms == at[arm], arm
            assert ev.received_ms == now  # decided now: the engine's clock does not jump ahead
    for e in env.enrollments("cart-copy"):
        if e.outcome == "send":
            assert e.detail["at"] == at[e.detail["arm"]]
    assert {exp.assign(u) for u in USERS} >= {"short", "long"}


def test_the_global_control_group_gets_no_tier_b_message(env: FlowEnv) -> None:
    with env.admin() as admin:
        r = admin.put("/v1/guardrails", json={"globalControl": "30%"})
        assert r.status_code == 200, r.text
        assert r.json()["globalControl"] == "30%"
        assert admin.put("/v1/guardrails", json={"globalControl": "70%"}).status_code == 400
    env.services.guardrails._cache.clear()  # read again at once, not after the 2 s cache
    env.flow("nudge", "id: nudge\ntrigger: {event: Product Added}\nmessage: {body: Hi}\n")
    env.flow("receipt", "id: receipt\ntier: A\ntrigger: {event: Product Added}\nmessage: {body: Receipt}\n")
    add_to_cart(env, *USERS)
    control = {u for u in USERS if in_global_control(env.workspace, u, 0.3)}
    assert 0 < len(control) < len(USERS)
    nudge = {e.person_id: e for e in env.enrollments("nudge")}
    for u in USERS:
        e = nudge[env.person(u)]
        assert (e.outcome, e.reason) == (("suppress", "global_control") if u in control else ("send", None))
    assert all(e.outcome == "send" for e in env.enrollments("receipt"))


def test_new_weights_keep_everyone_in_their_arm_and_a_new_salt_re_randomises(env: FlowEnv) -> None:
    env.flow("cart-copy", CART)
    before = {u: experiment_of(env, "cart-copy").assign(u) for u in USERS}
    add_to_cart(env, *USERS)
    # a new version with other weights and no holdout: assignments stick (the holdout's
    # people, whose arm is gone, are drawn again among the arms)
    env.flow(
        "cart-copy",
        CART.replace("holdout: 20%", "holdout: 0%").replace(
            "weight: 1, variant: long", "weight: 9, variant: long"
        ),
    )
    reweighted = experiment_of(env, "cart-copy")
    env.advance(hours=1)
    add_to_cart(env, *USERS)
    rows = exposure_rows(env)
    for u, arm in before.items():
        assert rows[env.person(u)][0] == (reweighted.assign(u) if arm == "holdout" else arm), u
    # a new salt: everyone is drawn again at their next exposure
    env.flow("cart-copy", CART.replace('salt: "2026-11"', 'salt: "2026-12"'))
    salted = experiment_of(env, "cart-copy")
    env.advance(hours=1)
    add_to_cart(env, *USERS)
    rows = exposure_rows(env)
    assert {u: rows[env.person(u)][0] for u in USERS} == {u: salted.assign(u) for u in USERS}
    assert {u: salted.assign(u) for u in USERS} != before
    assert len(rows) == len(USERS)


def test_re_entry_holds_the_holdout_back_as_it_holds_the_arms(env: FlowEnv) -> None:
    # once a day: an arm's second add in the day is reentry_period, and so is the holdout's,
    # so both get one exposure a day and stay comparable
    env.flow("cart-copy", CART.replace("reentry: every_time", "reentry: {once_per: 1d}"))
    exp = experiment_of(env, "cart-copy")
    held = next(u for u in USERS if exp.assign(u) == "holdout")
    armed = next(u for u in USERS if exp.assign(u) != "holdout")
    add_to_cart(env, held, armed)
    env.advance(hours=1)
    add_to_cart(env, held, armed)
    for u in (held, armed):
        reasons = [e.reason for e in env.enrollments("cart-copy") if e.person_id == env.person(u)]
        assert reasons == ["holdout" if u == held else None, "reentry_period"], u
    assert len(log_of(env, "Experiment Viewed")) == 2
    env.advance(days=1)
    add_to_cart(env, held)
    assert len(log_of(env, "Experiment Viewed")) == 3
