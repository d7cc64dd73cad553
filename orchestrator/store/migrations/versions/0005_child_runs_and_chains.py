"""child runs, chained runs, compensation

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 18:00:00

A run may be the child of a step of another run (a sub-workflow): it records its parent run and
step row and how deep it is nested. A run started by another run's end or by an emitted event
records what started it and how long the chain behind it is. A foreach item that waits (a child
run per item) counts as in flight, so the active-items index now covers waiting items too.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_Json = sa.JSON().with_variant(JSONB(), "postgresql")


def _active_items(statuses: str) -> None:
    op.create_index(
        "ix_step_runs_active_items",
        "step_runs",
        ["run_id", "step"],
        postgresql_where=sa.text(f"item_index >= 0 AND status IN ({statuses})"),
        sqlite_where=sa.text(f"item_index >= 0 AND status IN ({statuses})"),
    )


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parent_run_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("parent_step_run_id", _Id, nullable=True))
        batch_op.add_column(sa.Column("depth", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("started_by", _Json, nullable=True))
        batch_op.add_column(sa.Column("chain_depth", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("compensation", _Json, nullable=True))
    op.create_index("ix_runs_parent_run_id", "runs", ["parent_run_id"])
    op.create_table(
        "subscriptions",
        sa.Column("workflow", sa.String(length=200), nullable=False),
        sa.Column("entry", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["version"], ["definitions.version"], name=op.f("fk_subscriptions_version_definitions")
        ),
        sa.PrimaryKeyConstraint("workflow", "entry", name=op.f("pk_subscriptions")),
    )
    op.create_index("ix_subscriptions_kind_source", "subscriptions", ["kind", "source"])
    op.drop_index("ix_step_runs_active_items", table_name="step_runs")
    _active_items("'queued', 'running', 'waiting'")


def downgrade() -> None:
    op.drop_index("ix_step_runs_active_items", table_name="step_runs")
    _active_items("'queued', 'running'")
    op.drop_index("ix_subscriptions_kind_source", table_name="subscriptions")
    op.drop_table("subscriptions")
    op.drop_index("ix_runs_parent_run_id", table_name="runs")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("compensation")
        batch_op.drop_column("chain_depth")
        batch_op.drop_column("started_by")
        batch_op.drop_column("depth")
        batch_op.drop_column("parent_step_run_id")
        batch_op.drop_column("parent_run_id")
