"""Alembic environment: migrations run on the connection Keyhold hands over (see store.db)."""

from alembic import context

from keyhold.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
