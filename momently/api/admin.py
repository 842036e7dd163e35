"""Admin API (bearer admin token): profiles and the event log of a workspace."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query
from starlette.concurrency import run_in_threadpool

from momently.api.auth import Authenticator
from momently.api.errors import ADMIN_TOKEN, ApiError, documented
from momently.api.params import MAX_SEQ
from momently.domain.profile import LoggedEvent, document
from momently.services import Services

AuthHeader = Annotated[str | None, Header(alias="Authorization", description="Bearer mat_…")]


def event_document(ev: LoggedEvent) -> dict[str, Any]:
    return {"seq": ev.seq, **ev.body}


def router(services: Services, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["admin"], responses=ADMIN_TOKEN)

    def person_or_404(workspace_id: str, ident: str, by: str) -> str:
        kind = "user" if by == "userId" else "anon"
        person = services.profiles.person_for(workspace_id, (kind, ident))
        if person is None:
            raise ApiError(404, "profile_not_found", f"no profile with {by} {ident!r} (yet)")
        return person

    @r.get(
        "/v1/profiles/{ident}", summary="A person's profile", responses=documented({404: "profile_not_found"})
    )
    async def get_profile(
        ident: str,
        authorization: AuthHeader = None,
        by: Annotated[
            Literal["userId", "anonymousId"], Query(description="which id the path holds")
        ] = "userId",
    ) -> dict[str, Any]:
        principal = auth.admin_token(authorization)

        def load() -> dict[str, Any]:
            person = person_or_404(principal.workspace_id, ident, by)
            profile = services.profiles.get(principal.workspace_id, person)
            if profile is None:
                raise ApiError(404, "profile_not_found", f"no profile with {by} {ident!r} (yet)")
            return document(profile)

        return await run_in_threadpool(load)

    @r.get(
        "/v1/profiles/{ident}/events",
        summary="A person's events, newest first, paged",
        responses=documented({404: "profile_not_found"}),
    )
    async def get_profile_events(
        ident: str,
        authorization: AuthHeader = None,
        by: Annotated[Literal["userId", "anonymousId"], Query()] = "userId",
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        before: Annotated[
            int | None, Query(ge=1, le=MAX_SEQ, description="the `next` value of the previous page")
        ] = None,
    ) -> dict[str, Any]:
        principal = auth.admin_token(authorization)

        def load() -> dict[str, Any]:
            person = person_or_404(principal.workspace_id, ident, by)
            seqs = services.profiles.event_seqs(
                principal.workspace_id, person, before_seq=before, limit=limit
            )
            events = services.events.by_seqs(principal.workspace_id, seqs)
            return {
                "events": [event_document(e) for e in events],
                "next": seqs[-1] if len(seqs) == limit else None,
            }

        return await run_in_threadpool(load)

    @r.get("/v1/events", summary="The workspace's event log in sequence order")
    async def get_events(
        authorization: AuthHeader = None,
        after: Annotated[
            int, Query(ge=0, le=MAX_SEQ, description="return events with seq greater than this")
        ] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        principal = auth.admin_token(authorization)
        events = await run_in_threadpool(
            services.events.read, principal.workspace_id, after_seq=after, limit=limit
        )
        return {"events": [event_document(e) for e in events], "next": events[-1].seq if events else after}

    @r.get("/v1/identity-secret", summary="The secret your backend signs user tokens with")
    async def identity_secret(authorization: AuthHeader = None) -> dict[str, Any]:
        ws = auth.admin_token(authorization).workspace_id
        secret = await run_in_threadpool(services.workspaces.identity_secret, ws, now=services.clock.now())
        return {"identitySecret": secret}

    @r.post("/v1/identity-secret/rotate", summary="A new identity secret: old user tokens stop working")
    async def rotate_identity_secret(authorization: AuthHeader = None) -> dict[str, Any]:
        ws = auth.admin_token(authorization).workspace_id
        secret = await run_in_threadpool(
            services.workspaces.rotate_identity_secret, ws, now=services.clock.now()
        )
        return {"identitySecret": secret}

    return r
