"""Which channels a workspace sends through: its own configuration, else the process-level
channels, and never the process-level account for a channel it configured itself."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from momently.channels.base import Channel
from momently.channels.console import ConsoleChannel
from momently.channels.guarded_http import GuardedHttp
from momently.channels.registry import ChannelFactory, ChannelRegistry
from momently.channels.webhook import WebhookChannel
from momently.domain.addresses import AddressPolicy
from momently.store.channel_config import ChannelConfigs, SecretBox, new_key
from momently.store.database import Database
from momently.store.push import PushSubscriptions
from tests.webhook_receiver import SECRET

KEY = new_key()


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    d = Database(database_url)
    d.migrate()
    yield d
    d.dispose()


def registry(db: Database, key: str, defaults: dict[str, Channel]) -> ChannelRegistry:
    http = GuardedHttp(AddressPolicy())
    factory = ChannelFactory(
        webhook_http=http, push_http=http, push=PushSubscriptions(db), status_callback="http://x/{workspace}"
    )
    return ChannelRegistry(defaults, ChannelConfigs(db, SecretBox(key)), factory, ttl_seconds=3600)


def test_own_destinations_replace_the_process_webhook_and_are_chosen_per_flow(db: Database) -> None:
    process_webhook = WebhookChannel("https://ops.example/all", SECRET, http=GuardedHttp(AddressPolicy()))
    console = ConsoleChannel()
    reg = registry(db, KEY, {"webhook": process_webhook, "console": console})
    # Given no configuration of its own, a workspace uses the process-level channels
    assert reg.channel("acme", "webhook") is process_webhook
    assert reg.channel("acme", "webhook", {"webhook": {"destination": "crm"}}) is None  # no such name
    # When it configures a destination (the cache is dropped on change)
    reg.configure("acme", "webhook", "crm", {"url": "https://crm.acme.example/h", "secret": SECRET}, now_ms=1)
    crm = reg.channel("acme", "webhook", {"webhook": {"destination": "crm"}})
    assert crm is not None
    assert crm.address("acme", None) == "https://crm.acme.example/h"  # type: ignore[arg-type]
    # Then the process-level webhook is no longer its default, nor anyone else's business
    assert reg.channel("acme", "webhook") is None
    assert reg.channel("acme", "console") is console
    assert reg.channel("beta", "webhook") is process_webhook
    reg.close()


def test_an_unreadable_configuration_never_falls_back_to_the_process_account(db: Database) -> None:
    process_webhook = WebhookChannel("https://ops.example/all", SECRET, http=GuardedHttp(AddressPolicy()))
    reg = registry(db, KEY, {"webhook": process_webhook})
    hook = {"url": "https://hooks.acme.example/h", "secret": SECRET}
    reg.configure("acme", "webhook", None, hook, now_ms=1)
    # another process, started with another secrets key, cannot decrypt acme's secret
    other = registry(db, new_key(), {"webhook": process_webhook})
    assert other.channel("acme", "webhook") is None
    assert other.shown("acme")[0]["secrets"].startswith("unreadable")
    reg.close()
    other.close()
