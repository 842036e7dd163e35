"""`momently worker` runs the engine alone, beside an API that does not: events sent to one
process are turned into enrollments by the other, and SIGTERM stops it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from momently import catalog
from momently.domain.definitions import load
from momently.services import Services
from momently.settings import Settings
from tests.store.test_commit_watch import _event as signed_up


@pytest.mark.slow
def test_worker_processes_the_log_and_stops_on_sigterm(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/m.db"
    s = Services.build(Settings(database_url=url, run_engine=False))
    try:
        s.workspaces.create("w", name="w", now=s.clock.now())
        docs, _ = load("id: hi\ntrigger: {event: Signed Up}\n", "f.yaml")
        catalog.apply(s, "w", catalog.Loaded(docs, []))
        ev = signed_up(s, "ada")
        with s.db.write() as conn:
            s.events.append(conn, [("w", ev)])
        proc = subprocess.Popen(
            [sys.executable, "-m", "momently", "--database-url", url, "worker"],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ},
        )
        try:
            deadline = time.monotonic() + 20
            while not s.engine_state.enrollments("w") and time.monotonic() < deadline:
                time.sleep(0.1)
            assert [e.outcome for e in s.engine_state.enrollments("w")] == ["send"]
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "engine stopped" in err
    finally:
        s.close()
