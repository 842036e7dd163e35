"""Which channels a workspace sends through: its own configuration where it has one
(``store.channel_config``), the process-level settings otherwise (a single-workspace install).

A workspace with its own configuration for a channel never falls back to the process-level
one for that channel, even when its own cannot be used (say, the secrets key changed): its
messages must not leave through another tenant's account. Webhooks have named destinations;
a flow picks one with ``webhook: {destination: crm}``, and ``default`` otherwise.

Built channels are cached per workspace, dropped when the configuration changes in this
process, and rebuilt after ``ttl_seconds`` so changes made by another process arrive too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from momently.channels.base import Channel
from momently.channels.email import EmailChannel
from momently.channels.guarded_http import GuardedHttp
from momently.channels.sms import SmsChannel
from momently.channels.webhook import WebhookChannel
from momently.channels.webpush import WebPushChannel
from momently.domain.channel_config import (
    DEFAULT_DESTINATION,
    ChannelConfig,
    ConfigError,
    instance_name,
    merged,
    shown,
    split,
)
from momently.store.channel_config import ChannelConfigs
from momently.store.push import PushSubscriptions

log = logging.getLogger(__name__)


class NumberInUse(ConfigError):
    """An SMS number can receive for one workspace only: inbound messages are routed by it."""


def destination_of(flow: Mapping[str, Any] | None) -> str:
    """The webhook destination a flow chose (``webhook: {destination: crm}``)."""
    options = flow.get("webhook") if flow else None
    name = options.get("destination") if isinstance(options, dict) else None
    return name if isinstance(name, str) and name else DEFAULT_DESTINATION


class ChannelFactory:
    """Builds a channel from a workspace's configuration, sharing what can be shared (the
    guarded HTTP pools, the push subscriptions)."""

    def __init__(
        self,
        *,
        webhook_http: GuardedHttp,
        push_http: GuardedHttp,
        push: PushSubscriptions,
        status_callback: str,
        smtp_timeout: float = 10.0,
        smtp_require_tls: bool = True,
        sms_timeout: float = 10.0,
        sms_base_url: str = "https://api.twilio.com",
    ) -> None:
        self.webhook_http = webhook_http
        self.push_http = push_http
        self.push = push
        self.status_callback = status_callback
        self.smtp_timeout = smtp_timeout
        self.smtp_require_tls = smtp_require_tls
        self.sms_timeout = sms_timeout
        self.sms_base_url = sms_base_url

    def build(self, c: ChannelConfig) -> Channel:
        if c.channel == "email":
            return EmailChannel(
                c.value("smtp_url"),
                c.value("from"),
                timeout=self.smtp_timeout,
                require_tls=self.smtp_require_tls,
            )
        if c.channel == "sms":
            return SmsChannel(
                account_sid=c.value("account_sid"),
                auth_token=c.value("auth_token"),
                sender=c.value("from"),
                base_url=c.value("base_url") or self.sms_base_url,
                status_callback=self.status_callback,
                timeout=self.sms_timeout,
            )
        if c.channel == "webhook":
            return WebhookChannel(c.value("url"), c.value("secret"), http=self.webhook_http)
        if c.channel == "push":
            return WebPushChannel(
                self.push,
                c.value("vapid_private_key"),
                c.value("vapid_subject") or "mailto:ops@example.com",
                http=self.push_http,
            )
        raise ConfigError(f"unknown channel {c.channel!r}")


class ChannelRegistry:
    def __init__(
        self,
        defaults: Mapping[str, Channel],
        configs: ChannelConfigs | None = None,
        factory: ChannelFactory | None = None,
        *,
        ttl_seconds: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.defaults = dict(defaults)
        self.configs = configs
        self.factory = factory
        self.ttl_seconds = ttl_seconds
        self._monotonic = monotonic
        self._cache: dict[str, tuple[float, dict[str, Channel]]] = {}
        self._retired: list[Channel] = []  # replaced, closed at the end (a send may still use one)
        self._lock = threading.Lock()

    def channels_for(self, workspace_id: str) -> Mapping[str, Channel]:
        """The workspace's channels by name; webhook destinations as ``webhook:NAME``."""
        if self.configs is None or self.factory is None:
            return self.defaults
        now = self._monotonic()
        with self._lock:
            hit = self._cache.get(workspace_id)
            if hit is not None and now - hit[0] < self.ttl_seconds:
                return hit[1]
        built = self._build(workspace_id)
        with self._lock:
            old = self._cache.get(workspace_id)
            self._cache[workspace_id] = (now, built)
            if old is not None:
                self._retired.extend(ch for ch in old[1].values() if ch not in self.defaults.values())
        return built

    def channel(self, workspace_id: str, name: str, flow: Mapping[str, Any] | None = None) -> Channel | None:
        """The channel a delivery of ``flow`` goes through, or None when not configured."""
        channels = self.channels_for(workspace_id)
        if name != "webhook":
            return channels.get(name)
        destination = destination_of(flow)
        if any(key.startswith("webhook:") for key in channels):  # the workspace's own destinations
            return channels.get(f"webhook:{destination}")
        # the process-level webhook is the only, unnamed, destination
        return channels.get("webhook") if destination == DEFAULT_DESTINATION else None

    # managing a workspace's configuration (the CLI and the admin API) -----------------------
    def _configs(self) -> ChannelConfigs:
        if self.configs is None:
            raise ConfigError("channel configuration is not stored by this process")
        return self.configs

    def configure(
        self, workspace_id: str, channel: str, name: str | None, values: Mapping[str, Any], *, now_ms: int
    ) -> dict[str, Any]:
        """Sets (or updates: secrets left out keep their stored value) one channel of a
        workspace; returns it as shown (secrets masked). Raises ConfigError."""
        configs = self._configs()
        instance = instance_name(channel, name)
        existing = configs.get(workspace_id, channel, instance)
        settings, secrets = split(channel, merged(existing, values))
        self._check_provider_host(channel, settings, secrets)
        if channel == "sms":
            for number in settings["numbers"]:
                owner = configs.workspace_for_number(number)
                if owner is not None and owner != workspace_id:
                    raise NumberInUse(f"{number} already receives for another workspace")
        config = ChannelConfig(workspace_id, channel, instance, settings, secrets)
        configs.put(config, now_ms=now_ms)
        self.invalidate(workspace_id)
        return shown(config)

    def _check_provider_host(
        self, channel: str, settings: Mapping[str, Any], secrets: Mapping[str, str]
    ) -> None:
        """A workspace's SMS API or SMTP server must be on an address webhooks may reach: a
        workspace admin must not point the server at the inside of its network."""
        url = settings.get("base_url") if channel == "sms" else secrets.get("smtp_url")
        if not url or self.factory is None:
            return
        parts = urlsplit(url)
        try:
            port = parts.port or 443
        except ValueError:
            raise ConfigError(f"the {channel} server URL has a bad port") from None
        if not parts.hostname:
            raise ConfigError(f"the {channel} server URL has no host")
        http = self.factory.webhook_http
        try:
            addresses = list(http.resolver(parts.hostname, port))
        except (OSError, UnicodeError):
            raise ConfigError(f"the {channel} server {parts.hostname!r} does not resolve") from None
        if http.policy.refused(addresses) is not None:
            raise ConfigError(
                f"the {channel} server {parts.hostname!r} is not on a public address "
                "(MOMENTLY_WEBHOOK_ALLOW_NETWORKS opens networks)"
            )

    def unconfigure(self, workspace_id: str, channel: str, name: str | None) -> bool:
        """Removes a workspace's own configuration of a channel (it then uses the
        process-level settings again)."""
        removed = self._configs().remove(workspace_id, channel, instance_name(channel, name))
        self.invalidate(workspace_id)
        return removed

    def shown(self, workspace_id: str, channel: str | None = None) -> list[dict[str, Any]]:
        """The workspace's own configurations, secrets masked (and never decrypted when the
        key is missing: they are shown as set)."""
        out = []
        for row in self._configs().stored(workspace_id, channel):
            try:
                out.append(shown(self._configs().opened(row)))
            except ConfigError:
                sealed = ChannelConfig(row.workspace_id, row.channel, row.name, row.settings, {})
                out.append({**shown(sealed), "secrets": "unreadable with this MOMENTLY_SECRETS_KEY"})
        return out

    def invalidate(self, workspace_id: str | None = None) -> None:
        with self._lock:
            for ws in [workspace_id] if workspace_id is not None else list(self._cache):
                old = self._cache.pop(ws, None)
                if old is not None:
                    self._retired.extend(ch for ch in old[1].values() if ch not in self.defaults.values())

    def _build(self, workspace_id: str) -> dict[str, Channel]:
        assert self.configs is not None
        assert self.factory is not None
        out = dict(self.defaults)
        rows = self.configs.stored(workspace_id)
        own = {r.channel for r in rows}
        for channel in own:
            out.pop(channel, None)  # never the process-level account for a configured channel
        for row in rows:
            try:
                built = self.factory.build(self.configs.opened(row))
            except (ConfigError, ValueError) as exc:
                log.error("workspace %s: %s channel not usable: %s", workspace_id, row.channel, exc)
                continue
            out[f"webhook:{row.name}" if row.channel == "webhook" else row.channel] = built
        return out

    def close(self) -> None:
        with self._lock:
            channels = [ch for _, built in self._cache.values() for ch in built.values()]
            channels += self._retired
            self._cache, self._retired = {}, []
        seen: set[int] = set()
        for ch in channels:
            if id(ch) in seen or ch in self.defaults.values():
                continue
            seen.add(id(ch))
            close = getattr(ch, "close", None)
            if callable(close):
                close()
