"""The single writer of the event log: group commit plus the de-duplication window.

Requests hand their validated events to ``append`` and wait. One thread takes everything
queued at that moment, drops message ids seen within the window, appends the rest in one
transaction and commits (one fsync for all of them), and only then resolves each request's
future. So an HTTP 200 always means "committed", while throughput is set by how many events
share a commit rather than by the disk's fsync rate.

The window lives in this process and is rebuilt from the log at start, so a retry that
arrives after a crash is still recognised (see ``momently.domain.dedup``). Under
``momently serve --workers N`` this writer runs in a process of its own and the HTTP workers
reach it through ``engine.log_service``. Other processes may still append to the same SQLite
file (a ``momently worker``'s engine, a second server): each writer catches up on the others'
appends inside its write transaction before deciding what is new.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import Connection

from momently.clock import Clock
from momently.domain.dedup import DedupWindow, message_key
from momently.domain.event import Event
from momently.domain.timestamps import from_millis, to_millis
from momently.store.database import Database
from momently.store.events import EncodedRows, EventLog, encode_rows

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AppendOutcome:
    stored: int
    duplicates: int


class WriterStopped(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class EncodedAppend:
    """One request's events as the writer takes them: their de-duplication keys and their
    rows already encoded (``store.events.encode_rows``), so that the writer, which may be
    another process, does no per-event Python work beyond looking up keys."""

    workspace_id: str
    keys: list[bytes]
    rows: EncodedRows

    @classmethod
    def of(cls, workspace_id: str, events: Sequence[Event]) -> EncodedAppend:
        return cls(
            workspace_id,
            [message_key(workspace_id, e.message_id) for e in events],
            encode_rows(events),
        )


@dataclass(slots=True)
class _Request:
    append: EncodedAppend
    future: Future[AppendOutcome] = field(default_factory=Future)


_STOP = object()


class EventAppender(ABC):
    """What the API needs of a log writer: this module's ``LogWriter`` in one process, or
    ``engine.log_service.RemoteLogWriter`` in the HTTP workers of ``serve --workers N``.
    Each implements ``submit_encoded``; the ways of waiting for it are shared."""

    events_committed: int

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def submit_encoded(self, append: EncodedAppend) -> Future[AppendOutcome]: ...

    def submit(self, workspace_id: str, events: Sequence[Event]) -> Future[AppendOutcome]:
        return self.submit_encoded(EncodedAppend.of(workspace_id, events))

    async def append(self, workspace_id: str, events: Sequence[Event]) -> AppendOutcome:
        """Resolve once the events are committed (or recognised as duplicates)."""
        return await asyncio.wrap_future(self.submit(workspace_id, events))

    def append_blocking(self, workspace_id: str, events: Sequence[Event]) -> AppendOutcome:
        return self.submit(workspace_id, events).result()


class LogWriter(EventAppender):
    def __init__(
        self,
        db: Database,
        log_: EventLog,
        clock: Clock,
        *,
        dedup_window: timedelta = timedelta(days=7),
        max_group_events: int = 20_000,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.log = log_
        self.clock = clock
        self.window = DedupWindow(dedup_window)
        self.max_group_events = max_group_events
        self.on_commit = on_commit
        self._queue: queue.SimpleQueue[_Request | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._position = 0  # SQLite rowid up to which this writer has seen the log
        self.commits = 0  # counters for /metrics-style introspection and benchmarks
        self.events_committed = 0

    def start(self) -> None:
        """Rebuild the window from the log, then start the committing thread."""
        if self._thread is not None:
            return
        now = self.clock.now()
        loaded = 0
        with self.db.read() as conn:  # one snapshot: the ids and the position agree
            if self.db.is_sqlite:
                self._position = self.log.position(conn)
            for workspace_id, message_id, received_ms in self.log.recent_message_ids(
                conn, since_ms=to_millis(self.window.horizon(now))
            ):
                self.window.add(message_key(workspace_id, message_id), from_millis(received_ms))
                loaded += 1
        self.window.expire(now)
        log.info("de-duplication window rebuilt from the log: %d message ids", loaded)
        self._thread = threading.Thread(target=self._run, name="momently-log-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Commit everything already queued, then stop."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join()
        self._thread = None

    def submit_encoded(self, append: EncodedAppend) -> Future[AppendOutcome]:
        if self._thread is None:
            raise WriterStopped("the log writer is not running")
        request = _Request(append)
        self._queue.put(request)
        return request.future

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            stopping = item is _STOP
            group: list[_Request] = [] if stopping else [item]  # type: ignore[list-item]
            size = sum(len(r.append.keys) for r in group)
            while size < self.max_group_events:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    continue
                assert isinstance(item, _Request)
                group.append(item)
                size += len(item.append.keys)
            if group:
                self._commit(group)
            if stopping:
                return

    def _catch_up(self, conn: Connection) -> None:
        """SQLite: learn the ids other writer processes appended since this one last looked.
        Called once before taking the write lock (the bulk of the work, done while others
        write) and again inside the write transaction, under the lock, so nothing can be
        appended between that read and our insert: de-duplication stays exact across
        processes. (PostgreSQL has no such step; its unique index settles races between nodes.)"""
        if not self.db.is_sqlite:
            return
        for rowid, workspace_id, message_id, received_ms in self.log.appended_after(conn, self._position):
            self.window.add(message_key(workspace_id, message_id), from_millis(received_ms))
            self._position = rowid

    def _commit(self, group: list[_Request]) -> None:
        duplicates = [0] * len(group)
        stored = [0] * len(group)
        fresh_keys: list[bytes] = []
        try:
            if self.db.is_sqlite:  # the bulk of the catch-up, before taking the write lock
                with self.db.read() as conn:
                    self._catch_up(conn)
            with self.db.write() as conn:
                self._catch_up(conn)
                # Per workspace: the parts to append, and which request owns each row.
                parts: dict[str, list[EncodedRows]] = {}
                owners: dict[str, list[int]] = {}
                in_group: set[bytes] = set()
                window = self.window
                for i, request in enumerate(group):
                    append = request.append
                    kept: list[int] = []
                    for j, key in enumerate(append.keys):
                        if key not in in_group and key not in window:
                            in_group.add(key)
                            kept.append(j)
                    duplicates[i] = len(append.keys) - len(kept)
                    if not kept:
                        continue
                    rows = append.rows
                    if len(kept) < len(append.keys):  # rare: only the rows that are new
                        rows = rows.select(kept)
                    parts.setdefault(append.workspace_id, []).append(rows)
                    owners.setdefault(append.workspace_id, []).extend([i] * len(kept))
                    fresh_keys.extend(append.keys[j] for j in kept)
                for workspace_id, ws_parts in parts.items():
                    who = owners[workspace_id]
                    seqs = self.log.append_rows(conn, workspace_id, ws_parts)
                    for i, seq in zip(who, seqs, strict=True):
                        if seq is None:  # PostgreSQL's unique index found it stored by another node
                            duplicates[i] += 1
                        else:
                            stored[i] += 1
                position = self.log.position(conn) if self.db.is_sqlite and parts else self._position
        except Exception as exc:
            log.exception("append of a group of %d requests failed; each gets an error", len(group))
            for request in group:
                request.future.set_exception(exc)
            return
        self._position = position  # only once committed: a rolled-back insert must be re-read
        now = self.clock.now()
        self.window.add_all(fresh_keys, now)
        self.window.expire(now)
        self.commits += 1
        self.events_committed += sum(stored)
        for i, request in enumerate(group):
            request.future.set_result(AppendOutcome(stored=stored[i], duplicates=duplicates[i]))
        if self.on_commit is not None and fresh_keys:
            self.on_commit()
