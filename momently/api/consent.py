"""Admin API for the consent ledger: record grants and revokes, stop-contact, a person's
history and current state, the workspace policy, and chain verification."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query
from pydantic import BaseModel, Field, model_validator
from starlette.concurrency import run_in_threadpool

from momently.alignment import personalisation_alignment
from momently.api.auth import Authenticator
from momently.api.errors import ADMIN_TOKEN, ApiError, documented
from momently.domain import consent
from momently.domain.durations import HINT, parse_duration
from momently.domain.timestamps import format_timestamp, from_millis, parse_timestamp, to_millis
from momently.services import Services

AuthHeader = Annotated[str | None, Header(alias="Authorization", description="Bearer mat_…")]
Channel = Literal["*", "email", "sms", "push", "in_app", "webhook", "console"]
Purpose = Literal["*", "transactional", "marketing", "personalisation"]


class Who(BaseModel):
    userId: str | None = Field(default=None, min_length=1, max_length=512)
    anonymousId: str | None = Field(default=None, min_length=1, max_length=512)

    @model_validator(mode="after")
    def _someone(self) -> Who:
        if not self.userId and not self.anonymousId:
            raise ValueError("userId or anonymousId is required")
        return self


class ConsentChange(Who):
    channel: Channel
    purpose: Purpose
    granted: bool
    expiresAt: str | None = Field(default=None, description="ISO 8601; a grant counts until then")
    expiresIn: str | None = Field(default=None, description="or a duration from now: 365d, 12w")
    source: Literal["api", "import", "dashboard"] = "api"
    note: str | None = Field(default=None, max_length=500)


class StopContact(Who):
    channel: Channel = "*"
    includeTransactional: bool = Field(
        default=False, description="also stop transactional messages (receipts, ETAs)"
    )
    note: str | None = Field(default=None, max_length=500)


def record_document(r: consent.Record) -> dict[str, Any]:
    g = r.grant
    return {
        "seq": r.seq,
        "userId": g.user_id,
        "anonymousId": g.anonymous_id,
        "channel": g.channel,
        "purpose": g.purpose,
        "granted": g.granted,
        "source": g.source,
        "at": format_timestamp(from_millis(g.at_ms)),
        "expiresAt": format_timestamp(from_millis(g.expires_ms)) if g.expires_ms is not None else None,
        "note": g.note,
        "ref": g.ref,
        "keyId": g.key_id,
        "hash": r.hash,
        "verified": r.verified,
    }


def state_document(records: list[consent.Record], policy: consent.Policy, now_ms: int) -> dict[str, Any]:
    """For every channel and purpose: may we send now, and if not, why."""
    out: dict[str, Any] = {}
    for channel in consent.CHANNELS:
        out[channel] = {}
        for purpose in consent.PURPOSES:
            v = consent.check(records, channel, purpose, policy, now_ms=now_ms)
            out[channel][purpose] = {"allowed": v.allowed, "reason": v.reason, "record": v.seq}
    return out


def _expiry(change: ConsentChange, now_ms: int) -> int | None:
    if change.expiresAt and change.expiresIn:
        raise ApiError(400, "invalid_expiry", "give expiresAt or expiresIn, not both")
    try:
        if change.expiresAt:
            return to_millis(parse_timestamp(change.expiresAt))
        if change.expiresIn:
            return now_ms + parse_duration(change.expiresIn)
    except ValueError as exc:
        raise ApiError(400, "invalid_expiry", f"{exc} ({HINT})") from None
    except OverflowError:  # a date at the calendar's edge, moved past it by its UTC offset
        raise ApiError(
            400, "invalid_expiry", f"expiresAt {change.expiresAt!r} is not a date in range"
        ) from None
    return None


def router(services: Services, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["consent"], responses=ADMIN_TOKEN)
    ledger = services.consent

    def write(workspace_id: str, grants: list[consent.Grant]) -> list[consent.Record]:
        try:
            return ledger.record(workspace_id, grants)
        except consent.ConsentError as exc:
            raise ApiError(400, "invalid_consent", str(exc)) from None

    @r.post(
        "/v1/consent",
        summary="Record a grant or a revoke for one channel and purpose",
        responses=documented({400: "invalid_expiry or invalid_consent"}),
    )
    async def change(body: ConsentChange, authorization: AuthHeader = None) -> dict[str, Any]:
        principal = auth.admin_token(authorization)
        now = to_millis(services.clock.now())
        grant = consent.Grant(
            body.userId,
            body.anonymousId,
            body.channel,
            body.purpose,
            body.granted,
            body.source,
            now,
            _expiry(body, now),
            body.note,
            key_id=principal.key_id,
        )
        records = await run_in_threadpool(write, principal.workspace_id, [grant])
        return {"records": [record_document(x) for x in records]}

    @r.post(
        "/v1/consent/stop",
        summary="Stop contact: revoke everything but transactional messages (or everything)",
        responses=documented({400: "invalid_consent"}),
    )
    async def stop(body: StopContact, authorization: AuthHeader = None) -> dict[str, Any]:
        principal = auth.admin_token(authorization)
        grants = consent.stop_contact(
            body.userId,
            body.anonymousId,
            at_ms=to_millis(services.clock.now()),
            include_transactional=body.includeTransactional,
            channel=body.channel,
            note=body.note,
            key_id=principal.key_id,
        )
        records = await run_in_threadpool(write, principal.workspace_id, grants)
        return {"records": [record_document(x) for x in records]}

    @r.get(
        "/v1/consent",
        summary="A person's consent history and what it allows now",
        responses=documented({400: "no_user_anon_id"}),
    )
    async def history(
        authorization: AuthHeader = None,
        userId: Annotated[str | None, Query()] = None,
        anonymousId: Annotated[str | None, Query()] = None,
    ) -> dict[str, Any]:
        principal = auth.admin_token(authorization)
        if not userId and not anonymousId:
            raise ApiError(400, "no_user_anon_id", "give userId or anonymousId")
        ws = principal.workspace_id

        def load() -> dict[str, Any]:
            records = ledger.of_person(ws, services.profiles, user_id=userId, anonymous_id=anonymousId)
            now = to_millis(services.clock.now())
            return {
                "records": [record_document(x) for x in records],
                "current": state_document(records, ledger.policy(ws), now),
            }

        return await run_in_threadpool(load)

    @r.get("/v1/consent/policy", summary="Which purposes need an opt-in on which channels")
    async def get_policy(authorization: AuthHeader = None) -> dict[str, Any]:
        principal = auth.admin_token(authorization)
        policy = await run_in_threadpool(ledger.policy, principal.workspace_id)
        return policy.as_json()

    @r.put(
        "/v1/consent/policy",
        summary="Replace the policy (missing parts keep their defaults)",
        responses=documented({400: "invalid_policy"}),
    )
    async def put_policy(body: dict[str, Any], authorization: AuthHeader = None) -> dict[str, Any]:
        principal = auth.admin_token(authorization)
        now = to_millis(services.clock.now())
        try:
            policy = await run_in_threadpool(ledger.set_policy, principal.workspace_id, body, now_ms=now)
        except consent.ConsentError as exc:
            raise ApiError(400, "invalid_policy", str(exc)) from None
        return policy.as_json()

    @r.get(
        "/v1/consent/alignment",
        summary="Consent-aligned personalisation rate, recomputed from the log and the ledger",
        responses=documented({400: "invalid_duration"}),
    )
    async def alignment(
        authorization: AuthHeader = None,
        since: Annotated[str | None, Query(description="only sends in this last duration, e.g. 30d")] = None,
    ) -> dict[str, Any]:
        principal = auth.admin_token(authorization)
        now = to_millis(services.clock.now())
        try:
            since_ms = now - parse_duration(since) if since else 0
        except ValueError as exc:
            raise ApiError(400, "invalid_duration", f"{exc} ({HINT})") from None
        report = await run_in_threadpool(
            personalisation_alignment, services, principal.workspace_id, since_ms=since_ms
        )
        return report.as_json()

    @r.get("/v1/consent/verify", summary="Check the ledger's hash chain for edited or deleted rows")
    async def verify(authorization: AuthHeader = None) -> dict[str, Any]:
        principal = auth.admin_token(authorization)

        def run() -> dict[str, Any]:
            report = ledger.verify(principal.workspace_id)
            return {
                "records": report.records,
                "ok": report.ok,
                "breaks": [{"seq": b.seq, "problem": b.problem} for b in report.breaks],
            }

        return await run_in_threadpool(run)

    @r.get("/v1/consent/head", summary="The ledger's latest record and MAC, to anchor elsewhere")
    async def head(authorization: AuthHeader = None) -> dict[str, Any]:
        principal = auth.admin_token(authorization)
        found = await run_in_threadpool(ledger.head, principal.workspace_id)
        return {"workspace": principal.workspace_id, "seq": found[0], "mac": found[1]}

    return r
