"""Admin API for experiments: list, show, and stop, ship or resume one (``momently
experiments`` does the same). Each change is recorded with its version, the admin token's id
and the reason, and appended to the event log."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Path
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from momently import experiment_admin
from momently.api.auth import Authenticator
from momently.api.errors import ADMIN_TOKEN, ApiError, documented
from momently.domain.experiments import Action, InvalidChange
from momently.services import Services

AuthHeader = Annotated[str | None, Header(alias="Authorization", description="Bearer mat_…")]
ExperimentId = Annotated[str, Path(max_length=64, description="the experiment's id (default: its flow's)")]
NOT_FOUND = documented({404: "experiment_not_found"})
CHANGE = documented(
    {
        404: "experiment_not_found",
        409: "experiment_stopped, experiment_shipped or experiment_running: it is in that state already",
    }
)


class ChangeBody(BaseModel):
    arm: str | None = Field(default=None, max_length=64, description="the arm to ship (ship only)")
    reason: str = Field(default="", max_length=1000, description="why, for the record")


OptionalBody = Annotated[ChangeBody | None, Body()]


def router(services: Services, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["experiments"], responses=ADMIN_TOKEN)

    @r.get("/v1/experiments", summary="Every experiment of the workspace's flows, with its state")
    async def list_experiments(authorization: AuthHeader = None) -> dict[str, Any]:
        ws = auth.admin_token(authorization).workspace_id

        def listing() -> list[dict[str, Any]]:
            return [experiment_admin.describe(services, ws, f) for f in experiment_admin.all_of(services, ws)]

        return {"experiments": await run_in_threadpool(listing)}

    @r.get(
        "/v1/experiments/{experiment_id}",
        summary="An experiment: arms, state, history of changes, people assigned per arm",
        responses=NOT_FOUND,
    )
    async def get_experiment(experiment_id: ExperimentId, authorization: AuthHeader = None) -> dict[str, Any]:
        ws = auth.admin_token(authorization).workspace_id

        def show() -> dict[str, Any]:
            try:
                found = experiment_admin.find(services, ws, experiment_id)
            except experiment_admin.UnknownExperiment as exc:
                raise ApiError(404, "experiment_not_found", str(exc)) from None
            return experiment_admin.describe(services, ws, found, history=True)

        return await run_in_threadpool(show)

    async def change(
        experiment_id: str, action: Action, body: ChangeBody | None, authorization: str | None
    ) -> dict[str, Any]:
        principal = auth.admin_token(authorization)
        body = body or ChangeBody()

        def run() -> dict[str, Any]:
            try:
                return experiment_admin.change(
                    services,
                    principal.workspace_id,
                    experiment_id,
                    action,
                    arm=body.arm,
                    by=f"key:{principal.key_id}",
                    reason=body.reason,
                )
            except experiment_admin.UnknownExperiment as exc:
                raise ApiError(404, "experiment_not_found", str(exc)) from None
            except InvalidChange as exc:
                raise ApiError(400 if exc.code == "unknown_arm" else 409, exc.code, str(exc)) from None

        return await run_in_threadpool(run)

    @r.post(
        "/v1/experiments/{experiment_id}/stop",
        summary="Stop: nobody is assigned, everyone gets the flow's own message",
        responses=CHANGE,
    )
    async def stop(
        experiment_id: ExperimentId, body: OptionalBody = None, authorization: AuthHeader = None
    ) -> dict[str, Any]:
        return await change(experiment_id, "stop", body, authorization)

    @r.post(
        "/v1/experiments/{experiment_id}/ship",
        summary="Ship one arm to everyone (body: {arm, reason}); nobody is assigned any more",
        responses={**CHANGE, **documented({400: "unknown_arm: not one of the experiment's arms"})},
    )
    async def ship(
        experiment_id: ExperimentId, body: OptionalBody = None, authorization: AuthHeader = None
    ) -> dict[str, Any]:
        return await change(experiment_id, "ship", body, authorization)

    @r.post(
        "/v1/experiments/{experiment_id}/resume",
        summary="Run a stopped or shipped experiment again; assignments are kept",
        responses=CHANGE,
    )
    async def resume(
        experiment_id: ExperimentId, body: OptionalBody = None, authorization: AuthHeader = None
    ) -> dict[str, Any]:
        return await change(experiment_id, "resume", body, authorization)

    return r
