"""Integer parameters of the HTTP API, bounded to the database column they are looked up in.

Row ids and versions are ``INTEGER`` columns (32-bit on PostgreSQL), sequence numbers
``BIGINT``: a larger number names nothing, and handing it to a driver fails (SQLite's
overflows past 64 bits, PostgreSQL refuses anything past the column), so it is refused at the
door as ``invalid_request``, like any other malformed parameter.
"""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import Path

MAX_ROW_ID: Final = 2**31 - 1
MAX_SEQ: Final = 2**63 - 1

RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="a row id (1 to 2^31-1)")]
Version = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="a version number, from 1")]
