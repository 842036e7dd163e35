"""The tables. Timestamps are integer milliseconds since the epoch (UTC) on both databases,
so windows are plain integer comparisons and no driver-side conversion sits in hot paths.
Event bodies are stored as the JSON text the ingest path already serialized."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

workspaces = Table(
    "workspaces",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    # Highest sequence number handed out; bumped inside each append transaction, whose row
    # lock makes commit order equal sequence order, so readers never skip a late commit.
    Column("last_seq", BigInteger, nullable=False, server_default="0"),
    Column("rate_limit", Float, nullable=True),  # events/s; NULL = unlimited
    Column("retention_days", Integer, nullable=True),  # events older are deleted; NULL = keep
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("workspace_id", String(64), ForeignKey("workspaces.id"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("label", String(200), nullable=False, server_default=""),
    Column("prefix", String(32), nullable=False),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("revoked_ms", BigInteger, nullable=True),
)

events = Table(
    "events",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("message_id", String(256), nullable=False),
    Column("type", String(16), nullable=False),
    Column("name", Text, nullable=True),
    Column("user_id", Text, nullable=True),
    Column("anonymous_id", Text, nullable=True),
    Column("timestamp_ms", BigInteger, nullable=False),
    Column("received_ms", BigInteger, nullable=False),
    Column("body", Text, nullable=False),
)
# Append-ordered, so cheap to maintain; used to rebuild the de-duplication window at start.
Index("ix_events_received", events.c.received_ms)

profiles = Table(
    "profiles",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("person_id", String(32), primary_key=True),
    Column("user_id", Text, nullable=True),
    Column("email", Text, nullable=True),
    Column("phone", Text, nullable=True),
    Column("timezone", String(64), nullable=True),
    Column("first_seen_ms", BigInteger, nullable=True),
    Column("last_seen_ms", BigInteger, nullable=True),
    Column("orders_count", Integer, nullable=False, server_default="0"),
    Column("revenue", Float, nullable=False, server_default="0"),
    Column("last_order_ms", BigInteger, nullable=True),
    Column("last_seq", BigInteger, nullable=False, server_default="0"),
    # traits, anonymous ids, event counts, push tokens, groups: JSON text
    Column("data", Text, nullable=False),
)

Index("ix_profiles_phone", profiles.c.workspace_id, profiles.c.phone)

identities = Table(
    "identities",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("kind", String(8), primary_key=True),
    Column("value", Text, primary_key=True),
    Column("person_id", String(32), nullable=False),
)
Index("ix_identities_person", identities.c.workspace_id, identities.c.person_id)

# Which log entries belong to which person: written by the profile projector, not by ingest,
# so the ingest path stays a pure sequential append.
person_events = Table(
    "person_events",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("person_id", String(32), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
)

cursors = Table(
    "cursors",
    metadata,
    Column("consumer", String(64), primary_key=True),
    Column("workspace_id", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False),
)


# --- flows engine -------------------------------------------------------------------------
# Flow and segment documents, every version kept; enrollments record the version they ran.
definitions = Table(
    "definitions",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("kind", String(16), primary_key=True),  # flow | segment
    Column("id", String(64), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("body", Text, nullable=False),  # the validated document, JSON
    Column("digest", String(64), nullable=False),
    Column("source", Text, nullable=False, server_default=""),
    Column("created_ms", BigInteger, nullable=False),
)

definition_heads = Table(
    "definition_heads",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # active | paused | archived
    Column("updated_ms", BigInteger, nullable=False),
)

# Derived (rebuilt by replay): segment membership and the per-person event history that
# windowed segment rules need.
segment_members = Table(
    "segment_members",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("person_id", String(32), primary_key=True),
    Column("segment_id", String(64), primary_key=True),
    Column("since_ms", BigInteger, nullable=False),
)
Index("ix_segment_members_segment", segment_members.c.workspace_id, segment_members.c.segment_id)

person_state = Table(
    "person_state",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("person_id", String(32), primary_key=True),
    Column("data", Text, nullable=False),  # {"history": {event name: [ms, ...]}}
)

# Durable timers: one row per (person, kind, owner, key), so re-arming replaces.
timers = Table(
    "timers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("workspace_id", String(64), nullable=False),
    Column("due_ms", BigInteger, nullable=False),
    Column("person_id", String(32), nullable=False),
    Column("kind", String(16), nullable=False),  # absence | inactivity | date | segment
    Column("owner", String(64), nullable=False),  # flow or segment id
    Column("key", Text, nullable=False, server_default=""),
    Column("payload", Text, nullable=False, server_default="{}"),
    UniqueConstraint("workspace_id", "person_id", "kind", "owner", "key", name="ux_timers_identity"),
)
Index("ix_timers_due", timers.c.workspace_id, timers.c.due_ms)

cohort_members = Table(
    "cohort_members",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("flow_id", String(64), primary_key=True),
    Column("area", String(64), primary_key=True),
    Column("person_id", String(32), primary_key=True),
    Column("ts_ms", BigInteger, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("fired", Integer, nullable=False, server_default="0"),
)

event_names = Table(
    "event_names",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("name", Text, primary_key=True),
    Column("count", BigInteger, nullable=False),
    Column("last_ms", BigInteger, nullable=False),
)

# Effects, kept across replays: the enrollment key makes processing idempotent, so a replay
# or a crash mid-batch never enrolls (and later never sends) twice.
enrollments = Table(
    "enrollments",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("flow_id", String(64), primary_key=True),
    Column("person_id", String(32), primary_key=True),
    Column("occurrence", String(200), primary_key=True),
    Column("flow_version", Integer, nullable=False),
    Column("trigger_kind", String(16), nullable=False),
    Column("trigger_seq", BigInteger, nullable=True),
    Column("decided_ms", BigInteger, nullable=False),
    Column("outcome", String(16), nullable=False),  # send | suppress
    Column("reason", String(64), nullable=True),
    Column("detail", Text, nullable=False, server_default="{}"),
)
Index("ix_enrollments_decided", enrollments.c.workspace_id, enrollments.c.decided_ms)
# Re-entry rules ask "when was this person last sent this flow" for every person in a batch.
Index(
    "ix_enrollments_person",
    enrollments.c.workspace_id,
    enrollments.c.person_id,
    enrollments.c.outcome,
    enrollments.c.flow_id,
    enrollments.c.decided_ms,
)

# Message ids of the events the engine appended itself (segment entered/exited), so a
# replay that derives them again does not append them twice.
emitted = Table(
    "emitted",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("message_id", String(256), primary_key=True),
)


# --- messages -----------------------------------------------------------------------------
# The outbox: one row per send decision, written in the engine's transaction; the dispatcher
# claims rows (a lease), hands them to channels and records every outcome.
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("workspace_id", String(64), nullable=False),
    Column("key", String(300), nullable=False),  # flow:person:occurrence, the idempotency key
    Column("flow_id", String(64), nullable=False),
    Column("flow_version", Integer, nullable=False),
    Column("person_id", String(32), nullable=False),
    Column("occurrence", String(200), nullable=False),
    Column("trigger_seq", BigInteger, nullable=True),
    Column("variant", String(64), nullable=True),
    Column("channels", Text, nullable=False),  # JSON list: the plan, in fallback order
    Column("channel_index", Integer, nullable=False, server_default="0"),
    Column("status", String(16), nullable=False),  # pending | sending | sent | dead | suppressed
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_ms", BigInteger, nullable=False),
    Column("lease_until_ms", BigInteger, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("provider_id", Text, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    # message | follow_up (sent only if the flow's goal was not reached since created_ms)
    Column("kind", String(16), nullable=False, server_default="message"),
    # the claim holding the row: outcomes and renewals are written only under it (fencing)
    Column("lease_token", String(32), nullable=True),
    # when the message passed the cap check: counted by every dispatcher while it is sending
    Column("reserved_ms", BigInteger, nullable=True),
    # when a guardrail first held it back: on_cap.max_delay counts from there
    Column("held_ms", BigInteger, nullable=True),
    # when the decision meant it to go: the decision, or the end of the flow's delay (max_age
    # counts from here, so a delay does not age a message)
    Column("due_ms", BigInteger, nullable=True),
    UniqueConstraint("workspace_id", "key", name="ux_deliveries_key"),
)
Index("ix_deliveries_due", deliveries.c.status, deliveries.c.next_attempt_ms)
Index("ix_deliveries_person", deliveries.c.workspace_id, deliveries.c.person_id)
Index("ix_deliveries_provider", deliveries.c.workspace_id, deliveries.c.provider_id)

# Per-workspace secrets for signed links (one-tap actions), created on first use.
signing_keys = Table(
    "signing_keys",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("secret", String(128), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)

# The secret a workspace's backend signs user tokens with (identity verification).
identity_secrets = Table(
    "identity_secrets",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("secret", String(128), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)

# Web push subscriptions, registered by browsers under the id they know the person by.
push_subscriptions = Table(
    "push_subscriptions",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("endpoint", Text, primary_key=True),
    Column("kind", String(8), nullable=False),  # user | anon
    Column("value", Text, nullable=False),
    Column("p256dh", Text, nullable=False),
    Column("auth", Text, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)
Index(
    "ix_push_subscriptions_identity",
    push_subscriptions.c.workspace_id,
    push_subscriptions.c.kind,
    push_subscriptions.c.value,
)

# The consent ledger: append-only, one hash chain per workspace (domain.consent). Records are
# filed under the ids the person was known by, not a person id, so they hold across merges
# and can be written before the person's first event.
consent_records = Table(
    "consent_records",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("user_id", Text, nullable=True),
    Column("anonymous_id", Text, nullable=True),
    Column("channel", String(16), nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("granted", Integer, nullable=False),
    Column("source", String(32), nullable=False),
    Column("at_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=True),
    Column("note", Text, nullable=True),
    Column("ref", Text, nullable=True),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    # the ingest key or admin token that wrote the record (its id, never the secret)
    Column("key_id", Integer, nullable=True),
    # how ``hash`` was made: "hmac1" (keyed with the ledger key); NULL for rows from before
    # the ledger was keyed, which are not trusted until ``momently consent rekey``
    Column("chain", String(8), nullable=True),
)
Index("ix_consent_user", consent_records.c.workspace_id, consent_records.c.user_id)
Index("ix_consent_anon", consent_records.c.workspace_id, consent_records.c.anonymous_id)

consent_policies = Table(
    "consent_policies",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("body", Text, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

# The in-app channel's inbox: one card per delivery, read by the widget over the API.
inbox_cards = Table(
    "inbox_cards",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("workspace_id", String(64), nullable=False),
    Column("person_id", String(32), nullable=False),
    Column("delivery_key", String(300), nullable=False),
    Column("flow_id", String(64), nullable=False),
    Column("card", Text, nullable=False),  # JSON: title, body, action {label, url}
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=True),
    Column("seen_ms", BigInteger, nullable=True),
    Column("acted_ms", BigInteger, nullable=True),
    Column("dismissed_ms", BigInteger, nullable=True),
    UniqueConstraint("workspace_id", "delivery_key", name="ux_inbox_delivery"),
)
Index("ix_inbox_person", inbox_cards.c.workspace_id, inbox_cards.c.person_id, inbox_cards.c.id)

# Send-time guardrails per workspace: quiet hours, caps, kill switches (domain.guardrails).
guardrail_policies = Table(
    "guardrail_policies",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("body", Text, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

# Identities of erased people: late events carrying them are dropped from the log instead of
# re-creating the person, until they identify again with consent.
erased_identities = Table(
    "erased_identities",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("kind", String(8), primary_key=True),
    Column("value", Text, primary_key=True),
    Column("erased_ms", BigInteger, nullable=False),
)

# A workspace's own channel settings (SMTP, SMS account and numbers, webhook destinations,
# VAPID keys). ``name`` tells a channel's instances apart (webhook destinations); "" for the
# others. ``settings`` is the public part as JSON; ``secret`` the secret part, encrypted
# (Fernet, key from MOMENTLY_SECRETS_KEY), never stored or returned in clear.
channel_configs = Table(
    "channel_configs",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("channel", String(16), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("settings", Text, nullable=False),
    Column("secret", Text, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)


# --- experiment outcomes ------------------------------------------------------------------
# Derived (rebuilt by replay, engine.experiment_projector): each person's first exposure per
# experiment with what happened since, and per arm, exposure day and metric the sufficient
# statistics a report reads (momently.stats), so a report costs O(arms x days).
experiment_exposures = Table(
    "experiment_exposures",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("experiment_id", String(64), primary_key=True),
    Column("person_id", String(32), primary_key=True),
    Column("arm", String(64), nullable=False),
    Column("flow_id", String(64), nullable=False),
    Column("flow_version", Integer, nullable=False),
    Column("exposed_ms", BigInteger, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("day", Integer, nullable=False),
    Column("goal_event", Text, nullable=True),
    Column("window_ms", BigInteger, nullable=False),
    Column("converted_ms", BigInteger, nullable=True),
    Column("revenue", Float, nullable=False, server_default="0"),
    Column("active_ms", BigInteger, nullable=True),
    Column("ordered_ms", BigInteger, nullable=True),
    Column("unsubscribed_ms", BigInteger, nullable=True),
    Column("complained_ms", BigInteger, nullable=True),
    Column("failed_ms", BigInteger, nullable=True),
    Column("pre_revenue", Float, nullable=False, server_default="0"),
    Column("pre_events", Integer, nullable=False, server_default="0"),
)
Index("ix_experiment_exposures_person", experiment_exposures.c.workspace_id, experiment_exposures.c.person_id)

experiment_stats = Table(
    "experiment_stats",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("experiment_id", String(64), primary_key=True),
    Column("arm", String(64), primary_key=True),
    Column("day", Integer, primary_key=True),
    Column("metric", String(32), primary_key=True),
    Column("n", BigInteger, nullable=False),
    Column("sum", Float, nullable=False),
    Column("sum_squares", Float, nullable=False),
    Column("cov_sum", Float, nullable=False),
    Column("cov_sum_squares", Float, nullable=False),
    Column("sum_products", Float, nullable=False),
)

# --- experiments ----------------------------------------------------------------------------
# Each person's first assignment in an experiment, kept so it sticks across restarts, replays,
# flow versions and identity merges (the earlier of two merged people's wins). ``salt`` is the
# one it was drawn with: a new salt re-randomises at the person's next exposure. An effect,
# kept across replays like enrollments.
exposures = Table(
    "exposures",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("experiment_id", String(64), primary_key=True),
    Column("person_id", String(32), primary_key=True),
    Column("arm", String(64), nullable=False),  # an arm id, or "holdout"
    Column("salt", Text, nullable=False),
    Column("first_exposed_ms", BigInteger, nullable=False),
    Column("flow_id", String(64), nullable=False),
    Column("flow_version", Integer, nullable=False),
)
Index("ix_exposures_person", exposures.c.workspace_id, exposures.c.person_id)

# Every change of an experiment's state (running, stopped, shipped), numbered per experiment;
# the highest version is the current state, and no row at all means running.
experiment_changes = Table(
    "experiment_changes",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("experiment_id", String(64), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("flow_id", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # running | stopped | shipped
    Column("arm", String(64), nullable=True),  # the shipped arm
    Column("by", String(64), nullable=False),  # the admin credential's id, or "cli"
    Column("reason", Text, nullable=False, server_default=""),
    Column("at_ms", BigInteger, nullable=False),
)
