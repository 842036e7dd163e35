"""Admin API for flow reports: the same KPIs as ``momently report``, as JSON, with the
workspace's small cells hidden (docs/reports.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from starlette.concurrency import run_in_threadpool

from momently import reports
from momently.api.auth import Authenticator
from momently.api.errors import ADMIN_TOKEN, ApiError, documented
from momently.services import Services

AuthHeader = Annotated[str | None, Header(alias="Authorization", description="Bearer mat_…")]
Since = Annotated[
    str,
    Query(
        max_length=32,
        description="the window: enrollments decided this long ago until now (a duration: 30d, 12h)",
    ),
]
Epsilon = Annotated[
    float | None,
    Query(
        gt=0,
        le=reports.MAX_EPSILON,
        description="add Laplace noise of scale 1/ε to every published count (ε-differential privacy "
        "per count; smaller is noisier); fresh noise on every request",
    ),
]
INVALID_REPORT = documented({400: "invalid_report (a malformed since)"})


def router(services: Services, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["reports"], responses=ADMIN_TOKEN)

    def build(workspace_id: str, since: str, epsilon: float | None, flow_id: str | None) -> dict[str, Any]:
        try:
            options = reports.options_for(services, workspace_id, since=since, epsilon=epsilon)
            return reports.workspace_report(services, workspace_id, options, flow_id=flow_id)
        except reports.InvalidReport as exc:
            raise ApiError(400, "invalid_report", str(exc)) from None
        except reports.UnknownFlow as exc:
            raise ApiError(404, "flow_not_found", str(exc)) from None

    @r.get(
        "/v1/reports/flows",
        summary="KPIs of every flow with enrollments in the window (small cells hidden)",
        responses=INVALID_REPORT,
    )
    async def all_flows(
        authorization: AuthHeader = None, since: Since = "30d", noise_epsilon: Epsilon = None
    ) -> dict[str, Any]:
        principal = auth.admin_token(authorization)
        return await run_in_threadpool(build, principal.workspace_id, since, noise_epsilon, None)

    @r.get(
        "/v1/reports/flows/{flow_id}",
        summary="One flow's KPIs: funnel, suppressions, conversion, latency (small cells hidden)",
        responses={**INVALID_REPORT, **documented({404: "flow_not_found"})},
    )
    async def one_flow(
        flow_id: str, authorization: AuthHeader = None, since: Since = "30d", noise_epsilon: Epsilon = None
    ) -> dict[str, Any]:
        principal = auth.admin_token(authorization)
        report = await run_in_threadpool(build, principal.workspace_id, since, noise_epsilon, flow_id)
        return report

    return r
