"""``POST /v1/clock``: move the server's virtual clock (``momently serve --clock virtual``).

For trying flows by hand against a running server: send events, jump a day, see the nudge.
The clock is the whole server's, so any workspace's admin token moves it; a server on the
system clock answers 409. Time only moves forward. The move walks from one due timer or
delivery to the next and lets the engine and the dispatcher catch up at each
(``momently.virtual_time``), so it answers once everything due by then has happened.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from momently.api.auth import Authenticator
from momently.api.errors import ADMIN_TOKEN, ApiError, documented
from momently.clock import ManualClock
from momently.domain.durations import InvalidDuration, parse_duration
from momently.domain.timestamps import InvalidTimestamp, format_timestamp, parse_timestamp
from momently.services import Services
from momently.virtual_time import Runaway, advance_serving

AuthHeader = Annotated[str | None, Header(alias="Authorization", description="Bearer mat_…")]


class ClockMove(BaseModel):
    """Exactly one of ``advance`` (a duration: ``1d``, ``2h30m``) or ``to`` (an ISO-8601 time)."""

    model_config = ConfigDict(extra="forbid")
    advance: str | None = Field(default=None, max_length=64, examples=["1d"])
    to: str | None = Field(default=None, max_length=64, examples=["2026-03-16T09:00:00Z"])


def router(services: Services, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["clock"], responses=ADMIN_TOKEN)
    lock = asyncio.Lock()  # one move at a time: two walks of one clock would interleave

    @r.post(
        "/v1/clock",
        summary="Move the virtual clock forward (serve --clock virtual only)",
        responses={
            200: {"description": '`{"now": ..., "from": ...}`: the new time, once everything due has run'},
            **documented(
                {
                    400: "invalid_clock_move (not exactly one of advance/to, a bad duration or time) "
                    "or time_backwards",
                    409: "clock_not_virtual: the server runs on the system clock",
                    503: "clock_runaway: something was due at every stop; the clock stopped short",
                }
            ),
        },
    )
    async def move(body: ClockMove, authorization: AuthHeader = None) -> dict[str, Any]:
        auth.admin_token(authorization)
        clock = services.clock
        if not isinstance(clock, ManualClock):
            raise ApiError(
                409, "clock_not_virtual", "this server runs on the system clock (serve --clock virtual)"
            )
        if (body.advance is None) == (body.to is None):
            raise ApiError(
                400, "invalid_clock_move", 'give exactly one of "advance" (e.g. "1d") or "to" (ISO-8601)'
            )
        before = clock.now()
        try:
            if body.advance is not None:
                target = before + timedelta(milliseconds=parse_duration(body.advance))
            else:
                target = parse_timestamp(body.to)
        except (InvalidDuration, InvalidTimestamp) as exc:
            raise ApiError(400, "invalid_clock_move", str(exc)) from None
        async with lock:
            before = clock.now()
            if target < before:
                raise ApiError(
                    400,
                    "time_backwards",
                    f"time only moves forward: the clock is at {format_timestamp(before)}",
                )
            try:
                await run_in_threadpool(advance_serving, services, clock, target)
            except Runaway as exc:
                raise ApiError(503, "clock_runaway", str(exc)) from None
        return {"now": format_timestamp(clock.now()), "from": format_timestamp(before)}

    return r
