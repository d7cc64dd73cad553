"""Step functions and models for the checks and cache tests: typed artifacts, and a ledger of calls."""

from __future__ import annotations

from collections.abc import Iterator
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


class Client:
    """A type pydantic cannot build a schema for: the parameter is not checked."""


def with_client(x: int, client: Client | None = None) -> Iterator[int]:
    CALLS.append(f"with_client:{x}")
    return [x, x]  # type: ignore[return-value]


class Slim(BaseModel):
    id: str


class Priced(BaseModel):
    id: str
    price: float


def product(id: str) -> dict[str, Any]:
    CALLS.append(f"product:{id}")
    return {"id": id, "price": 3.5, "extra": "kept"}


def charge(amount: float) -> dict[str, Any]:
    CALLS.append(f"charge:{amount}")
    return {"charge_id": f"ch-{len([c for c in CALLS if c.startswith('charge:')])}"}


def refund(charge_id: str) -> str:
    CALLS.append(f"refund:{charge_id}")
    return charge_id


def boom() -> None:
    CALLS.append("boom")
    raise RuntimeError("boom")
