"""Tables, queries and migrations over SQLAlchemy Core, for SQLite (default) and PostgreSQL.

The store offers primitives (append, read, upsert); the policies built on them (group
commit, de-duplication window, identity stitching) live once in ``engine`` and ``domain``
so the two databases cannot drift apart in behaviour.
"""

from momently.store.database import Database

__all__ = ["Database"]
