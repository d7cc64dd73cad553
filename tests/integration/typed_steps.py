"""Typed step functions for the checks and cache tests on real workers: pydantic models at the
step boundary, and a ledger file that records every call that really ran."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field


class Order(BaseModel):
    id: str
    quantity: int = Field(ge=1)


class Invoice(BaseModel):
    order_id: str
    total: float = Field(ge=0)
    worker_pid: int


def invoice(order: Order, price: float, ledger: str) -> Invoice:
    """Receives an Order built from the step's JSON and returns an Invoice, stored as JSON."""
    if not isinstance(order, Order):
        raise TypeError(f"expected an Order, got {type(order).__name__}")
    with Path(ledger).open("a") as handle:
        handle.write(f"invoice {order.id}\n")
    return Invoice(order_id=order.id, total=order.quantity * price, worker_pid=os.getpid())


def refund(order_id: str) -> dict[str, object]:
    return {"order_id": order_id, "total": -1}
