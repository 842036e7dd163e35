"""One typed ``Settings`` object, built from ``MOMENTLY_*`` environment variables and then
overridden by command-line flags. Every option is documented in README.md (Configuration)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MOMENTLY_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///./momently.db",
        description="sqlite:///PATH (default, one machine) or postgresql://USER@HOST:PORT/DB",
    )
    host: str = Field(default="127.0.0.1", description="address `momently serve` binds to")
    port: int = Field(default=8000, ge=1, le=65535)
    dedup_window_days: float = Field(default=7.0, gt=0, description="how long a messageId is remembered")
    auth_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="how long a key lookup is cached; a revoked key stops working within this",
    )
    cors_origins: list[str] = Field(
        default=["*"],
        description="origins whose pages may call ingest, the in-app inbox and push subscriptions "
        "(with the write key); allowed origins are echoed, so credentialed beacons work",
    )
    admin_cors_origins: list[str] = Field(
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
    webhook_timeout_seconds: float = Field(default=5.0, gt=0)
    allow_private_webhooks: bool = Field(
        default=False, description="allow webhook URLs on private, loopback or link-local addresses"
    )
    vapid_private_key: str | None = Field(
        default=None, description="VAPID private key (base64url) for web push; `momently push keys` makes one"
    )
    vapid_subject: str = Field(
        default="mailto:ops@example.com", description="VAPID contact (mailto: or https:)"
    )
    smtp_url: str | None = Field(
        default=None,
        description="email channel: smtp://USER:PASS@HOST:587 (STARTTLS when offered) or smtps://HOST:465",
    )
    email_from: str = Field(default="Momently <no-reply@localhost>", description="From: of emails")
    smtp_timeout_seconds: float = Field(default=10.0, gt=0)
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
    sms_timeout_seconds: float = Field(default=10.0, gt=0)
    channel_rate_limits: dict[str, float] = Field(
        default_factory=dict,
        description='provider send rates in messages/s per channel, JSON: {"sms": 10, "email": 50}',
    )
    console_path: str | None = Field(
        default=None, description="file the console channel appends JSON lines to (default: standard output)"
    )
    send_max_age_hours: float = Field(
        default=24.0,
        gt=0,
        description="a send decided longer ago than this (replays, new flows over history) is not delivered",
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
        default=2.0, gt=0, description="first retry delay (doubles, jittered)"
    )
    idle_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        description="how often an idle engine and dispatcher look for work anyway; new work "
        "normally wakes them at once, from this process or (momently worker) from others",
    )

    def with_overrides(self, **overrides: Any) -> Settings:
        """Apply CLI flags; a flag left at None keeps the environment's value."""
        return self.model_copy(update={k: v for k, v in overrides.items() if v is not None})
