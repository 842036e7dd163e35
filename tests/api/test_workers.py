"""`momently serve --workers N` (api.workers): connections spread over the HTTP workers, a
taken port fails at start, and stopping or killing the supervisor leaves nothing behind."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from tests.api.test_crash import _start_server, _stop_server, _workspace_with_key
from tests.conftest import free_port

pytestmark = pytest.mark.slow


async def _pids_of_connections(port: int, count: int) -> list[int]:
    """Open ``count`` connections at once, as a pool of SDK clients does, then ask each
    which process answered it."""
    pairs = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in range(count)))
    pids = []
    for reader, writer in pairs:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        pids.append(int(orjson.loads(await reader.readexactly(length))["process"]))
    for _, writer in pairs:
        writer.close()
    return pids


def _children(pid: int) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


def _listening_sockets(port: int) -> set[str]:
    """Inodes of the TCP sockets listening on ``port`` (Linux /proc/net/tcp)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:  # 0A: LISTEN
            inodes.add(fields[9])
    return inodes


def _sockets_of(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[len("socket:[") : -1])
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")[:200]
    except OSError:
        return f"{pid} (gone)"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for its parent is gone too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_connections_opened_together_spread_over_the_workers(database_url: str, tmp_path: Path) -> None:
    # Given `serve --workers 2`
    _workspace_with_key(database_url, "spread")
    port = free_port()
    proc = _start_server(database_url, port, tmp_path / "server.log", "--no-engine", "--workers", "2")
    try:
        deadline = time.monotonic() + 90  # the first worker up answers healthz; wait for both
        while len(set(asyncio.run(_pids_of_connections(port, 8)))) < 2:
            assert time.monotonic() < deadline, "the second worker never answered"
            time.sleep(0.2)
        # each worker listens on a socket of its own (not one shared socket, which the first
        # worker to wake drains of every queued connection)
        listening = _listening_sockets(port)
        assert len(listening) == 2, listening
        workers = [p for p in _children(proc.pid) if _sockets_of(p) & listening]
        assert len(workers) == 2
        assert all(len(_sockets_of(p) & listening) == 1 for p in workers)
        # When 32 keep-alive clients connect at the same moment
        pids = asyncio.run(_pids_of_connections(port, 32))
        # Then both workers serve some of them (all on one happened with a shared socket;
        # with a socket a worker, 3 or fewer of 32 on one has odds of about 1 in 400,000)
        counts = Counter(pids)
        assert set(counts) <= _children(proc.pid)
        assert len(counts) == 2, counts
        assert min(counts.values()) >= 4, counts
    finally:
        _stop_server(proc)


def _assert_serve_refuses_port(database_url: str, port: int) -> None:
    env = {**os.environ, "MOMENTLY_DATABASE_URL": database_url, "MOMENTLY_PORT": str(port)}
    done = subprocess.run(
        [sys.executable, "-m", "momently", "serve", "--no-engine", "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr


def test_a_port_in_use_fails_at_start_with_a_clear_error(database_url: str, tmp_path: Path) -> None:
    # Given a port some other program listens on
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        # When serve --workers 2 is asked to use it, then it exits non-zero, saying why
        _assert_serve_refuses_port(database_url, port)


def test_a_second_serve_on_the_same_port_is_refused(database_url: str, tmp_path: Path) -> None:
    """SO_REUSEPORT lets sockets of one user share a port: a second serve must not silently
    take half of the first one's connections."""
    _workspace_with_key(database_url, "twice")
    port = free_port()
    proc = _start_server(database_url, port, tmp_path / "server.log", "--no-engine", "--workers", "2")
    try:
        _assert_serve_refuses_port(database_url, port)
    finally:
        _stop_server(proc)


def test_sigterm_to_the_group_stops_everything_without_restarting_the_writer(
    database_url: str, tmp_path: Path
) -> None:
    # Given `serve --workers 2` with its HTTP workers and log writer process
    _workspace_with_key(database_url, "stop")
    log = tmp_path / "server.log"
    proc = _start_server(database_url, free_port(), log, "--workers", "2")
    children = _children(proc.pid)
    assert len(children) >= 3, children  # two workers, the log writer (and multiprocessing's helper)
    # When the whole process group gets SIGTERM (a service manager, `kill -- -PGID`)
    _stop_server(proc, signal.SIGTERM)
    # Then the supervisor exits cleanly, every child is gone, and the writer was not restarted
    assert proc.returncode == 0, log.read_text()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in children):
        assert time.monotonic() < deadline, f"still running: {[p for p in children if _alive(p)]}"
        time.sleep(0.05)
    assert "starting it again" not in log.read_text()


def test_workers_and_writer_stop_when_the_supervisor_is_killed(database_url: str, tmp_path: Path) -> None:
    # Given `serve --workers 2`
    _workspace_with_key(database_url, "orphans")
    port = free_port()
    proc = _start_server(database_url, port, tmp_path / "server.log", "--no-engine", "--workers", "2")
    children = _children(proc.pid)
    # When only the supervisor is killed with SIGKILL
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    # Then its workers and its log writer notice and stop, and the port is free again
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in children):
        alive = [p for p in children if _alive(p)]
        assert time.monotonic() < deadline, f"orphans still running: {[_cmdline(p) for p in alive]}"
        time.sleep(0.05)
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # closed connections may linger
        probe.bind(("127.0.0.1", port))
