"""Noticing commits made by other processes, so an engine or dispatcher that runs apart from
the API (``momently worker``, or the engine of ``momently serve --workers N``) wakes as soon
as there is new work instead of at its next idle poll (up to a second later).

In one process the log writer wakes the engine and the engine wakes the dispatcher
directly. Across processes:

- **SQLite**: ``PRAGMA data_version`` changes whenever another connection has committed. It
  is answered from the shared WAL index, without reading the database, so polling it every
  few milliseconds costs next to nothing.
- **PostgreSQL**: writers of new work (log appends, new outbox rows) call ``notify`` inside
  their transaction; PostgreSQL delivers one notification per transaction at commit, to the
  watcher's ``LISTEN``.

A wake-up only means "look again": the woken loop finds out from the database what, if
anything, is new, so a spurious or missed wake-up costs time, never correctness (the loops
still poll when idle).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final

import psycopg
from sqlalchemy import Connection

from momently.store.database import Database

log = logging.getLogger(__name__)

CHANNEL: Final = "momently_commits"


def notify(conn: Connection) -> None:
    """Inside a write transaction that adds work for the engine or the dispatcher."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"NOTIFY {CHANNEL}")


class CommitWatcher:
    def __init__(self, db: Database, on_commit: Callable[[], None], *, poll_seconds: float = 0.005) -> None:
        self.db = db
        self.on_commit = on_commit
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()  # listening: commits from now on are seen
        self.wakes = 0

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._ready.clear()
        run = self._watch_sqlite if self.db.is_sqlite else self._watch_postgresql
        self._thread = threading.Thread(target=self._guarded, args=(run,), name="momently-commit-watch")
        self._thread.daemon = True
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None

    def _wake(self) -> None:
        self.wakes += 1
        self.on_commit()

    def _guarded(self, run: Callable[[], None]) -> None:
        while not self._stop.is_set():
            try:
                run()
            except Exception:  # the database went away for a moment: the loops still poll
                log.warning("commit watcher failed; retrying in 1 s", exc_info=True)
                self._ready.set()
                self._stop.wait(1.0)

    def _watch_sqlite(self) -> None:
        raw = self.db.engine.raw_connection()
        try:
            cur = raw.cursor()
            last = cur.execute("PRAGMA data_version").fetchone()[0]
            self._ready.set()
            while not self._stop.wait(self.poll_seconds):
                version = cur.execute("PRAGMA data_version").fetchone()[0]
                if version != last:
                    last = version
                    self._wake()
        finally:
            raw.close()

    def _watch_postgresql(self) -> None:
        url = self.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            self._ready.set()
            while not self._stop.is_set():
                if any(True for _ in conn.notifies(timeout=0.5, stop_after=1)):
                    self._wake()
