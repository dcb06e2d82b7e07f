"""events for one device (to-device messages, key counts); to-device transaction ids

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("device_id", sa.String(length=64), nullable=True))
    op.create_table(
        "e2ee_to_device_txns",
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("device_id", sa.String(length=64), primary_key=True),
        sa.Column("txn_id", sa.String(length=128), primary_key=True),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id", "device_id"], ["devices.user_id", "devices.device_id"], ondelete="CASCADE"
        ),
    )


def downgrade() -> None:
    op.drop_table("e2ee_to_device_txns")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("device_id")
