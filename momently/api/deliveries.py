"""Admin API for the outbox: list deliveries, retry a dead one."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query
from starlette.concurrency import run_in_threadpool

from momently.api.auth import Authenticator
from momently.api.errors import ADMIN_TOKEN, ApiError, documented
from momently.api.params import RowId
from momently.domain.timestamps import format_timestamp, from_millis, to_millis
from momently.services import Services
from momently.store.outbox import Delivery

AuthHeader = Annotated[str | None, Header(alias="Authorization", description="Bearer mat_…")]
Status = Literal["pending", "sending", "sent", "dead", "suppressed", "expired"]


def delivery_document(d: Delivery) -> dict[str, Any]:
    return {
        "id": d.id,
        "key": d.key,
        "flow": d.flow_id,
        "flowVersion": d.flow_version,
        "personId": d.person_id,
        "occurrence": d.occurrence,
        "variant": d.variant,
        "channels": d.channels,
        "channel": d.channel,
        "status": d.status,
        "attempts": d.attempts,
        "nextAttemptAt": format_timestamp(from_millis(d.next_attempt_ms)),
        "lastError": d.last_error,
        "providerId": d.provider_id,
        "createdAt": format_timestamp(from_millis(d.created_ms)),
        "updatedAt": format_timestamp(from_millis(d.updated_ms)),
    }


def router(services: Services, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["deliveries"], responses=ADMIN_TOKEN)

    @r.get(
        "/v1/deliveries",
        summary="Deliveries, newest first; filter by status (dead = failed on every channel)",
    )
    async def list_deliveries(
        authorization: AuthHeader = None,
        status: Annotated[list[Status] | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        principal = auth.admin_token(authorization)
        rows = await run_in_threadpool(
            lambda: services.outbox.list(principal.workspace_id, statuses=status, limit=limit)
        )
        return {"deliveries": [delivery_document(d) for d in rows]}

    @r.post(
        "/v1/deliveries/{delivery_id}/retry",
        summary="Send a dead delivery again from the first channel",
        responses=documented({404: "delivery_not_found: no dead delivery with this id"}),
    )
    async def retry_delivery(delivery_id: RowId, authorization: AuthHeader = None) -> dict[str, Any]:
        principal = auth.admin_token(authorization)
        now = to_millis(services.clock.now())
        done = await run_in_threadpool(services.outbox.retry, principal.workspace_id, delivery_id, now_ms=now)
        if not done:
            raise ApiError(404, "delivery_not_found", f"no dead delivery {delivery_id}")
        services.dispatcher.wake()
        return {"id": delivery_id, "status": "pending"}

    return r
