"""group roles

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("members") as batch:
        batch.add_column(sa.Column("role", sa.String(length=8), server_default="member", nullable=False))
    # Every existing group's creator owns it.
    op.execute(
        "UPDATE members SET role = 'owner' WHERE EXISTS (SELECT 1 FROM conversations c "
        "WHERE c.id = members.conversation_id AND c.kind = 'group' AND c.created_by = members.user_id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("members") as batch:
        batch.drop_column("role")
