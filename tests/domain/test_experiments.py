"""Assignment, holdout, global control, validation and lifecycle of experiments (pure)."""

from __future__ import annotations

from collections import Counter

import pytest

from momently.domain import experiments as rules
from momently.domain.decision import GLOBAL_CONTROL, decide, with_arm
from momently.domain.definitions import load, validate
from momently.domain.experiments import HOLDOUT, Arm, Experiment, InvalidChange, Status, change, pick, unit
from momently.domain.flow import compile_flow
from momently.domain.guardrails import InvalidGuardrails, Policy

PEOPLE = [f"user-{i}" for i in range(100_000)]


def experiment(holdout: float = 0.0, *weights: float, salt: str = "s") -> Experiment:
    arms = tuple(Arm(f"a{i}", w) for i, w in enumerate(weights))
    return Experiment("e", "e", salt, holdout, arms)


def test_assignment_is_a_pure_function_of_salt_and_key() -> None:
    exp = experiment(0.1, 1, 1)
    assert [exp.assign(p) for p in PEOPLE[:1000]] == [exp.assign(p) for p in PEOPLE[:1000]]
    # pinned: the same people land in the same arms on every machine and version
    assert unit("s", "user-0") == unit("s", "user-0")
    assert [experiment(0.1, 1, 1).assign(p) for p in ("ann", "bob", "cid", "dee")] == [
        experiment(0.1, 1, 1).assign(p) for p in ("ann", "bob", "cid", "dee")
    ]


def test_a_new_salt_re_randomises() -> None:
    a = [experiment(0, 1, 1, salt="one").assign(p) for p in PEOPLE[:2000]]
    b = [experiment(0, 1, 1, salt="two").assign(p) for p in PEOPLE[:2000]]
    same = sum(x == y for x, y in zip(a, b, strict=True))
    assert 0.45 < same / 2000 < 0.55  # independent: about half agree by chance


@pytest.mark.parametrize(
    ("holdout", "weights"),
    [
        (0.0, (1, 1)),
        (0.1, (1, 1)),
        (0.1, (2, 1, 1)),
        (0.5, (1,)),
        (0.05, (0.25, 0.75)),
        (0.0, (1, 1, 1, 1, 1)),
    ],
)
def test_the_split_is_within_one_percent_of_the_weights_over_100k_people(
    holdout: float, weights: tuple[float, ...]
) -> None:
    exp = experiment(holdout, *weights)
    counts = Counter(exp.assign(p) for p in PEOPLE)
    n = len(PEOPLE)
    assert abs(counts[HOLDOUT] / n - holdout) < 0.01
    total = sum(weights)
    for i, w in enumerate(weights):
        expected = (1 - holdout) * w / total
        assert abs(counts[f"a{i}"] / n - expected) < 0.01, (i, counts)
    assert sum(counts.values()) == n


def test_pick_cuts_the_unit_interval_holdout_first() -> None:
    arms = (Arm("a", 1), Arm("b", 3))
    assert pick(0.0, 0.1, arms) == HOLDOUT
    assert pick(0.0999, 0.1, arms) == HOLDOUT
    assert pick(0.1, 0.1, arms) == "a"
    assert pick(0.1 + 0.9 * 0.2499, 0.1, arms) == "a"
    assert pick(0.1 + 0.9 * 0.25, 0.1, arms) == "b"
    assert pick(0.999999, 0.1, arms) == "b"


def test_global_control_is_its_own_hash_per_workspace() -> None:
    inside = [p for p in PEOPLE[:20_000] if rules.in_global_control("acme", p, 0.05)]
    assert abs(len(inside) / 20_000 - 0.05) < 0.01
    other = {p for p in PEOPLE[:20_000] if rules.in_global_control("other", p, 0.05)}
    assert len(set(inside) & other) < len(inside) * 0.2  # another workspace, another group
    assert not rules.in_global_control("acme", inside[0], 0.0)


def test_the_person_key_is_the_user_id_else_the_anonymous_id() -> None:
    assert rules.person_key("u1", ("a1",), "p1") == "u1"
    assert rules.person_key(None, ("a1", "a2"), "p1") == "a1"
    assert rules.person_key(None, (), "p1") == "p1"


@pytest.mark.parametrize(
    ("written", "share"), [("10%", 0.1), ("0%", 0.0), (0, 0.0), ("2.5%", 0.025), ("50%", 0.5)]
)
def test_shares_are_percentages(written: object, share: float) -> None:
    assert rules.parse_share(written, what="holdout", at_most=0.5) == pytest.approx(share)


@pytest.mark.parametrize("written", ["60%", "-1%", "10", 0.1, "ten%", True])
def test_bad_shares_say_what_to_write(written: object) -> None:
    with pytest.raises(rules.InvalidShare, match="holdout"):
        rules.parse_share(written, what="holdout", at_most=0.5)


FLOW = """
id: cart
trigger: {event: Product Added}
channels: [console]
message:
  variants:
    - {id: short, body: "Cart!"}
    - {id: long, body: "Your cart is waiting for you."}
experiment:
  %s
"""


def problems_of(block: str) -> list[str]:
    docs, bad = load(FLOW % block, "f.yaml")
    assert not bad
    return [p.message for p in validate(docs)]


def test_a_valid_experiment_compiles_with_its_defaults() -> None:
    block = """arms:
    - {id: short, weight: 1, variant: short}
    - {id: long, weight: 2, variant: long, channels: [email, console], delay: 2h}
  holdout: 10%"""
    assert problems_of(block) == []
    docs, _ = load(FLOW % block, "f.yaml")
    exp = compile_flow(docs[0].data, 1).experiment
    assert exp is not None
    assert (exp.id, exp.name, exp.salt, exp.holdout) == ("cart", "cart", "cart", 0.1)
    assert exp.arms[1].channels == ("email", "console")
    assert exp.arms[1].delay is not None
    assert exp.arms[1].delay.for_ms == 7_200_000


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("arms: [{id: a, weight: 0}]", "experiment.arms.0.weight: 0: a weight is a positive number"),
        ("arms: [{id: a, weight: -1}]", "a weight is a positive number"),
        ("arms: [{id: a, weight: x}]", "a weight is a positive number"),
        ("arms: [{id: a}, {id: a}]", "arm 'a' is defined twice"),
        ("arms: [{id: A b}]", "lowercase letters, digits"),
        ("arms: [{id: holdout}]", "'holdout' is the name of the holdout"),
        ("arms: [{id: a, variant: shrt}]", "unknown variant 'shrt': the message has short, long"),
        ("arms: [{id: a, channels: [emial]}]", "'emial' is not one of"),
        ("{arms: [{id: a}], holdout: 60%}", "experiment.holdout: '60%': from 0% to 50%"),
        ("{arms: [{id: a}], holdout: 10}", 'write a percentage, e.g. "10%"'),
        ("{arms: []}", "should be non-empty"),
        ("{arm: [{id: a}]}", "did you mean 'arms'?"),
        (
            "arms: [{id: a, delay: {for: 1d, cancel_if: {trait: x, exists: true}}}]",
            "put cancel_if in the flow",
        ),
        ("arms: [{id: a, delay: 2 days}]", "write 2d"),
    ],
)
def test_invalid_experiments_are_refused_with_a_clear_message(block: str, expected: str) -> None:
    found = problems_of(block)
    assert any(expected in p for p in found), found


def test_an_experiment_id_belongs_to_one_flow() -> None:
    text = (
        (FLOW % "{id: shared, arms: [{id: a}]}")
        + "---"
        + (FLOW % "{id: shared, arms: [{id: a}]}").replace("id: cart", "id: cart-2")
    )
    docs, _ = load(text, "f.yaml")
    assert any("experiment 'shared' is flow 'cart''s already" in p.message for p in validate(docs))


def test_experiment_viewed_is_not_a_trigger() -> None:
    docs, _ = load("id: x\ntrigger: {event: Experiment Viewed}\nmessage: {body: hi}\n", "f.yaml")
    assert any("'Experiment Viewed' is not a trigger" in p.message for p in validate(docs))


def test_an_arm_replaces_variant_channels_and_send_time_and_the_holdout_is_suppressed() -> None:
    docs, _ = load(FLOW % "arms: [{id: a}]", "f.yaml")
    flow = compile_flow(docs[0].data, 1)
    send = decide(flow, now_ms=1000, audience_ok=True, paused=False, last_sent_ms=None)
    assert (send.variant, send.channel) == ("short", "console")
    arm = with_arm(send, Arm("long", 1, "long", ("email", "console")), send_at_ms=5000)
    assert (arm.outcome, arm.variant, arm.channel, arm.channels, arm.at_ms) == (
        "send",
        "long",
        "email",
        ("email", "console"),
        5000,
    )
    assert arm.detail() == {"channel": "email", "variant": "long", "at": 5000, "arm": "long"}
    held = with_arm(send, None)
    assert (held.outcome, held.reason, held.arm) == ("suppress", "holdout", "holdout")
    kept = with_arm(send, Arm("same", 1))
    assert (kept.variant, kept.channel, kept.channels, kept.at_ms) == ("short", "console", None, 1000)


def test_global_control_suppresses_tier_b_only() -> None:
    docs, _ = load(FLOW % "arms: [{id: a}]", "f.yaml")
    flow = compile_flow(docs[0].data, 1)
    d = decide(flow, now_ms=0, audience_ok=True, paused=False, last_sent_ms=None, global_control=True)
    assert (d.outcome, d.reason) == ("suppress", GLOBAL_CONTROL)
    tier_a = compile_flow({**docs[0].data, "tier": "A"}, 1)
    d = decide(tier_a, now_ms=0, audience_ok=True, paused=False, last_sent_ms=None, global_control=True)
    assert d.outcome == "send"
    # other reasons come first: someone outside the audience is not "in global control"
    d = decide(flow, now_ms=0, audience_ok=False, paused=False, last_sent_ms=None, global_control=True)
    assert d.reason == "audience_false"


def test_global_control_in_the_guardrails_policy() -> None:
    assert Policy.from_json({"globalControl": "5%"}).global_control == pytest.approx(0.05)
    assert Policy.from_json({}).global_control == 0
    assert Policy.from_json({"globalControl": "5%"}).as_json()["globalControl"] == "5%"
    with pytest.raises(InvalidGuardrails, match="globalControl"):
        Policy.from_json({"globalControl": "80%"})


def test_lifecycle() -> None:
    arms = ["a", "b"]
    started, name = change(None, "start", None, arms)
    assert (started, name) == (Status("running", None, 1), "Experiment Started")
    stopped, name = change(started, "stop", None, arms)
    assert (stopped.state, stopped.version, name) == ("stopped", 2, "Experiment Stopped")
    shipped, name = change(stopped, "ship", "b", arms)
    assert (shipped.state, shipped.arm, shipped.version, name) == ("shipped", "b", 3, "Experiment Shipped")
    resumed, name = change(shipped, "resume", None, arms)
    assert (resumed.state, resumed.arm, resumed.version, name) == ("running", None, 4, "Experiment Resumed")
    # never recorded counts as running: stop works, resume does not
    assert change(None, "stop", None, arms)[0].version == 1
    for current, action, arm, code in [
        (resumed, "resume", None, "experiment_running"),
        (stopped, "stop", None, "experiment_stopped"),
        (shipped, "ship", "b", "experiment_shipped"),
        (resumed, "ship", "c", "unknown_arm"),
        (resumed, "ship", None, "unknown_arm"),
        (resumed, "start", None, "experiment_started"),
    ]:
        with pytest.raises(InvalidChange) as err:
            change(current, action, arm, arms)  # type: ignore[arg-type]
        assert err.value.code == code
