"""Many rows through one statement, as plain tuples.

SQLAlchemy's ``execute(statement, [dict, ...])`` builds a parameter dictionary for every row
and runs each value through its bind processing before the driver sees it. For the engine's
batches (about seven row writes per event: profiles, the person -> events index, timers,
person state, memberships, enrollments, outbox rows) that Python work cost as much as SQLite's
own: measured on the person -> events insert, 2.9 µs a row through SQLAlchemy against 1.4 µs
through the driver.

So on SQLite a ``Bulk`` compiles its statement once and hands the rows straight to the
driver's ``executemany``. On PostgreSQL it goes through SQLAlchemy as before, whose psycopg
dialect batches an executemany into multi-row statements (one network round trip instead of
one per row); there the round trip, not the Python, is what costs.

Only columns without SQLAlchemy-side type processing may be written this way (text, numbers,
NULL), which is every column of Momently's schema: JSON is stored as text we encode ourselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import BindParameter, Connection, Engine, bindparam
from sqlalchemy.sql.expression import Executable


class Bulk:
    """``statement`` with its bind parameters, in ``names`` order, filled from each row."""

    def __init__(self, engine: Engine, statement: Executable, names: Sequence[str]) -> None:
        self.statement = statement
        self.names = tuple(names)
        self.sql: str | None = None
        if engine.dialect.name == "sqlite":
            compiled = statement.compile(dialect=engine.dialect)  # type: ignore[attr-defined]
            order = tuple(compiled.positiontup or ())
            if order != self.names:
                raise ValueError(f"statement binds {order}, rows give {self.names}")
            self.sql = str(compiled)

    def run(self, conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        if self.sql is not None:
            conn.exec_driver_sql(self.sql, list(rows))
        else:
            names = self.names
            conn.execute(self.statement, [dict(zip(names, row, strict=True)) for row in rows])


def binds(names: Sequence[str]) -> dict[str, BindParameter[Any]]:
    """``insert(table).values(binds(names))``: a VALUES clause whose parameters are the row's
    fields in ``names`` order, so ``Bulk`` can check that order once, at build time."""
    return {name: bindparam(name) for name in names}
