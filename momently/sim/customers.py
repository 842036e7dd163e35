"""Segment-spec traffic from made-up customers of a small shop.

Deterministic for a given seed, so benchmarks and tests can be repeated exactly.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from momently.domain.timestamps import format_timestamp

_CITIES = [
    ("Lyon", "Europe/Paris"),
    ("Leeds", "Europe/London"),
    ("Austin", "America/Chicago"),
    ("Osaka", "Asia/Tokyo"),
    ("Porto", "Europe/Lisbon"),
]
_PRODUCTS = [
    ("sku-tea", "Green tea", 6.5),
    ("sku-mug", "Mug", 12.0),
    ("sku-kettle", "Kettle", 39.9),
    ("sku-beans", "Coffee beans", 14.25),
]


class Shop:
    def __init__(self, *, people: int, seed: int = 7, start: datetime | None = None) -> None:
        self.people = people
        self.rng = random.Random(seed)
        self.now = start or datetime(2026, 11, 1, 9, 0, tzinfo=UTC)

    def _person(self, i: int) -> tuple[str, str]:
        return f"user-{i}", f"anon-{i}"

    def identify(self, i: int) -> dict[str, Any]:
        user_id, anon = self._person(i)
        city, tz = _CITIES[i % len(_CITIES)]
        return {
            "type": "identify",
            "userId": user_id,
            "anonymousId": anon,
            "traits": {"email": f"{user_id}@example.com", "name": f"Customer {i}", "city": city},
            "context": {"timezone": tz},
            **self._stamp(),
        }

    def _stamp(self) -> dict[str, Any]:
        self.now += timedelta(milliseconds=self.rng.randint(1, 500))
        return {
            "messageId": str(uuid.UUID(int=self.rng.getrandbits(128))),
            "timestamp": format_timestamp(self.now),
        }

    def event(self) -> dict[str, Any]:
        """One event from a random customer, weighted like a real shop's traffic."""
        i = self.rng.randrange(self.people)
        user_id, anon = self._person(i)
        roll = self.rng.random()
        sku, name, price = self.rng.choice(_PRODUCTS)
        if roll < 0.05:
            return self.identify(i)
        if roll < 0.55:
            return {
                "type": "page",
                "anonymousId": anon,
                "userId": user_id,
                "name": "Product",
                "properties": {"path": f"/p/{sku}", "title": name},
                **self._stamp(),
            }
        if roll < 0.85:
            return {
                "type": "track",
                "userId": user_id,
                "event": "Product Added",
                "properties": {
                    "product_id": sku,
                    "name": name,
                    "price": price,
                    "quantity": 1,
                    "cart_id": f"cart-{i}",
                },
                **self._stamp(),
            }
        qty = self.rng.randint(1, 3)
        return {
            "type": "track",
            "userId": user_id,
            "event": "Order Completed",
            "properties": {
                "order_id": f"o-{self.rng.getrandbits(40)}",
                "cart_id": f"cart-{i}",
                "revenue": round(price * qty, 2),
                "currency": "EUR",
                "products": [{"product_id": sku, "quantity": qty}],
            },
            **self._stamp(),
        }

    def events(self, n: int) -> Iterator[dict[str, Any]]:
        for _ in range(n):
            yield self.event()
