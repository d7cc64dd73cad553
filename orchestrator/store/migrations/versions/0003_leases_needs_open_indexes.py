"""leases issued by the database, needs_open counters, indexes for open rows

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 02:40:00

Workers get ids the database issues; every claimed step carries a lease (its holder and when it
lapses, on the database's clock). Steps claimed by a worker of an older version hold no lease:
they are given one that has already lapsed, so the reconciler takes them over.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_OPEN = "status IN ('pending', 'queued', 'running')"
_PENDING = "status = 'pending'"
_ACTIVE = "status IN ('queued', 'running')"


def upgrade() -> None:
    op.drop_table("workers")
    op.create_table(
        "workers",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
    )
    with op.batch_alter_table("step_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("worker_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True))
        batch_op.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("needs_open", sa.Integer(), server_default="0", nullable=False))
    op.create_index(
        "ix_step_runs_pending_items",
        "step_runs",
        ["run_id", "step", "item_index"],
        postgresql_where=sa.text(f"item_index >= 0 AND {_PENDING}"),
        sqlite_where=sa.text(f"item_index >= 0 AND {_PENDING}"),
    )
    op.create_index(
        "ix_step_runs_active_items",
        "step_runs",
        ["run_id", "step"],
        postgresql_where=sa.text(f"item_index >= 0 AND {_ACTIVE}"),
        sqlite_where=sa.text(f"item_index >= 0 AND {_ACTIVE}"),
    )
    op.create_index(
        "ix_step_runs_open_steps",
        "step_runs",
        ["run_id"],
        postgresql_where=sa.text(f"item_index = -1 AND {_OPEN}"),
        sqlite_where=sa.text(f"item_index = -1 AND {_OPEN}"),
    )
    op.execute(
        "UPDATE step_runs SET lease_expires_at = CURRENT_TIMESTAMP WHERE status = 'running' AND worker IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_index("ix_step_runs_open_steps", table_name="step_runs")
    op.drop_index("ix_step_runs_active_items", table_name="step_runs")
    op.drop_index("ix_step_runs_pending_items", table_name="step_runs")
    with op.batch_alter_table("step_runs", schema=None) as batch_op:
        batch_op.drop_column("needs_open")
        batch_op.drop_column("lease_expires_at")
        batch_op.drop_column("worker_id")
    op.drop_table("workers")
    op.create_table(
        "workers",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_workers")),
    )
