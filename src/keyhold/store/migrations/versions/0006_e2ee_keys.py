"""end-to-end encryption: device keys, one-time and fallback keys, cross-signing keys

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _device_fk() -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["user_id", "device_id"], ["devices.user_id", "devices.device_id"], ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "e2ee_device_keys",
        sa.Column("user_id", ID, primary_key=True),
        sa.Column("device_id", sa.String(length=64), primary_key=True),
        sa.Column("ed25519", sa.String(length=64), nullable=False),
        sa.Column("curve25519", sa.String(length=64), nullable=False),
        sa.Column("key_json", sa.Text(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        _device_fk(),
    )
    op.create_table(
        "e2ee_one_time_keys",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("algorithm", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("key_json", sa.Text(), nullable=False),
        _device_fk(),
        sa.UniqueConstraint("user_id", "device_id", "algorithm", "key_id", name="uq_e2ee_one_time_keys"),
    )
    op.create_table(
        "e2ee_fallback_keys",
        sa.Column("user_id", ID, primary_key=True),
        sa.Column("device_id", sa.String(length=64), primary_key=True),
        sa.Column("algorithm", sa.String(length=64), primary_key=True),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("key_json", sa.Text(), nullable=False),
        sa.Column("used", sa.Boolean(), nullable=False, server_default="0"),
        _device_fk(),
    )
    op.create_table(
        "e2ee_cross_signing_keys",
        sa.Column("user_id", ID, sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("usage", sa.String(length=16), primary_key=True),
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.Column("key_json", sa.Text(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "e2ee_signatures",
        sa.Column("target_user_id", ID, sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("target_key", sa.String(length=64), primary_key=True),
        sa.Column("signer_user_id", ID, sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("signing_key_id", sa.String(length=80), primary_key=True),
        sa.Column("signature", sa.String(length=128), nullable=False),
    )
    op.create_index("ix_e2ee_signatures_signer_user_id", "e2ee_signatures", ["signer_user_id"])


def downgrade() -> None:
    op.drop_index("ix_e2ee_signatures_signer_user_id", table_name="e2ee_signatures")
    for table in (
        "e2ee_signatures",
        "e2ee_cross_signing_keys",
        "e2ee_fallback_keys",
        "e2ee_one_time_keys",
        "e2ee_device_keys",
    ):
        op.drop_table(table)
