"""Live knowledge: a revision per graph, the revision that added each triple, prefixes.

Every import that adds triples increments its graph's ``revision`` in the same
transaction and stamps the triples it adds with the new value, so "what was added
since revision r" is one range scan on the ``(graph_id, revision)`` index. Rows
that existed before this migration were all there at revision 1, and a populated
graph starts at revision 1 (an empty one at 0).

``graphs.prefixes`` keeps the ``@prefix`` declarations of the Turtle/TriG files
imported into a graph (a JSON object, prefix -> namespace IRI), so clients can
name entities as ``wd:Q42``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "graphs", sa.Column("revision", sa.BigInteger(), nullable=False, server_default="0")
    )
    op.add_column(
        "triples", sa.Column("revision", sa.BigInteger(), nullable=False, server_default="0")
    )
    op.execute("UPDATE triples SET revision = 1")
    op.execute(
        "UPDATE graphs SET revision = 1 "
        "WHERE EXISTS (SELECT 1 FROM triples WHERE triples.graph_id = graphs.id)"
    )
    op.create_index("ix_triples_graph_revision", "triples", ["graph_id", "revision"])
    op.add_column("graphs", sa.Column("prefixes", sa.Text(), nullable=True))


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+), never a batch table copy: on
    # SQLite, dropping the old ``graphs`` table would cascade into every triple.
    op.drop_index("ix_triples_graph_revision", table_name="triples")
    op.drop_column("triples", "revision")
    op.drop_column("graphs", "prefixes")
    op.drop_column("graphs", "revision")
