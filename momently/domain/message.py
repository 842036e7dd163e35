"""Message content: the variant a decision chose, rendered for one channel with Liquid (the
template language Braze, Customer.io and Shopify users already write).

Templates see only the data given to them (traits, computed attributes, the trigger event);
Liquid cannot reach Python objects or files. A missing value never renders as "Hi ,": null
and empty values count as missing, and *printing* one (``{{ traits.name }}``, also through a
filter) suppresses the send with reason ``render_missing_value`` unless the template gives a
``default``. *Testing* one is fine, as in Shopify Liquid: ``{% if traits.vip %}`` is false,
``{% unless %}`` true, a loop over it runs zero times, and the rest of the message renders.

Templates are checked when a flow is validated (:func:`template_error`): a syntax error, an
unknown tag or an unknown filter is refused then, not discovered at send time.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from liquid import BoundTemplate, Environment, Undefined
from liquid.exceptions import LiquidError, UndefinedError

from momently.domain.profile import Profile
from momently.domain.timestamps import format_timestamp, from_millis

RENDER_MISSING_VALUE = "render_missing_value"
RENDER_ERROR = "render_error"
NO_CONTENT = "no_content"
FIELDS = ("title", "subject", "body")


class _Missing(Undefined):
    """A missing value: false, empty and equal to ``nil`` when tested, an error when printed.
    ``default`` replaces it (``force_liquid_default``)."""

    force_liquid_default = True

    def __str__(self) -> str:
        raise UndefinedError(self.hint or f"{self.name} is undefined", token=self.token)


_env = Environment(undefined=_Missing)


def template_error(source: str) -> str | None:
    """Why ``source`` is not a template we can render (syntax, unknown tag, unknown filter),
    or None. Filters are checked here because Liquid only finds an unknown one when it runs."""
    try:
        template = _template(source)
    except LiquidError as exc:
        return str(exc).splitlines()[0]
    for name in template.analyze().filters:
        if name not in _env.filters:
            match = difflib.get_close_matches(name, list(_env.filters), n=1, cutoff=0.6)
            return f"unknown filter '{name}'" + (f" (did you mean '{match[0]}'?)" if match else "")
    return None


@lru_cache(maxsize=4096)
def _template(source: str) -> BoundTemplate:
    """Parsed once per distinct template text: flows send the same few templates many times."""
    return _env.from_string(source)


@dataclass(frozen=True, slots=True)
class Rendered:
    variant: str
    title: str | None
    body: str
    action_label: str | None = None
    action_url: str | None = None
    action_event: str | None = None  # what a tap records besides the click (``action.event``)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"variant": self.variant, "title": self.title, "body": self.body}
        if self.action_label or self.action_url:
            out["action"] = {"label": self.action_label, "url": self.action_url}
        return out


@dataclass(frozen=True, slots=True)
class NotRendered:
    reason: str
    detail: str


def _present(value: Any) -> Any:
    """Drop nulls and empty strings, recursively, so templates see them as missing."""
    if isinstance(value, Mapping):
        return {str(k): _present(v) for k, v in value.items() if v is not None and v != ""}
    if isinstance(value, list):
        return [_present(v) for v in value if v is not None and v != ""]
    return value


def template_data(profile: Profile, event: Mapping[str, Any] | None) -> dict[str, Any]:
    def iso(ms: int | None) -> str | None:
        return format_timestamp(from_millis(ms)) if ms is not None else None

    data: dict[str, Any] = _present(
        {
            "traits": profile.traits,
            "profile": {
                "user_id": profile.user_id,
                "email": profile.email,
                "phone": profile.phone,
                "timezone": profile.timezone,
            },
            "computed": {
                "orders_count": profile.orders_count,
                "revenue": profile.revenue,
                "last_order": iso(profile.last_order_ms),
                "first_seen": iso(profile.first_seen_ms),
                "last_seen": iso(profile.last_seen_ms),
            },
            "event": dict(event or {}),
        }
    )
    return data


def generic_data(profile: Profile) -> dict[str, Any]:
    """What a template may use without ``personalisation`` consent: what the person told us
    (traits, contact details), not what we inferred from their behaviour (the trigger event,
    computed attributes)."""
    full = template_data(profile, None)
    return {k: v for k, v in full.items() if k in ("traits", "profile")}


def generic_variant(message: Mapping[str, Any]) -> str | None:
    """The variant marked ``generic: true``: sent to people without personalisation consent."""
    variants = message.get("variants")
    if isinstance(variants, list):
        for v in variants:
            if isinstance(v, dict) and v.get("generic") is True:
                return str(v.get("id", "default"))
    return None


def variant_of(message: Mapping[str, Any], variant_id: str | None) -> dict[str, Any] | None:
    variants = message.get("variants")
    if isinstance(variants, list) and variants:
        for v in variants:
            if isinstance(v, dict) and v.get("id", "default") == (variant_id or "default"):
                return v
        first = variants[0]
        return first if isinstance(first, dict) else None
    return dict(message) if message else None


def _spec(variant: Mapping[str, Any], channel: str) -> dict[str, Any]:
    """The variant's fields, with its ``channel`` block overriding the common ones."""
    spec: dict[str, Any] = {k: v for k, v in variant.items() if k in (*FIELDS, "action")}
    override = variant.get(channel)
    if isinstance(override, dict):
        spec.update(override)
    return spec


def declared_event(message: Mapping[str, Any], variant_id: str | None, channel: str) -> str | None:
    """The event the variant's action declares on ``channel`` (``action: {event: ...}``): what
    taking the action records besides the click. None when it declares none."""
    variant = variant_of(message, variant_id)
    action = _spec(variant, channel).get("action") if variant is not None else None
    event = action.get("event") if isinstance(action, dict) else None
    return event if isinstance(event, str) and event else None


def render(
    message: Mapping[str, Any], variant_id: str | None, channel: str, data: Mapping[str, Any]
) -> Rendered | NotRendered:
    """The variant's fields, with its ``channel`` block overriding the common ones."""
    variant = variant_of(message, variant_id)
    if variant is None:
        return NotRendered(NO_CONTENT, "the flow has no message")
    spec = _spec(variant, channel)
    if not isinstance(spec.get("body"), str):
        return NotRendered(NO_CONTENT, f"variant '{variant.get('id', 'default')}' has no body for {channel}")
    out: dict[str, str | None] = {}
    raw_action = spec.get("action")
    action: dict[str, Any] = raw_action if isinstance(raw_action, dict) else {}
    sources = {
        "title": spec.get("title", spec.get("subject")),
        "body": spec["body"],
        "action_label": action.get("label"),
        "action_url": action.get("url"),
    }
    for name, source in sources.items():
        if source is None:
            out[name] = None
            continue
        try:
            text = _template(str(source)).render(**data)
        except LiquidError as exc:
            first = str(exc).splitlines()[0]
            reason = RENDER_MISSING_VALUE if "undefined" in first else RENDER_ERROR
            return NotRendered(reason, f"{name}: {first}")
        out[name] = text.strip()
    return Rendered(
        variant=str(variant.get("id", "default")),
        title=out["title"],
        body=out["body"] or "",
        action_label=out["action_label"],
        action_url=out["action_url"],
        action_event=declared_event(message, variant_id, channel),
    )
