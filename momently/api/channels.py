"""Admin API (bearer admin token): the workspace's own channel configuration. Secrets go in,
never out: every answer shows them masked.

- ``GET /v1/channels``: every configured channel (and webhook destination)
- ``GET|PUT|DELETE /v1/channels/{channel}`` (``?destination=NAME`` for webhooks)
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from starlette.concurrency import run_in_threadpool

from momently.api.auth import Authenticator
from momently.api.body import read_json
from momently.api.errors import ADMIN_TOKEN, ApiError, documented
from momently.channels.registry import NumberInUse
from momently.domain.channel_config import CONFIGURABLE, ConfigError
from momently.domain.timestamps import to_millis
from momently.services import Services
from momently.store.channel_config import SecretsKeyMissing

AuthHeader = Annotated[str | None, Header(alias="Authorization", description="Bearer mat_…")]
Destination = Annotated[str | None, Query(description="webhook destination name (default: `default`)")]
MAX_BODY = 16 * 1024
UNKNOWN = "unknown_channel: not one of email, sms, webhook, push"


def _channel(channel: str) -> str:
    if channel not in CONFIGURABLE:
        raise ApiError(404, "unknown_channel", f"configurable channels: {', '.join(CONFIGURABLE)}")
    return channel


def router(services: Services, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["channels"], responses=ADMIN_TOKEN)
    registry = services.channels

    @r.get("/v1/channels", summary="The workspace's own channel configuration (secrets masked)")
    async def list_channels(authorization: AuthHeader = None) -> dict[str, Any]:
        principal = auth.admin_token(authorization)
        items = await run_in_threadpool(registry.shown, principal.workspace_id)
        return {"channels": items}

    @r.get(
        "/v1/channels/{channel}",
        summary="One channel's configuration (secrets masked)",
        responses=documented({404: f"{UNKNOWN}, or channel_not_configured"}),
    )
    async def get_channel(
        channel: str, authorization: AuthHeader = None, destination: Destination = None
    ) -> dict[str, Any]:
        principal = auth.admin_token(authorization)
        _channel(channel)
        items = await run_in_threadpool(registry.shown, principal.workspace_id, channel)
        name = (destination or "default") if channel == "webhook" else None
        for item in items:
            if name is None or item.get("destination") == name:
                return item
        raise ApiError(404, "channel_not_configured", f"this workspace has no {channel} configuration")

    @r.put(
        "/v1/channels/{channel}",
        summary="Set the channel's configuration (secrets left out are kept)",
        responses=documented(
            {
                400: "invalid_json, invalid_gzip, request_too_large or invalid_channel_config",
                404: UNKNOWN,
                409: "number_in_use (another workspace receives on it) or secrets_key_not_set",
            }
        ),
    )
    async def put_channel(
        channel: str, request: Request, authorization: AuthHeader = None, destination: Destination = None
    ) -> dict[str, Any]:
        principal = auth.admin_token(authorization)
        _channel(channel)
        body = await read_json(request, limit=MAX_BODY)
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_json", "the body must be a JSON object of settings")
        now = to_millis(services.clock.now())
        try:
            return await run_in_threadpool(
                lambda: registry.configure(principal.workspace_id, channel, destination, body, now_ms=now)
            )
        except NumberInUse as exc:
            raise ApiError(409, "number_in_use", str(exc)) from None
        except SecretsKeyMissing as exc:
            raise ApiError(409, "secrets_key_not_set", str(exc)) from None
        except ConfigError as exc:
            raise ApiError(400, "invalid_channel_config", str(exc)) from None

    @r.delete(
        "/v1/channels/{channel}",
        summary="Remove it: the process-level settings apply again",
        responses=documented({400: "invalid_channel_config", 404: UNKNOWN}),
    )
    async def delete_channel(
        channel: str, authorization: AuthHeader = None, destination: Destination = None
    ) -> dict[str, Any]:
        principal = auth.admin_token(authorization)
        _channel(channel)
        try:
            removed = await run_in_threadpool(
                registry.unconfigure, principal.workspace_id, channel, destination
            )
        except ConfigError as exc:
            raise ApiError(400, "invalid_channel_config", str(exc)) from None
        return {"removed": removed}

    return r
