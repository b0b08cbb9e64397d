-- Run once by the postgres image on an empty data directory (docker-entrypoint-initdb.d), as
-- POSTGRES_USER connected to POSTGRES_DB (the kgserver store): MLflow gets a database of its
-- own, since both keep their schema version in a table named alembic_version.
CREATE DATABASE mlflow;
