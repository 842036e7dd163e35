"""WAL checkpoints off the commit path (SQLite): long-running processes turn SQLite's
in-commit autocheckpoint off and checkpoint from a background thread instead."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import text

from momently.store.database import Database


def _autocheckpoint(db: Database) -> int:
    with db.read() as conn:
        return int(conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one())


def _sizes(path: Path) -> tuple[int, int]:
    """(database file, WAL file) sizes: committed pages live in the WAL until a checkpoint
    copies them into the database file."""
    wal = Path(f"{path}-wal")
    return path.stat().st_size, wal.stat().st_size if wal.exists() else 0


def _write(db: Database, rows: int) -> None:
    with db.write() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS t (i INTEGER, pad TEXT)"))
        rows_ = [{"i": i, "pad": "x" * 500} for i in range(rows)]
        conn.execute(text("INSERT INTO t VALUES (:i, :pad)"), rows_)


def test_commits_checkpoint_by_default(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/a.db")
    try:
        assert _autocheckpoint(db) == 1000
    finally:
        db.dispose()


def test_background_checkpoints_take_over_from_commits(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/b.db")
    try:
        _write(db, 10)  # a pooled connection opened before the switch
        db.start_checkpoints(every_seconds=0.05)
        assert _autocheckpoint(db) == 0  # the same pooled connection, switched at checkout
        _write(db, 20_000)  # ~10 MB: far past the 1,000-page autocheckpoint threshold
        deadline = time.monotonic() + 10
        while _sizes(tmp_path / "b.db")[0] < 8_000_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        main, wal = _sizes(tmp_path / "b.db")
        assert main >= 8_000_000, (main, wal)  # the thread copied the pages into the file
    finally:
        db.dispose()
    reopened = Database(f"sqlite:///{tmp_path}/b.db")
    try:
        with reopened.read() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one() == 20_010
    finally:
        reopened.dispose()


def test_without_the_background_thread_nothing_copies_a_switched_off_wal(tmp_path: Path) -> None:
    """The control for the test above: with autocheckpoint off and no thread, the frames stay."""
    db = Database(f"sqlite:///{tmp_path}/c.db")
    try:
        with db.read() as conn:
            conn.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
        _write(db, 20_000)
        time.sleep(0.3)
        main, wal = _sizes(tmp_path / "c.db")
        assert main < 1_000_000, (main, wal)
        assert wal >= 8_000_000, (main, wal)
    finally:
        db.dispose()
