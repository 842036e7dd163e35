"""The consent rules: latest covering record wins, expiry, policy, trait mapping, the chain."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from momently.domain import consent
from momently.domain.consent import GENESIS, Grant, Policy, Record, chain_hash, check, verify_chain

POLICY = Policy()


def chain(*grants: Grant, ws: str = "acme") -> list[Record]:
    out: list[Record] = []
    prev = GENESIS
    for i, g in enumerate(grants, start=1):
        h = chain_hash(prev, i, ws, g)
        out.append(Record(i, g, prev, h))
        prev = h
    return out


def grant(channel: str = "email", purpose: str = "marketing", granted: bool = True, **kw: object) -> Grant:
    fields: dict[str, object] = {"source": "api", "at_ms": 1000, **kw}
    return Grant("ada", None, channel, purpose, granted, **fields)  # type: ignore[arg-type]


def test_marketing_email_needs_an_opt_in_but_transactional_does_not() -> None:
    assert check([], "email", "marketing", POLICY, now_ms=0) == consent.Verdict(False, "no_consent")
    assert check([], "email", "transactional", POLICY, now_ms=0).allowed
    assert check([], "in_app", "marketing", POLICY, now_ms=0).allowed  # not in the opt-in list
    assert check(chain(grant()), "email", "marketing", POLICY, now_ms=2000).allowed


def test_the_latest_covering_record_wins_and_wildcards_cover() -> None:
    records = chain(grant(), grant("*", "*", False, source="stop_contact", at_ms=2000))
    assert check(records, "email", "marketing", POLICY, now_ms=3000).reason == "stop_contact"
    assert check(records, "sms", "transactional", POLICY, now_ms=3000).reason == "stop_contact"
    again = [*records, *chain(grant(at_ms=4000))[-1:]]
    again[-1] = replace(again[-1], seq=3)
    assert check(again, "email", "marketing", POLICY, now_ms=5000).allowed
    assert not check(again, "sms", "marketing", POLICY, now_ms=5000).allowed


def test_an_expired_grant_counts_as_absent() -> None:
    records = chain(grant(expires_ms=5000))
    assert check(records, "email", "marketing", POLICY, now_ms=4999).allowed
    assert check(records, "email", "marketing", POLICY, now_ms=5000).reason == "consent_expired"
    # where no opt-in is needed, a lapsed grant is just no record: still allowed
    lapsed = chain(grant("email", "transactional", expires_ms=5000))
    assert check(lapsed, "email", "transactional", POLICY, now_ms=9000).allowed


def test_stop_contact_keeps_transactional_unless_asked() -> None:
    kept = chain(*consent.stop_contact("ada", None, at_ms=1))
    assert check(kept, "sms", "transactional", POLICY, now_ms=2).allowed
    assert check(kept, "in_app", "marketing", POLICY, now_ms=2).reason == "stop_contact"
    everything = chain(*consent.stop_contact("ada", None, at_ms=1, include_transactional=True))
    assert check(everything, "sms", "transactional", POLICY, now_ms=2).reason == "stop_contact"


def test_grant_fields_are_checked() -> None:
    with pytest.raises(consent.ConsentError, match="unknown channel"):
        grant("fax").check()
    with pytest.raises(consent.ConsentError, match="unknown purpose"):
        grant(purpose="sales").check()
    with pytest.raises(consent.ConsentError, match="only a grant can expire"):
        grant(granted=False, expires_ms=5000).check()
    with pytest.raises(consent.ConsentError, match="userId or anonymousId"):
        Grant(None, None, "email", "marketing", True, "api", 1).check()


def test_policy_round_trips_and_rejects_unknown_names() -> None:
    policy = Policy.from_json(
        {"optIn": {"marketing": ["sms"]}, "traits": {"sms_ok": {"channel": "sms", "purpose": "marketing"}}}
    )
    assert not policy.needs_opt_in("email", "marketing")
    assert policy.needs_opt_in("sms", "marketing")
    assert dict(policy.traits) == {"sms_ok": ("sms", "marketing")}  # given traits replace the defaults
    assert Policy.from_json(policy.as_json()) == policy
    with pytest.raises(consent.ConsentError, match="unknown channel 'fax'"):
        Policy.from_json({"optIn": {"marketing": ["fax"]}})
    with pytest.raises(consent.ConsentError, match="unknown purpose"):
        Policy.from_json({"optIn": {"sales": ["sms"]}})


def test_trait_grants_record_changes_only_and_never_override_newer_records() -> None:
    first = consent.trait_grants(
        {"email_opt_in": True},
        POLICY,
        [],
        user_id="ada",
        anonymous_id=None,
        at_ms=10,
        now_ms=10,
        ref="event:1",
    )
    assert [(g.channel, g.purpose, g.granted, g.source) for g in first] == [
        ("email", "marketing", True, "identify")
    ]
    records = chain(*first)
    same = consent.trait_grants(
        {"email_opt_in": True}, POLICY, records, user_id="ada", anonymous_id=None, at_ms=20, now_ms=20
    )
    assert same == []
    late = consent.trait_grants(
        {"email_opt_in": False}, POLICY, records, user_id="ada", anonymous_id=None, at_ms=5, now_ms=20
    )
    assert late == []  # an identify older than the record it would contradict
    off = consent.trait_grants(
        {"email_opt_in": False, "sms_opt_in": False},
        POLICY,
        records,
        user_id="ada",
        anonymous_id=None,
        at_ms=30,
        now_ms=30,
    )
    assert [(g.channel, g.granted) for g in off] == [("email", False)]  # sms was never on
    replayed = consent.trait_grants(
        {"email_opt_in": True},
        POLICY,
        chain(*first, *off),
        user_id="ada",
        anonymous_id=None,
        at_ms=10,
        now_ms=40,
        ref="event:1",
    )
    assert replayed == []  # replaying the log does not undo the later revoke


@pytest.mark.parametrize("stop_source", ["sms_stop", "stop_contact"])
def test_a_trait_never_lifts_a_stop_but_a_start_does(stop_source: str) -> None:
    opted_in = grant("sms", "marketing", source="identify", at_ms=10)
    stop = consent.stop_contact("ada", None, at_ms=20, source=stop_source, channel="sms")
    records = chain(opted_in, *stop)

    def again(records: list[Record], at_ms: int) -> list[Grant]:
        return consent.trait_grants(
            {"sms_opt_in": True}, POLICY, records, user_id="ada", anonymous_id=None, at_ms=at_ms, now_ms=at_ms
        )

    assert again(records, 30) == []  # the app still says sms_opt_in: true after the STOP
    assert check(records, "sms", "marketing", POLICY, now_ms=30).reason == "stop_contact"
    start = grant("sms", "*", source="sms_start", at_ms=40)
    records = chain(opted_in, *stop, start)
    assert check(records, "sms", "marketing", POLICY, now_ms=40).allowed
    assert again(records, 50) == []  # already granted: nothing new to record
    off = consent.trait_grants(
        {"sms_opt_in": False}, POLICY, records, user_id="ada", anonymous_id=None, at_ms=60, now_ms=60
    )
    assert [(g.channel, g.purpose, g.granted) for g in off] == [("sms", "marketing", False)]


def test_verify_chain_finds_edits_deletions_and_insertions() -> None:
    records = chain(grant(), grant(granted=False, at_ms=2000), grant("sms", at_ms=3000))
    assert verify_chain("acme", records).ok
    assert not verify_chain("other", records).ok  # a chain cannot be moved to another workspace
    edited = [records[0], replace(records[1], grant=replace(records[1].grant, granted=True)), records[2]]
    assert [b.seq for b in verify_chain("acme", edited).breaks] == [2]
    deleted = [records[0], records[2]]
    assert {b.seq for b in verify_chain("acme", deleted).breaks} == {3}


channels = st.sampled_from(["email", "sms", "push", "in_app", "*"])
purposes = st.sampled_from(["marketing", "transactional", "personalisation", "*"])
grants = st.builds(
    lambda c, p, g, at, exp: Grant("ada", None, c, p, g, "api", at, at + exp if g and exp else None),
    channels,
    purposes,
    st.booleans(),
    st.integers(0, 1000),
    st.one_of(st.none(), st.integers(1, 500)),
)


@given(
    st.lists(grants, max_size=12),
    channels.filter(lambda c: c != "*"),
    purposes.filter(lambda p: p != "*"),
    st.integers(0, 2000),
)
def test_a_send_is_allowed_only_by_a_live_grant_or_by_policy(
    history: list[Grant], channel: str, purpose: str, now: int
) -> None:
    """Allowed iff the latest covering record is a live grant, or there is none (or only a
    lapsed grant) and the policy needs no opt-in; a revoke always wins."""
    records = chain(*history)
    verdict = check(records, channel, purpose, POLICY, now_ms=now)
    covering = [g for g in history if g.channel in (channel, "*") and g.purpose in (purpose, "*")]
    if covering and not covering[-1].granted:
        assert not verdict.allowed
    elif covering and (covering[-1].expires_ms is None or covering[-1].expires_ms > now):
        assert verdict.allowed
    else:
        assert verdict.allowed == (not POLICY.needs_opt_in(channel, purpose))
    assert verify_chain("acme", records).ok
