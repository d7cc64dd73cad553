"""cron and interval schedules and their fires (issue Data and time, part 3)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 08:00:00

The active version's schedules, and one row per tick dealt with: its (schedule, fire time) key is
what lets two beat processes, a restart or a clock step start each tick's run once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("workflow", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("cron", sa.String(length=200), nullable=True),
        sa.Column("every_s", sa.Float(), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("catchup", sa.String(length=16), nullable=False),
        sa.Column("overlap", sa.String(length=16), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("paused_by", sa.String(length=200), nullable=True),
        sa.Column("active_since", _Time, nullable=False),
        sa.Column("last_fire_at", _Time, nullable=True),
        sa.Column("last_run_id", sa.String(length=36), nullable=True),
        sa.Column("pending_fire_at", _Time, nullable=True),
        sa.Column("warning", sa.Text(), nullable=True),
        sa.Column("warning_at", _Time, nullable=True),
        sa.ForeignKeyConstraint(["version"], ["definitions.version"], name=op.f("fk_schedules_version_definitions")),
        sa.PrimaryKeyConstraint("workflow", "name", name=op.f("pk_schedules")),
    )
    op.create_table(
        "schedule_fires",
        sa.Column("workflow", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("fire_at", _Time, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("at", _Time, nullable=False),
        sa.PrimaryKeyConstraint("workflow", "name", "fire_at", name=op.f("pk_schedule_fires")),
    )


def downgrade() -> None:
    op.drop_table("schedule_fires")
    op.drop_table("schedules")
