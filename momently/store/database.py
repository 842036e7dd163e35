"""Connecting to the database and running migrations.

SQLite runs in WAL mode with ``synchronous=FULL`` (a commit is on disk before it returns,
so an acknowledged event survives a power cut, not only ``kill -9``); the group commit in
``engine.log_writer`` makes that affordable. Write transactions on SQLite begin with
``BEGIN IMMEDIATE`` so two writers queue on the busy timeout instead of failing with a
lock upgrade error halfway through.
"""

from __future__ import annotations

import fcntl
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
            _configure_sqlite(self.engine)
        self._lock_fd: int | None = None
        self._thread_lock = threading.Lock()

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
    def write(self) -> Iterator[Connection]:
        """A transaction that commits on success and rolls back on any exception.

        On SQLite, writers from every thread and process first queue on one lock file: the
        kernel wakes the next writer the moment the lock is free, where SQLite's own busy
        handler would sleep in steps of up to 100 ms. It also lets the log writer rely on
        "no one appended between my catch-up read and my insert" (see engine.log_writer).
        """
        with self._write_lock(), self.engine.connect() as conn:
            conn = conn.execution_options(momently_write=True)
            with conn.begin():
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

    def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent)."""
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["connection_engine"] = self.engine
        try:
            command.upgrade(cfg, "head")
        except Exception as exc:  # the driver's own message is the useful part
            raise DatabaseError(f"cannot migrate {self.safe_url}: {exc}") from exc

    @property
    def safe_url(self) -> str:
        return make_url(_sqlalchemy_url(self.url)).render_as_string(hide_password=True)

    def dispose(self) -> None:
        self.engine.dispose()
        with self._thread_lock:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None


def _configure_sqlite(engine: Engine) -> None:
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

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("momently_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
