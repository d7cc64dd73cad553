"""cached step outputs and checks (issue Data and time, parts 1 and 2)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 08:00:00
"""

from __future__ import annotations

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
