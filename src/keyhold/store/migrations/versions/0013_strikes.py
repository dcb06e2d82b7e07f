"""strikes that expire, counted toward automatic escalation

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

SEQUENCE_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "strikes",
        sa.Column("id", SEQUENCE_ID, primary_key=True, autoincrement=True),
        sa.Column("user_id", SEQUENCE_ID, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("case_id", SEQUENCE_ID, sa.ForeignKey("cases.id"), nullable=True),
        sa.Column("category", sa.String(24), nullable=False),
        sa.Column("source", sa.String(10), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_strikes_user_id", "strikes", ["user_id"])
    op.create_index("ix_strikes_case_id", "strikes", ["case_id"])


def downgrade() -> None:
    op.drop_index("ix_strikes_case_id", table_name="strikes")
    op.drop_index("ix_strikes_user_id", table_name="strikes")
    op.drop_table("strikes")
