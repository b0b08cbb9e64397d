"""Alembic revision scripts of the kgserver store schema."""
