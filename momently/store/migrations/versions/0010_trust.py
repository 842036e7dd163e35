"""Trust: identity secrets for user tokens; consent records name their key and are keyed.

Existing consent records keep their unkeyed hashes (``chain`` NULL) until ``momently consent
rekey`` re-chains them under the ledger key; until then the read side does not trust them.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "identity_secrets",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
    )
    with op.batch_alter_table("consent_records") as batch:
        batch.add_column(sa.Column("key_id", sa.Integer, nullable=True))
        batch.add_column(sa.Column("chain", sa.String(8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("consent_records") as batch:
        batch.drop_column("chain")
        batch.drop_column("key_id")
    op.drop_table("identity_secrets")
