"""Step functions and models for the checks and cache tests: typed artifacts, and a ledger of calls."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

CALLS: list[str] = []


class Order(BaseModel):
    id: str
    quantity: int = Field(ge=1)


class Invoice(BaseModel):
    order_id: str
    total: float = Field(ge=0)


def invoice(order: Order, price: float) -> Invoice:
    CALLS.append(f"invoice:{order.id}")
    assert isinstance(order, Order)  # the annotation made a model of the JSON
    return Invoice(order_id=order.id, total=order.quantity * price)


def broken_invoice(order_id: str) -> Invoice:
    CALLS.append("broken")
    return {"order_id": order_id, "total": -1}  # type: ignore[return-value]


def total(order_id: str, amount: float) -> dict[str, Any]:
    CALLS.append(f"total:{order_id}")
    return {"order_id": order_id, "total": amount}


def untyped(**inputs):  # type: ignore[no-untyped-def]
    CALLS.append("untyped")
    return inputs


NOT_A_MODEL = 42
