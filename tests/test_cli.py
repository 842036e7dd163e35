from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from momently.cli import main
from tests.conftest import free_port


def run(url: str, *args: str) -> str:
    result = CliRunner().invoke(main, ["--database-url", url, *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_workspace_keys_profile_events_replay(database_url: str) -> None:
    out = run(database_url, "workspace", "create", "shop", "--name", "The Shop")
    write_key = re.search(r"write key: (\S+)", out)
    assert write_key
    assert "admin key: mat_" in out
    assert "shop\tThe Shop" in run(database_url, "workspace", "list")

    from momently.domain.event import BatchDefaults, Event, normalize
    from momently.services import Services
    from momently.settings import Settings

    s = Services.build(Settings(database_url=database_url))
    s.writer.start()
    raws = [
        {"type": "identify", "userId": "ada", "traits": {"email": "ada@x.io"}},
        {"type": "track", "userId": "ada", "event": "Order Completed", "properties": {"revenue": 5}},
    ]
    events = [
        normalize(r, default_type=None, defaults=BatchDefaults(), received_at=s.clock.now()) for r in raws
    ]
    s.writer.append_blocking("shop", [e for e in events if isinstance(e, Event)])
    s.close()

    profile = json.loads(run(database_url, "profile", "show", "ada", "--workspace", "shop"))
    assert profile["addresses"]["email"] == "ada@x.io"
    assert profile["computed"]["ordersCompleted"] == 1
    tail = [
        json.loads(line) for line in run(database_url, "events", "tail", "--workspace", "shop").splitlines()
    ]
    assert [e["type"] for e in tail] == ["identify", "track"]
    assert "replayed 2 events" in run(database_url, "replay", "--workspace", "shop")

    keys = run(database_url, "keys", "list", "--workspace", "shop")
    key_id = keys.split("\t", 1)[0]
    assert "revoked key" in run(database_url, "keys", "revoke", key_id)
    assert "revoked" in run(database_url, "keys", "list", "--workspace", "shop")


def test_errors_are_clear(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/m.db"
    runner = CliRunner()
    bad = runner.invoke(main, ["--database-url", url, "workspace", "create", "Bad Name!"])
    assert bad.exit_code == 1
    assert "invalid workspace id" in bad.output
    run(url, "workspace", "create", "dup")
    again = runner.invoke(main, ["--database-url", url, "workspace", "create", "dup"])
    assert again.exit_code == 1
    assert "already exists" in again.output
    unsupported = runner.invoke(main, ["--database-url", "mysql://x/y", "workspace", "list"])
    assert unsupported.exit_code == 2  # a malformed setting, like a malformed option
    assert "--database-url: expected sqlite:///PATH or postgresql://" in unsupported.output


def test_demo_runs_end_to_end_and_again(tmp_path: Path) -> None:
    env = {**os.environ, "MOMENTLY_DATABASE_URL": f"sqlite:///{tmp_path}/demo.db"}
    for _ in range(2):  # a second `make demo` on the same database sends new events, not duplicates
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "momently",
                "demo",
                "--exit",
                "--people",
                "10",
                "--port",
                str(free_port()),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        assert "sent 210 synthetic events" in done.stdout
        assert re.search(r"cart-nudge .*send \d+", done.stdout), done.stdout
        assert "deliveries: sent" in done.stdout  # recent enough to go out, through the console
        assert "profile of user-1" in done.stdout
        assert "email user-1@example.com" in done.stdout
        assert "curl -u 'sk_" in done.stdout
    sent = (tmp_path / "momently-messages.jsonl").read_text().splitlines()
    assert sent
    assert all(json.loads(line)["deliveryKey"].startswith("demo:") for line in sent)
