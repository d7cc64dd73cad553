"""The step functions behind config/examples/: small, real and deterministic."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from orchestrator.errors import ValidationError

_CATALOGUE = {"apple": 120, "pear": 95, "plum": 40, "fig": 0}
_FEATURE = re.compile(r"[a-z0-9_-]{1,100}")


def fetch_order(order_id: str) -> dict[str, Any]:
    """An order with its line items (a stand-in for a database or API read)."""
    items = [
        {"sku": sku, "quantity": 1 + (len(order_id) + position) % 3} for position, sku in enumerate(sorted(_CATALOGUE))
    ]
    return {"order_id": order_id, "items": items}


def price_item(item: dict[str, Any], position: int = 0) -> int:
    """Cents for one line: unit price times quantity."""
    return _CATALOGUE[item["sku"]] * int(item["quantity"])


def charge(order_id: str, amount: int) -> dict[str, Any]:
    return {"order_id": order_id, "charged": amount, "currency": "EUR"}


def notify(message: str) -> str:
    return f"sent: {message}"


def add(a: float, b: float) -> float:
    return a + b


def multiply(a: float, b: float) -> float:
    return a * b


def total(values: list[float]) -> float:
    return sum(values)


def classify(amount: float, threshold: float) -> str:
    return "large" if amount >= threshold else "small"


def review(amount: float, reviewer: str) -> dict[str, Any]:
    return {"amount": amount, "reviewer": reviewer, "approved": True}


def write_draft(feature: str, feedback: str | None = None) -> dict[str, Any]:
    """Write (or rewrite, after feedback) the feature's document under ORCHESTRATOR_ARTIFACT_ROOT."""
    _check_feature(feature)
    root = Path(os.environ.get("ORCHESTRATOR_ARTIFACT_ROOT") or ".")
    path = root / "docs" / f"{feature}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    revision = path.read_text().count("## Revision") + 1 if path.exists() else 1
    with path.open("a") as handle:
        handle.write(f"## Revision {revision}\n{feedback or 'first draft'}\n")
    return {"path": f"docs/{feature}.md", "revision": revision}


def publish(feature: str, revision: int) -> dict[str, Any]:
    _check_feature(feature)
    return {"published": f"docs/{feature}.md", "revision": revision}


def _check_feature(feature: str) -> None:
    """``feature`` names a file under docs/: a workflow's inputs choose it, so ``../x`` or an absolute
    path must not reach outside the artifact root (refused for good: a retry would be refused again)."""
    if not _FEATURE.fullmatch(feature):
        shown = feature if len(feature) <= 40 else feature[:37] + "..."
        raise ValidationError(f"feature {shown!r} is not a name: use [a-z0-9_-], at most 100 characters")
