"""One-tap action links: a call to action is a signed, expiring link (``/a/{workspace}/{token}``)
that records the tap as an event for the person it was sent to.

A tap records what happened: a ``Message Clicked`` event, and the action's own event when the
flow declares one (``action: {label: Keep slot, event: Slot Confirmed}``). It is never the
flow's goal unless that declared event *is* the goal (``goal: {event: Slot Confirmed}``): a tap
on "Open cart" is a click, not an ``Order Completed``.

The token carries who it is for and what it records, signed with the workspace's own key
(itsdangerous, HMAC-SHA256): it cannot be forged, altered to record for another person, or used
after it expires. Using it twice records the action once (its event's messageId is fixed).

Opening the link records nothing: mail security scanners and link previews fetch every URL
they see. The page it shows submits itself (a ``POST`` to the same address) in the person's
browser, and that records the action; a button does the same where scripts do not run.

The link then redirects to the action's URL only on a host the flow declares: the host of a
literal action URL in its message (``https://shop.example/orders/{{ event.order_id }}``), or
one listed in ``message.link_hosts`` when the host itself comes from data. Any other target
(``{{ event.url }}`` set to a stranger's site) would make the sender's domain an open
redirect, so the message is suppressed (``link_not_allowed``) instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from itsdangerous import BadSignature, TimestampSigner, URLSafeTimedSerializer

from momently.domain.durations import parse_duration

SALT = "momently.action.v1"
DEFAULT_TTL_SECONDS = 7 * 86_400
MESSAGE_CLICKED = "Message Clicked"
LINK_NOT_ALLOWED = "link_not_allowed"  # suppression reason: an action URL on an undeclared host


class InvalidAction(ValueError):
    """Forged, altered or malformed."""


class ExpiredAction(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Action:
    delivery_key: str
    flow_id: str
    person_id: str
    user_id: str | None
    anonymous_id: str | None
    event: str | None  # the event the action declares (``action.event``), recorded besides the click
    label: str | None
    redirect: str | None
    ttl_seconds: int = DEFAULT_TTL_SECONDS
    flow_version: int | None = None
    variant: str | None = None
    channel: str | None = None

    def as_payload(self) -> dict[str, Any]:
        # "d", not "e": links signed before actions declared their event carry the flow's goal
        # in "e", which a tap must not record (``read`` ignores it). Empty fields are left out:
        # every character counts in an SMS.
        payload = {
            "k": self.delivery_key,
            "f": self.flow_id,
            "v": self.flow_version,
            "n": self.variant,
            "c": self.channel,
            "p": self.person_id,
            "u": self.user_id,
            "a": self.anonymous_id,
            "d": self.event,
            "l": self.label,
            "r": self.redirect,
            "t": self.ttl_seconds,
        }
        return {k: v for k, v in payload.items() if v is not None}


def templated_origin(url: str) -> bool:
    """Does the scheme or host of this action URL template come from data?"""
    origin = "/".join(url.split("/", 3)[:3])
    return "{{" in origin or "{%" in origin


def action_urls(message: object) -> Iterator[str]:
    """Every action URL template of a flow's message: its variants and their channel blocks."""
    if isinstance(message, Mapping):
        action = message.get("action")
        if isinstance(action, Mapping) and isinstance(action.get("url"), str):
            yield action["url"]
        for key, value in message.items():
            if key != "action":
                yield from action_urls(value)
    elif isinstance(message, list):
        for item in message:
            yield from action_urls(item)


def link_hosts(message: Mapping[str, Any]) -> frozenset[str]:
    """The hosts a flow's one-tap links may redirect to: those written out in its action URL
    templates, and those listed in ``message.link_hosts``."""
    declared = message.get("link_hosts")
    hosts = {str(h).lower() for h in declared} if isinstance(declared, list) else set()
    for url in action_urls(message):
        if not templated_origin(url) and (host := urlsplit(url).hostname):
            hosts.add(host)
    return frozenset(hosts)


def redirect_allowed(url: str, hosts: Iterable[str]) -> bool:
    """An http(s) URL on one of ``hosts``, with nothing a browser reads differently from us:
    no user part (``https://shop.example@evil.example``), backslash, space or control character."""
    if any(c == "\\" or c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return False
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or "@" in parts.netloc:
        return False
    return parts.hostname is not None and parts.hostname in set(hosts)


def link_ttl(flow: Mapping[str, Any]) -> int:
    """How long after sending an action still counts, in seconds: the flow's goal window (at
    least an hour), else a week."""
    goal = flow.get("goal") if isinstance(flow.get("goal"), Mapping) else None
    ttl = parse_duration(goal["within"]) // 1000 if goal and "within" in goal else DEFAULT_TTL_SECONDS
    return max(int(ttl), 3600)


def tap_tracks(action: Action, *, via: str) -> list[dict[str, Any]]:
    """The events a tap records: ``Message Clicked``, then the action's declared event, if
    any. Their messageIds are fixed per delivery, so a second tap, or a tap and an SMS reply to
    the same message, count once.

    An in-app card's button is a click the widget already records (``/v1/inbox/{card}/act``,
    with the card), so its link adds only the declared event."""
    properties: dict[str, Any] = {
        "flow_id": action.flow_id,
        "flow_version": action.flow_version,
        "variant": action.variant,
        "channel": action.channel,
        "delivery_key": action.delivery_key,
        "action": action.label,
        "url": action.redirect,
        "via": via,
    }
    names: list[tuple[str, str]] = []
    if not (via == "one_tap" and action.channel == "in_app"):
        names.append((MESSAGE_CLICKED, f"click:{action.delivery_key}"))
    if action.event:
        names.append((action.event, f"action:{action.delivery_key}"))
    return [
        {
            "type": "track",
            "event": name,
            "userId": action.user_id,
            "anonymousId": action.anonymous_id,
            "messageId": message_id,
            "properties": dict(properties),
        }
        for name, message_id in names
    ]


def card_mark_track(
    event: str, mark: str, *, card_id: int, flow_id: str, delivery_key: str, user_id: str | None,
    anonymous_id: str | None,
) -> dict[str, Any]:  # fmt: skip
    """The event an in-app card's mark records (``Message Seen``, ``Message Dismissed``, or
    ``Message Clicked`` for its button), once per card and mark."""
    return {
        "type": "track",
        "event": event,
        "userId": user_id,
        "anonymousId": anonymous_id,
        "messageId": f"inbox:{card_id}:{mark}",
        "properties": {
            "channel": "in_app",
            "card_id": card_id,
            "flow_id": flow_id,
            "delivery_key": delivery_key,
        },
    }


def one_tap_token(url: object, workspace_id: str) -> str | None:
    """The token of a one-tap link of this workspace (``…/a/{workspace}/{token}``), else None.
    An in-app card keeps its link server-side: the widget acts through the inbox API, bound to
    the verified person, and never sees a token it could replay or hand on."""
    if not isinstance(url, str):
        return None
    parts = urlsplit(url).path.rstrip("/").split("/")
    if len(parts) >= 3 and parts[-3] == "a" and parts[-2] == workspace_id and parts[-1]:
        return parts[-1]
    return None


@lru_cache(maxsize=1024)  # built per (key, clock, salt) once: every message signs two links
def _serializer(secret: str, now: Callable[[], datetime], salt: str = SALT) -> URLSafeTimedSerializer:
    class ClockSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(now().timestamp())

    return URLSafeTimedSerializer(secret, salt=salt, signer=ClockSigner)


def sign(secret: str, action: Action, now: Callable[[], datetime]) -> str:
    return str(_serializer(secret, now).dumps(action.as_payload()))


def read(secret: str, token: str, *, now: Callable[[], datetime]) -> Action:
    """The action in ``token``, once its signature holds and its own lifetime has not passed."""
    try:
        data, signed_at = _serializer(secret, now).loads(token, return_timestamp=True)
    except BadSignature as exc:
        raise InvalidAction("this link is not valid") from exc
    if not isinstance(data, dict) or not isinstance(data.get("k"), str):
        raise InvalidAction("this link is not valid")
    ttl = int(data.get("t") or DEFAULT_TTL_SECONDS)
    if (now() - signed_at).total_seconds() > ttl:
        raise ExpiredAction("this link has expired")
    declared, version = data.get("d"), data.get("v")
    return Action(
        delivery_key=data["k"],
        flow_id=str(data.get("f")),
        person_id=str(data.get("p")),
        user_id=data.get("u"),
        anonymous_id=data.get("a"),
        event=declared if isinstance(declared, str) and declared else None,
        label=data.get("l"),
        redirect=data.get("r"),
        ttl_seconds=ttl,
        flow_version=version if isinstance(version, int) else None,
        variant=data.get("n") if isinstance(data.get("n"), str) else None,
        channel=data.get("c") if isinstance(data.get("c"), str) else None,
    )


def link_length(
    base: str, *, flow_id: str, event: str | None, label: str | None, redirect: str | None
) -> int:
    """How long a one-tap link (``{base}/{token}``, base being ``…/a/{workspace}``) of a flow
    is, for the SMS segment lint: a real token, signed over ids of typical length (a 36-character
    userId and anonymousId, the delivery key's own format)."""
    # ids that do not compress (the token is zlib-compressed when that makes it shorter)
    noise = hashlib.sha256(f"{flow_id}\x00{event or ''}".encode()).hexdigest()
    person = f"p_{noise[:20]}"
    action = Action(
        delivery_key=f"{flow_id}:{person}:e{noise[20:32]}",
        flow_id=flow_id,
        person_id=person,
        user_id=noise[:36],
        anonymous_id=noise[28:64],
        event=event,
        label=label,
        redirect=redirect,
        flow_version=12,
        variant="variant-a",
        channel="email",
    )
    at = datetime(2030, 1, 1, tzinfo=UTC)
    return len(base.rstrip("/")) + 1 + len(sign("s" * 32, action, lambda: at))


# unsubscribe links ------------------------------------------------------------------------
UNSUBSCRIBE_SALT = "momently.unsubscribe.v1"
UNSUBSCRIBE_TTL_SECONDS = 400 * 86_400  # mail is read late; RFC 8058 links must keep working


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """An unsubscribe link (``/u/{workspace}/{token}``, also the ``List-Unsubscribe`` URL):
    revokes ``purpose`` on ``channel`` for the person the message went to. Signed with a salt
    of its own, so an action token can never be replayed as an unsubscribe or the reverse."""

    delivery_key: str
    user_id: str | None
    anonymous_id: str | None
    channel: str
    purpose: str

    def as_payload(self) -> dict[str, Any]:
        return {
            "k": self.delivery_key,
            "u": self.user_id,
            "a": self.anonymous_id,
            "c": self.channel,
            "p": self.purpose,
        }


def sign_unsubscribe(secret: str, link: Unsubscribe, now: Callable[[], datetime]) -> str:
    return str(_serializer(secret, now, UNSUBSCRIBE_SALT).dumps(link.as_payload()))


def read_unsubscribe(secret: str, token: str, *, now: Callable[[], datetime]) -> Unsubscribe:
    try:
        data, signed_at = _serializer(secret, now, UNSUBSCRIBE_SALT).loads(token, return_timestamp=True)
    except BadSignature as exc:
        raise InvalidAction("this link is not valid") from exc
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("k", "c", "p")):
        raise InvalidAction("this link is not valid")
    if (now() - signed_at).total_seconds() > UNSUBSCRIBE_TTL_SECONDS:
        raise ExpiredAction("this link has expired")
    return Unsubscribe(data["k"], data.get("u"), data.get("a"), data["c"], data["p"])
