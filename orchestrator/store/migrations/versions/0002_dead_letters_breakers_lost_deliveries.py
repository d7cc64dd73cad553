"""dead letters, breakers, lost deliveries

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 03:47:00.796460
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "breakers",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_trial_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("trial_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_breakers")),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("step_run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("workflow", sa.String(length=200), nullable=False),
        sa.Column("step", sa.String(length=200), nullable=False),
        sa.Column("item_index", sa.Integer(), nullable=True),
        sa.Column("task", sa.String(length=400), nullable=False),
        sa.Column(
            "inputs", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=True
        ),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("error_type", sa.String(length=200), nullable=False),
        sa.Column("traceback", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_dead_letters_run_id_runs"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["step_run_id"], ["step_runs.id"], name=op.f("fk_dead_letters_step_run_id_step_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
    )
    with op.batch_alter_table("dead_letters", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dead_letters_run_id"), ["run_id"], unique=False)
        batch_op.create_index("ix_dead_letters_status_failed_at", ["status", "failed_at"], unique=False)
        batch_op.create_index("ix_dead_letters_workflow_failed_at", ["workflow", "failed_at"], unique=False)

    with op.batch_alter_table("step_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lost", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("step_runs", schema=None) as batch_op:
        batch_op.drop_column("lost")

    with op.batch_alter_table("dead_letters", schema=None) as batch_op:
        batch_op.drop_index("ix_dead_letters_workflow_failed_at")
        batch_op.drop_index("ix_dead_letters_status_failed_at")
        batch_op.drop_index(batch_op.f("ix_dead_letters_run_id"))

    op.drop_table("dead_letters")
    op.drop_table("breakers")
