"""Web push subscriptions from browsers, authenticated like ingest:
``POST /v1/push/subscriptions`` with the PushSubscription JSON the browser's
``pushManager.subscribe()`` returned and the id the site knows the person by. With the public
write key the call must carry the person's ``userToken`` (identity verification), so a page
cannot file its own endpoint under someone else; a server key may name anyone."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from starlette.concurrency import run_in_threadpool

from momently.api.auth import Authenticator, Person
from momently.api.body import read_json
from momently.api.errors import WRITE_KEY, ApiError, documented
from momently.channels.webpush import endpoint_refused
from momently.domain.timestamps import to_millis
from momently.services import Services
from momently.store.push import Subscription

AuthHeader = Annotated[str | None, Header(alias="Authorization")]
MAX_BODY = 8 * 1024


def _identity(person: Person) -> tuple[str, str]:
    if person.user_id:
        return ("user", person.user_id)
    assert person.anonymous_id is not None
    return ("anon", person.anonymous_id)


def _subscription(body: dict[str, Any]) -> Subscription:
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
    return Subscription(endpoint, keys["p256dh"], keys["auth"])


def router(services: Services, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["push"], responses=WRITE_KEY)

    @r.post(
        "/v1/push/subscriptions",
        summary="Register a browser's web push subscription for a person",
        responses=documented(
            {
                400: "invalid_json, invalid_gzip, request_too_large, no_user_anon_id, invalid_subscription "
                "or push_endpoint_not_allowed",
                403: "identity_unverified: a public key needs the person's user token",
            }
        ),
    )
    async def subscribe(request: Request, authorization: AuthHeader = None) -> dict[str, Any]:
        body = await read_json(request, limit=MAX_BODY)
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_json", "the body must be a JSON object")
        principal = auth.write_key(authorization, body.get("writeKey"))
        person = await run_in_threadpool(
            auth.person, principal, body.get("userId"), body.get("anonymousId"), body.get("userToken")
        )
        identity, sub = _identity(person), _subscription(body)
        refused = await run_in_threadpool(endpoint_refused, services.push_http, sub.endpoint)
        if refused is not None:
            raise ApiError(
                400,
                "push_endpoint_not_allowed",
                f"the endpoint is not on a known push service's public address ({refused})",
            )
        now = to_millis(services.clock.now())
        await run_in_threadpool(services.push.add, principal.workspace_id, identity, sub, now_ms=now)
        return {"subscribed": True}

    @r.delete(
        "/v1/push/subscriptions",
        summary="Remove a subscription (the browser unsubscribed)",
        responses=documented(
            {
                400: "invalid_json, invalid_gzip, request_too_large, no_user_anon_id or invalid_subscription",
                403: "identity_unverified: a public key needs the person's user token",
            }
        ),
    )
    async def unsubscribe(request: Request, authorization: AuthHeader = None) -> dict[str, Any]:
        body = await read_json(request, limit=MAX_BODY)
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_json", "the body must be a JSON object")
        principal = auth.write_key(authorization, body.get("writeKey"))
        endpoint = body.get("endpoint")
        if not isinstance(endpoint, str):
            raise ApiError(400, "invalid_subscription", "send the subscription's endpoint")
        owner: tuple[str, str] | None = None
        if principal.sender.public:  # only the verified person's own subscription
            person = await run_in_threadpool(
                auth.person, principal, body.get("userId"), body.get("anonymousId"), body.get("userToken")
            )
            owner = _identity(person)
        removed = await run_in_threadpool(services.push.remove, principal.workspace_id, endpoint, owner)
        return {"removed": removed}

    return r
