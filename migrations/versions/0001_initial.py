"""Initial store schema: graphs, terms, relations, triples, import log.

Revision ID: 0001
Revises:
Create Date: 2025-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TermId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "graphs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "terms",
        sa.Column("id", TermId, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.SmallInteger(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("value_escaped", sa.Boolean(), nullable=False),
        sa.Column("datatype", sa.Text(), nullable=True),
        sa.Column("lang", sa.String(64), nullable=True),
        sa.Column("key", sa.LargeBinary(16), nullable=False, unique=True),
    )
    op.create_table(
        "relations",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("iri", sa.Text(), nullable=False),
        sa.Column("key", sa.LargeBinary(16), nullable=False, unique=True),
    )
    op.create_table(
        "triples",
        sa.Column(
            "graph_id",
            sa.Integer(),
            sa.ForeignKey("graphs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("head", TermId, primary_key=True),
        sa.Column("relation", sa.Integer(), primary_key=True),
        sa.Column("tail", TermId, primary_key=True),
        sa.Column("context", TermId, primary_key=True),
        sa.Column("split", sa.SmallInteger(), nullable=True),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "imports",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "graph_id",
            sa.Integer(),
            sa.ForeignKey("graphs.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("split", sa.SmallInteger(), nullable=True),
        sa.Column("base", sa.Text(), nullable=True),
        sa.Column("triples", sa.BigInteger(), nullable=False),
        sa.Column("added", sa.BigInteger(), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("imports")
    op.drop_table("triples")
    op.drop_table("relations")
    op.drop_table("terms")
    op.drop_table("graphs")
