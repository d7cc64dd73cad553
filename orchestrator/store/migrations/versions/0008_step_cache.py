"""cached step outputs

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 08:00:00

``cache_entries`` keeps a task step's successful output under its cache key (with who produced
it, when it expires and how often it was reused); a step row says whether its output came from
the cache.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_Json = sa.JSON().with_variant(JSONB(), "postgresql")
_Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("step_runs") as batch:
        batch.add_column(sa.Column("cached", sa.Boolean, nullable=True))
    op.create_table(
        "cache_entries",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("workflow", sa.String(200), nullable=False),
        sa.Column("step", sa.String(200), nullable=False),
        sa.Column("task", sa.String(400), nullable=False),
        sa.Column("output", _Json, nullable=True),
        sa.Column("run_id", sa.String(36), nullable=True),
        sa.Column("step_run_id", _Id, nullable=True),
        sa.Column("created_at", _Time, nullable=False),
        sa.Column("expires_at", _Time, nullable=True),
        sa.Column("hits", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_hit_at", _Time, nullable=True),
        sa.PrimaryKeyConstraint("key", name="pk_cache_entries"),
    )
    op.create_index("ix_cache_entries_workflow_step", "cache_entries", ["workflow", "step"])


def downgrade() -> None:
    op.drop_index("ix_cache_entries_workflow_step", table_name="cache_entries")
    op.drop_table("cache_entries")
    with op.batch_alter_table("step_runs") as batch:
        batch.drop_column("cached")
