"""``momently experiments``, against a real SQLite database in a temporary directory."""

from __future__ import annotations

import json
from pathlib import Path

from momently.services import Services
from momently.settings import Settings
from tests.test_flows_cli import run

FLOW = """
id: cart-copy
trigger: {event: Product Added}
message:
  variants:
    - {id: short, body: "Cart!"}
    - {id: long, body: "Your cart is still waiting."}
experiment:
  name: Cart nudge copy
  holdout: 10%
  arms:
    - {id: short, variant: short}
    - {id: long, variant: long}
"""


def test_list_show_stop_ship_resume(tmp_path: Path) -> None:
    run(tmp_path, "workspace", "create", "shop")
    (tmp_path / "flow.yaml").write_text(FLOW)
    run(tmp_path, "flows", "apply", str(tmp_path / "flow.yaml"), "--workspace", "shop")
    assert "cart-copy" in run(tmp_path, "experiments", "list", "--workspace", "shop")
    assert "running" in run(tmp_path, "experiments", "list", "--workspace", "shop")
    # applying the flow started it: start again is refused
    assert "started already" in run(
        tmp_path, "experiments", "start", "cart-copy", "--workspace", "shop", ok=False
    )
    ws = ("--workspace", "shop")
    assert "stopped" in run(tmp_path, "experiments", "stop", "cart-copy", *ws, "--reason", "bug")
    assert "is stopped already" in run(tmp_path, "experiments", "stop", "cart-copy", *ws, ok=False)
    assert "ship one of the experiment's arms: short, long" in run(
        tmp_path, "experiments", "ship", "cart-copy", "huge", *ws, ok=False
    )
    assert "shipped (long)" in run(tmp_path, "experiments", "ship", "cart-copy", "long", *ws)
    assert "running" in run(tmp_path, "experiments", "resume", "cart-copy", *ws)
    shown = json.loads(run(tmp_path, "experiments", "show", "cart-copy", *ws))
    assert [(h["version"], h["state"], h["by"], h["reason"]) for h in shown["history"]] == [
        (1, "running", "cli", "flow applied"),
        (2, "stopped", "cli", "bug"),
        (3, "shipped", "cli", ""),
        (4, "running", "cli", ""),
    ]
    assert (shown["name"], shown["holdout"], [a["id"] for a in shown["arms"]]) == (
        "Cart nudge copy",
        "10%",
        ["short", "long"],
    )
    assert "no experiment 'nope'" in run(tmp_path, "experiments", "show", "nope", *ws, ok=False)
    # each change is an event in the log, about nobody, which the engine skips
    s = Services.build(Settings(database_url=f"sqlite:///{tmp_path}/m.db", run_engine=False))
    try:
        names = [e.name for e in s.events.read("shop", after_seq=0, limit=100)]
        assert names == [
            "Experiment Started",
            "Experiment Stopped",
            "Experiment Shipped",
            "Experiment Resumed",
        ]
        s.projector.run_until_idle()
        assert s.profiles.page("shop", after="", limit=10) == []
    finally:
        s.close()
