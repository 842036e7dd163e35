"""The log writer served over a Unix socket to HTTP worker processes (engine.log_service):
a real ``LogWriter`` on each database behind a real socket, the worker-side client in front."""

from __future__ import annotations

import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from momently.engine import log_service
from momently.engine.log_service import (
    LogService,
    RemoteLogWriter,
    WriterUnavailable,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)
from momently.engine.log_writer import AppendOutcome, EncodedAppend, LogWriter
from momently.services import Services
from momently.store.events import EncodedRows
from tests.engine.test_log_writer import make


@pytest.fixture
def socket_path() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="momently-t-") as tmp:  # short: AF_UNIX paths are
        yield str(Path(tmp) / "w.sock")


@pytest.fixture
def served(services: Services, socket_path: str) -> Iterator[tuple[Services, LogService, RemoteLogWriter]]:
    services.workspaces.create("w", name=None, now=services.clock.now())
    assert isinstance(services.writer, LogWriter)
    services.writer.start()
    service = LogService(services.writer, socket_path)
    service.start()
    client = RemoteLogWriter(socket_path, connect_timeout=1.0)
    client.start()
    try:
        yield services, service, client
    finally:
        client.stop()
        service.stop()


def test_frames_round_trip() -> None:
    rows = EncodedRows(b'[["m","track",1,2],["n","track",3,4]]', '{"a":1}{"ü":2}'.encode(), 2)
    append = EncodedAppend("wörkspace", [bytes(range(16)), bytes(16)], rows)
    frame = encode_request(7, append)
    assert decode_request(frame[12:]) == append
    assert decode_reply(encode_reply(7, AppendOutcome(3, 4))[12:]) == AppendOutcome(3, 4)
    failed = decode_reply(encode_reply(7, RuntimeError("disk full"))[12:])
    assert isinstance(failed, WriterUnavailable)
    assert "disk full" in str(failed)
    with pytest.raises(ValueError, match="truncated keys"):
        decode_request(frame[12:30])
    with pytest.raises(ValueError, match="malformed"):
        decode_request(frame[12:20])  # cut inside the key count
    with pytest.raises(ValueError, match="truncated rows"):
        decode_request(frame[12 : 12 + 2 + 10 + 4 + 32 + 2])  # cut inside the fields' length
    with pytest.raises(ValueError, match="truncated rows"):
        decode_request(frame[12 : 12 + 2 + 10 + 4 + 32 + 4 + 5])  # cut inside the fields


def test_events_sent_through_the_socket_are_committed_once(
    served: tuple[Services, LogService, RemoteLogWriter],
) -> None:
    s, _, client = served
    first = client.append_blocking("w", [make(s, "a"), make(s, "b"), make(s, "a")])
    again = client.append_blocking("w", [make(s, "b"), make(s, "c")])
    assert (first.stored, first.duplicates) == (2, 1)
    assert (again.stored, again.duplicates) == (1, 1)
    assert [e.body["messageId"] for e in s.events.read("w", after_seq=0, limit=10)] == ["a", "b", "c"]
    assert client.events_committed == 3


def test_a_failed_commit_reaches_the_worker_as_an_error(
    served: tuple[Services, LogService, RemoteLogWriter],
) -> None:
    s, _, client = served
    with pytest.raises(WriterUnavailable, match="no-such-workspace"):
        client.append_blocking("no-such-workspace", [make(s, "x")])
    assert client.append_blocking("w", [make(s, "y")]).stored == 1  # the connection is still good


def test_worker_fails_fast_while_the_writer_is_down_and_reconnects_when_it_is_back(
    served: tuple[Services, LogService, RemoteLogWriter], socket_path: str
) -> None:
    s, service, client = served
    assert client.append_blocking("w", [make(s, "before")]).stored == 1
    service.stop()
    with pytest.raises(WriterUnavailable):
        client.submit("w", [make(s, "during")]).result(timeout=10)
    replacement = LogService(s.writer, socket_path)  # type: ignore[arg-type]
    replacement.start()
    try:
        assert client.append_blocking("w", [make(s, "after"), make(s, "before")]).stored == 1
    finally:
        replacement.stop()
    assert [e.body["messageId"] for e in s.events.read("w", after_seq=0, limit=10)] == ["before", "after"]


class _InlineThread:
    """Runs its target when started: puts the receiving side of a new connection ahead of
    the sending side, the order a writer that dies right after accepting can produce."""

    def __init__(self, target: Callable[..., None], args: tuple[object, ...] = (), **_: object) -> None:
        self._run = lambda: target(*args)

    def start(self) -> None:
        self._run()


def test_a_connection_lost_as_it_opens_fails_its_requests_and_the_next_ones(
    services: Services, socket_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen()

    def accept_and_drop() -> None:  # a writer that dies as each worker connects
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=accept_and_drop, daemon=True).start()
    client = RemoteLogWriter(socket_path, connect_timeout=1.0)
    client.start()
    monkeypatch.setattr(log_service.threading, "Thread", _InlineThread)
    try:
        for message_id in ("first", "second"):  # the sending thread survives the first
            with pytest.raises(WriterUnavailable):
                client.submit("w", [make(services, message_id)]).result(timeout=5)
    finally:
        monkeypatch.undo()
        client.stop()
        listener.close()
