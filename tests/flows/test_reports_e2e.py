"""``momently report`` and ``GET /v1/reports/flows`` over traffic sent through the HTTP API:
a flow with known traffic gives exact funnel, suppression, conversion and latency figures;
cells under the workspace's threshold are hidden, also where a difference would reveal them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from momently.cli import main
from momently.domain.timestamps import to_millis
from momently.store.engine_state import Changes, Enrollment
from tests.flows.conftest import FlowEnv, make_env
from tests.flows.test_dispatch_e2e import dispatch

TIP = """
id: tip
trigger: {event: Feature Used}
audience: {trait: plan, equals: pro}
reentry: once
channels: [console]
goal: {event: Shortcut Tried, within: 1h}
message:
  body: "Hi {{ traits.name }}, press E to export in one step."
"""
MINUTE = 60_000


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> Iterator[FlowEnv]:
    with make_env(database_url, console_path=str(tmp_path / "console.jsonl")) as e:
        yield e


def identify(user: str, **traits: Any) -> dict[str, Any]:
    return {"type": "identify", "userId": user, "traits": traits}


def used(user: str) -> dict[str, Any]:
    return {"type": "track", "userId": user, "event": "Feature Used"}


def track(user: str, event: str, **properties: Any) -> dict[str, Any]:
    return {"type": "track", "userId": user, "event": event, "properties": properties}


def traffic(env: FlowEnv) -> None:
    """Given 14 pro users (2 without a name), 3 free users and 2 pro users using the feature
    twice; 8 messages handed over 100 ms after their trigger arrived, 4 after 400 ms; five
    goals within the hour (three at 10 minutes, two at 30), one too late; three orders."""
    env.flow("tip", TIP)
    first = [f"p{i}" for i in range(8)]
    second = [f"q{i}" for i in range(4)]
    env.send(*(identify(u, plan="pro", name=u.upper()) for u in first + second))
    env.send(*(identify(u, plan="pro") for u in ("anon1", "anon2")))
    env.send(*(identify(u, plan="free", name="F") for u in ("f0", "f1", "f2")))
    env.send(*(used(u) for u in first))
    env.advance(seconds=0.1)
    dispatch(env)  # handed over 100 ms after the trigger was received
    env.send(*(used(u) for u in [*second, "anon1", "anon2"]))
    env.advance(seconds=0.4)
    dispatch(env)  # 400 ms; the two without a name are suppressed (render_missing_value)
    env.send(*(used(u) for u in ("f0", "f1", "f2", "p0", "p1")))  # audience_false x3, reentry_once x2
    dispatch(env)
    # the first eight were sent at +100 ms; it is +500 ms now
    env.advance(minutes=10, seconds=-0.4)
    env.send(*(track(u, "Shortcut Tried") for u in ("p0", "p1", "p2")))
    env.send(track("p0", "Order Completed", revenue=30), track("p1", "Order Completed", total=20))
    env.advance(minutes=20)
    env.send(*(track(u, "Shortcut Tried") for u in ("p3", "p4")))
    env.send(track("p2", "Order Completed", revenue=10))
    env.advance(hours=2)
    env.send(track("p5", "Shortcut Tried"))  # after the goal window
    env.send(track("p6", "Order Completed", revenue=99))  # after the window: not counted


def report(env: FlowEnv, **params: Any) -> dict[str, Any]:
    with env.admin() as c:
        r = c.get("/v1/reports/flows/tip", params={"since": "1d", **params})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def set_min_count(env: FlowEnv, k: int) -> None:
    with env.admin() as c:
        r = c.put("/v1/guardrails", json={"reportMinCount": k})
    assert r.status_code == 200, r.text
    assert r.json()["reportMinCount"] == k


def test_exact_figures_of_a_flow_with_known_traffic(env: FlowEnv) -> None:
    traffic(env)
    set_min_count(env, 3)
    got = report(env)
    assert got["min_count"] == 3
    assert got["noise"] is None
    [flow] = got["flows"]
    assert flow["experiment"] is None
    [everyone] = flow["groups"]
    assert everyone["variant"] == "all"
    assert everyone["funnel"] == {
        "triggered": 19,
        "eligible": None,  # 14, hidden: eligible - sent - not sent would be the 2 below
        "sent": 12,
        "delivered": 0,  # console reports no delivery; a zero describes no one
        "seen": 0,
        "clicked": 0,
        "converted": 5,
    }
    # reentry_once counts 2 people: hidden; with eligible hidden, 19 - 3 cannot split it out
    assert everyone["suppressed"]["enrollment"] == {"audience_false": 3, "reentry_once": None}
    assert everyone["suppressed"]["message"] == {"render_missing_value": None}
    assert everyone["suppressed"]["not_sent"] == 0
    conversion = everyone["conversion"]
    assert conversion["rate"] == pytest.approx(5 / 12)
    low, high = conversion["ci"]
    assert low == pytest.approx(0.1933, abs=1e-4)
    assert high == pytest.approx(0.6805, abs=1e-4)
    assert everyone["ctr"] == 0.0
    assert everyone["time_to_resolution_ms"] == {"p50": 10 * MINUTE, "p90": 30 * MINUTE}
    ack = everyone["acknowledgement"]
    assert ack["n"] == 12
    assert ack["p50"] == pytest.approx(100)
    assert ack["p99"] == pytest.approx(400)
    assert ack["under_300ms"] == pytest.approx(8 / 12)
    assert everyone["revenue"] == {"orders": 3, "total": 60.0, "per_send": 5.0}
    pers = everyone["personalisation"]
    assert pers["personalised"] == 12
    assert pers["rate"] is not None
    assert set(everyone["hidden"]) == {
        "eligible",
        "enrollment:reentry_once",
        "message:render_missing_value",
    }
    text = str(got)
    for user in ("p0", "q1", "anon1", "f2"):  # never a person
        assert f"'{user}'" not in text
    # with k = 2 nothing is small: every suppression reason with its count
    set_min_count(env, 2)
    [everyone] = report(env)["flows"][0]["groups"]
    assert everyone["funnel"]["eligible"] == 14
    assert everyone["suppressed"] == {
        "enrollment": {"audience_false": 3, "reentry_once": 2},
        "message": {"render_missing_value": 2},
        "not_sent": 0,
    }
    assert everyone["hidden"] == []


def test_small_cells_are_hidden_at_the_default_threshold(env: FlowEnv) -> None:
    traffic(env)
    got = report(env)
    assert got["min_count"] == 10
    [everyone] = got["flows"][0]["groups"]
    assert everyone["funnel"]["triggered"] == 19
    assert everyone["funnel"]["sent"] == 12
    assert everyone["funnel"]["converted"] is None  # 5 people
    assert everyone["conversion"] is None
    assert everyone["time_to_resolution_ms"] is None
    assert everyone["revenue"] is None  # 3 people ordered
    assert set(everyone["suppressed"]["enrollment"].values()) == {None}


def test_noise_changes_counts_but_not_what_is_hidden(env: FlowEnv) -> None:
    traffic(env)
    set_min_count(env, 3)
    noisy = report(env, noise_epsilon=0.5)
    assert noisy["noise"] == {"mechanism": "laplace", "epsilon": 0.5}
    [everyone] = noisy["flows"][0]["groups"]
    assert everyone["funnel"]["eligible"] is None
    assert all(v is None or v >= 0 for v in everyone["funnel"].values())
    with env.admin() as c:
        assert c.get("/v1/reports/flows/tip", params={"since": "soon"}).json()["code"] == "invalid_report"
        assert c.get("/v1/reports/flows/nope").json()["code"] == "flow_not_found"
        listed = c.get("/v1/reports/flows", params={"since": "1d"}).json()
    assert [f["flow"] for f in listed["flows"]] == ["tip"]


def test_cli_formats(env: FlowEnv) -> None:
    traffic(env)
    set_min_count(env, 3)
    url = env.services.settings.database_url
    runner = CliRunner()
    # the command runs on the system clock, the traffic on the test's: a window reaching back to it
    base = ["--database-url", url, "report", "--workspace", env.workspace, "--since", "3650d"]
    table = runner.invoke(main, [*base])
    assert table.exit_code == 0, table.output
    assert "cells under 3 people hidden" in table.output
    lines = {
        line.split("  ")[0].strip(): line.split()[-1] for line in table.output.splitlines() if "  " in line
    }
    assert lines["triggered"] == "19"
    assert lines["sent"] == "12"
    assert lines["eligible"] == "<3"
    assert "41.7% [19.3%, 68.0%]" in table.output
    csv_out = runner.invoke(main, [*base, "--flow", "tip", "--format", "csv"])
    assert csv_out.exit_code == 0, csv_out.output
    rows = csv_out.output.splitlines()
    assert rows[0] == "flow,variant,metric,value"
    assert "tip,all,converted,5" in rows
    assert "tip,all,eligible,<3" in rows
    as_json = runner.invoke(main, [*base, "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    assert '"triggered": 19' in as_json.output
    missing = runner.invoke(main, [*base, "--flow", "nope"])
    assert missing.exit_code != 0
    assert "nope" in missing.output


def test_a_column_per_arm_that_adds_up_and_hides_by_difference_across_columns(env: FlowEnv) -> None:
    # Given 40 people sent the flow's message, 13 reaching the goal, and (as an experiment's
    # holdout records them) 12 people held out with their arm in the enrollment's detail
    env.flow(
        "tip",
        TIP.replace("audience: {trait: plan, equals: pro}", "reentry: every_time").replace(
            "reentry: once\n", ""
        ),
    )
    people = [f"u{i}" for i in range(40)]
    env.send(*(identify(u, name=u) for u in people))
    env.send(*(used(u) for u in people))
    dispatch(env)
    env.advance(minutes=5)
    env.send(*(track(u, "Shortcut Tried") for u in people[:13]))
    held = [f"h{i}" for i in range(12)]
    env.send(*(identify(u, name=u) for u in held))
    now = to_millis(env.clock.now())
    changes = Changes(
        enrollments=[
            Enrollment(
                "tip",
                env.person(u),
                f"x{i}",
                1,
                "event",
                None,
                now,
                "suppress",
                "holdout",
                {"arm": "holdout"},
            )
            for i, u in enumerate(held)
        ]
    )
    with env.services.db.write() as conn:
        env.services.engine_state.save(conn, env.workspace, changes)
    set_min_count(env, 5)
    # When reported
    groups = {g["variant"]: g for g in report(env)["flows"][0]["groups"]}
    # Then there is a column per arm beside the whole flow's, and they add up
    assert set(groups) == {"all", "default", "holdout"}
    assert groups["all"]["funnel"]["triggered"] == 52
    assert groups["default"]["funnel"]["triggered"] == 40
    assert groups["holdout"]["funnel"]["triggered"] == 12
    assert groups["default"]["funnel"]["converted"] == 13
    assert groups["holdout"]["suppressed"]["enrollment"] == {"holdout": 12}
    assert groups["all"]["suppressed"]["enrollment"] == {"holdout": 12}
    # a stage nobody in the holdout reached is hidden there; the flow's own column then
    # hides it too only if exactly one cell of the row would be hidden
    for stage in ("triggered", "eligible", "sent", "converted"):
        values = [groups[v]["funnel"][stage] for v in ("all", "default", "holdout")]
        assert values.count(None) != 1, (stage, values)
        if None not in values:
            assert values[0] == values[1] + values[2]
