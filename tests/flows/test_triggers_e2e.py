"""End to end, through the HTTP ingest and admin APIs, on SQLite and PostgreSQL: one test per
trigger kind and per re-entry rule, on virtual time."""

from __future__ import annotations

from datetime import timedelta

from momently.domain.timestamps import from_millis
from momently.services import Services
from momently.settings import Settings
from tests.flows.conftest import FlowEnv


def identify(user: str, **traits: object) -> dict[str, object]:
    return {"type": "identify", "userId": user, "traits": traits}


def track(user: str, event: str, **properties: object) -> dict[str, object]:
    return {"type": "track", "userId": user, "event": event, "properties": properties}


def test_event_trigger_with_filter_and_audience(env: FlowEnv) -> None:
    env.flow(
        "eta",
        """
id: eta
tier: A
trigger:
  event: Parcel At Hub
  where: {event: properties.carrier, equals: dhl}
audience: {trait: plan, in: [pro, plus]}
channels: [sms, email]
reentry: every_time
""",
    )
    env.send(identify("ada", plan="pro"), identify("bob", plan="free"))
    env.send(track("ada", "Parcel At Hub", carrier="dhl"), track("ada", "Parcel At Hub", carrier="ups"))
    env.send(track("bob", "Parcel At Hub", carrier="dhl"), track("ada", "Order Completed"))
    rows = env.enrollments("eta")
    assert [(r.person_id, r.outcome, r.reason) for r in rows] == [
        (env.person("ada"), "send", None),
        (env.person("bob"), "suppress", "audience_false"),
    ]
    assert rows[0].detail["channel"] == "sms"
    assert rows[0].trigger_kind == "event"
    assert rows[0].flow_version == 1


def test_reentry_rules(env: FlowEnv) -> None:
    for rule in ("once", "every_time", "{once_per: 1d}"):
        name = "r-" + rule.strip("{}").split(":")[0].replace("_", "-")
        env.flow(name, f"id: {name}\ntrigger: {{event: App Opened}}\nreentry: {rule}\n")
    env.send(track("ada", "App Opened"))
    env.advance(hours=2)
    env.send(track("ada", "App Opened"))
    env.advance(hours=23)
    env.send(track("ada", "App Opened"))
    outcome = {
        f: [(e.outcome, e.reason) for e in env.enrollments(f)]
        for f in ("r-once", "r-every-time", "r-once-per")
    }
    assert outcome["r-once"] == [("send", None), ("suppress", "reentry_once"), ("suppress", "reentry_once")]
    assert outcome["r-every-time"] == [("send", None)] * 3
    assert outcome["r-once-per"] == [("send", None), ("suppress", "reentry_period"), ("send", None)]


CART = """
id: cart-nudge
trigger:
  absence:
    first: {event: Product Added}
    then: {event: Order Completed}
    within: 30m
    key: properties.cart_id
reentry: every_time
"""


def test_absence_trigger_fires_unless_cancelled_by_the_same_key(env: FlowEnv) -> None:
    env.flow("cart-nudge", CART)
    env.send(track("ada", "Product Added", cart_id="c1"), track("bob", "Product Added", cart_id="c2"))
    env.advance(minutes=10)
    env.send(track("ada", "Order Completed", cart_id="c1"))  # ada buys: cancelled
    env.send(track("bob", "Order Completed", cart_id="other"))  # another cart: bob's stays armed
    env.advance(minutes=19)
    assert env.enrollments("cart-nudge") == []
    env.advance(minutes=2)
    rows = env.enrollments("cart-nudge")
    assert [(r.person_id, r.outcome, r.trigger_kind) for r in rows] == [
        (env.person("bob"), "send", "absence")
    ]
    assert env.services.engine_state.pending_timers(env.workspace) == 0


def test_absence_timer_rearms_on_repeat_and_survives_restart(env: FlowEnv, database_url: str) -> None:
    env.flow("cart-nudge", CART)
    env.send(track("ada", "Product Added", cart_id="c1"))
    env.advance(minutes=20)
    env.send(track("ada", "Product Added", cart_id="c1"))  # one more item: the 30 minutes restart
    env.advance(minutes=15)
    assert env.enrollments("cart-nudge") == []
    # a new engine on the same database (a restart) finds the durable timer and fires it
    other = Services.build(
        Settings(database_url=database_url, run_engine=False), clock=env.clock, migrate=False
    )
    try:
        env.clock.advance(timedelta(minutes=16))
        other.projector.run_until_idle()
    finally:
        other.close()
    assert [r.outcome for r in env.enrollments("cart-nudge")] == ["send"]


def test_inactivity_trigger(env: FlowEnv) -> None:
    env.flow("winback", "id: winback\ntrigger: {inactivity: {for: 7d}}\nreentry: every_time\n")
    env.flow("no-open", "id: no-open\ntrigger: {inactivity: {for: 3d, event: App Opened}}\n")
    env.send(track("ada", "App Opened"))
    env.advance(days=2)
    env.send(track("ada", "Page Viewed"))  # activity: winback restarts, no-open does not
    env.advance(days=1, hours=1)
    assert [e.flow_id for e in env.enrollments()] == ["no-open"]
    env.advance(days=5)
    assert len(env.enrollments("winback")) == 0
    env.advance(days=1)
    assert [e.outcome for e in env.enrollments("winback")] == ["send"]


def test_segment_trigger_enter_and_time_based_leave(env: FlowEnv) -> None:
    env.segment(
        "loyal",
        "kind: segment\nid: loyal\nrule: {count: Order Completed, in_last: 30d, gte: 2}\n",
    )
    env.flow("welcome-loyal", "id: welcome-loyal\ntrigger: {segment: {id: loyal}}\n")
    env.flow("miss-you", "id: miss-you\ntrigger: {segment: {id: loyal, on: leave}}\n")
    env.send(track("ada", "Order Completed", total=10))
    assert env.enrollments() == []
    env.advance(days=5)
    env.send(track("ada", "Order Completed", total=12))
    assert [e.flow_id for e in env.sends("welcome-loyal")] == ["welcome-loyal"]
    with env.admin() as c:
        members = c.get("/v1/segments/loyal/members").json()["members"]
    assert [m["userId"] for m in members] == ["ada"]
    # no new order: 30 days after the first one the count drops to 1, by timer, not by a scan
    env.advance(days=24, hours=23)
    assert env.enrollments("miss-you") == []
    env.advance(hours=2)
    assert [e.outcome for e in env.enrollments("miss-you")] == ["send"]
    names = env.log_names()
    assert names.count("Segment Entered") == 1
    assert names.count("Segment Exited") == 1
    assert names.index("Segment Entered") < names.index("Segment Exited")


def test_date_trigger_fires_at_local_time_every_year(env: FlowEnv) -> None:
    env.flow(
        "birthday",
        "id: birthday\ntrigger: {date: {trait: birthday, at: '09:00', offset: -1d}}\nreentry: every_time\n",
    )
    env.send({**identify("ada", birthday="1990-11-06"), "context": {"timezone": "Europe/Amsterdam"}})
    env.send(identify("bob", birthday="not a date"))
    # the day before 6 November, 09:00 in Amsterdam = 08:00 UTC on 5 November
    env.clock.set(env.clock.now().replace(day=5, hour=7, minute=59))
    env.settle()
    assert env.enrollments("birthday") == []
    env.advance(minutes=2)
    rows = env.enrollments("birthday")
    assert [(r.person_id, r.occurrence) for r in rows] == [
        (env.person("ada"), "d1990-11-06".replace("1990", "2026"))
    ]
    env.advance(days=366)
    assert [r.occurrence for r in env.enrollments("birthday")] == ["d2026-11-06", "d2027-11-06"]


def test_a_date_is_re_planned_when_the_time_zone_arrives_after_it(env: FlowEnv) -> None:
    # Given a birthday flow, and Ada's birthday known before her time zone
    env.flow("birthday", "id: birthday\ntrigger: {date: {trait: birthday}}\nreentry: every_time\n")
    env.send(identify("ada", birthday="1990-11-06"))
    env.advance(days=1)
    # When a later event of hers carries her time zone
    env.send({**track("ada", "App Opened"), "context": {"timezone": "Asia/Tokyo"}})
    # Then it fires at 09:00 in Tokyo (00:00 UTC), not 09:00 UTC, and once
    env.clock.set(env.clock.now().replace(day=5, hour=23, minute=59))
    env.settle()
    assert env.enrollments("birthday") == []
    env.advance(minutes=2)
    env.advance(hours=12)
    rows = env.enrollments("birthday")
    assert [(r.occurrence, from_millis(r.decided_ms).isoformat()) for r in rows] == [
        ("d2026-11-06", "2026-11-06T00:00:00+00:00")
    ]


def test_a_date_moves_when_the_time_zone_changes_and_never_fires_twice(env: FlowEnv) -> None:
    env.flow("birthday", "id: birthday\ntrigger: {date: {trait: birthday}}\nreentry: every_time\n")
    env.send({**identify("ada", birthday="1990-11-06"), "context": {"timezone": "Asia/Tokyo"}})
    env.advance(days=1)
    env.send(identify("ada", timezone="America/New_York"))  # she moved: 09:00 there is 14:00 UTC
    env.clock.set(env.clock.now().replace(day=6, hour=13, minute=59))
    env.settle()
    assert env.enrollments("birthday") == []
    env.advance(minutes=2)
    assert [r.occurrence for r in env.enrollments("birthday")] == ["d2026-11-06"]
    # Back to Tokyo the same day: that birthday was had; the next one is at 09:00 Tokyo
    env.send({**track("ada", "App Opened"), "context": {"timezone": "Asia/Tokyo"}})
    env.advance(days=2)
    assert [r.occurrence for r in env.enrollments("birthday")] == ["d2026-11-06"]
    env.clock.set(env.clock.now().replace(year=2027, day=5, hour=23, minute=59))
    env.settle()
    assert len(env.enrollments("birthday")) == 1
    env.advance(minutes=2)
    rows = env.enrollments("birthday")
    assert [(r.occurrence, from_millis(r.decided_ms).isoformat()) for r in rows][1:] == [
        ("d2027-11-06", "2027-11-06T00:00:00+00:00")
    ]


def test_cohort_trigger_neighbourhood(env: FlowEnv) -> None:
    env.flow(
        "neighbours",
        """
id: neighbours
trigger:
  cohort:
    event: Solar Installed
    area: {geohash: 5}
    min_people: 3
    within: 7d
""",
    )

    def installed(user: str, lat: float, lon: float) -> dict[str, object]:
        return {
            **track(user, "Solar Installed"),
            "context": {"location": {"latitude": lat, "longitude": lon}},
        }

    env.send(installed("ada", 52.3702, 4.8952), installed("bob", 52.3720, 4.8990))
    env.send(installed("far", 48.8566, 2.3522))  # Paris: another area
    assert env.enrollments("neighbours") == []
    env.advance(days=2)
    env.send(installed("cy", 52.3710, 4.8970))
    people = sorted(e.person_id for e in env.sends("neighbours"))
    assert people == sorted(env.person(u) for u in ("ada", "bob", "cy"))
    env.send(installed("dee", 52.3705, 4.8960))  # joins while the threshold holds
    assert len(env.sends("neighbours")) == 4
    env.advance(days=8)
    env.send(installed("eve", 52.3705, 4.8960))  # the others left the window: alone again
    assert len(env.sends("neighbours")) == 4


def test_pause_resume_and_replay_never_enrolls_twice(env: FlowEnv) -> None:
    env.flow("tip", "id: tip\ntrigger: {event: Feature Used}\nreentry: every_time\n")
    env.send(track("ada", "Feature Used"))
    with env.admin() as c:
        assert c.post("/v1/flows/tip/pause").json()["status"] == "paused"
    env.send(track("ada", "Feature Used"))
    with env.admin() as c:
        assert c.post("/v1/flows/tip/resume").json()["status"] == "active"
    env.send(track("ada", "Feature Used"))
    assert [(e.outcome, e.reason) for e in env.enrollments("tip")] == [
        ("send", None),
        ("suppress", "flow_paused"),
        ("send", None),
    ]
    before = env.enrollments()
    env.services.projector.replay(env.workspace)
    assert env.enrollments() == before


def test_date_flow_applied_after_the_trait_was_set_is_planned_for_everyone(env: FlowEnv) -> None:
    env.send(identify("ada", birthday="1990-11-04"), identify("bob", birthday="1985-03-01"), identify("cy"))
    env.flow("birthday", "id: birthday\ntrigger: {date: {trait: birthday, at: '10:00'}}\n")
    assert env.services.engine_state.pending_timers(env.workspace) == 2
    env.advance(days=2, hours=3)  # 4 November 10:00 UTC has passed
    assert [(e.person_id, e.occurrence) for e in env.enrollments("birthday")] == [
        (env.person("ada"), "d2026-11-04")
    ]


def test_more_due_timers_than_a_batch_holds_are_fired_before_later_events(env: FlowEnv) -> None:
    env.services.projector.flows.timer_batch = 2  # type: ignore[union-attr]
    env.flow("quiet", "id: quiet\ntrigger: {inactivity: {for: 1h}}\nreentry: every_time\n")
    env.flow("hello", "id: hello\ntrigger: {event: Hello}\nreentry: every_time\n")
    for user in ("a", "b", "c", "d", "e"):
        env.send(track(user, "Opened"))
    env.clock.advance(timedelta(hours=2))  # five timers due, and then a new event arrives
    env.send(track("f", "Hello"))
    assert len(env.enrollments("quiet")) == 5
    assert len(env.enrollments("hello")) == 1
    assert [e.trigger_kind for e in env.enrollments()][-1] == "event"  # after the timers
