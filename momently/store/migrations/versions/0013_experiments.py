"""Experiments: each person's sticky assignment (``exposures``) and every change of an
experiment's state (``experiment_changes``).

Revision ID: 0013_experiments
Revises: 0012_delays
"""

import sqlalchemy as sa
from alembic import op

revision = "0013_experiments"
down_revision = "0012_delays"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "exposures",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("experiment_id", sa.String(64), primary_key=True),
        sa.Column("person_id", sa.String(32), primary_key=True),
        sa.Column("arm", sa.String(64), nullable=False),
        sa.Column("salt", sa.Text, nullable=False),
        sa.Column("first_exposed_ms", sa.BigInteger, nullable=False),
        sa.Column("flow_id", sa.String(64), nullable=False),
        sa.Column("flow_version", sa.Integer, nullable=False),
    )
    op.create_index("ix_exposures_person", "exposures", ["workspace_id", "person_id"])
    op.create_table(
        "experiment_changes",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("experiment_id", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("flow_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("arm", sa.String(64), nullable=True),
        sa.Column("by", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("at_ms", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("experiment_changes")
    op.drop_index("ix_exposures_person", "exposures")
    op.drop_table("exposures")
