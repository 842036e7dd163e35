"""Admin API for data rights and retention: export everything about a person, erase them,
and set how long the workspace keeps events."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from momently.api.auth import Authenticator
from momently.api.errors import ADMIN_TOKEN, ApiError, documented
from momently.domain.timestamps import to_millis
from momently.services import Services

AuthHeader = Annotated[str | None, Header(alias="Authorization", description="Bearer mat_…")]
By = Annotated[Literal["userId", "anonymousId"], Query(description="which id the path holds")]


class Retention(BaseModel):
    days: int | None = Field(
        default=None,
        ge=1,
        le=36_525,
        description="delete events older than this (up to a century); null: keep all",
    )


def router(services: Services, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["data rights"], responses=ADMIN_TOKEN)

    def person(workspace_id: str, ident: str, by: str) -> str:
        pid = services.profiles.person_for(workspace_id, ("user" if by == "userId" else "anon", ident))
        if pid is None:
            raise ApiError(404, "profile_not_found", f"no person with {by} {ident!r}")
        return pid

    @r.get(
        "/v1/people/{ident}/export",
        summary="Everything stored about a person (data access request)",
        responses=documented({404: "profile_not_found"}),
    )
    async def export(ident: str, by: By = "userId", authorization: AuthHeader = None) -> dict[str, Any]:
        ws = auth.admin_token(authorization).workspace_id

        def run() -> dict[str, Any]:
            found = services.people.export(ws, person(ws, ident, by))
            if found is None:
                raise ApiError(404, "profile_not_found", f"no person with {by} {ident!r}")
            return found

        return await run_in_threadpool(run)

    @r.delete(
        "/v1/people/{ident}",
        summary="Erase a person: events, profile, messages; a tombstone stays",
        responses=documented({404: "profile_not_found"}),
    )
    async def erase(ident: str, by: By = "userId", authorization: AuthHeader = None) -> dict[str, Any]:
        ws = auth.admin_token(authorization).workspace_id
        now = to_millis(services.clock.now())

        def run() -> dict[str, Any]:
            counts = services.people.erase(ws, person(ws, ident, by), now_ms=now)
            if counts is None:
                raise ApiError(404, "profile_not_found", f"no person with {by} {ident!r}")
            return {"erased": True, "deleted": counts}

        return await run_in_threadpool(run)

    @r.put("/v1/retention", summary="How many days of events the workspace keeps (null: all)")
    async def retention(body: Retention, authorization: AuthHeader = None) -> dict[str, Any]:
        ws = auth.admin_token(authorization).workspace_id
        await run_in_threadpool(services.workspaces.set_retention, ws, body.days)
        return {"days": body.days}

    return r
