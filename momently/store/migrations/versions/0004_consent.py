"""Guardrails: the consent ledger and per-workspace consent policy.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "consent_records",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("user_id", sa.Text, nullable=True),
        sa.Column("anonymous_id", sa.Text, nullable=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("granted", sa.Integer, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("at_ms", sa.BigInteger, nullable=False),
        sa.Column("expires_ms", sa.BigInteger, nullable=True),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("ref", sa.Text, nullable=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_consent_user", "consent_records", ["workspace_id", "user_id"])
    op.create_index("ix_consent_anon", "consent_records", ["workspace_id", "anonymous_id"])
    op.create_table(
        "consent_policies",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("consent_policies")
    op.drop_table("consent_records")
