"""Resolving write keys and admin tokens to workspaces, with a short cache.

The cache keeps key lookups off the ingest hot path; a revoked key stops working within
``auth_cache_seconds``. Rate-limit buckets are kept here too because they are per workspace
and per process, and need the workspace's configured rate that the lookup returns.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
from dataclasses import dataclass

from momently.api.errors import ApiError
from momently.domain import ratelimit
from momently.domain.credentials import KeyKind
from momently.store.workspaces import Workspaces


@dataclass(frozen=True, slots=True)
class Principal:
    workspace_id: str
    rate_limit: float | None


class Authenticator:
    def __init__(self, workspaces: Workspaces, *, cache_seconds: float) -> None:
        self.workspaces = workspaces
        self.cache_seconds = cache_seconds
        self._cache: dict[tuple[str, KeyKind], tuple[Principal | None, float]] = {}
        self._buckets: dict[str, ratelimit.Bucket] = {}
        self._lock = threading.Lock()

    def resolve(self, secret: str, kind: KeyKind) -> Principal | None:
        now = time.monotonic()
        cached = self._cache.get((secret, kind))
        if cached is not None and cached[1] > now:
            return cached[0]
        principal: Principal | None = None
        workspace_id = self.workspaces.authenticate(secret, kind)
        if workspace_id is not None:
            ws = self.workspaces.get(workspace_id)
            principal = Principal(workspace_id, ws.rate_limit if ws else None)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[(secret, kind)] = (principal, now + self.cache_seconds)
        return principal

    def write_key(self, authorization: str | None, body_key: object) -> Principal:
        """The Segment rule: HTTP Basic with the write key as username, or ``writeKey`` in the body."""
        secret: str | None = None
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() == "basic":
                try:
                    secret = base64.b64decode(value.strip(), validate=True).decode().split(":", 1)[0]
                except (binascii.Error, UnicodeDecodeError):
                    raise ApiError(
                        401, "invalid_write_key", "the Authorization header is not valid Basic auth"
                    ) from None
            elif scheme.lower() == "bearer":
                secret = value.strip()
        if not secret and isinstance(body_key, str):
            secret = body_key
        if not secret:
            raise ApiError(
                401,
                "missing_write_key",
                "send the write key as the Basic auth username or as writeKey in the body",
            )
        principal = self.resolve(secret, KeyKind.WRITE)
        if principal is None:
            raise ApiError(401, "invalid_write_key", "the write key is unknown or revoked")
        return principal

    def admin_token(self, authorization: str | None) -> Principal:
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise ApiError(401, "missing_admin_token", "send an admin token as 'Authorization: Bearer mat_…'")
        principal = self.resolve(value.strip(), KeyKind.ADMIN)
        if principal is None:
            raise ApiError(401, "invalid_admin_token", "the admin token is unknown or revoked")
        return principal

    def charge(self, principal: Principal, events: int) -> None:
        """Apply the workspace's ingest rate limit (events per second, burst of two seconds)."""
        if principal.rate_limit is None:
            return
        rate = principal.rate_limit
        with self._lock:
            verdict = ratelimit.take(
                self._buckets.get(principal.workspace_id),
                rate=rate,
                burst=rate * 2,
                cost=events,
                now=time.monotonic(),
            )
            self._buckets[principal.workspace_id] = verdict.bucket
        if not verdict.allowed:
            raise ApiError(
                429,
                "rate_limited",
                f"workspace {principal.workspace_id} is over its rate of {rate:g} events/s",
                headers={"Retry-After": str(verdict.retry_after)},
            )
