"""Flows and segments as the engine uses them: compiled, immutable, from validated documents.

The YAML shape is in docs/flows.md and docs/flow.schema.json; ``domain.definitions`` turns
files into the documents compiled here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from momently.domain.conditions import ALWAYS, Condition, compile_condition
from momently.domain.delays import Delay, compile_delay
from momently.domain.durations import parse_duration, parse_offset
from momently.domain.experiments import (
    EXPERIMENT_VIEWED,
    LIFECYCLE_EVENTS,
    Experiment,
    compile_experiment,
)

Tier = Literal["A", "B", "C"]


@dataclass(frozen=True, slots=True)
class EventTrigger:
    name: str
    where: Condition = ALWAYS
    kind: Literal["event"] = "event"


@dataclass(frozen=True, slots=True)
class AbsenceTrigger:
    """``first`` not followed by ``then`` within ``within_ms``; with ``key`` (a path into the
    event, e.g. ``properties.cart_id``) only a ``then`` with the same key value cancels."""

    first: str
    then: str
    within_ms: int
    first_where: Condition = ALWAYS
    then_where: Condition = ALWAYS
    key: str | None = None
    kind: Literal["absence"] = "absence"


@dataclass(frozen=True, slots=True)
class InactivityTrigger:
    """No event (or no ``event`` of this name) for ``for_ms``."""

    for_ms: int
    event: str | None = None
    kind: Literal["inactivity"] = "inactivity"


@dataclass(frozen=True, slots=True)
class SegmentTrigger:
    segment: str
    on: Literal["enter", "leave"] = "enter"
    kind: Literal["segment"] = "segment"


@dataclass(frozen=True, slots=True)
class DateTrigger:
    """Fires ``offset_ms`` from the date in ``trait``, at ``at`` local time, every year or once."""

    trait: str
    offset_ms: int = 0
    at: tuple[int, int] = (9, 0)
    repeat: Literal["yearly", "none"] = "yearly"
    kind: Literal["date"] = "date"


@dataclass(frozen=True, slots=True)
class CohortTrigger:
    """At least ``min_people`` distinct people in one area doing ``event`` within ``within_ms``."""

    event: str
    min_people: int
    within_ms: int
    geohash: int | None = None
    postal_code: str | None = None
    where: Condition = ALWAYS
    kind: Literal["cohort"] = "cohort"


Trigger = EventTrigger | AbsenceTrigger | InactivityTrigger | SegmentTrigger | DateTrigger | CohortTrigger
TRIGGER_KINDS = ("event", "absence", "inactivity", "segment", "date", "cohort")


@dataclass(frozen=True, slots=True)
class Goal:
    event: str
    within_ms: int
    where: Condition = ALWAYS


@dataclass(frozen=True, slots=True)
class Reentry:
    """``once`` ever, ``every_time``, or at most once per ``period_ms``."""

    mode: Literal["once", "every_time", "once_per"] = "once_per"
    period_ms: int = 86_400_000


@dataclass(frozen=True, slots=True)
class FollowUp:
    """If the goal is not reached ``after_ms`` after the message's send time (the decision, or
    the end of its delay), send on ``channel`` too."""

    channel: str
    after_ms: int


@dataclass(frozen=True, slots=True)
class Flow:
    id: str
    version: int
    trigger: Trigger
    tier: Tier = "B"
    priority: int = 0
    audience: Condition = ALWAYS
    channels: tuple[str, ...] = ("console",)
    goal: Goal | None = None
    follow_up: FollowUp | None = None
    delay: Delay | None = None
    reentry: Reentry = Reentry()
    message: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    document: dict[str, Any] = field(default_factory=dict)
    lateness_ms: int | None = None  # the flow's own allowed lateness; None: the workspace's
    experiment: Experiment | None = None


@dataclass(frozen=True, slots=True)
class Segment:
    id: str
    version: int
    rule: Condition
    document: dict[str, Any] = field(default_factory=dict)


# The names of the events the engine itself appends to the log.
SEGMENT_ENTERED = "Segment Entered"
SEGMENT_EXITED = "Segment Exited"
MESSAGE_DECIDED = "Message Decided"
# ... and the ones the dispatcher, the channels' callbacks and the widget append
MESSAGE_EVENTS = (
    MESSAGE_DECIDED,
    "Message Sent",
    "Message Failed",
    "Message Suppressed",
    "Message Deferred",
    "Message Delivered",
    "Message Seen",
    "Message Clicked",
    "Message Dismissed",
    "Message Replied",
    "Unsubscribed",
    "Action Taken",
)
# ... and the experiments' records: an assignment, and each change of an experiment's state
EXPERIMENT_EVENTS = (EXPERIMENT_VIEWED, *LIFECYCLE_EVENTS)
SYSTEM_EVENTS = (SEGMENT_ENTERED, SEGMENT_EXITED, *MESSAGE_EVENTS, *EXPERIMENT_EVENTS)
# What happens to a flow's message, each recorded with ``properties.flow_id`` and
# ``delivery_key``: a flow may follow another one's messages (step 2 of a sequence), naming it
# with ``where: {event: properties.flow_id, equals: ...}`` (``domain.chain`` rejects loops).
FLOW_MESSAGE_EVENTS = (
    "Message Sent",
    "Message Delivered",
    "Message Failed",
    "Message Seen",
    "Message Clicked",
    "Message Dismissed",
)
# Momently's events that are no trigger, and what to write instead. ``Message Replied`` and
# ``Unsubscribed`` are the person's own doing (no flow_id) and trigger like any other event.
NOT_TRIGGERS: dict[str, str] = {
    SEGMENT_ENTERED: "use a segment trigger: {segment: {id: ..., on: enter}}",
    SEGMENT_EXITED: "use a segment trigger: {segment: {id: ..., on: leave}}",
    MESSAGE_DECIDED: "it records the engine's decision, written with the message's first outcome, "
    "not something that happened to the person: trigger on 'Message Sent'",
    "Message Suppressed": "nothing reached the person: trigger on 'Message Sent' or 'Message Failed'",
    "Message Deferred": "nothing reached the person yet: trigger on 'Message Sent'",
    "Action Taken": "Momently does not record it: trigger on 'Message Clicked' or on the event the "
    "action declares",
    EXPERIMENT_VIEWED: "it records an experiment's assignment, not something that happened to the "
    "person (and a flow with an experiment following it would loop): trigger on 'Message Sent'",
    **{name: "it records a change of an experiment's state, about no person" for name in LIFECYCLE_EVENTS},
}


def compile_flow(doc: dict[str, Any], version: int) -> Flow:
    """Compile a document that passed ``definitions.validate``; errors here are bugs there."""
    path = ("trigger",)
    t = doc["trigger"]
    trigger: Trigger
    if "event" in t:
        trigger = EventTrigger(t["event"], compile_condition(t.get("where"), path=(*path, "where")))
    elif "absence" in t:
        a = t["absence"]
        trigger = AbsenceTrigger(
            first=a["first"]["event"],
            then=a["then"]["event"],
            within_ms=parse_duration(a["within"]),
            first_where=compile_condition(a["first"].get("where")),
            then_where=compile_condition(a["then"].get("where")),
            key=a.get("key"),
        )
    elif "inactivity" in t:
        i = t["inactivity"]
        trigger = InactivityTrigger(for_ms=parse_duration(i["for"]), event=i.get("event"))
    elif "segment" in t:
        s = t["segment"]
        trigger = SegmentTrigger(segment=s["id"], on=s.get("on", "enter"))
    elif "date" in t:
        d = t["date"]
        offset_ms = parse_offset(d.get("offset", "0s"))
        hh, mm = str(d.get("at", "09:00")).split(":")
        trigger = DateTrigger(
            trait=d["trait"], offset_ms=offset_ms, at=(int(hh), int(mm)), repeat=d.get("repeat", "yearly")
        )
    else:
        c = t["cohort"]
        trigger = CohortTrigger(
            event=c["event"],
            min_people=int(c["min_people"]),
            within_ms=parse_duration(c["within"]),
            geohash=c["area"].get("geohash"),
            postal_code=c["area"].get("postal_code"),
            where=compile_condition(c.get("where")),
        )
    goal = None
    if "goal" in doc:
        g = doc["goal"]
        goal = Goal(g["event"], parse_duration(g["within"]), compile_condition(g.get("where")))
    r = doc.get("reentry", {"once_per": "1d"})
    reentry = Reentry("once_per", parse_duration(r["once_per"])) if isinstance(r, dict) else Reentry(r, 0)
    return Flow(
        id=doc["id"],
        version=version,
        trigger=trigger,
        tier=doc.get("tier", "B"),
        priority=int(doc.get("priority", 0)),
        audience=compile_condition(doc.get("audience")),
        channels=tuple(doc.get("channels", ("console",))),
        goal=goal,
        follow_up=FollowUp(doc["follow_up"]["channel"], parse_duration(doc["follow_up"]["after"]))
        if "follow_up" in doc
        else None,
        delay=compile_delay(doc["delay"]) if "delay" in doc else None,
        reentry=reentry,
        message=dict(doc.get("message", {})),
        tags=tuple(doc.get("tags", ())),
        document=doc,
        lateness_ms=parse_duration(doc["lateness"], allow_zero=True) if "lateness" in doc else None,
        experiment=compile_experiment(doc["experiment"], doc["id"]) if "experiment" in doc else None,
    )


def compile_segment(doc: dict[str, Any], version: int) -> Segment:
    return Segment(doc["id"], version, compile_condition(doc["rule"], in_segment=True), doc)
