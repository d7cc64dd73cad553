"""waiting steps, the signal mailbox, approval decisions

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 14:00:00

A step may now wait (for an event, a timer or people) without holding a worker: it records what
it waits for, and what woke it. Signals that arrive before their step waits are kept in a
mailbox; every approval decision is kept; the events stored definitions wait on are listed, so
a signal for any other (a typo) is refused. Definitions stored before this version wait on none.
The open-steps index now counts waiting steps as open.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_Json = sa.JSON().with_variant(JSONB(), "postgresql")
_Time = sa.DateTime(timezone=True)
_WAITING = "status = 'waiting'"


def _open_steps(statuses: str) -> None:
    op.create_index(
        "ix_step_runs_open_steps",
        "step_runs",
        ["run_id"],
        postgresql_where=sa.text(f"item_index = -1 AND status IN ({statuses})"),
        sqlite_where=sa.text(f"item_index = -1 AND status IN ({statuses})"),
    )


def upgrade() -> None:
    with op.batch_alter_table("step_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("wait_kind", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("wait_event", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("wait_key", sa.String(length=400), nullable=True))
        batch_op.add_column(sa.Column("wake", sa.String(length=16), nullable=True))
    op.drop_index("ix_step_runs_open_steps", table_name="step_runs")
    _open_steps("'pending', 'queued', 'running', 'waiting'")
    for name, columns in (
        ("ix_step_runs_waiting_event", ["wait_event", "wait_key"]),
        ("ix_step_runs_waiting_due", ["not_before"]),
    ):
        op.create_index(name, "step_runs", columns, postgresql_where=sa.text(_WAITING), sqlite_where=sa.text(_WAITING))
    op.create_table(
        "signals",
        sa.Column("id", _Id, autoincrement=True, nullable=False),
        sa.Column("event", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=True),
        sa.Column("data", _Json, nullable=True),
        sa.Column("sent_by", sa.String(length=200), nullable=True),
        sa.Column("sent_at", _Time, nullable=False),
        sa.Column("expires_at", _Time, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signals")),
    )
    op.create_index("ix_signals_event_key_id", "signals", ["event", "key", "id"])
    op.create_index("ix_signals_expires_at", "signals", ["expires_at"])
    op.create_table(
        "signal_receipts",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("at", _Time, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signal_receipts")),
    )
    op.create_index("ix_signal_receipts_at", "signal_receipts", ["at"])
    op.create_table(
        "wait_events",
        sa.Column("event", sa.String(length=200), nullable=False),
        sa.Column("first_seen", _Time, nullable=False),
        sa.PrimaryKeyConstraint("event", name=op.f("pk_wait_events")),
    )
    op.create_table(
        "decisions",
        sa.Column("id", _Id, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("step_run_id", _Id, nullable=False),
        sa.Column("wait_id", sa.String(length=36), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("data", _Json, nullable=True),
        sa.Column("at", _Time, nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_decisions_run_id_runs"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["step_run_id"], ["step_runs.id"], name=op.f("fk_decisions_step_run_id_step_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decisions")),
        sa.UniqueConstraint("step_run_id", "wait_id", "actor", name=op.f("uq_decisions_step_run_id_wait_id_actor")),
    )
    op.create_index("ix_decisions_run_id", "decisions", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_decisions_run_id", table_name="decisions")
    op.drop_table("decisions")
    op.drop_table("wait_events")
    op.drop_index("ix_signal_receipts_at", table_name="signal_receipts")
    op.drop_table("signal_receipts")
    op.drop_index("ix_signals_expires_at", table_name="signals")
    op.drop_index("ix_signals_event_key_id", table_name="signals")
    op.drop_table("signals")
    op.drop_index("ix_step_runs_waiting_due", table_name="step_runs")
    op.drop_index("ix_step_runs_waiting_event", table_name="step_runs")
    op.drop_index("ix_step_runs_open_steps", table_name="step_runs")
    _open_steps("'pending', 'queued', 'running'")
    with op.batch_alter_table("step_runs", schema=None) as batch_op:
        batch_op.drop_column("wake")
        batch_op.drop_column("wait_key")
        batch_op.drop_column("wait_event")
        batch_op.drop_column("wait_kind")
