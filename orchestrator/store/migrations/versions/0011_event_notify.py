"""live updates: a notification per statement that logs events

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 23:00:00

On PostgreSQL, a statement-level trigger on ``events`` sends one ``NOTIFY orchestrator_events``
per statement (not per row, so a batch of events costs one), whose payload is the distinct run ids
of the statement's rows joined by commas, or ``*`` ("many runs: look at all") when that would not
fit in a notification, but only on a connection that set ``orchestrator.live_notify`` to ``on``
(``ORCHESTRATOR_LIVE_NOTIFY``: the store sets it on each connection it opens); everywhere else the
trigger returns at once. A NOTIFY takes a database-wide lock at commit, held until the commit ends:
every transaction that logs events would be serialized with every other one, so it is opt-in, and
``orchestrator serve`` polls the event log by default (it LISTENs only with the setting on). A run's
creation needs no trigger of its own: it is always logged (``run.started``) in the same transaction.
On SQLite there is no NOTIFY: the server polls the event log, and this revision does nothing.
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_FUNCTION = """
CREATE FUNCTION events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ids text;
BEGIN
    IF current_setting('orchestrator.live_notify', true) IS DISTINCT FROM 'on' THEN
        RETURN NULL;
    END IF;
    SELECT string_agg(DISTINCT run_id, ',') INTO ids FROM fresh;
    IF ids IS NULL THEN
        RETURN NULL;
    END IF;
    IF octet_length(ids) > 7900 THEN
        ids := '*';
    END IF;
    PERFORM pg_notify('orchestrator_events', ids);
    RETURN NULL;
END
$$
"""
_TRIGGER = (
    "CREATE TRIGGER events_notify AFTER INSERT ON events REFERENCING NEW TABLE AS fresh "
    "FOR EACH STATEMENT EXECUTE FUNCTION events_notify()"
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_FUNCTION)
        op.execute(_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER events_notify ON events")
        op.execute("DROP FUNCTION events_notify()")
