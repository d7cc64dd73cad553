"""The schema: definitions, registrations, activations, runs, step runs, attempts, events, workers.

SQLAlchemy Core tables; the same definitions serve PostgreSQL (psycopg 3) and SQLite. Changes go
through Alembic migrations in ``migrations/``, never ``create_all``.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Json = sa.JSON().with_variant(JSONB(), "postgresql")
OrderedJson = sa.JSON()  # PostgreSQL's json keeps the author's key order; jsonb would sort it
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.DateTime(timezone=True)
_OPEN = "status IN ('pending', 'queued', 'running', 'waiting')"
_WAITING = "status = 'waiting'"
_PENDING = "status = 'pending'"
_ACTIVE = "status IN ('queued', 'running', 'waiting')"  # an item in flight (a waiting item holds a child run)

definitions = sa.Table(
    "definitions",
    metadata,
    sa.Column("version", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("snapshot", OrderedJson, nullable=False),
    sa.Column("created_at", Time, nullable=False),
)

workflows = sa.Table(
    "workflows",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, index=True),
    sa.Column("version", sa.String(64), sa.ForeignKey("definitions.version"), nullable=False),
    sa.Column("registered_at", Time, nullable=False),
    sa.Column("registered_by", sa.String(200), nullable=True),  # none for registrations made before 0006
    sa.UniqueConstraint("name", "version"),
)

# Every time a version of a workflow became its active one, oldest first (append-only): the newest
# row of a name is its active version; ``rollback`` undoes the newest activation not yet undone.
activations = sa.Table(
    "activations",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("version", sa.String(64), sa.ForeignKey("definitions.version"), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),  # register | activate | rollback
    sa.Column("at", Time, nullable=False),
    sa.Column("by", sa.String(200), nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Index("ix_activations_name_id", "name", "id"),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("workflow", sa.String(200), nullable=False),
    sa.Column("version", sa.String(64), sa.ForeignKey("definitions.version"), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("inputs", Json, nullable=False),
    sa.Column("outputs", Json, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("idempotency_key", sa.String(200), nullable=True, unique=True),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("started_at", Time, nullable=True),
    sa.Column("finished_at", Time, nullable=True),
    # A child run: the run and step row (a step or a foreach item) that wait for it, and how deep it
    # is nested. A chained run: what started it (another run's end, an event) and the chain's length.
    sa.Column("parent_run_id", sa.String(36), nullable=True, index=True),
    sa.Column("parent_step_run_id", Id, nullable=True),
    sa.Column("depth", sa.Integer, nullable=False, default=0, server_default="0"),
    sa.Column("started_by", Json, nullable=True),
    sa.Column("chain_depth", sa.Integer, nullable=False, default=0, server_default="0"),
    sa.Column("compensation", Json, nullable=True),  # how undoing a failed run's steps went
    sa.Index("ix_runs_status_created_at", "status", "created_at"),
    sa.Index("ix_runs_workflow_created_at", "workflow", "created_at"),
    sa.Index("ix_runs_created_at_id", "created_at", "id"),  # the run list's keyset (store/pages.py)
)

# One row per step (item_index -1) and one per foreach item (item_index 0..n-1).
step_runs = sa.Table(
    "step_runs",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(36), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("step", sa.String(200), nullable=False),
    sa.Column("item_index", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("inputs", Json, nullable=True),
    sa.Column("output", Json, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("traceback", sa.Text, nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("worker", sa.String(200), nullable=True),
    sa.Column("dispatch_id", sa.String(36), nullable=True),
    sa.Column("lost", sa.Integer, nullable=False, default=0, server_default="0"),
    sa.Column("worker_id", Id, nullable=True),  # the lease holder: a workers.id the database issued
    sa.Column("lease_expires_at", Time, nullable=True),  # on the database's clock
    sa.Column("needs_open", sa.Integer, nullable=False, default=0, server_default="0"),  # needs not yet ended
    # A waiting step: what it waits for ("event", "timer" or "approval"), the event and key a signal
    # must match, and what woke it ("signal", "approved", "rejected", "restart"); not_before is when
    # its timer, deadline or next attempt is due.
    sa.Column("wait_kind", sa.String(16), nullable=True),
    sa.Column("wait_event", sa.String(200), nullable=True),
    sa.Column("wait_key", sa.String(400), nullable=True),
    sa.Column("wake", sa.String(16), nullable=True),
    sa.Column("cached", sa.Boolean, nullable=True),  # true: its output came from the cache, with no attempt
    sa.Column("not_before", Time, nullable=True),
    sa.Column("queued_at", Time, nullable=True),
    sa.Column("started_at", Time, nullable=True),
    sa.Column("finished_at", Time, nullable=True),
    sa.UniqueConstraint("run_id", "step", "item_index"),
    sa.Index("ix_step_runs_status_queued_at", "status", "queued_at"),
    sa.Index(
        "ix_step_runs_pending_items",
        "run_id",
        "step",
        "item_index",
        postgresql_where=sa.text(f"item_index >= 0 AND {_PENDING}"),
        sqlite_where=sa.text(f"item_index >= 0 AND {_PENDING}"),
    ),
    sa.Index(
        "ix_step_runs_active_items",
        "run_id",
        "step",
        postgresql_where=sa.text(f"item_index >= 0 AND {_ACTIVE}"),
        sqlite_where=sa.text(f"item_index >= 0 AND {_ACTIVE}"),
    ),
    sa.Index(
        "ix_step_runs_open_steps",
        "run_id",
        postgresql_where=sa.text(f"item_index = -1 AND {_OPEN}"),
        sqlite_where=sa.text(f"item_index = -1 AND {_OPEN}"),
    ),
    sa.Index(
        "ix_step_runs_waiting_event",
        "wait_event",
        "wait_key",
        postgresql_where=sa.text(_WAITING),
        sqlite_where=sa.text(_WAITING),
    ),
    sa.Index(
        "ix_step_runs_waiting_due",
        "not_before",
        postgresql_where=sa.text(_WAITING),
        sqlite_where=sa.text(_WAITING),
    ),
)

# What starts runs by itself: the active version's ``on`` entries, one row each ("after" a workflow's
# runs end, or an "event"), replaced when another version of the workflow is registered.
subscriptions = sa.Table(
    "subscriptions",
    metadata,
    sa.Column("workflow", sa.String(200), primary_key=True),
    sa.Column("entry", sa.Integer, primary_key=True),
    sa.Column("version", sa.String(64), sa.ForeignKey("definitions.version"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("source", sa.String(200), nullable=False),
    sa.Index("ix_subscriptions_kind_source", "kind", "source"),
)

attempts = sa.Table(
    "attempts",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("step_run_id", Id, sa.ForeignKey("step_runs.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("worker", sa.String(200), nullable=True),
    sa.Column("started_at", Time, nullable=False),
    sa.Column("finished_at", Time, nullable=True),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(36), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("step", sa.String(200), nullable=True),
    sa.Column("item_index", sa.Integer, nullable=True),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("detail", Json, nullable=True),
    sa.Column("at", Time, nullable=False),
    sa.Index("ix_events_run_id_id", "run_id", "id"),
)

# One row per process that runs steps; its id, issued here, is what a lease names.
workers = sa.Table(
    "workers",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("started_at", Time, nullable=False),
    sa.Column("last_seen", Time, nullable=False),
)

# One entry per step execution that failed for good; people inspect and replay them.
dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("run_id", sa.String(36), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("step_run_id", Id, sa.ForeignKey("step_runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("workflow", sa.String(200), nullable=False),
    sa.Column("step", sa.String(200), nullable=False),
    sa.Column("item_index", sa.Integer, nullable=True),
    sa.Column("task", sa.String(400), nullable=False),
    sa.Column("inputs", Json, nullable=True),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("error_type", sa.String(200), nullable=False),
    sa.Column("traceback", sa.Text, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("failed_at", Time, nullable=False),
    sa.Column("resolved_at", Time, nullable=True),
    sa.Index("ix_dead_letters_status_failed_at", "status", "failed_at"),
    sa.Index("ix_dead_letters_workflow_failed_at", "workflow", "failed_at"),
)

# Signals that arrived before any step waited for them: kept until a step takes one, or they expire.
signals = sa.Table(
    "signals",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("event", sa.String(200), nullable=False),
    sa.Column("key", sa.String(400), nullable=False),
    sa.Column("run_id", sa.String(36), nullable=True),  # only a step of this run may take it
    sa.Column("data", Json, nullable=True),
    sa.Column("sent_by", sa.String(200), nullable=True),
    sa.Column("sent_at", Time, nullable=False),
    sa.Column("expires_at", Time, nullable=False),
    sa.Index("ix_signals_event_key_id", "event", "key", "id"),
    sa.Index("ix_signals_expires_at", "expires_at"),
)

# Ids of signals already handled: the same signal sent again (a redelivered message, a retried
# request) does nothing, instead of being kept for the next wait.
signal_receipts = sa.Table(
    "signal_receipts",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("at", Time, nullable=False, index=True),
)

# Every event name a stored definition waits on: a signal for any other is a typo, refused.
wait_events = sa.Table(
    "wait_events",
    metadata,
    sa.Column("event", sa.String(200), primary_key=True),
    sa.Column("first_seen", Time, nullable=False),
)

# Every approval decision: who, when, the comment and the data; one per approver and attempt.
decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(36), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("step_run_id", Id, sa.ForeignKey("step_runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("wait_id", sa.String(36), nullable=False),  # the wait it decides (each wait has its own)
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("comment", sa.Text, nullable=True),
    sa.Column("data", Json, nullable=True),
    sa.Column("at", Time, nullable=False),
    sa.UniqueConstraint("step_run_id", "wait_id", "actor"),
)

# Circuit breakers' shared state when no Redis is configured (the embedded default).
breakers = sa.Table(
    "breakers",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("opened_at", Time, nullable=True),
    sa.Column("next_trial_at", Time, nullable=True),
    sa.Column("trial_until", Time, nullable=True),
)

# Cached step outputs (``cache: {key, ttl}``): one entry per key, written in the transaction that
# records the success that produced it; shared by every worker.
cache_entries = sa.Table(
    "cache_entries",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("workflow", sa.String(200), nullable=False),
    sa.Column("step", sa.String(200), nullable=False),
    sa.Column("task", sa.String(400), nullable=False),
    sa.Column("output", Json, nullable=True),
    sa.Column("run_id", sa.String(36), nullable=True),  # the run that produced it (kept when that run is gone)
    sa.Column("step_run_id", Id, nullable=True),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("expires_at", Time, nullable=True),
    sa.Column("hits", sa.Integer, nullable=False, default=0, server_default="0"),
    sa.Column("last_hit_at", Time, nullable=True),
    sa.Index("ix_cache_entries_workflow_step", "workflow", "step"),
)

# The active version's schedules, one row each, replaced when another version becomes active. A
# name that survives keeps its paused flag, its last fire and its pending tick; a changed spec
# (cron, every or time zone) counts from its change (active_since), so it owes no catchup.
schedules = sa.Table(
    "schedules",
    metadata,
    sa.Column("workflow", sa.String(200), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("version", sa.String(64), sa.ForeignKey("definitions.version"), nullable=False),
    sa.Column("cron", sa.String(200), nullable=True),
    sa.Column("every_s", sa.Float, nullable=True),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("catchup", sa.String(16), nullable=False),
    sa.Column("overlap", sa.String(16), nullable=False),
    sa.Column("paused", sa.Boolean, nullable=False, default=False),
    sa.Column("paused_by", sa.String(200), nullable=True),
    sa.Column("active_since", Time, nullable=False),
    sa.Column("last_fire_at", Time, nullable=True),  # the latest tick beat has dealt with
    sa.Column("last_run_id", sa.String(36), nullable=True),  # the latest run it started (manual too)
    sa.Column("pending_fire_at", Time, nullable=True),  # buffer_one: the tick waiting for the run before
    sa.Column("warning", sa.Text, nullable=True),
    sa.Column("warning_at", Time, nullable=True),
)

# One row per tick a schedule dealt with (and per manual trigger): the unique (schedule, fire
# time) is what makes a second beat, a restart or a clock step start nothing twice.
schedule_fires = sa.Table(
    "schedule_fires",
    metadata,
    sa.Column("workflow", sa.String(200), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("fire_at", Time, primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),  # scheduled or manual
    sa.Column("outcome", sa.String(16), nullable=False),  # started, skipped, buffered, invalid
    sa.Column("run_id", sa.String(36), nullable=True),
    sa.Column("detail", sa.Text, nullable=True),
    sa.Column("at", Time, nullable=False),
)

# The audit trail: one record per change a person or a service made, written in the transaction
# of that change. Append-only (the migration adds triggers that refuse UPDATE and DELETE); each
# record's hash covers the previous record's hash and its own canonical JSON (orchestrator.audit).
# ``at`` and ``detail`` are stored as the exact text that was hashed.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("seq", Id, primary_key=True, autoincrement=False),
    sa.Column("at", sa.String(32), nullable=False),  # ISO 8601, UTC, microseconds: 2026-12-03T08:17:20.123456Z
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(400), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("detail", sa.Text, nullable=True),  # canonical JSON text
    sa.Column("mode", sa.String(16), nullable=False),  # sha256 | hmac-sha256
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Index("ix_audit_log_at", "at"),
    sa.Index("ix_audit_log_target", "target"),
    sa.Index("ix_audit_log_actor", "actor"),
)

# Secrets for ``${{ secrets.NAME }}``: each value encrypted with Fernet under ORCHESTRATOR_SECRET_KEY
# (orchestrator.runtime.secrets) before it reaches this table; the store never sees a value in clear.
secrets = sa.Table(
    "secrets",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("token", sa.Text, nullable=False),  # the Fernet token
    sa.Column("created_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
)
