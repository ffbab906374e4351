"""Alembic environment: the same migrations for SQLite (batch mode) and PostgreSQL."""

from __future__ import annotations

from alembic import context

from invoicetrail.core.config import Settings
from invoicetrail.core.db import make_engine
from invoicetrail.models import Base

config = context.config
settings = config.attributes.get("settings") or Settings(
    database_url=config.get_main_option("sqlalchemy.url") or Settings().database_url
)
engine = make_engine(settings)

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
