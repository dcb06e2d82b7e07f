"""scanning verdicts: a review state on held messages, and the record of every non-allow verdict

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("review", sa.String(8), nullable=True))
    op.create_table(
        "scan_verdicts",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("attachment_id", sa.String(40), nullable=True),
        sa.Column("conversation_id", ID, sa.ForeignKey("conversations.id"), nullable=False),
        sa.Column("sender_id", ID, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("category", sa.String(32), nullable=True),
        sa.Column("policy", sa.String(200), nullable=False, server_default=""),
        sa.Column("scores", sa.Text(), nullable=False, server_default="{}"),
        sa.Column("fired", sa.Text(), nullable=False, server_default="[]"),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_scan_verdicts_message_id", "scan_verdicts", ["message_id"])
    op.create_index("ix_scan_verdicts_attachment_id", "scan_verdicts", ["attachment_id"])
    op.create_index("ix_scan_verdicts_sender_id", "scan_verdicts", ["sender_id"])


def downgrade() -> None:
    op.drop_index("ix_scan_verdicts_sender_id", table_name="scan_verdicts")
    op.drop_index("ix_scan_verdicts_attachment_id", table_name="scan_verdicts")
    op.drop_index("ix_scan_verdicts_message_id", table_name="scan_verdicts")
    op.drop_table("scan_verdicts")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("review")
