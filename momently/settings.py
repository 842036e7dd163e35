"""One typed ``Settings`` object, built from ``MOMENTLY_*`` environment variables and then
overridden by command-line flags. Every option is documented in README.md (Configuration).

Every value is checked here, when the settings are built, not when a channel first uses it:
a bad value is an ``InvalidSettings`` naming the variable and what is wrong, with credentials
masked (see ``momently.settings_errors``), which the command line prints as one line each."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Annotated, Any
from urllib.parse import SplitResult, urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from momently.domain.addresses import DEFAULT_PUSH_HOSTS, LOOPBACK_AND_PRIVATE
from momently.settings_errors import InvalidSettings, mask_url, problems_from


class Settings(BaseSettings):
    # inf and nan parse as floats but make no sense as a timeout, window or rate; an empty
    # variable (MOMENTLY_SMTP_URL= in a compose file) means unset, as it always did
    model_config = SettingsConfigDict(
        env_prefix="MOMENTLY_", extra="ignore", allow_inf_nan=False, env_ignore_empty=True
    )

    @classmethod
    def from_env(cls) -> Settings:
        """The settings from the environment, or ``InvalidSettings`` listing every bad value."""
        try:
            return cls()
        except ValidationError as exc:
            raise InvalidSettings(problems_from(exc, env_prefix="MOMENTLY_")) from None
        except SettingsError as exc:  # a JSON-typed value without its own parser
            raise InvalidSettings.from_settings_error(exc, env_prefix="MOMENTLY_") from None

    database_url: str = Field(
        default="sqlite:///./momently.db",
        description="sqlite:///PATH (default, one machine) or postgresql://USER@HOST:PORT/DB",
    )
    host: str = Field(default="127.0.0.1", description="address `momently serve` binds to")
    port: int = Field(default=8000, ge=1, le=65535)
    dedup_window_days: float = Field(
        default=7.0, gt=0, le=3650, description="how long a messageId is remembered"
    )
    auth_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        le=86_400,
        description="how long a key lookup is cached; a revoked key stops working within this",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default=["*"],
        description="origins whose pages may call ingest, the in-app inbox and push subscriptions "
        "(with the write key); allowed origins are echoed, so credentialed beacons work",
    )
    admin_cors_origins: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="origins whose pages may call the admin API (none: no CORS headers on it)",
    )
    log_writer_socket: str | None = Field(
        default=None,
        description="set by `serve --workers N` for its HTTP workers: the Unix socket of the "
        "log writer process they hand events to",
    )
    run_engine: bool = Field(
        default=True, description="run the engine (profiles, segments, flows) inside `serve`"
    )
    default_timezone: str = Field(
        default="UTC",
        description="time zone for people whose profile has none (date triggers, local-time conditions)",
    )

    @field_validator("default_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from momently.domain.profile import valid_timezone

        if valid_timezone(value) is None:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/Amsterdam)")
        return value

    log_level: str = Field(default="info")
    public_url: str | None = Field(
        default=None,
        description="base URL people reach this server at, for one-tap links (default http://HOST:PORT)",
    )
    webhook_url: str | None = Field(default=None, description="where the webhook channel POSTs messages")
    webhook_secret: str | None = Field(
        default=None,
        description="Standard Webhooks signing secret, whsec_<base64>; required for the webhook channel",
    )
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, le=3600)
    secrets_key: str | None = Field(
        default=None,
        description="Fernet key that encrypts workspaces' channel secrets in the database; "
        "`momently channels key` makes one",
    )
    channel_cache_seconds: float = Field(
        default=10.0,
        ge=0,
        description="how long a workspace's channels are kept built; another process's change "
        "to a channel configuration is used within this",
    )
    webhook_allow_networks: list[str] = Field(
        default_factory=list,
        description='networks webhooks may reach besides public addresses, JSON: ["10.0.0.0/8"]',
    )
    allow_private_webhooks: bool = Field(
        default=False,
        description="deprecated: adds loopback and private networks to MOMENTLY_WEBHOOK_ALLOW_NETWORKS "
        "(never link-local)",
    )
    push_hosts: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PUSH_HOSTS),
        description="the only hosts web push endpoints may be on (*.domain for subdomains), JSON list",
    )
    push_allow_networks: list[str] = Field(
        default_factory=list,
        description="networks push endpoints may reach besides public addresses (a test push service)",
    )

    @field_validator("webhook_allow_networks", "push_allow_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        from momently.domain.addresses import parse_networks

        parse_networks(value)  # raises with the bad entry named
        return value

    def webhook_networks(self) -> list[str]:
        """The networks webhooks may reach, the deprecated boolean included."""
        extra = list(LOOPBACK_AND_PRIVATE) if self.allow_private_webhooks else []
        return [*self.webhook_allow_networks, *extra]

    vapid_private_key: str | None = Field(
        default=None, description="VAPID private key (base64url) for web push; `momently push keys` makes one"
    )
    vapid_subject: str = Field(
        default="mailto:ops@example.com", description="VAPID contact (mailto: or https:)"
    )
    smtp_url: str | None = Field(
        default=None,
        description="email channel: smtp://USER:PASS@HOST:587 (STARTTLS required), smtps://HOST:465, "
        "or smtp+insecure://HOST:25 (plain text, local test servers only)",
    )
    smtp_require_tls: bool = Field(
        default=True,
        description="refuse to log in or send over smtp:// unless the server upgrades with STARTTLS; "
        "false only for local test servers",
    )
    email_from: str = Field(default="Momently <no-reply@localhost>", description="From: of emails")
    smtp_timeout_seconds: float = Field(default=10.0, gt=0, le=3600)
    sms_account_sid: str | None = Field(
        default=None, description="SMS channel: Twilio-compatible account SID (enables the channel)"
    )
    sms_auth_token: str | None = Field(
        default=None, description="the account's auth token: API password and webhook signing key"
    )
    sms_from: str | None = Field(default=None, description="sending number (E.164) or messaging service SID")
    sms_base_url: str = Field(
        default="https://api.twilio.com", description="provider API base URL (any Twilio-compatible API)"
    )
    sms_help_text: str = Field(
        default="Reply STOP to unsubscribe. Msg&data rates may apply.",
        description="the answer to a HELP reply",
    )
    sms_timeout_seconds: float = Field(default=10.0, gt=0, le=3600)
    channel_rate_limits: Annotated[dict[str, Annotated[float, Field(gt=0)]], NoDecode] = Field(
        default_factory=dict,
        description='provider send rates in messages/s per channel, JSON: {"sms": 10, "email": 50}',
    )
    console_path: str | None = Field(
        default=None, description="file the console channel appends JSON lines to (default: standard output)"
    )
    send_max_age_hours: float = Field(
        default=24.0,
        gt=0,
        le=87_600,
        description="a send decided longer ago than this (replays, new flows over history) is not delivered",
    )
    allowed_lateness_seconds: float = Field(
        default=300.0,
        ge=0,
        le=86_400,
        description="how long absence and inactivity deadlines wait for late events before acting; "
        "a workspace's guardrails (allowedLateness) and a flow (lateness) can set their own",
    )
    engine_cache_people: int = Field(
        default=100_000,
        ge=0,
        description="people the engine keeps in memory between batches (about 4 KB each); 0 turns it off",
    )
    dispatch_max_attempts: int = Field(
        default=5, ge=1, description="attempts per channel before falling back"
    )
    dispatch_backoff_seconds: float = Field(
        default=2.0, gt=0, le=86_400, description="first retry delay (doubles, jittered)"
    )
    ledger_key: str | None = Field(
        default=None,
        description="the consent ledger's MAC key (32+ characters, same in every process); unset: "
        "SQLite keeps a random one in DATABASE.ledger-key, PostgreSQL refuses to start",
    )
    push_subscriptions_per_person: int = Field(
        default=5, ge=1, description="web push subscriptions kept per person; the oldest go first"
    )
    dispatch_lease_seconds: float = Field(
        default=60.0,
        ge=0.1,
        description="how long a dispatcher holds the deliveries it claimed without renewing; renewed "
        "every third of it while they are sent, and taken over by another dispatcher when it lapses",
    )
    dispatch_batch_size: int = Field(default=100, ge=1, description="deliveries a dispatcher claims at once")
    dispatch_recheck_seconds: float = Field(
        default=0.25,
        ge=0,
        description="how stale consent and kill switches may be when a send starts: the ledger's "
        "high-water mark and the policies are re-read at most this often while a batch is sent",
    )
    idle_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        le=3600,
        description="how often an idle engine and dispatcher look for work anyway; new work "
        "normally wakes them at once, from this process or (momently worker) from others",
    )
    health_min_free_disk_mb: float = Field(
        default=100.0,
        ge=0,
        description="/healthz fails when the SQLite database's file system has less free space than this",
    )

    # checks of values the types alone do not catch ------------------------------------------
    @field_validator("cors_origins", "admin_cors_origins", "channel_rate_limits", mode="before")
    @classmethod
    def _json(cls, value: Any) -> Any:
        """JSON-typed variables: parsed here so a mistake is named like any other."""
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except ValueError:
            shown = value if len(value) <= 60 else value[:57] + "..."
            raise ValueError(f"expected JSON, got {shown!r}") from None

    @field_validator("database_url")
    @classmethod
    def _database(cls, value: str) -> str:
        scheme = value.partition("://")[0].partition("+")[0].lower() if "://" in value else ""
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise ValueError(f"expected sqlite:///PATH or postgresql://USER@HOST/DB, got {mask_url(value)!r}")
        _split(value)
        if scheme == "sqlite" and value.split("://", 1)[1].lstrip("/") in ("", ":memory:"):
            raise ValueError("an in-memory SQLite database cannot be shared; give a file path")
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        import ipaddress

        try:
            ipaddress.ip_address(value)
            return value
        except ValueError:
            pass
        labels = value.rstrip(".").split(".")
        if not value or not all(_HOST_LABEL.fullmatch(label) for label in labels):
            raise ValueError(f"expected an IP address or a host name, got {value!r}")
        return value

    @field_validator("public_url", "webhook_url", "sms_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not _is_http_url(value):
            raise ValueError(f"expected an http:// or https:// URL, got {mask_url(value)!r}")
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = _split(value)
        if parts.scheme not in ("smtp", "smtps", "smtp+insecure") or not parts.hostname:
            raise ValueError(
                "expected smtp://HOST[:PORT], smtps://HOST[:PORT] or smtp+insecure://HOST[:PORT], "
                f"got {mask_url(value)!r}"
            )
        return value

    @field_validator("secrets_key")
    @classmethod
    def _secrets_key(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            good = len(base64.urlsafe_b64decode(value.encode("ascii"))) == 32
        except (ValueError, binascii.Error):
            good = False
        if not good:
            raise ValueError("expected 32 url-safe base64-encoded bytes (`momently channels key` makes one)")
        return value

    @field_validator("ledger_key")
    @classmethod
    def _ledger_key(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 32:
            raise ValueError("expected at least 32 characters (keep it outside the database)")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: str | None) -> str | None:
        import base64
        import binascii

        if value is not None:
            try:
                ok = bool(base64.b64decode(value.removeprefix("whsec_"), validate=True))
            except binascii.Error:
                ok = False
            if not ok:
                raise ValueError("expected whsec_ followed by base64 (value not shown)")
        return value

    @field_validator("vapid_private_key")
    @classmethod
    def _vapid_key(cls, value: str | None) -> str | None:
        if value is not None:
            from py_vapid import Vapid02

            try:
                Vapid02.from_string(value)
            except Exception:  # py_vapid raises whatever its decoders raise
                raise ValueError(
                    "expected a base64url VAPID private key as `momently push keys` prints (value not shown)"
                ) from None
        return value

    @field_validator("vapid_subject")
    @classmethod
    def _vapid_subject(cls, value: str) -> str:
        if not (value.startswith("mailto:") and "@" in value) and not _is_http_url(value, https_only=True):
            raise ValueError(f"expected mailto:ADDRESS or an https:// URL, got {value!r}")
        return value

    @field_validator("email_from")
    @classmethod
    def _email_from(cls, value: str) -> str:
        from email.utils import parseaddr

        if "@" not in parseaddr(value)[1]:
            raise ValueError(f"expected an address such as 'Shop <no-reply@shop.example>', got {value!r}")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.lower() not in LOG_LEVELS:
            raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {value!r}")
        return value.lower()

    def with_overrides(self, **overrides: Any) -> Settings:
        """Apply CLI flags; a flag left at None keeps the environment's value. The result is
        validated like the environment; a bad flag is named as the flag (``--port``)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if not given:
            return self
        try:
            return type(self).model_validate({**self.model_dump(), **given})
        except ValidationError as exc:
            raise InvalidSettings(problems_from(exc, env_prefix="MOMENTLY_", flags=set(given))) from None


LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
_HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")  # _: compose service names


def _split(url: str) -> SplitResult:
    """The URL's parts, or a ValueError saying what is wrong, its password masked (urllib's
    own errors quote no part of the URL but the port)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"expected a valid URL ({exc}), got {mask_url(url)!r}") from None
    if port == 0:
        raise ValueError(f"expected a port from 1 to 65535, got {mask_url(url)!r}")
    return parts


def _is_http_url(value: str, *, https_only: bool = False) -> bool:
    try:
        parts = _split(value)
    except ValueError:
        return False
    schemes = ("https",) if https_only else ("http", "https")
    return parts.scheme in schemes and bool(parts.hostname)
