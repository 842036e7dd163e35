"""Wiring: builds the store adapters and engine parts from ``Settings``, once, for a face."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from momently.channels.base import Channel
from momently.channels.console import ConsoleChannel
from momently.channels.email import EmailChannel
from momently.channels.guarded_http import GuardedHttp
from momently.channels.in_app import InAppChannel
from momently.channels.registry import ChannelFactory, ChannelRegistry
from momently.channels.sms import SmsChannel
from momently.channels.webhook import WebhookChannel
from momently.channels.webpush import WebPushChannel
from momently.clock import CatchUpClock, Clock, ManualClock, SystemClock
from momently.domain.addresses import AddressPolicy
from momently.domain.lateness import COMMIT_GRACE_MS
from momently.engine.dispatcher import ActionLinks, Dispatcher, RetryPolicy
from momently.engine.experiment_projector import ExperimentProjector
from momently.engine.flows import FlowStage
from momently.engine.log_service import RemoteLogWriter
from momently.engine.log_writer import EventAppender, LogWriter
from momently.engine.profile_projector import ProfileProjector
from momently.settings import Settings
from momently.store.channel_config import ChannelConfigs, SecretBox
from momently.store.commit_watch import CommitWatcher
from momently.store.consent import ConsentLedger
from momently.store.database import Database
from momently.store.definitions import Definitions
from momently.store.engine_state import EngineState
from momently.store.events import EventLog
from momently.store.experiment_outcomes import OutcomeStore
from momently.store.experiments import Experiments
from momently.store.guardrails import GuardrailPolicies
from momently.store.inbox import Inbox
from momently.store.ledger_key import LedgerKeyError, ledger_key
from momently.store.outbox import Outbox
from momently.store.people import People
from momently.store.profiles import ProfileStore
from momently.store.push import PushSubscriptions
from momently.store.workspaces import Workspaces

log = logging.getLogger(__name__)
KEYED_LEDGER_REVISION = "0010"  # the migration that keyed the consent ledger


@dataclass
class Services:
    settings: Settings
    clock: Clock
    db: Database
    events: EventLog
    workspaces: Workspaces
    profiles: ProfileStore
    writer: EventAppender
    projector: ProfileProjector
    definitions: Definitions
    engine_state: EngineState
    outbox: Outbox
    dispatcher: Dispatcher
    webhook: WebhookChannel
    push: PushSubscriptions
    push_http: GuardedHttp
    channel_configs: ChannelConfigs
    channels: ChannelRegistry
    consent: ConsentLedger
    inbox: Inbox
    guardrails: GuardrailPolicies
    people: People
    outcomes: ExperimentProjector
    experiments: Experiments
    email: EmailChannel | None = None
    sms: SmsChannel | None = None
    watcher: CommitWatcher | None = None  # started by start_engine(watch_commits=True)

    @classmethod
    def build(cls, settings: Settings, *, clock: Clock | None = None, migrate: bool = True) -> Services:
        clock = clock or SystemClock()
        db = Database(settings.database_url)
        try:
            key = ledger_key(settings.ledger_key, db)
        except LedgerKeyError:
            db.dispose()
            raise
        upgraded_ledger = False
        if migrate:
            before = db.revision()
            db.migrate()
            # this start upgraded a database from before the keyed consent ledger
            upgraded_ledger = before is not None and before < KEYED_LEDGER_REVISION
            for warning in db.maintenance_warnings():
                log.warning(warning)
        events = EventLog(db)
        guardrails = GuardrailPolicies(db)
        profiles = ProfileStore(db)
        definitions = Definitions(db)
        engine_state = EngineState(db, events)
        flows = FlowStage(
            definitions,
            engine_state,
            default_timezone=settings.default_timezone,
            send_max_age_ms=int(settings.send_max_age_hours * 3_600_000),
            lateness_ms=lambda workspace_id: (
                guardrails.get(workspace_id).allowed_lateness_ms
                or int(settings.allowed_lateness_seconds * 1000)
            ),
            global_control=lambda workspace_id: guardrails.get(workspace_id).global_control,
        )
        consent = ConsentLedger(db, key)
        if upgraded_ledger:
            consent.adopt_unkeyed()
        people = People(db, events, profiles, consent)
        projector = ProfileProjector(
            db,
            events,
            profiles,
            flows=flows,
            clock=clock,
            consent_ledger=consent,
            people=people,
            cache_people=settings.engine_cache_people,
            # virtual time is moved by whoever sends the events, after they are committed
            timer_grace_ms=0
            if isinstance(clock, ManualClock) and not isinstance(clock, CatchUpClock)
            else COMMIT_GRACE_MS,
        )
        writer: EventAppender
        if settings.log_writer_socket:  # an HTTP worker of `serve --workers N`
            writer = RemoteLogWriter(settings.log_writer_socket)
        else:
            writer = LogWriter(
                db,
                events,
                clock,
                dedup_window=timedelta(days=settings.dedup_window_days),
                on_commit=projector.wake,
            )
        outbox = Outbox(db)
        webhook_http = GuardedHttp(
            AddressPolicy.of(settings.webhook_networks()), timeout=settings.webhook_timeout_seconds
        )
        push_http = GuardedHttp(
            AddressPolicy.of(settings.push_allow_networks), timeout=5.0, hosts=settings.push_hosts
        )
        webhook = WebhookChannel(settings.webhook_url, settings.webhook_secret, http=webhook_http)
        channels: dict[str, Channel] = {
            "console": ConsoleChannel(Path(settings.console_path) if settings.console_path else None)
        }
        if settings.webhook_url:
            channels["webhook"] = webhook
        inbox = Inbox(db)
        channels["in_app"] = InAppChannel(inbox, clock)
        email: EmailChannel | None = None
        if settings.smtp_url:
            email = EmailChannel(
                settings.smtp_url,
                settings.email_from,
                timeout=settings.smtp_timeout_seconds,
                require_tls=settings.smtp_require_tls,
            )
            channels["email"] = email
        base_url = (settings.public_url or f"http://{settings.host}:{settings.port}").rstrip("/")
        sms: SmsChannel | None = None
        if settings.sms_account_sid and settings.sms_auth_token and settings.sms_from:
            sms = SmsChannel(
                account_sid=settings.sms_account_sid,
                auth_token=settings.sms_auth_token,
                sender=settings.sms_from,
                base_url=settings.sms_base_url,
                status_callback=base_url + "/v1/sms/{workspace}/status",
                timeout=settings.sms_timeout_seconds,
            )
            channels["sms"] = sms
        push = PushSubscriptions(db, per_person=settings.push_subscriptions_per_person)
        if settings.vapid_private_key:
            channels["push"] = WebPushChannel(
                push, settings.vapid_private_key, settings.vapid_subject, http=push_http
            )
        channel_configs = ChannelConfigs(db, SecretBox(settings.secrets_key))
        registry = ChannelRegistry(
            channels,
            channel_configs,
            ChannelFactory(
                webhook_http=webhook_http,
                push_http=push_http,
                push=push,
                status_callback=base_url + "/v1/sms/{workspace}/status",
                smtp_timeout=settings.smtp_timeout_seconds,
                smtp_require_tls=settings.smtp_require_tls,
                sms_timeout=settings.sms_timeout_seconds,
                sms_base_url=settings.sms_base_url,
            ),
            ttl_seconds=settings.channel_cache_seconds,
        )
        workspaces = Workspaces(db)
        dispatcher = Dispatcher(
            db,
            outbox,
            events,
            profiles,
            definitions,
            registry,
            clock,
            links=ActionLinks(base_url, workspaces),
            consent_ledger=consent,
            rate_limits=settings.channel_rate_limits,
            guardrails=guardrails,
            default_timezone=settings.default_timezone,
            engine_state=engine_state,
            max_age_ms=int(settings.send_max_age_hours * 3_600_000),
            lease_ms=int(settings.dispatch_lease_seconds * 1000),
            batch=settings.dispatch_batch_size,
            recheck_ms=int(settings.dispatch_recheck_seconds * 1000),
            retry=RetryPolicy(
                max_attempts=settings.dispatch_max_attempts,
                base_ms=int(settings.dispatch_backoff_seconds * 1000),
            ),
        )
        outcomes = ExperimentProjector(
            db, events, profiles, definitions, OutcomeStore(db), default_timezone=settings.default_timezone
        )

        def after_engine_batch(_ws: str, _cursor: int) -> None:
            dispatcher.wake()
            outcomes.wake()  # it folds no further than the profiles cursor

        projector.on_batch = after_engine_batch
        return cls(
            settings,
            clock,
            db,
            events,
            workspaces,
            profiles,
            writer,
            projector,
            definitions,
            engine_state,
            outbox,
            dispatcher,
            webhook,
            push,
            push_http,
            channel_configs,
            registry,
            consent,
            inbox,
            guardrails,
            people,
            outcomes,
            Experiments(db, events),
            email,
            sms,
        )

    def start(self) -> None:
        """Start the background parts a server needs: the log writer, and the engine if enabled."""
        self.db.start_checkpoints()
        self.writer.start()
        if self.settings.run_engine:
            self.start_engine(watch_commits=False)

    def start_engine(self, *, watch_commits: bool, engine: bool = True, dispatcher: bool = True) -> None:
        """The engine and the dispatcher (or one of them). With ``watch_commits`` (the API
        and its log writer run in other processes) commits made elsewhere wake them; in one
        process the writer and the engine wake them directly."""
        self.db.start_checkpoints()
        idle = self.settings.idle_poll_seconds
        if engine:
            self.projector.start(idle_poll_seconds=idle)
            self.outcomes.start(idle_poll_seconds=idle)
        if dispatcher:
            self.dispatcher.start(idle_poll_seconds=idle)
        if watch_commits and self.watcher is None:
            self.watcher = CommitWatcher(self.db, self._wake_engine)
            self.watcher.start()

    def _wake_engine(self) -> None:
        self.projector.wake()
        self.dispatcher.wake()

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None
        self.dispatcher.stop()
        self.outcomes.stop()
        self.projector.stop()
        self.writer.stop()
        self.channels.close()
        self.webhook.http.close()
        self.push_http.close()
        if self.email is not None:
            self.email.close()
        if self.sms is not None:
            self.sms.close()
        self.db.dispose()
