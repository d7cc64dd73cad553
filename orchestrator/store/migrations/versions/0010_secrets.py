"""encrypted secrets

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 14:30:00

``secrets`` holds one Fernet token per secret name (``orchestrator secrets set``); the key
(ORCHESTRATOR_SECRET_KEY) is never stored, so the table alone reveals no value.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "secrets",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("token", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_secrets"),
    )


def downgrade() -> None:
    op.drop_table("secrets")
