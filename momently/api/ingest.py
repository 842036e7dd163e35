"""The Segment HTTP Tracking API, so existing SDKs send to Momently unchanged.

Routes ``/v1/{track,identify,page,screen,group,alias,batch,import}`` and analytics.js's
short forms ``/v1/{t,i,p,s,g,a,b}``. Success is exactly HTTP 200 and is returned only after
the events are committed to the log. See docs/ingest.md for every error code.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Final

import orjson
from fastapi import APIRouter, Request
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from momently.api.auth import Authenticator, Principal
from momently.api.body import read_json
from momently.api.errors import ApiError, error_response, storage_unavailable
from momently.domain import trust
from momently.domain.event import BatchDefaults, Event, Rejection, normalize
from momently.domain.timestamps import InvalidTimestamp, format_timestamp, parse_timestamp, to_millis
from momently.engine.log_writer import EventAppender
from momently.services import Services

log = logging.getLogger(__name__)

MAX_SINGLE_BYTES: Final = 32 * 1024
MAX_BATCH_BYTES: Final = 500 * 1024
MAX_BATCH_EVENTS: Final = 2500

SINGLE_ROUTES: Final = {
    "track": "track",
    "t": "track",
    "identify": "identify",
    "i": "identify",
    "page": "page",
    "p": "page",
    "screen": "screen",
    "s": "screen",
    "group": "group",
    "g": "group",
    "alias": "alias",
    "a": "alias",
}
BATCH_ROUTES: Final = ("batch", "import", "b")

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Committed. Body: success, accepted, duplicates, rejected[] (batch items refused)."},
    400: {
        "description": "invalid_json, invalid_gzip, request_too_large, too_many_events, invalid_batch, "
        "or (single calls) the event's own code such as no_user_anon_id."
    },
    401: {"description": "missing_write_key or invalid_write_key"},
    429: {"description": "rate_limited, with Retry-After"},
    503: {"description": "storage_unavailable, with Retry-After; SDKs retry"},
}
_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object", "additionalProperties": True}},
            "text/plain": {"schema": {"type": "string"}},
        },
        "description": "A Segment-spec message (or {batch: [...]}) as JSON, optionally gzip-encoded.",
    }
}


def _ok(accepted: int, duplicates: int, rejected: list[Rejection]) -> Response:
    body = {
        "success": True,
        "accepted": accepted,
        "duplicates": duplicates,
        "rejected": [r.as_json() for r in rejected],
    }
    return Response(orjson.dumps(body), status_code=200, media_type="application/json")


class Ingest:
    def __init__(self, services: Services, auth: Authenticator) -> None:
        self.services = services
        self.auth = auth
        self.writer: EventAppender = services.writer

    async def single(self, request: Request, msg_type: str) -> Response:
        body = await read_json(request, limit=MAX_SINGLE_BYTES)
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_body", "the body must be a JSON object")
        principal = self.auth.write_key(request.headers.get("authorization"), body.get("writeKey"))
        self.auth.charge(principal, 1)
        result = normalize(
            body, default_type=msg_type, defaults=BatchDefaults(), received_at=self.services.clock.now()
        )
        if isinstance(result, Rejection):
            raise ApiError(
                400,
                result.code,
                result.message,
                extra={"messageId": result.message_id} if result.message_id else None,
            )
        return await self._append(principal.workspace_id, self._screen(principal, [result]), [])

    async def batch(self, request: Request) -> Response:
        body = await read_json(request, limit=MAX_BATCH_BYTES)
        if not isinstance(body, dict) or not isinstance(body.get("batch"), list):
            raise ApiError(400, "invalid_batch", "the body must be an object with a 'batch' array")
        items: list[Any] = body["batch"]
        if len(items) > MAX_BATCH_EVENTS:
            raise ApiError(400, "too_many_events", f"a batch may hold at most {MAX_BATCH_EVENTS} events")
        body_key = body.get("writeKey")
        if type(body_key) is not str or not body_key:  # analytics.js puts it on each item
            body_key = next(
                (k for i in items if type(i) is dict and type(k := i.get("writeKey")) is str and k), None
            )
        principal = self.auth.write_key(request.headers.get("authorization"), body_key)
        self.auth.charge(principal, max(1, len(items)))
        now = self.services.clock.now()
        defaults = _batch_defaults(body, now)
        accepted: list[Event] = []
        rejected: list[Rejection] = []
        for index, item in enumerate(items):
            result = normalize(item, default_type=None, defaults=defaults, received_at=now, index=index)
            if isinstance(result, Rejection):
                rejected.append(result)
            else:
                accepted.append(result)
        return await self._append(principal.workspace_id, self._screen(principal, accepted), rejected)

    def _screen(self, principal: Principal, events: list[Event]) -> list[Event]:
        """Each event as its key may store it (domain.trust): what a public key without a
        user token may not say about a person is dropped, with the reason recorded."""
        sender = principal.sender
        consent_traits: tuple[str, ...] = ()
        if sender.public and any(e.type == "identify" for e in events):
            consent_traits = tuple(self.services.consent.policy(principal.workspace_id).traits)
        out = []
        for e in events:
            verified = not sender.public
            if sender.public and e.user_id is not None:
                context = e.body.get("context")
                token = context.get(trust.TOKEN_FIELD) if isinstance(context, dict) else None
                verified = token is not None and self.auth.verified(principal, e.user_id, token)
            out.append(trust.screen(e, sender, verified=verified, consent_traits=consent_traits))
        return out

    async def _append(self, workspace_id: str, events: list[Event], rejected: list[Rejection]) -> Response:
        if not events:
            return _ok(0, 0, rejected)
        try:
            outcome = await self.writer.append(workspace_id, events)
        except Exception as exc:
            raise storage_unavailable(f"ingest into {workspace_id}", exc) from None
        return _ok(outcome.stored, outcome.duplicates, rejected)


def _batch_defaults(body: dict[str, Any], received_at: datetime) -> BatchDefaults:
    context = body.get("context")
    integrations = body.get("integrations")
    sent_at = None
    if body.get("sentAt"):
        try:
            sent_at = parse_timestamp(body["sentAt"])
        except InvalidTimestamp:
            sent_at = None  # a bad envelope clock only disables skew correction
    return BatchDefaults(
        context=context if isinstance(context, dict) else None,
        integrations=integrations if isinstance(integrations, dict) else None,
        sent_at=sent_at,
        received_text=format_timestamp(received_at),
        received_ms=to_millis(received_at),
        sent_text=format_timestamp(sent_at) if sent_at is not None else None,
    )


class IngestFastPath:
    """ASGI middleware that answers ``POST`` to the tracking routes itself.

    Ingest is the hot path, and FastAPI's per-request machinery (exception middleware,
    route matching over every admin route, dependency solving) cost about a fifth of the
    server's CPU at 100-event batches. This layer sits inside the CORS and security-headers
    middleware, so browsers get the same headers, and calls the same ``Ingest`` handlers the routes
    declared in ``router`` call; those routes stay for the OpenAPI document and for every
    other method (405). An unexpected exception (a defect: bad input has its own 4xx) is
    logged and answered with a JSON 500 here, so the client's keep-alive connection survives it."""

    def __init__(self, app: ASGIApp, ingest: Ingest) -> None:
        self.app = app
        self.handlers: dict[str, Any] = {f"/v1/{path}": ingest.batch for path in BATCH_ROUTES}
        for path, msg_type in SINGLE_ROUTES.items():
            self.handlers[f"/v1/{path}"] = _single_endpoint(ingest, msg_type)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = self.handlers.get(scope["path"])
            if handler is not None:
                try:
                    response = await handler(Request(scope, receive))
                except ApiError as exc:
                    response = error_response(exc.status, exc.code, exc.message, exc.headers, exc.extra)
                except ClientDisconnect:
                    return  # nobody to answer
                except Exception:
                    log.exception("ingest request to %s failed", scope["path"])
                    response = error_response(500, "internal_error", "the server failed on this request")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def paths() -> set[str]:
    """Every tracking route's path."""
    return {f"/v1/{path}" for path in (*SINGLE_ROUTES, *BATCH_ROUTES)}


def router(ingest: Ingest) -> APIRouter:
    r = APIRouter(tags=["ingest"])
    for path, msg_type in SINGLE_ROUTES.items():
        r.add_api_route(
            f"/v1/{path}",
            _single_endpoint(ingest, msg_type),
            methods=["POST"],
            name=f"ingest_{path}",
            responses=_RESPONSES,
            openapi_extra=_BODY_DOC,
            include_in_schema=len(path) > 1,
            summary=f"Record a {msg_type} event",
        )
    for path in BATCH_ROUTES:
        r.add_api_route(
            f"/v1/{path}",
            ingest.batch,
            methods=["POST"],
            name=f"ingest_{path}",
            responses=_RESPONSES,
            openapi_extra=_BODY_DOC,
            include_in_schema=len(path) > 1,
            summary="Record a batch of up to 2,500 events (500 KB)",
        )
    return r


def _single_endpoint(ingest: Ingest, msg_type: str) -> Any:
    async def endpoint(request: Request) -> Response:
        return await ingest.single(request, msg_type)

    endpoint.__doc__ = f"Segment `{msg_type}` call: one event, at most 32 KB."
    return endpoint
