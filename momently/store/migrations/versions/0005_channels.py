"""Channels: lookups for SMS replies and status callbacks, the in-app inbox.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_deliveries_person", "deliveries", ["workspace_id", "person_id"])
    op.create_index("ix_deliveries_provider", "deliveries", ["workspace_id", "provider_id"])
    op.create_index("ix_profiles_phone", "profiles", ["workspace_id", "phone"])
    op.create_table(
        "inbox_cards",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("person_id", sa.String(32), nullable=False),
        sa.Column("delivery_key", sa.String(300), nullable=False),
        sa.Column("flow_id", sa.String(64), nullable=False),
        sa.Column("card", sa.Text, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("expires_ms", sa.BigInteger, nullable=True),
        sa.Column("seen_ms", sa.BigInteger, nullable=True),
        sa.Column("acted_ms", sa.BigInteger, nullable=True),
        sa.Column("dismissed_ms", sa.BigInteger, nullable=True),
        sa.UniqueConstraint("workspace_id", "delivery_key", name="ux_inbox_delivery"),
    )
    op.create_index("ix_inbox_person", "inbox_cards", ["workspace_id", "person_id", "id"])


def downgrade() -> None:
    op.drop_table("inbox_cards")
    op.drop_index("ix_profiles_phone", "profiles")
    op.drop_index("ix_deliveries_provider", "deliveries")
    op.drop_index("ix_deliveries_person", "deliveries")
