"""The log writer as a process of its own, for ``momently serve --workers N``.

With several HTTP worker processes, each used to run its own log writer, and they took turns
at SQLite's one write lock. Measured: the lock was held 90% of the time, three times longer
per event than the insert itself needs, because the writer holding it had to win its own
process's GIL back from request parsing after every SQLite call. So the supervisor starts one
writer process that does nothing else (``LogService``) and the workers hand it their
requests' events over a Unix socket (``RemoteLogWriter``), already validated, keyed and
encoded (``EncodedAppend``); the writer only looks up keys and commits.
An HTTP 200 still means "committed": a worker answers only when the writer has replied.

Frames, both ways: a 12-byte header (payload length: u32, request id: u64), then the payload.
Request payload: workspace length (u16), workspace (UTF-8), key count (u32), the 16-byte
keys, then the rows (``store.events.EncodedRows``, one a key): the length of their fields
(u32), the fields, and the bodies. Reply payload: ok (u8), stored (u32),
duplicates (u32), then an error message (UTF-8) when ok is 0.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from typing import Final

from momently import heap
from momently.engine.log_writer import AppendOutcome, EncodedAppend, EventAppender, LogWriter, WriterStopped
from momently.store.events import EncodedRows

log = logging.getLogger(__name__)

_HEADER: Final = struct.Struct("!IQ")
_REQUEST_HEAD: Final = struct.Struct("!H")
_COUNT: Final = struct.Struct("!I")
_REPLY: Final = struct.Struct("!BII")
_KEY_BYTES: Final = 16
MAX_FRAME_BYTES: Final = 64 * 1024 * 1024  # far above any request ingest accepts (500 KB)


class WriterUnavailable(ConnectionError):
    """The writer process could not be reached or went away before replying; the request
    was not acknowledged, so the client retries (ingest answers 503)."""


def encode_request(request_id: int, append: EncodedAppend) -> bytes:
    workspace = append.workspace_id.encode()
    payload = b"".join(
        (
            _REQUEST_HEAD.pack(len(workspace)),
            workspace,
            _COUNT.pack(len(append.keys)),
            *append.keys,
            _COUNT.pack(len(append.rows.fields)),
            append.rows.fields,
            append.rows.bodies,
        )
    )
    return _HEADER.pack(len(payload), request_id) + payload


def decode_request(payload: bytes) -> EncodedAppend:
    """Raises ValueError on a malformed payload (the request gets an error reply)."""
    try:
        (ws_len,) = _REQUEST_HEAD.unpack_from(payload, 0)
        at = _REQUEST_HEAD.size
        workspace = payload[at : at + ws_len].decode()
        at += ws_len
        (count,) = _COUNT.unpack_from(payload, at)
    except struct.error as exc:
        raise ValueError(f"malformed log writer request: {exc}") from None
    at += _COUNT.size
    end = at + count * _KEY_BYTES
    if len(payload) < end:
        raise ValueError("malformed log writer request: truncated keys")
    keys = [payload[i : i + _KEY_BYTES] for i in range(at, end, _KEY_BYTES)]
    try:
        (fields_len,) = _COUNT.unpack_from(payload, end)
    except struct.error:
        raise ValueError("malformed log writer request: truncated rows") from None
    at = end + _COUNT.size
    if len(payload) < at + fields_len:
        raise ValueError("malformed log writer request: truncated rows")
    rows = EncodedRows(payload[at : at + fields_len], payload[at + fields_len :], count)
    return EncodedAppend(workspace, keys, rows)


def encode_reply(request_id: int, outcome: AppendOutcome | BaseException) -> bytes:
    if isinstance(outcome, AppendOutcome):
        payload = _REPLY.pack(1, outcome.stored, outcome.duplicates)
    else:
        payload = _REPLY.pack(0, 0, 0) + str(outcome).encode()[:4096]
    return _HEADER.pack(len(payload), request_id) + payload


def decode_reply(payload: bytes) -> AppendOutcome | WriterUnavailable:
    ok, stored, duplicates = _REPLY.unpack_from(payload, 0)
    if ok:
        return AppendOutcome(stored=stored, duplicates=duplicates)
    return WriterUnavailable(f"the log writer could not commit: {payload[_REPLY.size :].decode()}")


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks: list[bytes] = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionError("connection closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _read_frame(sock: socket.socket) -> tuple[int, bytes]:
    length, request_id = _HEADER.unpack(_recv_exactly(sock, _HEADER.size))
    if length > MAX_FRAME_BYTES:
        raise ConnectionError(f"frame of {length} bytes is over the limit")
    return request_id, _recv_exactly(sock, length)


class LogService:
    """Runs in the writer process: accepts worker connections on ``path`` and feeds their
    requests to this process's ``LogWriter`` (group commit and de-duplication as always)."""

    def __init__(self, writer: LogWriter, path: str) -> None:
        self.writer = writer
        self.path = path
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def start(self) -> None:
        """Listen on the socket (replacing a stale one). Call after ``writer.start()``, so the
        first connection finds the de-duplication window already rebuilt."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.path)
        os.chmod(self.path, 0o600)  # only this user's processes may append to the log
        listener.listen(64)
        self._listener = listener
        self._spawn(self._accept, "momently-log-service")

    def stop(self) -> None:
        """Stop accepting and close the connections. Call after stopping the writer, which
        commits what is queued and so replies to it first; anything arriving later is not
        acknowledged, and its client retries."""
        self._stopping.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def _spawn(self, target: object, name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._connections.add(conn)
            self._spawn(self._serve, "momently-log-service-conn", conn)

    def _serve(self, conn: socket.socket) -> None:
        send_lock = threading.Lock()

        def reply(request_id: int, future: Future[AppendOutcome]) -> None:
            exc = future.exception()
            frame = encode_reply(request_id, exc if exc is not None else future.result())
            with send_lock, contextlib.suppress(OSError):
                conn.sendall(frame)

        try:
            while True:
                request_id, payload = _read_frame(conn)
                try:
                    future = self.writer.submit_encoded(decode_request(payload))
                except (ValueError, WriterStopped) as exc:
                    failed: Future[AppendOutcome] = Future()
                    failed.set_exception(exc)
                    future = failed
                future.add_done_callback(functools.partial(reply, request_id))
        except (ConnectionError, OSError):
            pass
        finally:
            with self._lock:
                self._connections.discard(conn)
            conn.close()


class RemoteLogWriter(EventAppender):
    """The log writer as the HTTP worker processes see it: an ``EventAppender`` whose
    ``submit_encoded`` is served by the writer process.

    Events are validated, keyed and encoded here, in the worker, where the parsing cores
    are. One connection per process, opened on first use and again after a failure; a sender
    thread writes queued frames, a receiver thread resolves each request's future by id.
    If the connection drops, every request waiting on it fails with ``WriterUnavailable``:
    it may or may not have been committed, and the client's retry is de-duplicated."""

    def __init__(self, path: str, *, connect_timeout: float = 5.0) -> None:
        self.path = path
        self.connect_timeout = connect_timeout
        self.events_committed = 0
        self._ids = itertools.count(1)
        self._pending: dict[int, Future[AppendOutcome]] = {}
        self._lock = threading.Lock()
        self._outgoing: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._sock: socket.socket | None = None
        self._sender: threading.Thread | None = None
        self._running = False

    def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._sender = threading.Thread(target=self._send_loop, name="momently-log-client", daemon=True)
        self._sender.start()

    def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        self._outgoing.put(None)
        if self._sender is not None:
            self._sender.join(timeout=5)
        self._disconnect(WriterStopped("the log writer client stopped"))

    def submit_encoded(self, append: EncodedAppend) -> Future[AppendOutcome]:
        if not self._running:
            raise WriterStopped("the log writer client is not running")
        future: Future[AppendOutcome] = Future()
        request_id = next(self._ids)
        with self._lock:
            self._pending[request_id] = future
        future.add_done_callback(self._count)
        self._outgoing.put(encode_request(request_id, append))
        return future

    def _count(self, future: Future[AppendOutcome]) -> None:
        if not future.cancelled() and future.exception() is None:
            self.events_committed += future.result().stored

    def _send_loop(self) -> None:
        while True:
            frame = self._outgoing.get()
            if frame is None:
                return
            frames = [frame]
            while True:  # everything queued goes out in one write
                try:
                    more = self._outgoing.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._outgoing.put(None)
                    break
                frames.append(more)
            try:
                self._connected().sendall(b"".join(frames))
            except OSError as exc:
                self._disconnect(WriterUnavailable(f"the log writer at {self.path} is unreachable: {exc}"))

    def _connected(self) -> socket.socket:
        """The connection to send on. The one just opened is returned even if its receiving
        thread has already found it lost and forgotten it (a writer dying as it accepts):
        sending on it then fails with an OSError like any lost connection. Returning
        ``self._sock`` there returned None and ended the sending thread, after which every
        request of this worker waited forever."""
        sock = self._sock
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.connect_timeout)
            try:
                sock.connect(self.path)
            except OSError:
                sock.close()
                raise
            sock.settimeout(None)
            self._sock = sock
            threading.Thread(
                target=self._receive_loop, args=(sock,), name="momently-log-client-recv", daemon=True
            ).start()
        return sock

    def _receive_loop(self, sock: socket.socket) -> None:
        try:
            while True:
                request_id, payload = _read_frame(sock)
                with self._lock:
                    future = self._pending.pop(request_id, None)
                if future is None:
                    continue
                outcome = decode_reply(payload)
                if isinstance(outcome, AppendOutcome):
                    future.set_result(outcome)
                else:
                    future.set_exception(outcome)
        except (ConnectionError, OSError) as exc:
            if self._sock is sock:
                self._disconnect(WriterUnavailable(f"the log writer connection was lost: {exc}"))

    def _disconnect(self, reason: Exception) -> None:
        """Fail every request still waiting and forget the connection; the next request
        opens a new one."""
        with self._lock:
            sock, self._sock = self._sock, None
            pending, self._pending = self._pending, {}
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for future in pending.values():
            if not future.done():
                future.set_exception(reason)


def run_log_service(
    writer: LogWriter, path: str, *, stop: threading.Event, parent: int | None = None
) -> None:
    """The body of the writer process (``momently log-writer``): rebuild the window, serve
    until ``stop`` is set or the parent process (the ``serve`` supervisor) is gone, then
    commit what is queued (its replies still go out) and close."""
    parent = os.getppid() if parent is None else parent  # passed in: it may be gone already
    writer.start()
    heap.settle_after_startup()  # the rebuilt window is the bulk of this process's heap
    service = LogService(writer, path)
    service.start()
    log.info("log writer serving on %s", path)
    try:
        while not stop.wait(0.25):
            if os.getppid() != parent:
                log.warning("the serve supervisor is gone; the log writer stops")
                break
    finally:
        writer.stop()
        service.stop()


class WriterProcess:
    """Supervisor side: starts ``momently log-writer`` on a socket, waits until it accepts
    connections, and starts it again if it dies while serving (the workers' requests fail
    with 503 meanwhile, and SDKs retry)."""

    def __init__(self, path: str, env: dict[str, str], *, ready_timeout: float = 300.0) -> None:
        self.path = path
        self.env = env
        self.ready_timeout = ready_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watch: threading.Thread | None = None

    def start(self) -> None:
        self._launch()
        self._watch = threading.Thread(target=self._watchdog, name="momently-log-writer-watch", daemon=True)
        self._watch.start()

    def stop(self) -> None:
        self._stopping.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _launch(self) -> None:
        # In a session of its own: signals sent to the serve process group (Ctrl-C, a
        # SIGTERM to the group) reach the supervisor and the HTTP workers, which finish
        # their requests through this process; the supervisor stops it last. (Reaching it
        # too, it used to exit first and be started again by the watchdog meanwhile.)
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "momently",
                "log-writer",
                "--socket",
                self.path,
                "--parent",
                str(os.getpid()),
            ],
            env=self.env,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.ready_timeout  # rebuilding the window takes a while
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"the log writer process exited with status {self._proc.returncode}")
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                    probe.connect(self.path)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the log writer process did not start listening") from None
                time.sleep(0.05)

    def _watchdog(self) -> None:
        while not self._stopping.is_set():
            proc = self._proc
            if proc is None:
                return
            status = proc.wait()
            if self._stopping.is_set():
                return
            log.error("the log writer process exited with status %s; starting it again", status)
            try:
                self._launch()
            except RuntimeError:
                log.exception("the log writer process could not be restarted")
                time.sleep(1.0)
