"""An event acknowledged with 200 is never lost, even when the server is killed with SIGKILL,
and a client retry after the restart is still recognised as a duplicate."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from momently.domain.credentials import KeyKind
from momently.services import Services
from momently.settings import Settings
from tests.conftest import free_port


def _workspace_with_key(database_url: str, workspace_id: str) -> str:
    services = Services.build(Settings(database_url=database_url))
    ws = services.workspaces.create(workspace_id, name=None, now=services.clock.now())
    key = services.workspaces.issue_key(ws.id, KeyKind.WRITE, label="t", now=services.clock.now()).secret
    services.close()
    return key


def _start_server(database_url: str, port: int, log: Path, *args: str) -> subprocess.Popen[bytes]:
    """`momently serve ARGS` in its own process group (so workers go down with it), once healthy."""
    env = {**os.environ, "MOMENTLY_DATABASE_URL": database_url, "MOMENTLY_PORT": str(port)}
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "momently", "serve", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 90  # three processes import the app; slow on a loaded 2-core machine
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"server exited early: {log.read_text()}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.05)
    _stop_server(proc, signal.SIGKILL)
    raise AssertionError("server did not become healthy")


def _ticks() -> list[dict[str, Any]]:
    """A batch of 50 track events with fresh message ids."""
    return [
        {"type": "track", "userId": f"u{i}", "event": "Tick", "messageId": str(uuid.uuid4())}
        for i in range(50)
    ]


def _stop_server(proc: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM) -> None:
    os.killpg(proc.pid, sig)
    proc.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("serve_args", [(), ("--workers", "2")], ids=["one-process", "workers"])
def test_acknowledged_events_survive_sigkill(
    database_url: str, tmp_path: Path, serve_args: tuple[str, ...]
) -> None:
    # Given a workspace and a running server (with --workers: HTTP workers + a log writer process)
    key = _workspace_with_key(database_url, "crash")
    port = free_port()
    log = tmp_path / "server.log"
    proc = _start_server(database_url, port, log, *serve_args)

    acked: list[str] = []
    acked_batches: list[list[dict[str, Any]]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=(key, ""), timeout=5) as http:
            while not stop.is_set():
                batch = _ticks()
                try:
                    reply = http.post("/v1/batch", json={"batch": batch})
                except httpx.TransportError:
                    return  # the server died mid-request: this batch was never acknowledged
                if reply.status_code == 200:
                    with lock:
                        acked.extend(e["messageId"] for e in batch)
                        acked_batches.append(batch)

    # When clients are sending and the server is killed without warning
    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    while len(acked) < 2000:
        assert all(t.is_alive() for t in threads) or len(acked) >= 2000, log.read_text()
        time.sleep(0.01)
    _stop_server(proc, signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join()

    # Then after a restart every acknowledged event is in the log
    proc = _start_server(database_url, port, log, *serve_args)
    try:
        services = Services.build(Settings(database_url=database_url))
        logged = {e.body["messageId"] for e in services.events.read("crash", after_seq=0, limit=10_000_000)}
        services.close()
        missing = set(acked) - logged
        assert not missing, f"{len(missing)} acknowledged events lost of {len(acked)}"
        # and a retry of an acknowledged batch, after the restart, is recognised as a duplicate
        retry = httpx.post(
            f"http://127.0.0.1:{port}/v1/batch", json={"batch": acked_batches[-1]}, auth=(key, "")
        )
        assert retry.json()["duplicates"] == 50
        assert retry.json()["accepted"] == 0
    finally:
        _stop_server(proc)


def _log_writer_pid(supervisor: int) -> int | None:
    """The supervisor's live log writer child (None while it is being replaced)."""
    out = subprocess.run(["pgrep", "-P", str(supervisor), "-f", "log-writer"], capture_output=True, text=True)
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) <= 1, f"more than one log writer process under {supervisor}: {out.stdout!r}"
    return pids[0] if pids else None


@pytest.mark.slow
def test_killed_log_writer_process_loses_no_acknowledged_event_and_comes_back(
    database_url: str, tmp_path: Path
) -> None:
    # Given `serve --workers 2` and clients sending
    key = _workspace_with_key(database_url, "writer")
    port = free_port()
    log = tmp_path / "server.log"
    proc = _start_server(database_url, port, log, "--workers", "2")
    acked: list[str] = []
    refused: list[tuple[int, str, str | None]] = []  # checked here, not in the client threads
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=(key, ""), timeout=10) as http:
            while not stop.is_set():
                batch = _ticks()
                reply = http.post("/v1/batch", json={"batch": batch})
                with lock:
                    if reply.status_code == 200:
                        acked.extend(e["messageId"] for e in batch)
                    else:
                        refused.append((reply.status_code, reply.text, reply.headers.get("retry-after")))

    threads = [threading.Thread(target=client) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        while len(acked) < 2000:
            time.sleep(0.01)
        # When the log writer process is killed without warning
        victim = _log_writer_pid(proc.pid)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        # Then the supervisor starts another one and the same clients are acknowledged again
        deadline = time.monotonic() + 30
        while _log_writer_pid(proc.pid) in (None, victim):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        after = len(acked)
        while len(acked) < after + 2000:
            assert time.monotonic() < deadline, log.read_text()
            assert all(t.is_alive() for t in threads), log.read_text()
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join()
        _stop_server(proc)
    # and every acknowledged event is in the log, each once
    check = Services.build(Settings(database_url=database_url), migrate=False)
    logged = [e.body["messageId"] for e in check.events.read("writer", after_seq=0, limit=10_000_000)]
    check.close()
    assert len(logged) == len(set(logged))
    assert not set(acked) - set(logged), "acknowledged events lost"
    # while it was down, requests were refused the way SDKs retry
    for status, text, retry_after in refused:
        assert status == 503, text
        assert '"storage_unavailable"' in text
        assert retry_after == "1"
    assert "starting it again" in log.read_text()


@pytest.mark.slow
def test_two_worker_processes_store_each_message_once(database_url: str, tmp_path: Path) -> None:
    # Given `momently serve --workers 2` and clients whose retries land on either worker
    key = _workspace_with_key(database_url, "multi")
    port = free_port()
    proc = _start_server(database_url, port, tmp_path / "server.log", "--workers", "2")
    try:
        # When 6 clients each send the same 40 ids, in overlapping batches, on their own connections
        def client(offset: int) -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=(key, ""), timeout=10) as http:
                for start in range(0, 40, 8):
                    ids = [(start + offset + j) % 40 for j in range(8)]
                    batch = [
                        {"type": "track", "userId": "u", "event": "E", "messageId": f"m{i}"} for i in ids
                    ]
                    assert http.post("/v1/batch", json={"batch": batch}).status_code == 200

        threads = [threading.Thread(target=client, args=(n * 3,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        # Then each message id is stored exactly once
        check = Services.build(Settings(database_url=database_url), migrate=False)
        stored = [e.body["messageId"] for e in check.events.read("multi", after_seq=0, limit=1000)]
        check.close()
        assert sorted(stored) == sorted(f"m{i}" for i in range(40))
    finally:
        _stop_server(proc)
