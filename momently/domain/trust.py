"""What an ingest key may say about a person, and how a person is proven.

A **public** write key is in every web page, so anyone can send with it as anyone: it is trusted
only for what a visitor may say about themselves. A **server** key is secret (the customer's
backend) and fully trusted. Between the two sits **identity verification**: the customer's
backend, which knows who is logged in, gives the page a *user token*, the hex HMAC-SHA256 of
the userId under the workspace's identity secret (as Intercom's and Customer.io's
"identity verification" do). A public-key call that carries a valid token for its userId is as
trusted as a server key for that one person.

What an unverified public-key event may not do, because it would let a page speak for someone
else: set contact addresses (``email``, ``phone`` traits; a push token in ``context.device``),
record consent (the identify traits the workspace policy maps to consent), or (through those
traits) lift an erased person's tombstone. :func:`screen` drops exactly those fields from the
stored event and records which, and why, in ``context.momently``; the event itself is kept.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Any, Final

import orjson

from momently.domain.credentials import KeyKind
from momently.domain.event import Event

CONTACT_TRAITS: Final = ("email", "phone")
TOKEN_FIELD: Final = "userToken"  # where an event carries its user token: context.userToken
STAMP: Final = "momently"  # context.momently: written by ingest only, never taken from a client
UNVERIFIED: Final = "identity_unverified"
# track events stamped with their key like identifies: an exposure says which experiment arm a
# person is in, which only Momently (or the customer's backend) can know, never a web page
STAMPED_TRACKS: Final = frozenset({"Experiment Viewed"})


def user_token(identity_secret: str, user_id: str) -> str:
    """The token the customer's backend gives the page of a logged-in person."""
    return hmac.new(identity_secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def token_matches(identity_secret: str, user_id: str, token: object) -> bool:
    return isinstance(token, str) and hmac.compare_digest(
        user_token(identity_secret, user_id).encode(), token.encode("utf-8", "surrogatepass")
    )


@dataclass(frozen=True, slots=True)
class Sender:
    """The key an event came in with, as ingest resolved it."""

    key_id: int
    kind: KeyKind

    @property
    def public(self) -> bool:
        return self.kind is KeyKind.WRITE


def screen(event: Event, sender: Sender, *, verified: bool, consent_traits: Collection[str]) -> Event:
    """The event as it may be stored for this sender.

    Always: a client's own ``context.momently`` and the user token are removed (the token is a
    credential, not data). Identify events are stamped with the key id, so the consent records
    their traits become name the key that wrote them. From a public key without a valid
    token, contact and consent fields are dropped and listed in the stamp with the reason.
    Events that need none of this (nearly all track calls) are returned unchanged."""
    context = event.body.get("context")
    context = context if isinstance(context, dict) else {}
    ignored: list[str] = []
    traits = event.body.get("traits")
    kept_traits = traits
    if sender.public and not verified:
        if event.type == "identify" and isinstance(traits, dict):
            banned = set(CONTACT_TRAITS) | set(consent_traits)
            ignored = sorted(t for t in traits if t in banned)
            if ignored:
                kept_traits = {k: v for k, v in traits.items() if k not in banned}
        device = context.get("device")
        if isinstance(device, dict) and "token" in device:
            ignored.append("context.device.token")
            context = {**context, "device": {k: v for k, v in device.items() if k != "token"}}
    stamped = event.type == "identify" or (event.type == "track" and event.name in STAMPED_TRACKS)
    if not (ignored or stamped or STAMP in context or TOKEN_FIELD in context):
        return event
    context = {k: v for k, v in context.items() if k not in (STAMP, TOKEN_FIELD)}
    stamp: dict[str, Any] = {"key": sender.key_id, "keyKind": sender.kind.value, "verified": verified}
    if ignored:
        stamp["ignored"] = ignored
        stamp["reason"] = UNVERIFIED
    context[STAMP] = stamp
    body = {**event.body, "context": context}
    if kept_traits is not traits:
        body["traits"] = kept_traits
    return replace(event, body=body, payload=orjson.dumps(body))


def from_public_key(body: dict[str, Any]) -> bool:
    """Whether ingest stamped the event as sent with a public write key (with or without a
    user token)."""
    context = body.get("context")
    stamp = context.get(STAMP) if isinstance(context, dict) else None
    return isinstance(stamp, dict) and stamp.get("keyKind") == KeyKind.WRITE.value


def writer_key(body: dict[str, Any]) -> int | None:
    """The id of the key an event was ingested with, when ingest stamped it."""
    context = body.get("context")
    stamp = context.get(STAMP) if isinstance(context, dict) else None
    key = stamp.get("key") if isinstance(stamp, dict) else None
    return key if isinstance(key, int) else None
