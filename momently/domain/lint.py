"""Single-purpose lint for message content, run by ``flows validate``: templates that parse,
one call to action per message, lengths that fit the channel, links that lead somewhere.

Lengths are checked on the template text with its Liquid tags removed: the shortest the
message can be. A message already too long before any value is filled in always is.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from momently.domain.actions import MESSAGE_CLICKED, link_length, templated_origin
from momently.domain.durations import HINT, parse_duration
from momently.domain.flow import SYSTEM_EVENTS
from momently.domain.message import FIELDS, template_error
from momently.domain.profile import ORDER_COMPLETED

# GSM 03.38: the basic set costs one septet, the extension table two; anything else forces UCS-2.
GSM7_BASIC: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED: Final = frozenset("^{}\\[~]|€\f")
SMS_MAX_SEGMENTS: Final = 3
PUSH_TITLE_MAX: Final = 50
PUSH_BODY_MAX: Final = 150
EMAIL_SUBJECT_MAX: Final = 78
_HOST = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
_LIQUID = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
CHANNELS_WITH_CONTENT: Final = ("email", "sms", "push", "in_app", "webhook", "console")
ACTION_KEYS: Final = ("label", "url", "event")
# where one-tap links point when the workspace (and so the public URL) is not known
DEFAULT_LINK_BASE: Final = "https://moments.example.com/a/workspace"


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """What a one-tap link's length depends on: the server's ``{public URL}/a/{workspace}``
    and the flow's id (the action's label, URL and declared event come from the message)."""

    base: str = DEFAULT_LINK_BASE
    flow_id: str = "flow"


@dataclass(frozen=True, slots=True)
class Finding:
    path: tuple[str | int, ...]
    message: str


def sms_segments(text: str) -> tuple[int, str]:
    """(segments, encoding): GSM-7 fits 160 septets in one SMS and 153 per part when split;
    a single character outside GSM-7 (an emoji, say) makes it UCS-2: 70 UTF-16 units, then 67.
    An extension character (``€``: escape + septet) and an emoji (a surrogate pair) cost two
    and are never split between two parts, so a part may end one short of its limit."""
    if all(c in GSM7_BASIC or c in GSM7_EXTENDED for c in text):
        costs, single, part, encoding = [2 if c in GSM7_EXTENDED else 1 for c in text], 160, 153, "GSM-7"
    else:
        costs, single, part, encoding = [2 if ord(c) > 0xFFFF else 1 for c in text], 70, 67, "UCS-2"
    if sum(costs) <= single:
        return 1, encoding
    segments, used = 1, 0
    for cost in costs:
        if used + cost > part:
            segments, used = segments + 1, 0
        used += cost
    return segments, encoding


def literal(template: str) -> str:
    return _LIQUID.sub("", template)


def _variants(message: Mapping[str, Any]) -> Iterator[tuple[tuple[str | int, ...], Mapping[str, Any]]]:
    variants = message.get("variants")
    if isinstance(variants, list):
        for i, v in enumerate(variants):
            if isinstance(v, Mapping):
                yield ("message", "variants", i), v
    else:
        yield ("message",), message


def lint_message(message: object, channels: list[str], link: LinkSpec = LinkSpec()) -> list[Finding]:
    if not isinstance(message, Mapping) or not message:
        return []
    out: list[Finding] = []
    if "expires_in" in message:
        try:
            parse_duration(message["expires_in"])
        except ValueError as exc:
            out.append(Finding(("message", "expires_in"), f"{exc} ({HINT})"))
    declared = message.get("link_hosts")
    if declared is not None and (
        not isinstance(declared, list)
        or not all(isinstance(h, str) and _HOST.match(h.lower()) for h in declared)
    ):
        out.append(
            Finding(
                ("message", "link_hosts"),
                "link_hosts is a list of host names (shop.example), without scheme, port or path",
            )
        )
    for path, variant in _variants(message):
        if "actions" in variant or isinstance(variant.get("action"), list):
            out.append(
                Finding(
                    (*path, "actions"), "a micro-moment asks for one thing: give one 'action', not a list"
                )
            )
        out += _template_findings(path, variant)
        blocks: list[tuple[tuple[str | int, ...], str, Mapping[str, Any]]] = []
        for channel in channels:
            override = variant.get(channel)
            merged = {**variant, **override} if isinstance(override, Mapping) else dict(variant)
            blocks.append((path, channel, merged))
        for where, channel, spec in blocks:
            out += _lint_block(where, channel, spec, link, hosts_declared=bool(declared))
    unique = {(f.path, f.message): f for f in out}  # the same finding for several channels, once
    return list(unique.values())


def _template_findings(path: tuple[str | int, ...], spec: Mapping[str, Any]) -> list[Finding]:
    """Every template of a variant and of its channel blocks must parse: a broken one would
    suppress every message of the flow at send time."""
    out: list[Finding] = []
    fields: list[tuple[tuple[str | int, ...], object]] = [((*path, f), spec.get(f)) for f in FIELDS]
    action = spec.get("action")
    if isinstance(action, Mapping):
        fields += [((*path, "action", f), action.get(f)) for f in ("label", "url")]
    for at, source in fields:
        if isinstance(source, str) and (error := template_error(source)):
            out.append(Finding(at, f"{'.'.join(map(str, at))}: not valid Liquid: {error}"))
    for channel in CHANNELS_WITH_CONTENT:
        override = spec.get(channel)
        if isinstance(override, Mapping):
            out += _template_findings((*path, channel), override)
    return out


def _lint_block(
    path: tuple[str | int, ...],
    channel: str,
    spec: Mapping[str, Any],
    link: LinkSpec,
    *,
    hosts_declared: bool,
) -> list[Finding]:
    out: list[Finding] = []
    body = spec.get("body")
    if not isinstance(body, str) or not body.strip():
        out.append(Finding((*path, "body"), f"no body for the {channel} channel"))
        return out
    text = literal(body)
    if channel == "sms":
        tail = _sms_link(spec.get("action"), link)
        segments, encoding = sms_segments(text + tail)
        if segments > SMS_MAX_SEGMENTS:
            with_link = f" with its call to action and link ({len(tail)} characters)" if tail else ""
            out.append(
                Finding(
                    (*path, "body"),
                    f"the SMS body{with_link} is {segments} {encoding} segments before any value is "
                    f"filled in (at most {SMS_MAX_SEGMENTS}); one emoji switches the whole message to "
                    "UCS-2 (70 characters a segment)",
                )
            )
    if channel == "push":
        title = literal(str(spec.get("title") or ""))
        if len(title) > PUSH_TITLE_MAX:
            out.append(
                Finding((*path, "title"), f"push titles are cut after about {PUSH_TITLE_MAX} characters")
            )
        if len(text) > PUSH_BODY_MAX:
            out.append(
                Finding((*path, "body"), f"push bodies are cut after about {PUSH_BODY_MAX} characters")
            )
    if channel == "email":
        subject = literal(str(spec.get("subject") or spec.get("title") or ""))
        if len(subject) > EMAIL_SUBJECT_MAX:
            out.append(
                Finding((*path, "subject"), f"email subjects over {EMAIL_SUBJECT_MAX} characters are cut")
            )
    action = spec.get("action")
    if isinstance(action, Mapping):
        url = action.get("url")
        if isinstance(url, str) and url.strip() and not templated_origin(url):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                out.append(
                    Finding((*path, "action", "url"), f"the action link {url!r} is not an http(s) URL")
                )
        elif isinstance(url, str) and not hosts_declared:
            out.append(
                Finding(
                    (*path, "action", "url"),
                    "the action link's host comes from data: list the hosts it may lead to in "
                    "message.link_hosts (a link elsewhere would be an open redirect)",
                )
            )
        if not action.get("label"):
            out.append(Finding((*path, "action", "label"), "the call to action needs a label"))
        out += _action_findings((*path, "action"), action)
    return out


def _action_findings(path: tuple[str | int, ...], action: Mapping[str, Any]) -> list[Finding]:
    """The action's keys, and the event it declares: what a tap records besides ``Message
    Clicked``. It must name what the tap *is* (a slot confirmed, an offer claimed): a purchase
    or one of Momently's own events would put something in the log that did not happen."""
    out: list[Finding] = []
    for key in action:
        if key not in ACTION_KEYS:
            hint = difflib.get_close_matches(str(key), ACTION_KEYS, n=1, cutoff=0.6)
            out.append(
                Finding(
                    (*path, key),
                    f"unknown key '{key}' in the action (it takes {', '.join(ACTION_KEYS)})"
                    + (f" (did you mean '{hint[0]}'?)" if hint else ""),
                )
            )
    if "event" not in action:
        return out
    event = action["event"]
    at = (*path, "event")
    if not isinstance(event, str) or not event.strip():
        out.append(Finding(at, "action.event is the name of the event a tap records, e.g. 'Slot Confirmed'"))
    elif "{{" in event or "{%" in event:
        out.append(Finding(at, f"action.event {event!r} must be a plain event name, not a template"))
    elif event == ORDER_COMPLETED:
        out.append(
            Finding(
                at,
                f"a tap is not a purchase: action.event cannot be '{ORDER_COMPLETED}' (the shop records "
                "orders); declare what the tap is, e.g. 'Offer Claimed', or leave it out to record "
                f"'{MESSAGE_CLICKED}'",
            )
        )
    elif event in SYSTEM_EVENTS:
        out.append(
            Finding(
                at,
                f"action.event cannot be '{event}', one of Momently's own events (a tap always "
                f"records '{MESSAGE_CLICKED}'); declare what the tap is, e.g. 'Slot Confirmed'",
            )
        )
    return out


def _sms_link(action: object, link: LinkSpec) -> str:
    """What the SMS channel appends to the body for the call to action: a new line, the label
    and the one-tap link (``channels.sms.sms_text``)."""
    if not isinstance(action, Mapping) or not (action.get("url") or action.get("label")):
        return ""
    label = literal(str(action["label"])) if action.get("label") else None
    url = literal(str(action["url"])) if action.get("url") else None
    event = action.get("event") if isinstance(action.get("event"), str) else None
    length = link_length(link.base, flow_id=link.flow_id, event=event, label=label, redirect=url)
    return "\n" + (f"{label}: " if label else "") + "x" * length
