"""Initial schema: workspaces, keys, event log, profiles, identities, cursors.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workspaces",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("rate_limit", sa.Float, nullable=True),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("workspace_id", sa.String(64), sa.ForeignKey("workspaces.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("label", sa.String(200), nullable=False, server_default=""),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("revoked_ms", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "events",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("message_id", sa.String(256), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("name", sa.Text, nullable=True),
        sa.Column("user_id", sa.Text, nullable=True),
        sa.Column("anonymous_id", sa.Text, nullable=True),
        sa.Column("timestamp_ms", sa.BigInteger, nullable=False),
        sa.Column("received_ms", sa.BigInteger, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_index("ix_events_received", "events", ["received_ms"])
    if op.get_bind().dialect.name == "postgresql":
        # Several API nodes may append on PostgreSQL; the unique index catches a retry that
        # reached a different node than the original. SQLite has exactly one writer process
        # and relies on its in-memory window alone (see momently/domain/dedup.py).
        op.create_index("ux_events_message_id", "events", ["workspace_id", "message_id"], unique=True)
    op.create_table(
        "profiles",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("person_id", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.Text, nullable=True),
        sa.Column("email", sa.Text, nullable=True),
        sa.Column("phone", sa.Text, nullable=True),
        sa.Column("timezone", sa.String(64), nullable=True),
        sa.Column("first_seen_ms", sa.BigInteger, nullable=True),
        sa.Column("last_seen_ms", sa.BigInteger, nullable=True),
        sa.Column("orders_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("revenue", sa.Float, nullable=False, server_default="0"),
        sa.Column("last_order_ms", sa.BigInteger, nullable=True),
        sa.Column("last_seq", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("data", sa.Text, nullable=False),
    )
    op.create_table(
        "identities",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(8), primary_key=True),
        sa.Column("value", sa.Text, primary_key=True),
        sa.Column("person_id", sa.String(32), nullable=False),
    )
    op.create_index("ix_identities_person", "identities", ["workspace_id", "person_id"])
    op.create_table(
        "person_events",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("person_id", sa.String(32), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
    )
    op.create_table(
        "cursors",
        sa.Column("consumer", sa.String(64), primary_key=True),
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for table in ("cursors", "person_events", "identities", "profiles", "events", "api_keys", "workspaces"):
        op.drop_table(table)
