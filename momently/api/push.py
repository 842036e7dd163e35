"""Web push subscriptions from browsers, authenticated like ingest (the write key):
``POST /v1/push/subscriptions`` with the PushSubscription JSON the browser's
``pushManager.subscribe()`` returned and the id the site knows the person by."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from starlette.concurrency import run_in_threadpool

from momently.api.auth import Authenticator
from momently.api.body import read_json
from momently.api.errors import WRITE_KEY, ApiError, documented
from momently.domain.timestamps import to_millis
from momently.services import Services
from momently.store.push import Subscription

AuthHeader = Annotated[str | None, Header(alias="Authorization")]
MAX_BODY = 8 * 1024


def _subscription(body: Any) -> tuple[tuple[str, str], Subscription]:
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    user, anon = body.get("userId"), body.get("anonymousId")
    if isinstance(user, str) and user:
        identity = ("user", user)
    elif isinstance(anon, str) and anon:
        identity = ("anon", anon)
    else:
        raise ApiError(400, "no_user_anon_id", "userId or anonymousId is required")
    sub = body.get("subscription")
    keys = sub.get("keys") if isinstance(sub, dict) else None
    endpoint = sub.get("endpoint") if isinstance(sub, dict) else None
    if (
        not isinstance(endpoint, str)
        or not endpoint.startswith("https://")
        or not isinstance(keys, dict)
        or not isinstance(keys.get("p256dh"), str)
        or not isinstance(keys.get("auth"), str)
    ):
        raise ApiError(
            400,
            "invalid_subscription",
            "subscription must be a PushSubscription: {endpoint: https://…, keys: {p256dh, auth}}",
        )
    return identity, Subscription(endpoint, keys["p256dh"], keys["auth"])


def router(services: Services, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["push"], responses=WRITE_KEY)

    @r.post(
        "/v1/push/subscriptions",
        summary="Register a browser's web push subscription for a person",
        responses=documented(
            {400: "invalid_json, invalid_gzip, request_too_large, no_user_anon_id or invalid_subscription"}
        ),
    )
    async def subscribe(request: Request, authorization: AuthHeader = None) -> dict[str, Any]:
        body = await read_json(request, limit=MAX_BODY)
        principal = auth.write_key(authorization, body.get("writeKey") if isinstance(body, dict) else None)
        identity, sub = _subscription(body)
        now = to_millis(services.clock.now())
        await run_in_threadpool(services.push.add, principal.workspace_id, identity, sub, now_ms=now)
        return {"subscribed": True}

    @r.delete(
        "/v1/push/subscriptions",
        summary="Remove a subscription (the browser unsubscribed)",
        responses=documented({400: "invalid_json, invalid_gzip, request_too_large or invalid_subscription"}),
    )
    async def unsubscribe(request: Request, authorization: AuthHeader = None) -> dict[str, Any]:
        body = await read_json(request, limit=MAX_BODY)
        principal = auth.write_key(authorization, body.get("writeKey") if isinstance(body, dict) else None)
        endpoint = body.get("endpoint") if isinstance(body, dict) else None
        if not isinstance(endpoint, str):
            raise ApiError(400, "invalid_subscription", "send the subscription's endpoint")
        removed = await run_in_threadpool(services.push.remove, principal.workspace_id, endpoint)
        return {"removed": removed}

    return r
