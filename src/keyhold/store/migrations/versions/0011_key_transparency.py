"""the key-transparency log of e2ee keys

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
    op.create_table(
        "key_log",
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("entry", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "key_log_heads",
        sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("root", sa.LargeBinary(32), nullable=False),
        sa.Column("timestamp_ms", sa.BigInteger, nullable=False),
        sa.Column("signature", sa.LargeBinary, nullable=False),
    )
    # Keys published before this revision get their entries when the server next starts.
    with op.batch_alter_table("e2ee_device_keys") as batch:
        batch.add_column(sa.Column("log_idx", sa.BigInteger, nullable=True))
    with op.batch_alter_table("e2ee_cross_signing_keys") as batch:
        batch.add_column(sa.Column("log_idx", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("e2ee_cross_signing_keys") as batch:
        batch.drop_column("log_idx")
    with op.batch_alter_table("e2ee_device_keys") as batch:
        batch.drop_column("log_idx")
    op.drop_table("key_log_heads")
    op.drop_table("key_log")
