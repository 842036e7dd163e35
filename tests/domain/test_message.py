"""Rendering a variant: testing a missing value is fine (Shopify Liquid semantics); printing
one suppresses the message."""

from __future__ import annotations

from typing import Any

import pytest

from momently.domain.message import RENDER_MISSING_VALUE, NotRendered, Rendered, render

DATA: dict[str, Any] = {"traits": {"name": "Ada", "orders": 3}, "event": {}}

RENDERED = [
    ("{% if traits.vip %}VIP {% endif %}Hi {{ traits.name }}", "Hi Ada"),
    ("{% unless traits.vip %}Welcome! {% endunless %}Hi", "Welcome! Hi"),
    ("{% if traits.vip == true %}VIP{% else %}Hi{% endif %}", "Hi"),
    ("{% if traits.vip.level > 2 %}Gold {% endif %}Hi", "Hi"),
    ("{% if traits.tags contains 'x' %}X {% endif %}Hi", "Hi"),
    ("{% for t in traits.tags %}{{ t }} {% endfor %}Hi", "Hi"),
    ("{% case traits.tier %}{% when 'gold' %}Gold{% else %}Hi{% endcase %}", "Hi"),
    ("{% if traits.vip == nil %}Hi{% endif %}", "Hi"),
    ("{% if traits.vip and traits.orders > 2 %}VIP{% elsif traits.orders %}Regular{% endif %}", "Regular"),
    ("Hi {{ traits.nickname | default: traits.name }}", "Hi Ada"),
]


@pytest.mark.parametrize(("body", "expected"), RENDERED)
def test_testing_a_missing_value_renders_the_rest(body: str, expected: str) -> None:
    out = render({"body": body}, None, "console", DATA)
    assert isinstance(out, Rendered)
    assert out.body == expected


PRINTED = [
    "Hi {{ traits.nickname }}",
    "Hi {{ traits.nickname | upcase }}",
    "Hi {{ traits.vip.level }}",
    "{% assign n = traits.nickname %}Hi {{ n }}",
    "Hi {{ traits.name | append: traits.nickname }}",
    "{% if traits.orders > 2 %}Hi {{ traits.nickname }}{% endif %}",
]


@pytest.mark.parametrize("body", PRINTED)
def test_printing_a_missing_value_suppresses(body: str) -> None:
    out = render({"body": body}, None, "console", DATA)
    assert isinstance(out, NotRendered)
    assert out.reason == RENDER_MISSING_VALUE
    assert "is undefined" in out.detail
