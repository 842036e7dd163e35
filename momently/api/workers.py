"""The HTTP worker processes of ``momently serve --workers N``, each listening on a socket of
its own.

Why not uvicorn's ``workers=N``: it binds one socket in the supervisor and every worker
accepts from it. asyncio accepts every connection queued when it wakes, so whichever worker
wakes first takes them all, and keep-alive clients (tracking SDKs, load balancers) stay
where they landed: 16 clients that connected together all went to one worker while the
other idled (0.94 and 0.01 cores measured), and ingest rates varied two-fold between
identical runs. Here each worker binds its own socket with ``SO_REUSEPORT`` and the kernel
spreads new connections over them by a hash of the client's address and port.

The supervisor keeps the port bound (not listening, so it receives no connections) for as
long as it runs: a port in use fails at start, in the supervisor, and nobody else can take
it while a worker is being replaced. A worker that dies is started again; one that fails
before serving (a broken app or setting) stops the whole pool, as it would fail each time.
A worker whose supervisor is gone (killed with SIGKILL) stops by itself instead of serving
on, orphaned, beside the next supervisor's workers.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from multiprocessing.context import SpawnProcess
from types import FrameType

import uvicorn
from uvicorn.config import STARTUP_FAILURE

log = logging.getLogger(__name__)

APP_FACTORY = "momently.api.app:app_from_env"
_RESTART_PAUSE_SECONDS = 1.0
_STOP_TIMEOUT_SECONDS = 30.0
_PARENT_POLL_SECONDS = 0.25


class WorkerStartupFailed(RuntimeError):
    pass


class PortInUse(OSError):
    pass


def reuseport_socket(host: str, port: int, *, exclusive: bool = False) -> socket.socket:
    """A TCP socket bound to (host, port) that other sockets of this user may bind too.
    With ``exclusive``, first make sure no other socket has the port at all: otherwise a
    second ``serve`` of the same user would silently share it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if exclusive:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise PortInUse(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def serve_worker(host: str, port: int, log_level: str, supervisor: int) -> None:
    """The body of one worker process: its own socket, its own app built from the
    environment (``app_from_env``), served until SIGTERM or SIGINT, or until the process
    ``supervisor`` is no longer its parent (passed in: it may be gone before this runs)."""
    sock = reuseport_socket(host, port)
    config = uvicorn.Config(
        APP_FACTORY, factory=True, host=host, port=port, log_level=log_level, access_log=False
    )
    server = uvicorn.Server(config)

    def watch_parent() -> None:
        while os.getppid() == supervisor:
            time.sleep(_PARENT_POLL_SECONDS)
        log.warning("the serve supervisor is gone; this HTTP worker stops")
        server.should_exit = True

    threading.Thread(target=watch_parent, name="momently-parent-watch", daemon=True).start()
    server.run(sockets=[sock])


class WorkerPool:
    """Starts ``count`` worker processes and keeps them running until SIGINT or SIGTERM.
    ``run`` must be called from the main thread (it installs the signal handlers)."""

    def __init__(self, count: int, host: str, port: int, log_level: str) -> None:
        self.count = count
        self.host = host
        self.port = port
        self.log_level = log_level
        self._stop = threading.Event()
        self._context = multiprocessing.get_context("spawn")  # fresh processes: settings from env

    def _spawn(self) -> SpawnProcess:
        proc = self._context.Process(
            target=serve_worker,
            args=(self.host, self.port, self.log_level, os.getpid()),
            name="momently-http",
        )
        proc.start()
        return proc

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop.set()

    def run(self) -> None:
        """Serve until told to stop; then stop the workers (each finishes its requests).
        Raises ``WorkerStartupFailed`` when a worker could not start serving."""
        reserved = reuseport_socket(self.host, self.port, exclusive=True)  # PortInUse if taken
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        procs = [self._spawn() for _ in range(self.count)]
        failed = False
        try:
            while not self._stop.wait(0.5):
                for i, proc in enumerate(procs):
                    if proc.is_alive() or self._stop.is_set():
                        continue
                    if proc.exitcode == STARTUP_FAILURE:
                        failed = True
                        self._stop.set()
                        break
                    log.error(
                        "HTTP worker %s exited with status %s; starting another", proc.pid, proc.exitcode
                    )
                    self._stop.wait(_RESTART_PAUSE_SECONDS)  # no tight loop if it dies at once
                    if not self._stop.is_set():
                        procs[i] = self._spawn()
        finally:
            for proc in procs:
                if proc.is_alive():
                    proc.terminate()  # SIGTERM: uvicorn finishes the requests under way
            for proc in procs:
                proc.join(_STOP_TIMEOUT_SECONDS)
                if proc.is_alive():
                    log.error("HTTP worker %s did not stop in time; killing it", proc.pid)
                    proc.kill()
                    proc.join()
            reserved.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if failed:
            raise WorkerStartupFailed("an HTTP worker failed to start (its error is above)")
