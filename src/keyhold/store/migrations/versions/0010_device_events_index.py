"""a partial index on the events of one device

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    where = sa.text("device_id IS NOT NULL")
    op.create_index(
        "ix_events_device", "events", ["user_id", "device_id", "seq"], sqlite_where=where, postgresql_where=where
    )


def downgrade() -> None:
    op.drop_index("ix_events_device", table_name="events")
