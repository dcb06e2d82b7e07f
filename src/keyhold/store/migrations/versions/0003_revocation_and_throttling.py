"""revocation reaches open streams; sign-in throttling

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
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("restricted_ms", sa.BigInteger(), server_default="0", nullable=False))
        batch.create_index("ix_users_restricted", ["restricted_ms"])
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("revoked_ms", sa.BigInteger(), nullable=True))
    # Sessions revoked before this revision keep their revocation (its time is unknown).
    op.execute("UPDATE sessions SET revoked_ms = created_ms WHERE revoked")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("revoked")
        batch.create_index("ix_sessions_revoked", ["revoked_ms"])
    op.create_table(
        "signin_throttle",
        sa.Column("key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("window_start_ms", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("pending", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_signin_throttle_window", "signin_throttle", ["window_start_ms"])
    op.create_table(
        "signin_known",
        sa.Column("key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("last_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_signin_known_last", "signin_known", ["last_ms"])
    # Staff sign-in failures are counted by the throttle now, like members'.
    with op.batch_alter_table("staff") as batch:
        batch.drop_column("failed_attempts")
        batch.drop_column("locked_until_ms")


def downgrade() -> None:
    with op.batch_alter_table("staff") as batch:
        batch.add_column(sa.Column("locked_until_ms", sa.BigInteger(), server_default="0", nullable=False))
        batch.add_column(sa.Column("failed_attempts", sa.Integer(), server_default="0", nullable=False))
    op.drop_index("ix_signin_known_last", table_name="signin_known")
    op.drop_table("signin_known")
    op.drop_index("ix_signin_throttle_window", table_name="signin_throttle")
    op.drop_table("signin_throttle")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_index("ix_sessions_revoked")
        batch.add_column(sa.Column("revoked", sa.Boolean(), server_default="0", nullable=False))
    op.execute("UPDATE sessions SET revoked = (revoked_ms IS NOT NULL)")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("revoked_ms")
    with op.batch_alter_table("users") as batch:
        batch.drop_index("ix_users_restricted")
        batch.drop_column("restricted_ms")
