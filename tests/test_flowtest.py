"""``momently flows test``: every scenario shipped in the repository passes, and a wrong
expectation fails with a diff that says what was expected and what happened instead."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from momently import catalog, flowtest
from momently.cli import main

ROOT = Path(__file__).parents[1]
SHOP = ROOT / "momently" / "sim" / "flows"


def scenario_files() -> list[Path]:
    """Every YAML file in the package and the examples holding a ``kind: scenario``."""
    files = [p for base in (ROOT / "momently", ROOT / "examples") for p in sorted(base.rglob("*.y*ml"))]
    return [p for p in files if catalog.read_path(p).scenarios]


def run(tmp_path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        main, ["--database-url", f"sqlite:///{tmp_path}/m.db", *args], catch_exceptions=False
    )
    return result.exit_code, result.output


def test_the_repository_ships_the_starter_scenarios() -> None:
    ids = {s.id for f in scenario_files() for s, _ in flowtest.load_suite([f]).scenarios}
    assert {
        "cart-nudge-after-30-minutes",
        "no-cart-nudge-for-lapsed-customers",
        "winback-after-14-days-of-silence",
        "birthday-in-the-persons-time-zone",
    } <= ids


@pytest.mark.parametrize("path", scenario_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_scenario_in_the_repository_passes(path: Path) -> None:
    suite = flowtest.load_suite([path])
    assert not suite.problems, suite.problems
    assert suite.scenarios
    for scenario, documents in suite.scenarios:
        result = flowtest.run(scenario, documents)
        assert result.passed, result.report()


def _shop_with(tmp_path: Path, scenario: str) -> Path:
    folder = tmp_path / "flows"
    folder.mkdir()
    shutil.copy(SHOP / "shop.yaml", folder / "shop.yaml")
    (folder / "cart.scenario.yaml").write_text(scenario)
    return folder


CART = """\
kind: scenario
id: cart
flows: [cart-nudge]
steps:
  - at: +0m
    track: {userId: ann, event: Product Added, properties: {cart_id: c1}}
  - at: +5m
    track: {userId: bob, event: Order Completed, properties: {cart_id: c0}}
  - wait: 1h
expect:
"""


def test_a_passing_scenario_prints_one_line_with_its_timing(tmp_path: Path) -> None:
    folder = _shop_with(tmp_path, CART + "  - message: {flow: cart-nudge, person: ann, at: +30m}\n")
    code, out = run(tmp_path, "flows", "test", str(folder))
    assert code == 0, out
    lines = out.strip().splitlines()
    assert lines[0].startswith("ok    cart (1 expectations, ")
    assert "s)" in lines[0]
    assert lines[-1] == "1 passed, 0 failed"


@pytest.mark.parametrize(
    ("expectation", "says"),
    [
        (
            "message: {flow: cart-nudge, person: ann, at: +45m}",
            "1 message(s) sent, none like this: decided at +30m (2026-03-02T09:30:00Z) on console",
        ),
        ("message: {flow: cart-nudge, person: ann, channel: email}", "on console"),
        (
            "message: {flow: cart-nudge, person: bob}",
            "no message of cart-nudge to bob: the flow never enrolled bob",
        ),
        ("no_message: {flow: cart-nudge, person: ann}", "sent: cart-nudge decided at +30m"),
        ("suppressed: {flow: cart-nudge, person: ann, reason: frequency_cap}", "1 message(s) sent"),
        ("segment: {id: loyal, person: ann}", "expected to enter; never entered"),
    ],
)
def test_a_wrong_expectation_fails_with_a_readable_diff(tmp_path: Path, expectation: str, says: str) -> None:
    folder = _shop_with(tmp_path, CART + f"  - {expectation}\n")
    code, out = run(tmp_path, "flows", "test", str(folder))
    assert code == 1, out
    assert "FAIL  cart (" in out
    assert "cart.scenario.yaml:1" in out
    assert f"line 11: expected {expectation.split(':')[0]} {{" in out
    assert says in out, out
    if "ann" in expectation:  # the person's timeline: the decision and the delivery, with times
        assert "what happened to ann:" in out
        assert "+30m (2026-03-02T09:30:00Z)  cart-nudge: decided send" in out
        assert "+30m (2026-03-02T09:30:00Z)  cart-nudge: message sent on console" in out
    assert out.strip().endswith("0 passed, 1 failed")


def test_json_output(tmp_path: Path) -> None:
    folder = _shop_with(tmp_path, CART + "  - no_message: {person: ann}\n")
    code, out = run(tmp_path, "flows", "test", str(folder), "--json")
    assert code == 1
    doc = json.loads(out)
    assert (doc["passed"], doc["failed"]) == (0, 1)
    (scenario,) = doc["scenarios"]
    assert scenario["failures"][0]["line"] == 11
    assert scenario["decisions"] == [
        {
            "flow": "cart-nudge",
            "person": "ann",
            "offset": "+30m",
            "time": "2026-03-02T09:30:00.000Z",
            "outcome": "send",
            "reason": None,
        }
    ]
    assert scenario["messages"][0]["status"] == "sent"
    assert scenario["messages"][0]["channel"] == "console"


def test_a_late_event_is_received_at_its_arrival_and_counted_at_its_time(tmp_path: Path) -> None:
    """The order happened at +20m and arrived at +25m: before the nudge was due, so it cancels
    it; arriving at +31m, after the nudge fired, it cannot."""
    late = """\
kind: scenario
id: late-{n}
flows: [cart-nudge]
steps:
  - at: +0m
    track: {{userId: ann, event: Product Added, properties: {{cart_id: c1}}}}
  - at: +20m
    arrives: {arrives}
    track: {{userId: ann, event: Order Completed, properties: {{cart_id: c1}}}}
expect:
  - no_message: {{person: ann}}
"""
    folder = _shop_with(
        tmp_path, late.format(n=1, arrives="+25m") + "---\n" + late.format(n=2, arrives="+2h")
    )
    suite = flowtest.load_suite([folder])
    results = {s.id: flowtest.run(s, docs) for s, docs in suite.scenarios}
    assert results["late-1"].passed, results["late-1"].report()
    assert not results["late-2"].passed
    with flowtest._sandbox(suite.scenarios[0][0], "UTC") as world:  # the receivedAt is the arrival
        world.apply(suite.scenarios[0][1])
        world.play(suite.scenarios[0][0])
        orders = [
            e for e in world.s.events.read("scenario", after_seq=0, limit=100) if e.name == "Order Completed"
        ]
        assert [(e.body["timestamp"], e.body["receivedAt"]) for e in orders] == [
            ("2026-03-02T09:20:00.000Z", "2026-03-02T09:25:00.000Z")
        ]


def test_steps_go_through_the_api_validation(tmp_path: Path) -> None:
    folder = _shop_with(
        tmp_path,
        "kind: scenario\nid: bad-event\nsteps:\n  - track: {event: Product Added}\n",  # no userId
    )
    code, out = run(tmp_path, "flows", "test", str(folder))
    assert code == 1
    assert "FAIL  bad-event" in out
    assert "line 4: the API refused the track" in out, out
    assert "userId" in out, out


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "steps:\n  - at: +1h\n    trak: {userId: a, event: X}\n",
            "unknown step key 'trak' (did you mean 'track'?)",
        ),
        (
            "expect:\n  - mesage: {flow: f, person: a}\n",
            "unknown expectation 'mesage' (did you mean 'message'?)",
        ),
        ("steps:\n  - wait: 2 days\n", "write 2d"),
        ("steps:\n  - at: tomorrow\n    track: {userId: a, event: X}\n", "write an offset from the start"),
        (
            "steps:\n  - wait: 1d\n  - at: +1h\n    track: {userId: a, event: X}\n",
            "steps run in order, and the clock is already at +1d",
        ),
        (
            "steps:\n  - at: +1h\n    arrives: +30m\n    track: {userId: a, event: X}\n",
            "cannot arrive before",
        ),
    ],
)
def test_scenario_mistakes_are_reported_with_file_and_line(tmp_path: Path, text: str, problem: str) -> None:
    folder = _shop_with(tmp_path, "kind: scenario\nid: s\n" + text)
    code, out = run(tmp_path, "flows", "test", str(folder))
    assert code != 0
    assert "cart.scenario.yaml:" in out, out
    assert problem in out, out
    assert "nothing was run" in out
    code, out = run(tmp_path, "flows", "validate", str(folder))  # validate checks scenarios too
    assert code != 0
    assert problem in out


def test_validate_counts_scenarios_and_apply_leaves_them_out(tmp_path: Path) -> None:
    code, out = run(tmp_path, "flows", "validate", str(SHOP))
    assert code == 0
    assert "ok: 3 flow(s), 2 segment(s), 4 scenario(s)" in out
    run(tmp_path, "workspace", "create", "shop")
    code, out = run(tmp_path, "flows", "apply", str(SHOP), "--workspace", "shop")
    assert code == 0
    assert out.count("new version") == 6


def test_a_scenario_names_flows_that_exist(tmp_path: Path) -> None:
    folder = _shop_with(tmp_path, "kind: scenario\nid: s\nflows: [cart-nuge]\n")
    code, out = run(tmp_path, "flows", "test", str(folder))
    assert code == 1
    assert "no flow 'cart-nuge' next to the scenario" in out


def test_the_scenario_in_the_docs_passes_against_the_shop_flows(tmp_path: Path) -> None:
    """Kept apart from the flows, it runs against them with --flows."""
    doc = (ROOT / "docs" / "flows.md").read_text()
    section = doc[doc.index("## Testing flows in virtual time") :]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (scenarios / "doc.scenario.yaml").write_text(example)
    code, out = run(tmp_path, "flows", "test", str(scenarios), "--flows", str(SHOP))
    assert code == 0, out
    assert out.startswith("ok    cart-nudge-after-30-minutes (2 expectations")
