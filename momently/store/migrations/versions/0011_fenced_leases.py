"""Fenced leases and cap reservations on deliveries.

``lease_token`` names the claim that holds a row: outcomes and lease renewals are written
only under it, so a dispatcher whose lease was taken over writes nothing. ``reserved_ms`` is
set when a message passes the frequency-cap check, so other dispatchers count it before it is
sent; ``held_ms`` is when a guardrail first held the message back (``on_cap.max_delay``
counts from there).

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("lease_token", sa.String(32), nullable=True))
        batch.add_column(sa.Column("reserved_ms", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("held_ms", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("held_ms")
        batch.drop_column("reserved_ms")
        batch.drop_column("lease_token")
