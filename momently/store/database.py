"""Connecting to the database and running migrations.

SQLite runs in WAL mode with ``synchronous=FULL`` (a commit is on disk before it returns,
so an acknowledged event survives a power cut, not only ``kill -9``); the group commit in
``engine.log_writer`` makes that affordable. Write transactions on SQLite begin with
``BEGIN IMMEDIATE`` so two writers queue on the busy timeout instead of failing with a
lock upgrade error halfway through.

Transactions that write only what can be derived again from the log (the engine's batches:
profiles, segments, timers, enrollments, outbox rows, all moved with the engine's cursor) are
opened with ``write(durable=False)`` and commit without waiting for the disk: SQLite
``synchronous=NORMAL`` for that transaction, PostgreSQL ``synchronous_commit = off``. Both
logs are written in order, so the next durable commit (the log writer's, or the dispatcher's
claim before it sends anything) makes every earlier commit durable too. A power cut can only
lose the engine's last few batches, and their cursor with them: the engine computes them
again from the log, with the same enrollment and delivery keys. Events, consent changes and
dispatch outcomes stay ``durable``. (Engine latency at 1,000 events/s, alternated runs:
p50 5.7-11.0 -> 4.7-6.3 ms, p99 15-38 -> 9-31 ms.)

Long-running processes (``momently serve`` and ``worker``) also take WAL checkpoints off
the commit path: by default SQLite checkpoints inside whichever commit pushes the WAL past
1,000 pages, so every few seconds one request or engine batch pays for copying megabytes
into the database file and an extra fsync (commit p99 45 ms instead of 15 ms in the
engine's live benchmark). ``start_checkpoints`` turns that off for this process's
connections and checkpoints from a background thread instead.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
log = logging.getLogger(__name__)


class DatabaseError(RuntimeError):
    """The database is unreachable or misconfigured; the message says what to do."""


def _sqlalchemy_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` and use the psycopg 3 driver for them."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme) :]
    return url


class Database:
    """One database: an engine plus the dialect-specific setup every connection needs."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        sa_url = make_url(_sqlalchemy_url(url))
        self.dialect = sa_url.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise DatabaseError(f"unsupported database {url!r}: use sqlite:///PATH or postgresql://…")
        kwargs: dict[str, Any] = {"echo": echo}
        if self.dialect == "sqlite":
            if sa_url.database in (None, "", ":memory:"):
                raise DatabaseError("an in-memory SQLite database cannot be shared; give a file path")
            Path(sa_url.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
        self.engine: Engine = create_engine(sa_url, **kwargs)
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine, self)
        self._lock_fd: int | None = None
        self._thread_lock = threading.Lock()
        self._checkpoints: _Checkpointer | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def sqlite_path(self) -> str | None:
        return self.engine.url.database if self.is_sqlite else None

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def write(self, *, durable: bool = True) -> Iterator[Connection]:
        """A transaction that commits on success and rolls back on any exception.

        On SQLite, writers from every thread and process first queue on one lock file: the
        kernel wakes the next writer the moment the lock is free, where SQLite's own busy
        handler would sleep in steps of up to 100 ms. It also lets the log writer rely on
        "no one appended between my catch-up read and my insert" (see engine.log_writer).

        ``durable=False`` is for derived state only (see the module docstring): its commit
        does not wait for the disk, and a power cut may undo it.
        """
        with self._write_lock(), self.engine.connect() as conn:
            conn = conn.execution_options(momently_write=True, momently_durable=durable)
            with conn.begin():
                if not durable and not self.is_sqlite:
                    conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
                yield conn

    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        if not self.is_sqlite:
            yield
            return
        with self._thread_lock:
            if self._lock_fd is None:
                self._lock_fd = os.open(f"{self.sqlite_path}.write-lock", os.O_CREAT | os.O_RDWR, 0o644)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def start_checkpoints(self, every_seconds: float = 1.0) -> None:
        """SQLite: checkpoint the WAL from a background thread, not inside commits."""
        if not self.is_sqlite or self._checkpoints is not None:
            return
        self._checkpoints = _Checkpointer(self.engine, every_seconds)
        self._checkpoints.start()

    @property
    def checkpoints_in_background(self) -> bool:
        return self._checkpoints is not None

    def revision(self) -> str | None:
        """The schema revision the database is at; None for a database never migrated."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def migrate(self, revision: str = "head") -> None:
        """Bring the schema to the newest revision, or to ``revision`` (idempotent)."""
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["connection_engine"] = self.engine
        try:
            command.upgrade(cfg, revision)
        except Exception as exc:  # the driver's own message is the useful part
            raise DatabaseError(f"cannot migrate {self.safe_url}: {exc}") from exc

    def maintenance_warnings(self) -> list[str]:
        """What the server is configured to leave undone that Momently relies on. PostgreSQL
        plans the engine's queries from table statistics that autovacuum keeps current; with
        it off they stay those of empty tables, and in the engine benchmark the re-entry
        lookup of every live batch took 40 ms instead of 3.5 ms (docs/benchmarks.md)."""
        if self.is_sqlite:
            return []
        with self.engine.connect() as conn:
            autovacuum = conn.exec_driver_sql("SHOW autovacuum").scalar()
        if autovacuum == "off":
            return [
                f"autovacuum is off on {self.safe_url}: planner statistics go stale and the engine "
                "slows down; turn it on, or run ANALYZE regularly and after big imports or replays"
            ]
        return []

    @property
    def safe_url(self) -> str:
        return make_url(_sqlalchemy_url(self.url)).render_as_string(hide_password=True)

    def dispose(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.stop()
            self._checkpoints = None
        self.engine.dispose()
        with self._thread_lock:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None


class _Checkpointer:
    """Copies committed WAL pages into the database file every ``every_seconds``, with
    ``PASSIVE``: it never waits for readers or writers, so it costs commits nothing; the
    WAL restarts from its beginning once a checkpoint has caught up."""

    def __init__(self, engine: Engine, every_seconds: float) -> None:
        self.engine = engine
        self.every_seconds = every_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="momently-checkpoints", daemon=True)
        self.runs = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        raw = self.engine.raw_connection()  # autocommit (isolation_level None): no BEGIN around it
        try:
            while not self._stop.wait(self.every_seconds):
                try:
                    raw.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.runs += 1
                except Exception:  # a locked or closing database: try again next time
                    log.debug("background WAL checkpoint failed", exc_info=True)
            raw.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except Exception:
            log.debug("final WAL checkpoint failed", exc_info=True)
        finally:
            raw.close()


def _configure_sqlite(engine: Engine, db: Database) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA cache_size=-65536")  # 64 MiB
        cur.close()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        # Per connection, and only when it changes: a pooled connection may predate
        # start_checkpoints (it was opened by the migration, say).
        pages = 0 if db.checkpoints_in_background else 1000
        if record.info.get("wal_autocheckpoint") != pages:
            dbapi_conn.execute(f"PRAGMA wal_autocheckpoint={pages}")
            record.info["wal_autocheckpoint"] = pages

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        write = options.get("momently_write", False)
        if write:
            # per connection, and only when it changes; outside a transaction, as it must be
            sync = "FULL" if options.get("momently_durable", True) else "NORMAL"
            if conn.info.get("synchronous") != sync:
                conn.exec_driver_sql(f"PRAGMA synchronous={sync}")
                conn.info["synchronous"] = sync
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
