"""Admin API for the send-time guardrails: the workspace's quiet hours, frequency caps and
kill switches (pause the workspace or one channel; a flow is paused with
``POST /v1/flows/{id}/pause``). Queued messages wait while paused; every dispatcher sees a
change within seconds."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from momently.api.auth import Authenticator
from momently.api.errors import ADMIN_TOKEN, ApiError, documented
from momently.domain.guardrails import InvalidGuardrails, Policy
from momently.domain.timestamps import to_millis
from momently.services import Services

AuthHeader = Annotated[str | None, Header(alias="Authorization", description="Bearer mat_…")]


class Switch(BaseModel):
    channel: str | None = None  # none: the whole workspace


def router(services: Services, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["guardrails"], responses=ADMIN_TOKEN)
    store = services.guardrails

    @r.get("/v1/guardrails", summary="Quiet hours, frequency caps and kill switches of the workspace")
    async def get_policy(authorization: AuthHeader = None) -> dict[str, Any]:
        principal = auth.admin_token(authorization)
        policy = await run_in_threadpool(store.get, principal.workspace_id, fresh=True)
        return policy.as_json()

    @r.put(
        "/v1/guardrails",
        summary="Replace the guardrail policy",
        responses=documented({400: "invalid_guardrails"}),
    )
    async def put_policy(body: dict[str, Any], authorization: AuthHeader = None) -> dict[str, Any]:
        principal = auth.admin_token(authorization)
        try:
            policy = Policy.from_json(body)
        except InvalidGuardrails as exc:
            raise ApiError(400, "invalid_guardrails", str(exc)) from None
        now = to_millis(services.clock.now())
        stored = await run_in_threadpool(store.put, principal.workspace_id, policy, now_ms=now)
        return stored.as_json()

    async def switch(workspace_id: str, body: Switch, on: bool) -> dict[str, Any]:
        now = to_millis(services.clock.now())
        stored = await run_in_threadpool(
            lambda: store.update(workspace_id, lambda p: p.with_pause(body.channel, on), now_ms=now)
        )
        if not on:
            services.dispatcher.wake()
        return stored.as_json()

    @r.post("/v1/guardrails/pause", summary="Kill switch: pause the workspace, or one channel")
    async def pause(body: Switch, authorization: AuthHeader = None) -> dict[str, Any]:
        return await switch(auth.admin_token(authorization).workspace_id, body, True)

    @r.post("/v1/guardrails/resume", summary="Resume the workspace, or one channel")
    async def resume(body: Switch, authorization: AuthHeader = None) -> dict[str, Any]:
        return await switch(auth.admin_token(authorization).workspace_id, body, False)

    return r
