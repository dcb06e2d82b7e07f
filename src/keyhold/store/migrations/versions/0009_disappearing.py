"""disappearing messages: a timer per conversation, an expiry per message

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("disappear_after_s", sa.Integer(), nullable=True))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("expires_ms", sa.BigInteger(), nullable=True))
    op.create_index("ix_messages_expiry", "messages", ["expires_ms"])


def downgrade() -> None:
    op.drop_index("ix_messages_expiry", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("expires_ms")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("disappear_after_s")
