"""Experiment outcomes: each person's first exposure per experiment with what happened since,
and per arm, exposure day and metric the sufficient statistics reports read. Both are derived
from the log (``momently replay`` rebuilds them); the consumer's cursor is a ``cursors`` row.

Revision ID: 0014_experiment_outcomes
Revises: 0013_experiments
"""

import sqlalchemy as sa
from alembic import op

revision = "0014_experiment_outcomes"
down_revision = "0013_experiments"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "experiment_exposures",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("experiment_id", sa.String(64), primary_key=True),
        sa.Column("person_id", sa.String(32), primary_key=True),
        sa.Column("arm", sa.String(64), nullable=False),
        sa.Column("flow_id", sa.String(64), nullable=False),
        sa.Column("flow_version", sa.Integer, nullable=False),
        sa.Column("exposed_ms", sa.BigInteger, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("day", sa.Integer, nullable=False),
        sa.Column("goal_event", sa.Text, nullable=True),
        sa.Column("window_ms", sa.BigInteger, nullable=False),
        sa.Column("converted_ms", sa.BigInteger, nullable=True),
        sa.Column("revenue", sa.Float, nullable=False, server_default="0"),
        sa.Column("active_ms", sa.BigInteger, nullable=True),
        sa.Column("ordered_ms", sa.BigInteger, nullable=True),
        sa.Column("unsubscribed_ms", sa.BigInteger, nullable=True),
        sa.Column("complained_ms", sa.BigInteger, nullable=True),
        sa.Column("failed_ms", sa.BigInteger, nullable=True),
        sa.Column("pre_revenue", sa.Float, nullable=False, server_default="0"),
        sa.Column("pre_events", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("ix_experiment_exposures_person", "experiment_exposures", ["workspace_id", "person_id"])
    op.create_table(
        "experiment_stats",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("experiment_id", sa.String(64), primary_key=True),
        sa.Column("arm", sa.String(64), primary_key=True),
        sa.Column("day", sa.Integer, primary_key=True),
        sa.Column("metric", sa.String(32), primary_key=True),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.Column("sum", sa.Float, nullable=False),
        sa.Column("sum_squares", sa.Float, nullable=False),
        sa.Column("cov_sum", sa.Float, nullable=False),
        sa.Column("cov_sum_squares", sa.Float, nullable=False),
        sa.Column("sum_products", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("experiment_stats")
    op.drop_index("ix_experiment_exposures_person", table_name="experiment_exposures")
    op.drop_table("experiment_exposures")
