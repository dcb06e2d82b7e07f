"""who may message whom: the DM audience, message requests, blocks, guardian links

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("dm_audience", sa.String(8), nullable=True))
    with op.batch_alter_table("members") as batch:
        batch.add_column(sa.Column("request_from", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("declined_ms", sa.BigInteger(), nullable=True))
    op.create_table(
        "blocks",
        sa.Column("blocker_id", ID, sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("blocked_id", ID, sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_blocks_blocked_id", "blocks", ["blocked_id"])
    op.create_table(
        "guardian_links",
        sa.Column("guardian_id", ID, sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("teen_id", ID, sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("guardian_accepted_ms", sa.BigInteger(), nullable=True),
        sa.Column("teen_accepted_ms", sa.BigInteger(), nullable=True),
        sa.Column("dm_audience", sa.String(8), nullable=True),
    )
    op.create_table(
        "hidden_messages",
        sa.Column("user_id", ID, sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("message_id", sa.BigInteger(), primary_key=True),
    )
    op.create_index("ix_guardian_links_teen_id", "guardian_links", ["teen_id"])


def downgrade() -> None:
    op.drop_table("hidden_messages")
    op.drop_index("ix_guardian_links_teen_id", table_name="guardian_links")
    op.drop_table("guardian_links")
    op.drop_index("ix_blocks_blocked_id", table_name="blocks")
    op.drop_table("blocks")
    with op.batch_alter_table("members") as batch:
        batch.drop_column("declined_ms")
        batch.drop_column("request_from")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("dm_audience")
