"""runs: an index on (created_at, id), the run list's keyset

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08 00:00:00

The API's run list pages newest first by (created_at, id) and asks for the rows after the previous
page's last key as ``(created_at, id) < (:at, :id)``; on this index that is a range scan, so a page
costs what it shows however deep it is. The index on created_at alone is replaced: the new one
serves every query that one did.
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_runs_created_at_id", "runs", ["created_at", "id"])
    op.drop_index("ix_runs_created_at", table_name="runs")


def downgrade() -> None:
    op.create_index("ix_runs_created_at", "runs", ["created_at"])
    op.drop_index("ix_runs_created_at_id", table_name="runs")
