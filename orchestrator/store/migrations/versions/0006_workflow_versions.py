"""active versions and who registered them (issue Data and time, part 4)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 08:00:00

A registration records who made it. Which version of a workflow is active is no longer "the
newest registered": it is the newest row of an append-only ``activations`` history, which also
tells ``rollback`` what was active before. Until now every new registration made its version
active, so the history is filled with one activation per existing registration, in the order
they were made: the latest registration ends active, and a rollback goes back to the one before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.add_column(sa.Column("registered_by", sa.String(length=200), nullable=True))
    op.create_table(
        "activations",
        sa.Column("id", _Id, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("at", _Time, nullable=False),
        sa.Column("by", sa.String(length=200), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["version"], ["definitions.version"], name=op.f("fk_activations_version_definitions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_activations")),
    )
    op.create_index("ix_activations_name_id", "activations", ["name", "id"])
    # the ids follow the order of the registrations, so the latest registration ends active
    op.execute(
        "INSERT INTO activations (name, version, action, at) "
        "SELECT name, version, 'register', registered_at FROM workflows ORDER BY registered_at, id"
    )


def downgrade() -> None:
    op.drop_index("ix_activations_name_id", table_name="activations")
    op.drop_table("activations")
    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.drop_column("registered_by")
