"""kgserver's Alembic migrations (installed as the ``kgserver_migrations`` package)."""
