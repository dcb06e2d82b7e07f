"""devices

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
    op.create_table(
        "devices",
        sa.Column(
            "user_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.ForeignKey("users.id"),
            primary_key=True,
        ),
        sa.Column("device_id", sa.String(length=64), primary_key=True),
        sa.Column("display_name", sa.String(length=100), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_seen_ms", sa.BigInteger(), nullable=False),
    )
    # Tokens issued before devices keep working, deviceless, until they expire.
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("device_id", sa.String(length=64), nullable=True))
    op.create_index("ix_sessions_device", "sessions", ["user_id", "device_id"])


def downgrade() -> None:
    op.drop_index("ix_sessions_device", table_name="sessions")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("device_id")
    op.drop_table("devices")
