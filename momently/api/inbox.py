"""The in-app inbox, for the widget. Authenticated like ingest, and with the public write key
only for a verified person: the call carries the ``userToken`` the customer's backend made for
its userId (docs/security.md), so a page cannot read or mark anyone else's cards.

- ``GET /v1/inbox`` lists the cards to show now;
- ``GET /v1/inbox/stream`` is a server-sent-events stream of new cards (``EventSource`` cannot
  send headers, so the key and token go in the query string; ``Last-Event-ID`` resumes);
- ``POST /v1/inbox/{card}/seen|dismiss|act`` mark a card, each logged once as ``Message
  Seen`` / ``Message Dismissed`` / ``Message Clicked`` (seen minus sent is the
  acknowledgement latency). ``act`` also records the card's action (the flow's goal) for the
  person and answers where to go next: the card itself carries no one-tap link.
- ``GET /widget.js`` is the embeddable widget.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from importlib.resources import files
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import orjson
from fastapi import APIRouter, Header, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from momently.api.auth import Authenticator, Person
from momently.api.body import read_json
from momently.api.errors import WRITE_KEY, documented
from momently.api.params import MAX_ROW_ID, RowId
from momently.domain.actions import (
    MESSAGE_CLICKED,
    ExpiredAction,
    InvalidAction,
    card_mark_track,
    one_tap_token,
    read,
    tap_tracks,
)
from momently.domain.event import BatchDefaults, Event, normalize
from momently.domain.timestamps import to_millis
from momently.services import Services
from momently.store.inbox import Card

AuthHeader = Annotated[str | None, Header(alias="Authorization")]
MARKS: dict[str, tuple[Literal["seen", "acted", "dismissed"], str]] = {
    "seen": ("seen", "Message Seen"),
    "dismiss": ("dismissed", "Message Dismissed"),
    "act": ("acted", "Message Clicked"),
}
# what naming the person can answer: no id, or a public key without the person's user token
PERSON_ERRORS = {
    400: "no_user_anon_id",
    403: "identity_unverified: a public key needs the person's user token",
}
POLL_SECONDS = 2.0  # cards added by an engine in another process
HEARTBEAT_SECONDS = 15.0


def router(services: Services, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["in-app"], responses=WRITE_KEY)
    inbox = services.inbox

    def people(workspace_id: str, person: Person) -> list[str]:
        found = []
        for kind, value in (("user", person.user_id), ("anon", person.anonymous_id)):
            pid = services.profiles.person_for(workspace_id, (kind, value)) if value else None
            if pid is not None and pid not in found:
                found.append(pid)
        return found

    @r.get(
        "/v1/inbox",
        summary="The person's cards to show now (in-app channel)",
        responses=documented(PERSON_ERRORS),
    )
    async def list_cards(
        authorization: AuthHeader = None,
        writeKey: Annotated[str | None, Query()] = None,
        userId: Annotated[str | None, Query()] = None,
        anonymousId: Annotated[str | None, Query()] = None,
        userToken: Annotated[str | None, Query()] = None,
    ) -> dict[str, Any]:
        principal = auth.write_key(authorization, writeKey)
        person = await run_in_threadpool(auth.person, principal, userId, anonymousId, userToken)
        ws = principal.workspace_id
        now = to_millis(services.clock.now())

        def load() -> list[dict[str, Any]]:
            return [c.document(ws) for c in inbox.open_cards(ws, people(ws, person), now_ms=now)]

        return {"cards": await run_in_threadpool(load)}

    @r.get(
        "/v1/inbox/stream",
        summary="Server-sent events: each new card as it arrives",
        responses=documented(PERSON_ERRORS),
    )
    async def stream(
        request: Request,
        writeKey: Annotated[str, Query()],
        userId: Annotated[str | None, Query()] = None,
        anonymousId: Annotated[str | None, Query()] = None,
        userToken: Annotated[str | None, Query()] = None,
        last_event_id: Annotated[
            int | None,
            Header(alias="Last-Event-ID", ge=0, le=MAX_ROW_ID, description="the id of the last card seen"),
        ] = None,
    ) -> StreamingResponse:
        principal = auth.write_key(None, writeKey)
        person = await run_in_threadpool(auth.person, principal, userId, anonymousId, userToken)
        ws = principal.workspace_id
        after = last_event_id or 0

        def fresh(at: int, after_id: int) -> list[Card]:
            return inbox.open_cards(ws, people(ws, person), now_ms=at, after_id=after_id)

        async def events() -> AsyncIterator[bytes]:
            nonlocal after
            yield b"retry: 2000\n\n"
            polled = beat = 0.0
            version = -1
            while not await request.is_disconnected():
                now = time.monotonic()
                if inbox.version != version or now - polled >= POLL_SECONDS:
                    version, polled = inbox.version, now
                    at = to_millis(services.clock.now())
                    cards = await run_in_threadpool(fresh, at, after)
                    for c in cards:
                        after = c.id
                        yield b"id: %d\nevent: card\ndata: %s\n\n" % (c.id, orjson.dumps(c.document(ws)))
                if now - beat >= HEARTBEAT_SECONDS:
                    beat = now
                    yield b": keep-alive\n\n"
                await asyncio.sleep(0.1)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @r.post(
        "/v1/inbox/{card_id}/{mark}",
        summary="Mark a card seen, dismissed or acted on",
        responses=documented(
            {
                400: "invalid_json, invalid_gzip, request_too_large or no_user_anon_id",
                403: PERSON_ERRORS[403],
                503: "storage_unavailable, with Retry-After: the mark was not recorded, retry",
            }
        ),
    )
    async def mark_card(
        card_id: RowId,
        mark: Literal["seen", "dismiss", "act"],
        request: Request,
        authorization: AuthHeader = None,
    ) -> dict[str, Any]:
        body = await read_json(request, limit=4096)  # any content type: navigator.sendBeacon sends text/plain
        body = body if isinstance(body, dict) else {}
        principal = auth.write_key(authorization, body.get("writeKey"))
        person = await run_in_threadpool(
            auth.person, principal, body.get("userId"), body.get("anonymousId"), body.get("userToken")
        )
        user_id, anon_id = person.user_id, person.anonymous_id
        ws = principal.workspace_id
        column, event_name = MARKS[mark]
        now = services.clock.now()
        card = await run_in_threadpool(
            lambda: inbox.mark(ws, people(ws, person), card_id, column, now_ms=to_millis(now))
        )
        redirect: str | None = None
        if card is not None:
            raw = card_mark_track(
                event_name,
                column,
                card_id=card.id,
                flow_id=card.flow_id,
                delivery_key=card.delivery_key,
                user_id=user_id,
                anonymous_id=anon_id,
            )
            events = [normalize(raw, default_type=None, defaults=BatchDefaults(), received_at=now)]
            if mark == "act":
                declared, redirect = await run_in_threadpool(card_action, ws, card)
                events.extend(
                    normalize(d, default_type=None, defaults=BatchDefaults(), received_at=now)
                    for d in declared
                )
            await services.writer.append(ws, [e for e in events if isinstance(e, Event)])
        return {"id": card_id, "marked": card is not None, "redirect": redirect}

    def card_action(ws: str, card: Card) -> tuple[list[dict[str, Any]], str | None]:
        """The events the card's action declares (its one-tap link's, for the person the card
        was sent to; the click itself is the mark above) and where to go next; an expired
        action records nothing more."""
        action = card.content.get("action")
        url = action.get("url") if isinstance(action, dict) else None
        token = one_tap_token(url, ws)
        if token is None:
            return [], url if isinstance(url, str) else None
        secret = services.workspaces.signing_key(ws, now=services.clock.now())
        try:
            taken = read(secret, token, now=services.clock.now)
        except (InvalidAction, ExpiredAction):  # e.g. the goal window has passed
            return [], None
        declared = [e for e in tap_tracks(taken, via="in_app") if e["event"] != MESSAGE_CLICKED]
        redirect = taken.redirect
        return declared, redirect if redirect and urlsplit(redirect).scheme in ("http", "https") else None

    widget = files("momently.api").joinpath("static/widget.js").read_bytes()

    @r.get("/widget.js", summary="The embeddable in-app widget", include_in_schema=False)
    async def widget_js() -> Response:
        return Response(
            widget, media_type="text/javascript", headers={"Cache-Control": "public, max-age=300"}
        )

    return r
