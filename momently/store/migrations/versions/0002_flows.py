"""Flows engine: definitions with versions, segment membership, person state, timers,
cohorts, event names, enrollments, emitted derived events.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "definitions",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("source", sa.Text, nullable=False, server_default=""),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "definition_heads",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "segment_members",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("person_id", sa.String(32), primary_key=True),
        sa.Column("segment_id", sa.String(64), primary_key=True),
        sa.Column("since_ms", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_segment_members_segment", "segment_members", ["workspace_id", "segment_id"])
    op.create_table(
        "person_state",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("person_id", sa.String(32), primary_key=True),
        sa.Column("data", sa.Text, nullable=False),
    )
    op.create_table(
        "timers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("due_ms", sa.BigInteger, nullable=False),
        sa.Column("person_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("key", sa.Text, nullable=False, server_default=""),
        sa.Column("payload", sa.Text, nullable=False, server_default="{}"),
        sa.UniqueConstraint("workspace_id", "person_id", "kind", "owner", "key", name="ux_timers_identity"),
    )
    op.create_index("ix_timers_due", "timers", ["workspace_id", "due_ms"])
    op.create_table(
        "cohort_members",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("flow_id", sa.String(64), primary_key=True),
        sa.Column("area", sa.String(64), primary_key=True),
        sa.Column("person_id", sa.String(32), primary_key=True),
        sa.Column("ts_ms", sa.BigInteger, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("fired", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "event_names",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("last_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "enrollments",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("flow_id", sa.String(64), primary_key=True),
        sa.Column("person_id", sa.String(32), primary_key=True),
        sa.Column("occurrence", sa.String(200), primary_key=True),
        sa.Column("flow_version", sa.Integer, nullable=False),
        sa.Column("trigger_kind", sa.String(16), nullable=False),
        sa.Column("trigger_seq", sa.BigInteger, nullable=True),
        sa.Column("decided_ms", sa.BigInteger, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("detail", sa.Text, nullable=False, server_default="{}"),
    )
    op.create_index("ix_enrollments_decided", "enrollments", ["workspace_id", "decided_ms"])
    op.create_index(
        "ix_enrollments_person",
        "enrollments",
        ["workspace_id", "person_id", "outcome", "flow_id", "decided_ms"],
    )
    op.create_table(
        "emitted",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("message_id", sa.String(256), primary_key=True),
    )


def downgrade() -> None:
    for table in (
        "emitted",
        "enrollments",
        "event_names",
        "cohort_members",
        "timers",
        "person_state",
        "segment_members",
        "definition_heads",
        "definitions",
    ):
        op.drop_table(table)
