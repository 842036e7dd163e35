"""Admin API for flows and segments: the same operations as ``momently flows`` and
``momently segments`` (validate, apply as a new version, list, show, versions, pause, resume,
archive, enrollments, members). Bodies are YAML or JSON (JSON is YAML)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request
from starlette.concurrency import run_in_threadpool

from momently import catalog
from momently.api.auth import Authenticator
from momently.api.errors import ADMIN_TOKEN, ApiError, documented
from momently.api.params import Version
from momently.domain.definitions import load
from momently.domain.timestamps import format_timestamp, from_millis, to_millis
from momently.services import Services
from momently.store.definitions import Stored, UnknownDefinition

AuthHeader = Annotated[str | None, Header(alias="Authorization", description="Bearer mat_…")]
MAX_DEFINITION_BYTES = 256 * 1024
INVALID_DEFINITION = documented({400: "invalid_definition (with problems[]) or definition_too_large"})
FLOW_NOT_FOUND = documented({404: "flow_not_found"})
SEGMENT_NOT_FOUND = documented({404: "segment_not_found"})


def stored_document(s: Stored, *, with_body: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": s.id,
        "kind": s.kind,
        "version": s.version,
        "status": s.status or None,
        "updatedAt": format_timestamp(from_millis(s.updated_ms)) if s.updated_ms else None,
        "createdAt": format_timestamp(from_millis(s.created_ms)) if s.created_ms else None,
        "source": s.source,
    }
    if s.kind == "flow":
        trigger = s.body.get("trigger", {})
        out["trigger"] = next((k for k in trigger if k != "where"), None)
        out["tier"] = s.body.get("tier", "B")
    if with_body:
        out["definition"] = catalog.document(s.kind, s.body)
    return out


def router(services: Services, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["flows"], responses=ADMIN_TOKEN)

    def get_or_404(
        workspace_id: str, kind: Literal["flow", "segment"], id_: str, version: int | None = None
    ) -> Stored:
        try:
            return services.definitions.get(workspace_id, kind, id_, version)
        except UnknownDefinition as exc:
            raise ApiError(404, f"{kind}_not_found", str(exc)) from exc

    async def put(
        kind: Literal["flow", "segment"], id_: str, request: Request, authorization: str | None
    ) -> dict[str, Any]:
        principal = auth.admin_token(authorization)
        raw = await request.body()
        if len(raw) > MAX_DEFINITION_BYTES:
            raise ApiError(
                400, "definition_too_large", f"a definition may be at most {MAX_DEFINITION_BYTES} bytes"
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ApiError(400, "invalid_definition", "the body must be UTF-8 YAML or JSON") from exc
        # parsed off the event loop: a slow parse must not hold up ingest or any other request
        docs, problems = await run_in_threadpool(load, text, f"{kind}:{id_}")
        for p in problems:
            if p.code:  # beyond the YAML bounds
                raise ApiError(
                    400, p.code, p.message, extra={"problems": [{"line": p.line, "message": p.message}]}
                )
        # the definition, optionally with ``kind: events`` catalogs of the names it uses
        # (applied with it: a flow on an event the log has not seen yet)
        main = [d for d in docs if d.kind != "events"]
        if not problems and len(main) != 1:
            raise ApiError(
                400,
                "invalid_definition",
                f"send exactly one {kind} document, optionally with 'kind: events' documents",
            )
        if main and main[0].kind != kind:
            raise ApiError(
                400, "invalid_definition", f"this is a {main[0].kind} document; use /v1/{main[0].kind}s/"
            )
        if main and main[0].id != id_:
            raise ApiError(
                400, "invalid_definition", f"the document's id '{main[0].id}' does not match the path '{id_}'"
            )

        def apply() -> dict[str, Any]:
            try:
                applied = catalog.apply(
                    services,
                    principal.workspace_id,
                    catalog.Loaded(docs, problems),
                    by=f"key:{principal.key_id}",
                )
            except catalog.InvalidDefinitions as exc:
                raise ApiError(
                    400,
                    "invalid_definition",
                    f"{len(exc.problems)} problem(s) in the definition",
                    extra={"problems": [{"line": p.line, "message": p.message} for p in exc.problems]},
                ) from exc
            [a] = [x for x in applied if x.kind == kind]
            out: dict[str, Any] = {"id": a.id, "kind": a.kind, "version": a.version, "changed": a.changed}
            catalogs = [
                {"id": x.id, "version": x.version, "changed": x.changed}
                for x in applied
                if x.kind == "events"
            ]
            if catalogs:
                out["events"] = catalogs
            return out

        return await run_in_threadpool(apply)

    async def set_status(
        kind: Literal["flow", "segment"],
        id_: str,
        status: Literal["active", "paused", "archived"],
        authorization: str | None,
    ) -> dict[str, Any]:
        principal = auth.admin_token(authorization)

        def change() -> dict[str, Any]:
            try:
                s = services.definitions.set_status(
                    principal.workspace_id, kind, id_, status, now_ms=to_millis(services.clock.now())
                )
            except UnknownDefinition as exc:
                raise ApiError(404, f"{kind}_not_found", str(exc)) from exc
            services.projector.wake()
            return stored_document(s, with_body=False)

        return await run_in_threadpool(change)

    # flows -------------------------------------------------------------------------------
    @r.get("/v1/flows", summary="Every flow's current version and status")
    async def list_flows(authorization: AuthHeader = None) -> dict[str, Any]:
        principal = auth.admin_token(authorization)
        heads = await run_in_threadpool(services.definitions.heads, principal.workspace_id, "flow")
        return {"flows": [stored_document(s, with_body=False) for s in heads]}

    @r.put(
        "/v1/flows/{flow_id}",
        summary="Create or update a flow (YAML or JSON body); an unchanged body keeps its version",
        responses=INVALID_DEFINITION,
    )
    async def put_flow(flow_id: str, request: Request, authorization: AuthHeader = None) -> dict[str, Any]:
        return await put("flow", flow_id, request, authorization)

    @r.get("/v1/flows/{flow_id}", summary="A flow's current version", responses=FLOW_NOT_FOUND)
    async def get_flow(flow_id: str, authorization: AuthHeader = None) -> dict[str, Any]:
        principal = auth.admin_token(authorization)
        return stored_document(await run_in_threadpool(get_or_404, principal.workspace_id, "flow", flow_id))

    @r.get(
        "/v1/flows/{flow_id}/versions",
        summary="Every version of a flow, oldest first",
        responses=FLOW_NOT_FOUND,
    )
    async def flow_versions(flow_id: str, authorization: AuthHeader = None) -> dict[str, Any]:
        principal = auth.admin_token(authorization)

        def versions() -> list[Stored]:
            try:
                return services.definitions.versions(principal.workspace_id, "flow", flow_id)
            except UnknownDefinition as exc:
                raise ApiError(404, "flow_not_found", str(exc)) from exc

        return {"versions": [stored_document(s) for s in await run_in_threadpool(versions)]}

    @r.get(
        "/v1/flows/{flow_id}/versions/{version}", summary="One version of a flow", responses=FLOW_NOT_FOUND
    )
    async def flow_version(
        flow_id: str, version: Version, authorization: AuthHeader = None
    ) -> dict[str, Any]:
        principal = auth.admin_token(authorization)
        return stored_document(
            await run_in_threadpool(get_or_404, principal.workspace_id, "flow", flow_id, version)
        )

    @r.post(
        "/v1/flows/{flow_id}/pause",
        summary="Pause a flow: new enrollments are suppressed with flow_paused",
        responses=FLOW_NOT_FOUND,
    )
    async def pause_flow(flow_id: str, authorization: AuthHeader = None) -> dict[str, Any]:
        return await set_status("flow", flow_id, "paused", authorization)

    @r.post("/v1/flows/{flow_id}/resume", summary="Resume a paused flow", responses=FLOW_NOT_FOUND)
    async def resume_flow(flow_id: str, authorization: AuthHeader = None) -> dict[str, Any]:
        return await set_status("flow", flow_id, "active", authorization)

    @r.delete(
        "/v1/flows/{flow_id}",
        summary="Archive a flow (versions are kept; applying it again revives it)",
        responses=FLOW_NOT_FOUND,
    )
    async def archive_flow(flow_id: str, authorization: AuthHeader = None) -> dict[str, Any]:
        return await set_status("flow", flow_id, "archived", authorization)

    @r.get(
        "/v1/flows/{flow_id}/enrollments",
        summary="A flow's enrollments and their decisions, oldest first",
        responses=FLOW_NOT_FOUND,
    )
    async def flow_enrollments(
        flow_id: str,
        authorization: AuthHeader = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        principal = auth.admin_token(authorization)
        await run_in_threadpool(get_or_404, principal.workspace_id, "flow", flow_id)
        rows = await run_in_threadpool(
            lambda: services.engine_state.enrollments(principal.workspace_id, flow_id=flow_id, limit=limit)
        )
        return {
            "enrollments": [
                {
                    "personId": e.person_id,
                    "occurrence": e.occurrence,
                    "flowVersion": e.flow_version,
                    "trigger": e.trigger_kind,
                    "triggerSeq": e.trigger_seq,
                    "decidedAt": format_timestamp(from_millis(e.decided_ms)),
                    "outcome": e.outcome,
                    "reason": e.reason,
                    **e.detail,
                }
                for e in rows
            ]
        }

    # segments ----------------------------------------------------------------------------
    @r.get("/v1/segments", summary="Every segment with its current size")
    async def list_segments(authorization: AuthHeader = None) -> dict[str, Any]:
        principal = auth.admin_token(authorization)
        heads = await run_in_threadpool(services.definitions.heads, principal.workspace_id, "segment")
        sizes = await run_in_threadpool(services.engine_state.segment_sizes, principal.workspace_id)
        return {
            "segments": [
                {**stored_document(s, with_body=False), "members": sizes.get(s.id, 0)} for s in heads
            ]
        }

    @r.put(
        "/v1/segments/{segment_id}",
        summary="Create or update a segment (YAML or JSON body)",
        responses=INVALID_DEFINITION,
    )
    async def put_segment(
        segment_id: str, request: Request, authorization: AuthHeader = None
    ) -> dict[str, Any]:
        return await put("segment", segment_id, request, authorization)

    @r.get("/v1/segments/{segment_id}", summary="A segment's current version", responses=SEGMENT_NOT_FOUND)
    async def get_segment(segment_id: str, authorization: AuthHeader = None) -> dict[str, Any]:
        principal = auth.admin_token(authorization)
        return stored_document(
            await run_in_threadpool(get_or_404, principal.workspace_id, "segment", segment_id)
        )

    @r.delete("/v1/segments/{segment_id}", summary="Archive a segment", responses=SEGMENT_NOT_FOUND)
    async def archive_segment(segment_id: str, authorization: AuthHeader = None) -> dict[str, Any]:
        return await set_status("segment", segment_id, "archived", authorization)

    @r.get(
        "/v1/segments/{segment_id}/members",
        summary="A segment's members, paged by person id",
        responses=SEGMENT_NOT_FOUND,
    )
    async def segment_members(
        segment_id: str,
        authorization: AuthHeader = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        after: Annotated[str | None, Query(description="the `next` value of the previous page")] = None,
    ) -> dict[str, Any]:
        principal = auth.admin_token(authorization)
        await run_in_threadpool(get_or_404, principal.workspace_id, "segment", segment_id)
        rows = await run_in_threadpool(
            lambda: services.engine_state.segment_members(
                principal.workspace_id, segment_id, limit=limit, after=after
            )
        )
        people = await run_in_threadpool(_people, services, principal.workspace_id, [p for p, _ in rows])
        return {
            "members": [
                {"personId": p, "userId": people.get(p), "since": format_timestamp(from_millis(since))}
                for p, since in rows
            ],
            "next": rows[-1][0] if len(rows) == limit else None,
        }

    return r


def _people(services: Services, workspace_id: str, persons: list[str]) -> dict[str, str | None]:
    with services.db.read() as conn:
        loaded = services.profiles.load(conn, workspace_id, persons)
    return {p: loaded[p].user_id if p in loaded else None for p in persons}
