"""When a delivery was meant to go: ``due_ms`` is the decision, or the end of the flow's
``delay``. A queued message's age (``max_age``, while a flow is paused) counts from there, so a
delay does not make a message stale. Rows from before are read as due at ``created_ms``.

Revision ID: 0012_delays
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_delays"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("due_ms", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("due_ms")
