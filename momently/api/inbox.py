"""The in-app inbox, for the widget (authenticated like ingest, by the public write key):

- ``GET /v1/inbox`` lists the cards to show now;
- ``GET /v1/inbox/stream`` is a server-sent-events stream of new cards (``EventSource`` cannot
  send headers, so the write key goes in the query string; ``Last-Event-ID`` resumes);
- ``POST /v1/inbox/{card}/seen|dismiss|act`` mark a card, each logged once as ``Message
  Seen`` / ``Message Dismissed`` / ``Message Clicked`` (seen minus sent is the
  acknowledgement latency). The action itself is the card's one-tap link, which records the
  flow's goal.
- ``GET /widget.js`` is the embeddable widget.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from importlib.resources import files
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Header, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from momently.api.auth import Authenticator
from momently.api.body import read_json
from momently.api.errors import WRITE_KEY, ApiError, documented
from momently.api.params import MAX_ROW_ID, RowId
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
POLL_SECONDS = 2.0  # cards added by an engine in another process
HEARTBEAT_SECONDS = 15.0


def router(services: Services, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["in-app"], responses=WRITE_KEY)
    inbox = services.inbox

    def people(workspace_id: str, user_id: str | None, anonymous_id: str | None) -> list[str]:
        found = []
        for kind, value in (("user", user_id), ("anon", anonymous_id)):
            pid = services.profiles.person_for(workspace_id, (kind, value)) if value else None
            if pid is not None and pid not in found:
                found.append(pid)
        return found

    def who(user_id: str | None, anonymous_id: str | None) -> None:
        if not user_id and not anonymous_id:
            raise ApiError(400, "no_user_anon_id", "userId or anonymousId is required")

    @r.get(
        "/v1/inbox",
        summary="The person's cards to show now (in-app channel)",
        responses=documented({400: "no_user_anon_id"}),
    )
    async def list_cards(
        authorization: AuthHeader = None,
        writeKey: Annotated[str | None, Query()] = None,
        userId: Annotated[str | None, Query()] = None,
        anonymousId: Annotated[str | None, Query()] = None,
    ) -> dict[str, Any]:
        principal = auth.write_key(authorization, writeKey)
        who(userId, anonymousId)
        ws = principal.workspace_id
        now = to_millis(services.clock.now())

        def load() -> list[dict[str, Any]]:
            return [c.document() for c in inbox.open_cards(ws, people(ws, userId, anonymousId), now_ms=now)]

        return {"cards": await run_in_threadpool(load)}

    @r.get(
        "/v1/inbox/stream",
        summary="Server-sent events: each new card as it arrives",
        responses=documented({400: "no_user_anon_id"}),
    )
    async def stream(
        request: Request,
        writeKey: Annotated[str, Query()],
        userId: Annotated[str | None, Query()] = None,
        anonymousId: Annotated[str | None, Query()] = None,
        last_event_id: Annotated[
            int | None,
            Header(alias="Last-Event-ID", ge=0, le=MAX_ROW_ID, description="the id of the last card seen"),
        ] = None,
    ) -> StreamingResponse:
        principal = auth.write_key(None, writeKey)
        who(userId, anonymousId)
        ws = principal.workspace_id
        after = last_event_id or 0

        def fresh(at: int, after_id: int) -> list[Card]:
            return inbox.open_cards(ws, people(ws, userId, anonymousId), now_ms=at, after_id=after_id)

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
                        yield b"id: %d\nevent: card\ndata: %s\n\n" % (c.id, orjson.dumps(c.document()))
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
        user_id, anon_id = body.get("userId"), body.get("anonymousId")
        user_id = user_id if isinstance(user_id, str) and user_id else None
        anon_id = anon_id if isinstance(anon_id, str) and anon_id else None
        who(user_id, anon_id)
        ws = principal.workspace_id
        column, event_name = MARKS[mark]
        now = services.clock.now()
        card = await run_in_threadpool(
            lambda: inbox.mark(ws, people(ws, user_id, anon_id), card_id, column, now_ms=to_millis(now))
        )
        if card is not None:
            raw = {
                "type": "track",
                "event": event_name,
                "userId": user_id,
                "anonymousId": anon_id,
                "messageId": f"inbox:{card.id}:{column}",
                "properties": {
                    "channel": "in_app",
                    "card_id": card.id,
                    "flow_id": card.flow_id,
                    "delivery_key": card.delivery_key,
                },
            }
            ev = normalize(raw, default_type=None, defaults=BatchDefaults(), received_at=now)
            if isinstance(ev, Event):
                await services.writer.append(ws, [ev])
        return {"id": card_id, "marked": card is not None}

    widget = files("momently.api").joinpath("static/widget.js").read_bytes()

    @r.get("/widget.js", summary="The embeddable in-app widget", include_in_schema=False)
    async def widget_js() -> Response:
        return Response(
            widget, media_type="text/javascript", headers={"Cache-Control": "public, max-age=300"}
        )

    return r
