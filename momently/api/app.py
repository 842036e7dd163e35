"""The ASGI application: ingest, admin API, health, OpenAPI at /openapi.json."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

import momently
from momently import health, heap
from momently.api import (
    actions,
    admin,
    channels,
    clock,
    consent,
    deliveries,
    errors,
    experiments,
    flows,
    guardrails,
    inbox,
    ingest,
    people,
    push,
    reports,
    sms,
    unsubscribe,
)
from momently.api.auth import Authenticator
from momently.api.cors import CorsPolicies
from momently.api.security_headers import SecurityHeaders
from momently.services import Services


def create_app(services: Services, *, manage_services: bool = True, settle_heap: bool = False) -> FastAPI:
    """Build the app. With ``manage_services`` the app starts and stops the log writer and
    engine with its own lifespan (``momently serve``); tests may manage them instead.
    ``settle_heap`` is for a process that serves until it exits (``momently.heap``)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if manage_services:
            await run_in_threadpool(services.start)
        if settle_heap:
            heap.settle_after_startup()
        try:
            yield
        finally:
            if manage_services:
                await run_in_threadpool(services.close)

    # The log writer thread holds the database write lock while it commits; each time it
    # re-takes the GIL after a SQLite call it would otherwise wait out the default 5 ms switch
    # interval behind request parsing, stalling every other writer behind that lock.
    sys.setswitchinterval(0.0005)
    app = FastAPI(
        title="Momently",
        version=momently.__version__,
        description="Segment-compatible ingest and admin API of Momently. Errors are "
        '`{"code": ..., "message": ...}`; see docs/ingest.md.',
        lifespan=lifespan,
        # FastAPI's built-in OpenTelemetry looks up the global providers (reading the
        # environment) on every request even when none is configured: about 5% of ingest's
        # CPU. Momently does not export telemetry, so it is off.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    errors.install(app)
    auth = Authenticator(services.workspaces, cache_seconds=services.settings.auth_cache_seconds)
    ingest_handlers = ingest.Ingest(services, auth)
    app.include_router(ingest.router(ingest_handlers))
    app.include_router(admin.router(services, auth))
    app.include_router(flows.router(services, auth))
    app.include_router(experiments.router(services, auth))
    app.include_router(deliveries.router(services, auth))
    app.include_router(actions.router(services))
    app.include_router(push.router(services, auth))
    app.include_router(consent.router(services, auth))
    app.include_router(unsubscribe.router(services))
    app.include_router(sms.router(services))
    app.include_router(channels.router(services, auth))
    app.include_router(inbox.router(services, auth))
    app.include_router(guardrails.router(services, auth))
    app.include_router(people.router(services, auth))
    app.include_router(clock.router(services, auth))
    app.include_router(reports.router(services, auth))
    # The last added is the outermost: security headers on every answer (preflights
    # included), then CORS, then the ingest fast path, which gets CORS like any route.
    app.add_middleware(ingest.IngestFastPath, ingest=ingest_handlers)
    app.add_middleware(
        CorsPolicies,
        browser_origins=services.settings.cors_origins,
        admin_origins=services.settings.admin_cors_origins,
        browser_paths=ingest.paths(),
        browser_prefixes=("/v1/inbox", "/v1/push/"),
    )
    app.add_middleware(
        SecurityHeaders,
        public_paths={"/widget.js", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"},
    )

    @app.get(
        "/healthz",
        tags=["ops"],
        summary="Readiness: database, disk, engine loops, channels",
        responses={
            200: {"description": '`"status": "ok"` or `"degraded"` (a channel keeps failing)'},
            503: {"description": '`"status": "failing"`: the database, its disk or a loop of this process'},
        },
    )
    async def healthz() -> Response:
        """``ok`` or ``degraded`` (200), ``failing`` (503), with each part's check; see
        ``momently.health`` for what each status means and which probe should use it."""
        status, body = await run_in_threadpool(health.report, services)
        return Response(orjson.dumps(body), status_code=status, media_type="application/json")

    @app.get("/livez", tags=["ops"], summary="Liveness: the process answers")
    async def livez() -> Response:
        """Always 200 while the process serves HTTP: for a liveness probe, which restarts the
        process. Use /healthz for readiness: a restart does not fix an unreachable database."""
        return Response(orjson.dumps({"status": "ok", "process": os.getpid()}), media_type="application/json")

    return app


def app_from_env() -> FastAPI:
    """Factory for ``momently serve --workers N``: each worker process builds its own app from
    the environment the supervisor set. Workers ingest and serve the API; the engine runs
    once, in the supervisor, not in every worker."""
    from momently.settings import Settings

    settings = Settings().with_overrides(run_engine=False)
    return create_app(Services.build(settings, migrate=False), settle_heap=True)
