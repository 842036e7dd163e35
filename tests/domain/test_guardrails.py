"""Caps and quiet hours together: never exceeded, never in quiet hours, deferred to the first
allowed moment, tier A exempt from caps but counted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from momently.domain.caps import Cap, Send, blocked_until
from momently.domain.guardrails import Defer, Drop, FlowRules, Go, InvalidGuardrails, Policy, plan
from momently.domain.quiet_hours import QuietHours, is_quiet

AMS = ZoneInfo("Europe/Amsterdam")
H = 3_600_000
T0 = int(datetime(2026, 6, 1, 10, 0, tzinfo=UTC).timestamp() * 1000)  # 12:00 in Amsterdam


def send(
    at: int, channel: str = "email", flow: str = "f", tags: tuple[str, ...] = (), tier: str = "B"
) -> Send:
    return Send(at, channel, flow, tags, tier)


def test_a_rolling_cap_defers_until_the_oldest_send_leaves_the_window() -> None:
    policy = Policy(caps=(Cap(2, 24 * H),))
    history = [send(T0 - 20 * H), send(T0 - 2 * H)]
    got = plan(policy, FlowRules(), send(T0), history, AMS, held_since_ms=T0)
    assert got == Defer(T0 + 4 * H, "frequency_cap", "2 per 86400s (all messages)")
    assert plan(policy, FlowRules(on_cap="drop"), send(T0), history, AMS, held_since_ms=T0) == Drop(
        "frequency_cap", "2 per 86400s (all messages)"
    )
    assert isinstance(plan(policy, FlowRules(max_delay_ms=H), send(T0), history, AMS, held_since_ms=T0), Drop)


@pytest.mark.parametrize(
    ("held_since", "verdict"),
    [
        (T0, Defer(T0 + 24 * H, "frequency_cap", "1 per 86400s (all messages)")),  # held now: a day
        (T0 - 1000, Drop("frequency_cap", "1 per 86400s (all messages)")),  # held a second ago
    ],
)
def test_max_delay_counts_from_the_first_hold(held_since: int, verdict: Defer | Drop) -> None:
    # the message in the window went out just now, after this one was decided: the default
    # max_delay (1d) still lets a rolling 1d cap defer it, counted from when it was first held
    policy = Policy(caps=(Cap(1, 24 * H),))
    assert plan(policy, FlowRules(), send(T0), [send(T0)], AMS, held_since_ms=held_since) == verdict


def test_tier_a_is_exempt_but_counted() -> None:
    policy = Policy(caps=(Cap(1, 24 * H),))
    receipt = send(T0, tier="A")
    assert plan(policy, FlowRules(tier="A"), receipt, [send(T0 - H)], AMS, held_since_ms=T0) == Go()
    assert isinstance(plan(policy, FlowRules(), send(T0 + H), [receipt], AMS, held_since_ms=T0), Defer)


def test_caps_by_channel_tag_and_calendar_day() -> None:
    sms_cap = Cap(1, 24 * H, channel="sms")
    assert blocked_until(sms_cap, [send(T0 - H, "email")], T0, AMS) is None
    assert blocked_until(sms_cap, [send(T0 - H, "sms")], T0, AMS) == T0 + 23 * H
    promo = Cap(1, None, calendar_day=True, tag="promo")
    midnight = int(datetime(2026, 6, 2, 0, 0, tzinfo=AMS).timestamp() * 1000)
    assert blocked_until(promo, [send(T0 - H, tags=("promo",))], T0, AMS) == midnight
    assert blocked_until(promo, [send(T0 - 13 * H, tags=("promo",))], T0, AMS) is None  # yesterday


def test_quiet_hours_then_caps_then_quiet_hours_again() -> None:
    night = QuietHours.parse("21:00", "08:00")
    evening = int(datetime(2026, 6, 1, 22, 0, tzinfo=AMS).timestamp() * 1000)
    morning = int(datetime(2026, 6, 2, 8, 0, tzinfo=AMS).timestamp() * 1000)
    got = plan(Policy(quiet_hours=night), FlowRules(), send(evening), [], AMS, held_since_ms=evening)
    assert got == Defer(morning, "quiet_hours_deferred", "21:00-08:00 Europe/Amsterdam")
    assert (
        plan(
            Policy(quiet_hours=night),
            FlowRules(bypass_quiet_hours=True),
            send(evening),
            [],
            AMS,
            held_since_ms=evening,
        )
        == Go()
    )
    own = FlowRules(quiet_hours=QuietHours.parse("23:00", "07:00"))
    assert plan(Policy(quiet_hours=night), own, send(evening), [], AMS, held_since_ms=evening) == Go()


def test_in_app_cards_ignore_quiet_hours() -> None:
    night = Policy(quiet_hours=QuietHours.parse("21:00", "08:00"))
    evening = int(datetime(2026, 6, 1, 22, 0, tzinfo=AMS).timestamp() * 1000)
    assert plan(night, FlowRules(), send(evening, "in_app"), [], AMS, held_since_ms=evening) == Go()
    assert isinstance(plan(night, FlowRules(), send(evening, "push"), [], AMS, held_since_ms=evening), Defer)


def test_policy_documents_are_checked() -> None:
    doc = {
        "quietHours": {"start": "21:00", "end": "08:00"},
        "caps": [{"limit": 3, "per": "1w"}, {"limit": 1, "per": "calendar_day", "channel": "sms"}],
        "pausedChannels": ["sms"],
    }
    policy = Policy.from_json(doc)
    assert Policy.from_json(policy.as_json()) == policy
    with pytest.raises(InvalidGuardrails, match="per must be a duration"):
        Policy.from_json({"caps": [{"limit": 3, "per": "weekly"}]})
    with pytest.raises(InvalidGuardrails, match="at most one of"):
        Policy.from_json({"caps": [{"limit": 3, "per": "1d", "channel": "sms", "tag": "x"}]})
    with pytest.raises(InvalidGuardrails, match="quietHours"):
        Policy.from_json({"quietHours": {"start": "25:00", "end": "08:00"}})
    with pytest.raises(InvalidGuardrails, match="unknown key"):
        Policy.from_json({"quiet_hours": {}})


caps_st = st.lists(
    st.builds(
        lambda limit, hours, calendar, which: Cap(
            limit,
            None if calendar else hours * H,
            calendar,
            channel="sms" if which == 1 else None,
            tag="promo" if which == 2 else None,
        ),
        st.integers(1, 3),
        st.sampled_from([1, 6, 24, 168]),
        st.booleans(),
        st.integers(0, 2),
    ),
    max_size=3,
)
requests_st = st.lists(
    st.tuples(
        st.integers(0, 20 * 60),  # minutes since the previous request
        st.sampled_from(["sms", "email"]),
        st.sampled_from([(), ("promo",)]),
        st.sampled_from(["A", "B"]),
    ),
    max_size=25,
)
zones = st.sampled_from(["Europe/Amsterdam", "America/New_York", "Asia/Kolkata"])


def _exceeded(cap: Cap, sent: list[Send], tz: ZoneInfo) -> bool:
    """Did a send that the cap applies to go out with more than ``limit`` sends (itself
    included, transactional ones too) in its window?"""
    counted = [s for s in sent if cap.matches(s)]
    for i, s in enumerate(counted):
        earlier = counted[: i + 1]  # in the order they were sent
        if cap.calendar_day:
            day = datetime.fromtimestamp(s.at_ms / 1000, tz).date()
            same = [x for x in earlier if datetime.fromtimestamp(x.at_ms / 1000, tz).date() == day]
        else:
            assert cap.window_ms is not None
            same = [x for x in earlier if s.at_ms - cap.window_ms < x.at_ms <= s.at_ms]
        # tier A sends count, but only a marketing send may not take the count past the limit
        if (s.tier != "A" or cap.transactional) and len(same) > cap.limit:
            return True
    return False


@settings(max_examples=150, deadline=None)
@given(caps_st, requests_st, st.booleans(), zones)
def test_simulated_sends_never_exceed_a_cap_or_land_in_quiet_hours(
    caps: list[Cap], requests: list[tuple[int, str, tuple[str, ...], str]], quiet_on: bool, zone: str
) -> None:
    """Every request goes through ``plan``; deferred ones are retried at the moment it gave,
    as the dispatcher does. No cap is ever exceeded by a marketing send, nothing is sent in
    quiet hours, and a deferred send goes at the first allowed moment."""
    tz = ZoneInfo(zone)
    quiet = QuietHours.parse("21:00", "08:00") if quiet_on else None
    policy = Policy(quiet_hours=quiet, caps=tuple(caps))
    sent: list[Send] = []
    pending: list[tuple[int, Send, int]] = []  # (due, request, decided)
    t = T0
    for gap, channel, tags, tier in requests:
        t += gap * 60_000
        pending.append((t, send(t, channel, "f", tags, tier), t))
    while pending:
        pending.sort(key=lambda p: p[0])
        due, req, decided = pending.pop(0)
        cand = Send(due, req.channel, req.flow_id, req.tags, req.tier)
        rules = FlowRules(tier=req.tier, max_delay_ms=10 * 24 * H)
        verdict = plan(policy, rules, cand, [s for s in sent if s.at_ms <= due], tz, held_since_ms=decided)
        if isinstance(verdict, Go):
            assert quiet is None or not is_quiet(quiet, datetime.fromtimestamp(due / 1000, UTC), tz)
            sent.append(cand)
        elif isinstance(verdict, Defer):
            assert verdict.until_ms > due
            # the first allowed moment: a minute earlier, something still said no
            before = verdict.until_ms - 60_000
            if before > due:
                again = plan(
                    policy,
                    rules,
                    Send(before, *_rest(cand)),
                    [s for s in sent if s.at_ms <= before],
                    tz,
                    held_since_ms=decided,
                )
                assert not isinstance(again, Go)
            pending.append((verdict.until_ms, req, decided))
    for cap in caps:
        assert not _exceeded(cap, sent, tz), cap


def _rest(s: Send) -> tuple[str, str, tuple[str, ...], str]:
    return s.channel, s.flow_id, s.tags, s.tier


def test_deferral_crosses_a_dst_change_on_the_wall_clock() -> None:
    night = Policy(quiet_hours=QuietHours.parse("21:00", "08:00"))
    evening = int(datetime(2026, 10, 24, 22, 0, tzinfo=AMS).timestamp() * 1000)
    got = plan(night, FlowRules(), send(evening), [], AMS, held_since_ms=evening)
    assert isinstance(got, Defer)
    assert got.until_ms - evening == 11 * H  # 22:00 CEST to 08:00 CET: an hour longer than usual
    assert datetime.fromtimestamp(got.until_ms / 1000, AMS).hour == 8
    assert timedelta(milliseconds=got.until_ms - evening) == timedelta(hours=11)


@pytest.mark.parametrize(
    ("doc", "expected"),
    [({}, 10), ({"reportMinCount": 25}, 25), ({"reportMinCount": None}, 10), ({"reportMinCount": 1}, 1)],
)
def test_report_min_count_defaults_to_ten_and_round_trips(doc: dict[str, object], expected: int) -> None:
    policy = Policy.from_json(doc)
    assert policy.report_min_count == expected
    assert policy.as_json()["reportMinCount"] == expected
    assert Policy.from_json(policy.as_json()) == policy


@pytest.mark.parametrize("bad", [0, -3, 1001, 2.5, "10", True])
def test_report_min_count_is_a_whole_number_from_1_to_1000(bad: object) -> None:
    with pytest.raises(InvalidGuardrails, match="reportMinCount"):
        Policy.from_json({"reportMinCount": bad})
