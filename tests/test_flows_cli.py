"""The flows and segments commands, against a real SQLite database in a temporary directory."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from momently.cli import main
from momently.domain.flow_schema import SCHEMA

ROOT = Path(__file__).parents[1]


def run(tmp_path: Path, *args: str, ok: bool = True) -> str:
    result = CliRunner().invoke(
        main, ["--database-url", f"sqlite:///{tmp_path}/m.db", *args], catch_exceptions=False
    )
    assert (result.exit_code == 0) is ok, result.output
    return result.output


def test_published_schema_is_the_one_enforced() -> None:
    assert json.loads((ROOT / "docs" / "flow.schema.json").read_text()) == json.loads(json.dumps(SCHEMA))


def test_validate_apply_list_show_pause_and_versions(tmp_path: Path) -> None:
    run(tmp_path, "workspace", "create", "shop")
    out = run(tmp_path, "flows", "validate", str(ROOT / "momently" / "sim" / "flows"), "--workspace", "shop")
    assert "ok: 3 flow(s), 2 segment(s)" in out
    out = run(tmp_path, "flows", "apply", str(ROOT / "momently" / "sim" / "flows"), "--workspace", "shop")
    assert out.count("new version") == 6  # 3 flows, 2 segments and the events catalog
    assert (
        run(
            tmp_path, "flows", "apply", str(ROOT / "momently" / "sim" / "flows"), "--workspace", "shop"
        ).count("unchanged")
        == 6
    )
    changed = tmp_path / "flows"
    changed.mkdir()
    text = (
        (ROOT / "momently" / "sim" / "flows" / "shop.yaml").read_text().replace("within: 30m", "within: 45m")
    )
    (changed / "shop.yaml").write_text(text)
    out = run(tmp_path, "flows", "apply", str(changed), "--workspace", "shop")
    assert "cart-nudge                       v2  new version" in out
    assert "eta-confirm                      v1  unchanged" in out
    listing = run(tmp_path, "flows", "list", "--workspace", "shop")
    assert "cart-nudge" in listing
    assert "absence" in listing
    assert "within: 45m" in run(tmp_path, "flows", "show", "cart-nudge", "--workspace", "shop")
    assert "within: 30m" in run(
        tmp_path, "flows", "show", "cart-nudge", "--workspace", "shop", "--version", "1"
    )
    run(tmp_path, "flows", "pause", "cart-nudge", "--workspace", "shop")
    assert "paused" in run(tmp_path, "flows", "list", "--workspace", "shop")
    assert "loyal" in run(tmp_path, "segments", "list", "--workspace", "shop")
    assert "in_last: 90d" in run(tmp_path, "segments", "show", "loyal", "--workspace", "shop")


def test_invalid_files_are_reported_and_nothing_is_applied(tmp_path: Path) -> None:
    run(tmp_path, "workspace", "create", "shop")
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\ntrigger:\n  inactivity: {fro: 2d}\n")
    out = run(tmp_path, "flows", "apply", str(bad), "--workspace", "shop", ok=False)
    assert "bad.yaml:3: unknown key 'fro' in trigger.inactivity (did you mean 'for'?)" in out
    assert "nothing was applied" in out
    assert run(tmp_path, "flows", "list", "--workspace", "shop") == ""
    assert "no such file" in run(tmp_path, "flows", "validate", str(tmp_path / "missing"), ok=False)


def test_backtest_counts_decisions_without_touching_the_live_database(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from momently.domain.event import BatchDefaults, Event, normalize
    from momently.services import Services
    from momently.settings import Settings

    run(tmp_path, "workspace", "create", "shop")
    s = Services.build(Settings(database_url=f"sqlite:///{tmp_path}/m.db"))
    try:
        now = datetime.now(UTC)
        events = []
        for i, (user, name, ago) in enumerate(
            [
                ("ann", "Product Added", 3),
                ("ann", "Order Completed", 2.99),  # 14 minutes later: cancelled
                ("ben", "Product Added", 2),  # abandoned
                ("cat", "Product Added", 20),  # abandoned, but before --since
            ]
        ):
            raw = {
                "type": "track",
                "userId": user,
                "event": name,
                "timestamp": (now - timedelta(days=ago)).isoformat(),
                "messageId": f"m{i}",
            }
            # collected live: each arrived when it happened (a bulk import arrives late, see
            # docs/flows.md, "Event time and late events")
            ev = normalize(
                raw, default_type=None, defaults=BatchDefaults(), received_at=now - timedelta(days=ago)
            )
            assert isinstance(ev, Event)
            events.append(("shop", ev))
        with s.db.write() as conn:
            s.events.append(conn, events)
    finally:
        s.close()
    flow = tmp_path / "cart.yaml"
    flow.write_text(
        "id: cart\ntrigger:\n  absence:\n"
        "    {first: {event: Product Added}, then: {event: Order Completed}, within: 30m}\n"
    )
    out = run(tmp_path, "flows", "backtest", "cart", "--workspace", "shop", "--file", str(flow), "--json")
    report = json.loads(out[out.index("{") :])
    assert report["eventsReplayed"] == 4
    assert report["peopleEnrolled"] == 1
    assert report["decisions"] == {"send": 1}
    assert run(tmp_path, "flows", "list", "--workspace", "shop") == ""  # nothing applied


def test_messages_preview_and_deliveries(tmp_path: Path) -> None:
    from momently.domain.event import BatchDefaults, Event, normalize
    from momently.services import Services
    from momently.settings import Settings

    run(tmp_path, "workspace", "create", "shop")
    flow = tmp_path / "f.yaml"
    flow.write_text(
        "id: hi\ntrigger: {event: Signed Up}\nchannels: [email, console]\n"
        "message:\n  variants:\n"
        "    - {id: a, title: 'Hi {{ traits.name }}', body: 'Welcome to {{ event.properties.plan }}'}\n"
        "    - {id: b, body: 'Hello {{ traits.name | default: \"friend\" }}'}\n"
    )
    s = Services.build(Settings(database_url=f"sqlite:///{tmp_path}/m.db", run_engine=False))
    try:
        evs = []
        for raw in (
            {"type": "identify", "userId": "ada", "traits": {"name": "Ada"}},
            {"type": "identify", "userId": "bob"},
            {"type": "track", "userId": "ada", "event": "Signed Up", "properties": {"plan": "pro"}},
        ):
            ev = normalize(raw, default_type=None, defaults=BatchDefaults(), received_at=s.clock.now())
            assert isinstance(ev, Event)
            evs.append(("shop", ev))
        with s.db.write() as conn:
            s.events.append(conn, evs)
    finally:
        s.close()
    run(tmp_path, "flows", "apply", str(flow), "--workspace", "shop")
    out = run(tmp_path, "messages", "preview", "hi", "--workspace", "shop", "--user", "ada")
    assert "[a / email]\n  title:  Hi Ada\n  body:   Welcome to pro" in out
    assert "[b / console]\n  body:   Hello Ada" in out
    out = run(tmp_path, "messages", "preview", "hi", "--workspace", "shop", "--user", "bob")
    assert "[a / email] NOT SENT: render_missing_value" in out
    assert "[b / email]\n  body:   Hello friend" in out
    assert "no deliveries" in run(tmp_path, "deliveries", "list", "--workspace", "shop", "--failed")
    assert "no dead delivery 7" in run(tmp_path, "deliveries", "retry", "7", "--workspace", "shop", ok=False)


def test_a_webhook_destination_is_validated(tmp_path: Path) -> None:
    flow = "id: crm\ntrigger: {event: Signed Up}\nchannels: [webhook]\nwebhook: {%s}\nmessage: {body: hi}\n"
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(flow % "destination: crm")
    bad.write_text(flow % "destinaton: crm")
    assert "ok: 1 flow(s)" in run(tmp_path, "flows", "validate", str(good))
    assert "destinaton" in run(tmp_path, "flows", "validate", str(bad), ok=False)


def test_validate_and_apply_refuse_broken_liquid_and_alias_bombs(tmp_path: Path) -> None:
    run(tmp_path, "workspace", "create", "shop")
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "id: tip\ntrigger: {event: Feature Used}\nmessage:\n  body: '{{ traits.name | upcasee }}'\n"
    )
    out = run(tmp_path, "flows", "validate", str(broken), ok=False)
    assert (
        f"{broken}:4: message.body: not valid Liquid: unknown filter 'upcasee' (did you mean 'upcase'?)"
        in out
    )
    assert "1 problem(s)" in run(tmp_path, "flows", "apply", str(broken), "--workspace", "shop", ok=False)
    bomb = tmp_path / "bomb.yaml"
    levels = ["x0: &x0 lol"] + [f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * 9)}]" for i in range(1, 40)]
    bomb.write_text("id: tip\ntrigger: {event: Feature Used}\n" + "\n".join(levels) + "\n")
    out = run(tmp_path, "flows", "validate", str(bomb), ok=False)
    assert "YAML aliases expand to more than 10000 nodes" in out


def test_an_events_catalog_applied_on_its_own_is_kept(tmp_path: Path) -> None:
    from momently.domain.event import BatchDefaults, Event, normalize
    from momently.services import Services
    from momently.settings import Settings

    run(tmp_path, "workspace", "create", "shop")
    s = Services.build(Settings(database_url=f"sqlite:///{tmp_path}/m.db"))
    try:  # traffic: from now on event names are checked
        ev = normalize(
            {"type": "track", "userId": "ada", "event": "App Opened"},
            default_type=None,
            defaults=BatchDefaults(),
            received_at=s.clock.now(),
        )
        assert isinstance(ev, Event)
        with s.db.write() as conn:
            s.events.append(conn, [("shop", ev)])
    finally:
        s.close()
    run(tmp_path, "replay", "--workspace", "shop")
    flow = tmp_path / "flow.yaml"
    flow.write_text("id: thanks\ntrigger: {event: Slot Kept}\n")
    assert "unknown event 'Slot Kept'" in run(
        tmp_path, "flows", "apply", str(flow), "--workspace", "shop", ok=False
    )
    names = tmp_path / "events.yaml"
    names.write_text("kind: events\nid: delivery\nnames: [Slot Kept]\n")
    assert "events   delivery" in run(tmp_path, "flows", "apply", str(names), "--workspace", "shop")
    assert "ok: 1 flow(s)" in run(tmp_path, "flows", "validate", str(flow), "--workspace", "shop")
    assert "thanks" in run(tmp_path, "flows", "apply", str(flow), "--workspace", "shop")


def test_validate_refuses_flows_that_trigger_each_other(tmp_path: Path) -> None:
    step = "id: %s\ntrigger:\n  event: Message Sent\n  where: {event: properties.flow_id, equals: %s}\n"
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "a.yaml").write_text(step % ("a", "b"))
    (flows / "b.yaml").write_text(step % ("b", "c"))
    assert "ok: 2 flow(s)" in run(tmp_path, "flows", "validate", str(flows))
    (flows / "c.yaml").write_text(step % ("c", "a"))
    out = run(tmp_path, "flows", "validate", str(flows), ok=False)
    assert f"{flows / 'a.yaml'}:3: flows would trigger each other in a loop: a -> c -> b -> a" in out
    assert "3 problem(s)" in out
