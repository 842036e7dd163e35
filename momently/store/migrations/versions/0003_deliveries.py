"""Messages: the deliveries outbox, per-workspace signing keys for action links, web push
subscriptions.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("flow_id", sa.String(64), nullable=False),
        sa.Column("flow_version", sa.Integer, nullable=False),
        sa.Column("person_id", sa.String(32), nullable=False),
        sa.Column("occurrence", sa.String(200), nullable=False),
        sa.Column("trigger_seq", sa.BigInteger, nullable=True),
        sa.Column("variant", sa.String(64), nullable=True),
        sa.Column("channels", sa.Text, nullable=False),
        sa.Column("channel_index", sa.Integer, nullable=False, server_default="0"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_ms", sa.BigInteger, nullable=False),
        sa.Column("lease_until_ms", sa.BigInteger, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("provider_id", sa.Text, nullable=True),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("workspace_id", "key", name="ux_deliveries_key"),
    )
    op.create_index("ix_deliveries_due", "deliveries", ["status", "next_attempt_ms"])
    op.create_table(
        "signing_keys",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
    )

    op.create_table(
        "push_subscriptions",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("endpoint", sa.Text, primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("p256dh", sa.Text, nullable=False),
        sa.Column("auth", sa.Text, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_push_subscriptions_identity", "push_subscriptions", ["workspace_id", "kind", "value"])


def downgrade() -> None:
    op.drop_table("push_subscriptions")
    op.drop_table("signing_keys")
    op.drop_table("deliveries")
