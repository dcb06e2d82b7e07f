"""A result row of any shape (SQLAlchemy 2.1 types rows by their column tuple)."""

from typing import Any, TypeAlias

from sqlalchemy.engine import Row

AnyRow: TypeAlias = Row[*tuple[Any, ...]]
