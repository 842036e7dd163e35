"""Commits made by other processes wake an engine that runs apart from the API: the watcher
on its own, then `momently worker` next to a writer in another process, with its idle poll
set to a minute so only a wake-up can explain a prompt decision."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from momently import catalog
from momently.domain.definitions import load
from momently.domain.event import BatchDefaults, Event, normalize
from momently.services import Services
from momently.settings import Settings
from momently.store.commit_watch import CommitWatcher
from tests.api.test_crash import _start_server, _stop_server, _workspace_with_key
from tests.conftest import free_port


def _event(s: Services, user: str) -> Event:
    ev = normalize(
        {"type": "track", "userId": user, "event": "Signed Up"},
        default_type=None,
        defaults=BatchDefaults(),
        received_at=s.clock.now(),
    )
    assert isinstance(ev, Event)
    return ev


def _until(check: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_an_append_by_another_connection_wakes_the_watcher(database_url: str) -> None:
    s = Services.build(Settings(database_url=database_url, run_engine=False))
    woken: list[float] = []
    watcher = CommitWatcher(s.db, lambda: woken.append(time.monotonic()))
    try:
        s.workspaces.create("w", name="w", now=s.clock.now())
        watcher.start()
        time.sleep(0.3)
        assert woken == []  # nothing committed: no wake-ups
        with s.db.write() as conn:
            s.events.append(conn, [("w", _event(s, "ada"))])
        assert _until(lambda: len(woken) >= 1, 10)
        settled = len(woken)
        time.sleep(0.3)
        assert len(woken) == settled  # one commit, not a stream of wake-ups
    finally:
        watcher.stop()
        s.close()


@pytest.mark.parametrize(
    "workers",
    [[["worker"]], [["worker", "--role", "engine"], ["worker", "--role", "dispatcher"]]],
    ids=["one-worker", "engine-and-dispatcher-apart"],
)
def test_a_worker_decides_and_sends_on_a_commit_from_another_process(
    database_url: str, tmp_path: Path, workers: list[list[str]]
) -> None:
    """Apart, the dispatcher is woken by the engine's commit of the outbox row, itself
    woken by this test's append: two hops across processes, each well under the minute."""
    s = Services.build(Settings(database_url=database_url, run_engine=False))
    console = tmp_path / "console.jsonl"
    try:
        s.workspaces.create("w", name="w", now=s.clock.now())
        flow = (
            "id: hi\ntrigger: {event: Signed Up}\nchannels: [console]\n"
            "message: {body: 'Welcome!', action: {label: Start, url: 'https://x.example/start'}}\n"
        )
        docs, problems = load(flow, "f.yaml")
        assert not problems
        catalog.apply(s, "w", catalog.Loaded(docs, []))
        env = {
            **os.environ,
            "MOMENTLY_DATABASE_URL": database_url,
            "MOMENTLY_IDLE_POLL_SECONDS": "60",
            "MOMENTLY_CONSOLE_PATH": str(console),
        }
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "momently", *cmd], stderr=subprocess.PIPE, text=True, env=env
            )
            for cmd in workers
        ]
        try:
            for proc in procs:
                assert proc.stderr is not None
                # start-up may warn first (PostgreSQL without autovacuum, as on CI)
                lines = [proc.stderr.readline()]
                while "running" not in lines[-1] and lines[-1] and len(lines) < 5:
                    lines.append(proc.stderr.readline())
                assert "running" in lines[-1], lines
            time.sleep(1.0)  # their first round found nothing: they are now idle for a minute
            with s.db.write() as conn:
                s.events.append(conn, [("w", _event(s, "ada"))])
            assert _until(lambda: bool(s.engine_state.enrollments("w")), 20)
            assert _until(lambda: console.exists() and "Welcome!" in console.read_text(), 20)
            # the outcome commits just after the channel has the message
            assert _until(lambda: [d.status for d in s.outbox.list("w")] == ["sent"], 20)
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.communicate(timeout=20)
        assert [proc.returncode for proc in procs] == [0] * len(procs)
    finally:
        s.close()


@pytest.mark.slow
def test_the_engine_of_serve_with_workers_is_woken_by_their_commits(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve --workers 2`: HTTP workers append in their own processes, the engine runs in the
    supervisor; with a one-minute idle poll, a prompt enrollment means it was woken."""
    key = _workspace_with_key(database_url, "w")
    s = Services.build(Settings(database_url=database_url, run_engine=False), migrate=False)
    try:
        docs, _ = load("id: hi\ntrigger: {event: Signed Up}\n", "f.yaml")
        catalog.apply(s, "w", catalog.Loaded(docs, []))
        monkeypatch.setenv("MOMENTLY_IDLE_POLL_SECONDS", "60")
        port = free_port()
        proc = _start_server(database_url, port, tmp_path / "server.log", "--workers", "2")
        try:
            time.sleep(1.0)  # the engine's first round found nothing: idle for a minute now
            reply = httpx.post(
                f"http://127.0.0.1:{port}/v1/track",
                json={"userId": "ada", "event": "Signed Up"},
                auth=(key, ""),
            )
            assert reply.status_code == 200
            assert _until(lambda: bool(s.engine_state.enrollments("w")), 20)
        finally:
            _stop_server(proc)
    finally:
        s.close()
