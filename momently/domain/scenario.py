"""Flow test scenarios: ``kind: scenario`` documents that sit next to the flows they test.

A scenario is a story on virtual time (people, then steps: events and waits) and what should
come of it (messages sent or not, suppressions, segment changes). This module is pure: it
reads the document into a :class:`Scenario` (or problems with file and line, like the flows
themselves), and checks expectations against what a run :class:`Observed`. Running the story
through the engine is ``momently.flowtest``.

Times are written as offsets from the scenario's ``start`` (``+0m``, ``+13d``, ``+2h30m``) or
as absolute ISO-8601 date-times. Expectations are matched on recorded times (when the engine
stamped a decision or a segment change), never on when the runner looked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from momently.domain.definitions import Document, Problem, suggest
from momently.domain.durations import UNITS_MS, InvalidDuration, parse_duration, parse_offset
from momently.domain.timestamps import InvalidTimestamp, from_millis, parse_timestamp, to_millis

DEFAULT_START: Final = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
DEFAULT_SETTLE_MS: Final = 86_400_000
EVENT_STEPS: Final = ("track", "identify", "page", "alias")
STEP_KEYS: Final = frozenset({*EVENT_STEPS, "wait", "at", "arrives"})
TOP_KEYS: Final = frozenset(
    {"kind", "id", "description", "start", "flows", "people", "steps", "expect", "settle"}
)
EXPECT_KEYS: Final = {
    "message": frozenset({"flow", "person", "at", "channel", "variant", "count"}),
    "no_message": frozenset({"flow", "person"}),
    "suppressed": frozenset({"flow", "person", "reason", "at"}),
    "segment": frozenset({"id", "person", "entered", "exited", "member"}),
}
REQUIRED: Final = {
    "message": ("flow", "person"),
    "no_message": ("person",),
    "suppressed": ("flow", "person"),
    "segment": ("id", "person"),
}


@dataclass(frozen=True, slots=True)
class Step:
    """One event (``kind`` is its Segment type, ``body`` the message without its timestamp),
    happening at ``at_ms`` and reaching the API at ``arrives_ms``; or a wait (``kind ==
    "wait"``), which moves the clock to ``arrives_ms``."""

    line: int
    kind: str
    at_ms: int
    arrives_ms: int
    body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Expectation:
    line: int
    kind: str  # message | no_message | suppressed | segment
    person: str  # a userId
    flow: str | None = None  # the segment's id for ``segment``
    at_ms: int | None = None  # message / suppressed: the decision's time; segment: entered
    exited_ms: int | None = None
    channel: str | None = None
    variant: str | None = None
    reason: str | None = None
    count: int | None = None
    member: bool | None = None
    text: str = ""  # as written, for the report


@dataclass(frozen=True, slots=True)
class Scenario:
    id: str
    source: str
    line: int
    start_ms: int
    flows: tuple[str, ...] | None  # None: every flow next to it
    people: dict[str, dict[str, Any]]
    steps: tuple[Step, ...]
    expect: tuple[Expectation, ...]
    settle_ms: int = DEFAULT_SETTLE_MS

    @property
    def end_ms(self) -> int:
        """Where the clock is left: past the last step by the settle period."""
        last = max((s.arrives_ms for s in self.steps), default=self.start_ms)
        return last + self.settle_ms

    def offset(self, ms: int) -> str:
        """``ms`` as the scenario writes it: ``+14d2h`` from the start (or ``-3h``)."""
        return _offset(ms, self.start_ms)


def parse_scenario(doc: Document) -> Scenario | list[Problem]:
    """The scenario in ``doc`` (a ``kind: scenario`` document), or every problem with its line."""
    problems: list[Problem] = []

    def problem(path: Sequence[str | int], message: str) -> None:
        problems.append(Problem(doc.source, doc.line_of(path), message))

    data = doc.data
    if not isinstance(data, dict):
        return [Problem(doc.source, doc.line, "a scenario is a mapping")]
    for key in data:
        if key not in TOP_KEYS:
            problem((key,), f"unknown key {key!r}{suggest(key, TOP_KEYS)}")
    sid = data.get("id")
    if not isinstance(sid, str) or not sid:
        problem(("id",), "a scenario needs an id")
    start_ms = to_millis(DEFAULT_START)
    if "start" in data:
        try:
            start_ms = _absolute(data["start"])
        except ValueError as exc:
            problem(("start",), str(exc))
    settle_ms = DEFAULT_SETTLE_MS
    if "settle" in data:
        try:
            settle_ms = parse_duration(data["settle"])
        except InvalidDuration as exc:
            problem(("settle",), str(exc))
    flows = data.get("flows")
    if flows is not None and not (isinstance(flows, list) and all(isinstance(f, str) for f in flows)):
        problem(("flows",), "flows is a list of flow ids, e.g. [cart-nudge]")
        flows = None
    people = data.get("people") or {}
    if not isinstance(people, dict) or not all(isinstance(t, dict) for t in people.values()):
        problem(("people",), "people maps a userId to its traits, e.g. {u1: {email: a@example.com}}")
        people = {}
    steps = _steps(data.get("steps"), start_ms, problem, doc)
    expect = _expectations(data.get("expect"), start_ms, problem, doc)
    if problems:
        return problems
    return Scenario(
        id=str(sid),
        source=doc.source,
        line=doc.line,
        start_ms=start_ms,
        flows=tuple(flows) if flows is not None else None,
        people={str(k): dict(v) for k, v in people.items()},
        steps=tuple(steps),
        expect=tuple(expect),
        settle_ms=settle_ms,
    )


def _absolute(value: object) -> int:
    if isinstance(value, datetime):  # YAML reads an unquoted ISO date-time itself
        return to_millis(value if value.tzinfo else value.replace(tzinfo=UTC))
    try:
        return to_millis(parse_timestamp(value))
    except InvalidTimestamp as exc:
        raise ValueError(f"{exc}; write an ISO date-time, e.g. 2026-03-02T09:00:00Z") from None


def resolve_time(value: object, start_ms: int) -> int:
    """``+13d`` (from the start) or an ISO-8601 date-time, in epoch milliseconds."""
    if isinstance(value, str) and value.strip().startswith(("+", "-")):
        text = value.strip()
        try:
            return start_ms + parse_offset(text.removeprefix("+"))
        except InvalidDuration:
            raise ValueError(f"{value!r}: write an offset from the start like +30m, +13d or +2h30m") from None
    try:
        return _absolute(value)
    except ValueError:
        raise ValueError(
            f"{value!r}: write an offset from the start (+30m, +13d, +2h30m) or an ISO date-time"
        ) from None


def _steps(raw: object, start_ms: int, problem: Any, doc: Document) -> list[Step]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        problem(("steps",), "steps is a list: - at: +0m\\n  track: {...}")
        return []
    out: list[Step] = []
    clock = start_ms
    for i, step in enumerate(raw):
        path: tuple[str | int, ...] = ("steps", i)
        if not isinstance(step, dict):
            problem(path, "a step is a mapping: {at: +1h, track: {...}} or {wait: 14d}")
            continue
        for key in step:
            if key not in STEP_KEYS:
                problem((*path, key), f"unknown step key {key!r}{suggest(key, STEP_KEYS)}")
        kinds = [k for k in (*EVENT_STEPS, "wait") if k in step]
        if len(kinds) != 1:
            problem(
                path, f"a step is exactly one of {', '.join((*EVENT_STEPS, 'wait'))}; found {kinds or 'none'}"
            )
            continue
        kind = kinds[0]
        line = doc.line_of(path)
        if kind == "wait":
            if "at" in step or "arrives" in step:
                problem(path, "a wait has no at/arrives: it moves the clock on by its duration")
                continue
            try:
                clock += parse_duration(step["wait"])
            except InvalidDuration as exc:
                problem((*path, "wait"), str(exc))
                continue
            out.append(Step(line, "wait", clock, clock))
            continue
        body = step[kind]
        if not isinstance(body, dict):
            problem((*path, kind), f"a {kind} step is a Segment {kind} body, e.g. {{userId: u1, ...}}")
            continue
        if "timestamp" in body:
            problem((*path, kind, "timestamp"), "the step's at: sets the timestamp")
            continue
        try:
            at_ms = resolve_time(step["at"], start_ms) if "at" in step else clock
            arrives_ms = resolve_time(step["arrives"], start_ms) if "arrives" in step else at_ms
        except ValueError as exc:
            problem((*path, "at"), str(exc))
            continue
        if arrives_ms < at_ms:
            problem((*path, "arrives"), "an event cannot arrive before it happened (arrives < at)")
            continue
        if arrives_ms < clock:
            problem(
                (*path, "at"),
                f"steps run in order, and the clock is already at {_offset(clock, start_ms)}: "
                f"this event arrives at {_offset(arrives_ms, start_ms)} "
                "(an event that happened earlier but arrives now is written with arrives:)",
            )
            continue
        clock = arrives_ms
        out.append(Step(line, kind, at_ms, arrives_ms, dict(body)))
    return out


def _offset(ms: int, start_ms: int) -> str:
    """Days, hours, minutes (weeks read worse in a scenario about ``+14d``)."""
    delta = abs(ms - start_ms)
    out = ""
    for unit in ("d", "h", "m", "s"):  # to the second, as times are matched
        n, delta = divmod(delta, UNITS_MS[unit])
        if n:
            out += f"{n}{unit}"
    return ("-" if ms < start_ms else "+") + (out or "0m")


def _expectations(raw: object, start_ms: int, problem: Any, doc: Document) -> list[Expectation]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        problem(("expect",), "expect is a list: - message: {flow: F, person: u1}")
        return []
    out: list[Expectation] = []
    for i, item in enumerate(raw):
        path: tuple[str | int, ...] = ("expect", i)
        if not isinstance(item, dict) or len(item) != 1:
            problem(path, f"an expectation is one of {', '.join(EXPECT_KEYS)}: {{flow: F, person: u1, ...}}")
            continue
        ((kind, spec),) = item.items()
        if kind not in EXPECT_KEYS:
            problem((*path, kind), f"unknown expectation {kind!r}{suggest(kind, EXPECT_KEYS)}")
            continue
        if not isinstance(spec, dict):
            problem((*path, kind), f"{kind} takes a mapping, e.g. {{flow: F, person: u1}}")
            continue
        allowed = EXPECT_KEYS[kind]
        bad = False
        for key in spec:
            if key not in allowed:
                problem((*path, kind, key), f"unknown key {key!r} in {kind}{suggest(key, allowed)}")
                bad = True
        for key in REQUIRED[kind]:
            if not isinstance(spec.get(key), str):
                problem((*path, kind), f"{kind} needs {key}: (text)")
                bad = True
        times: dict[str, int] = {}
        for key in ("at", "entered", "exited"):
            if key in spec:
                try:
                    times[key] = resolve_time(spec[key], start_ms)
                except ValueError as exc:
                    problem((*path, kind, key), str(exc))
                    bad = True
        count = spec.get("count")
        if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
            problem((*path, kind, "count"), "count is a whole number, e.g. 1")
            bad = True
        member = spec.get("member")
        if member is not None and not isinstance(member, bool):
            problem((*path, kind, "member"), "member is true or false")
            bad = True
        if bad:
            continue
        shown = ", ".join(f"{k}: {v}" for k, v in spec.items())
        out.append(
            Expectation(
                line=doc.line_of(path),
                kind=kind,
                person=str(spec["person"]),
                flow=str(spec.get("id") if kind == "segment" else spec.get("flow") or "") or None,
                at_ms=times.get("entered" if kind == "segment" else "at"),
                exited_ms=times.get("exited"),
                channel=_text(spec.get("channel")),
                variant=_text(spec.get("variant")),
                reason=_text(spec.get("reason")),
                count=count,
                member=member,
                text=f"{kind} {{{shown}}}",
            )
        )
    return out


def _text(value: object) -> str | None:
    return None if value is None else str(value)


# what happened -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Decision:
    """An enrollment's verdict: ``send`` or ``suppress`` with a reason, at its recorded time."""

    flow: str
    person: str
    at_ms: int
    outcome: str
    reason: str | None = None
    variant: str | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """What became of a send decision: ``sent`` on ``channel``, or suppressed/failed/expired
    (``reason``), or still pending when the run ended. ``decided_ms`` is its decision's time."""

    flow: str
    person: str
    decided_ms: int
    status: str
    channel: str | None
    variant: str | None
    kind: str = "message"  # or follow_up
    reason: str | None = None
    updated_ms: int = 0


@dataclass(frozen=True, slots=True)
class SegmentChange:
    segment: str
    person: str
    at_ms: int
    entered: bool


@dataclass(frozen=True, slots=True)
class Note:
    """Something the dispatcher did on the way (a fallback, a deferral), for the timeline."""

    person: str
    at_ms: int
    text: str


@dataclass(frozen=True, slots=True)
class Observed:
    decisions: tuple[Decision, ...] = ()
    deliveries: tuple[Delivery, ...] = ()
    segments: tuple[SegmentChange, ...] = ()
    members: frozenset[tuple[str, str]] = frozenset()  # (segment, person) at the end
    notes: tuple[Note, ...] = ()


@dataclass(frozen=True, slots=True)
class Failure:
    expectation: Expectation
    why: str


def check(scenario: Scenario, seen: Observed) -> list[Failure]:
    """Every expectation that did not hold, with one sentence on what happened instead."""
    out: list[Failure] = []
    for e in scenario.expect:
        why = _CHECKS[e.kind](scenario, e, seen)
        if why is not None:
            out.append(Failure(e, why))
    return out


def _when(scenario: Scenario, ms: int) -> str:
    return f"{scenario.offset(ms)} ({from_millis(ms).strftime('%Y-%m-%dT%H:%M:%SZ')})"


def _same_time(actual: int, expected: int | None) -> bool:
    """To the second: a segment rule that flips just after a window closes is stamped a
    millisecond past it, and nobody writes ``+60d1ms``."""
    return expected is None or abs(actual - expected) < 1000


def _check_message(scenario: Scenario, e: Expectation, seen: Observed) -> str | None:
    sent = [d for d in seen.deliveries if d.flow == e.flow and d.person == e.person and d.status == "sent"]
    what = f"{e.flow} to {e.person}"
    matching = [
        d
        for d in sent
        if _same_time(d.decided_ms, e.at_ms)
        and (e.channel is None or d.channel == e.channel)
        and (e.variant is None or d.variant == e.variant)
    ]
    if (len(matching) == e.count) if e.count is not None else bool(matching):
        return None
    if not sent:
        others = [d for d in seen.deliveries if d.flow == e.flow and d.person == e.person]
        if others:
            states = ", ".join(f"{d.status}{f' ({d.reason})' if d.reason else ''}" for d in others)
            return f"no message of {what} was sent: decided to send, then {states}"
        decisions = [d for d in seen.decisions if d.flow == e.flow and d.person == e.person]
        if decisions:
            return f"no message of {what} was sent: " + "; ".join(
                f"decided {d.outcome}{f' ({d.reason})' if d.reason else ''} at {_when(scenario, d.at_ms)}"
                for d in decisions
            )
        return f"no message of {what}: the flow never enrolled {e.person}"
    got = "; ".join(
        f"decided at {_when(scenario, d.decided_ms)} on {d.channel}, variant {d.variant}" for d in sent
    )
    if e.count is not None:
        return f"{len(matching)} of the {len(sent)} message(s) sent matched, not {e.count}: {got}"
    return f"{len(sent)} message(s) sent, none like this: {got}"


def _check_no_message(scenario: Scenario, e: Expectation, seen: Observed) -> str | None:
    sent = [
        d
        for d in seen.deliveries
        if d.person == e.person and d.status == "sent" and (e.flow is None or d.flow == e.flow)
    ]
    if not sent:
        return None
    return "sent: " + "; ".join(
        f"{d.flow} decided at {_when(scenario, d.decided_ms)} on {d.channel}" for d in sent
    )


def _check_suppressed(scenario: Scenario, e: Expectation, seen: Observed) -> str | None:
    found: list[tuple[int, str]] = [
        (d.at_ms, d.reason or "")
        for d in seen.decisions
        if d.flow == e.flow and d.person == e.person and d.outcome == "suppress"
    ]
    found += [
        (d.decided_ms, d.reason or "")
        for d in seen.deliveries
        if d.flow == e.flow and d.person == e.person and d.status in ("suppressed", "expired")
    ]
    for at_ms, reason in found:
        if (e.reason is None or reason == e.reason) and _same_time(at_ms, e.at_ms):
            return None
    what = f"{e.flow} for {e.person}"
    if not found:
        sent = [
            d for d in seen.deliveries if d.flow == e.flow and d.person == e.person and d.status == "sent"
        ]
        if sent:
            return f"nothing of {what} was suppressed: {len(sent)} message(s) sent"
        return f"nothing of {what} was suppressed (no decision either)"
    got = "; ".join(f"{reason} at {_when(scenario, at)}" for at, reason in found)
    return f"{what} was suppressed, but not as expected: {got}"


def _check_segment(scenario: Scenario, e: Expectation, seen: Observed) -> str | None:
    changes = [c for c in seen.segments if c.segment == e.flow and c.person == e.person]
    entered = [c.at_ms for c in changes if c.entered]
    exited = [c.at_ms for c in changes if not c.entered]
    problems: list[str] = []
    if e.at_ms is not None and not any(_same_time(t, e.at_ms) for t in entered):
        problems.append(f"expected to enter at {_when(scenario, e.at_ms)}")
    if e.exited_ms is not None and not any(_same_time(t, e.exited_ms) for t in exited):
        problems.append(f"expected to leave at {_when(scenario, e.exited_ms)}")
    is_member = (e.flow, e.person) in seen.members
    if e.member is not None and e.member != is_member:
        problems.append(f"expected {'a' if e.member else 'no'} member at the end")
    if e.at_ms is None and e.exited_ms is None and e.member is None and not entered:
        problems.append("expected to enter")
    if not problems:
        return None
    history = (
        ", ".join(f"{'entered' if c.entered else 'left'} at {_when(scenario, c.at_ms)}" for c in changes)
        or "never entered"
    )
    return f"segment {e.flow}, {e.person}: {'; '.join(problems)}; {history}"


_CHECKS: Final[Mapping[str, Any]] = {
    "message": _check_message,
    "no_message": _check_no_message,
    "suppressed": _check_suppressed,
    "segment": _check_segment,
}


def timeline(scenario: Scenario, seen: Observed, person: str) -> list[str]:
    """What happened to one person, in time order: decisions, deliveries, segment changes."""
    rows: list[tuple[int, int, str]] = []
    for d in seen.decisions:
        if d.person == person:
            detail = d.reason or (f"variant {d.variant}" if d.variant else "")
            rows.append((d.at_ms, 0, f"{d.flow}: decided {d.outcome} {detail}".rstrip()))
    for m in seen.deliveries:
        if m.person == person:
            how = f"on {m.channel}" if m.status == "sent" else (m.reason or "")
            label = "follow-up" if m.kind == "follow_up" else "message"
            rows.append((m.decided_ms, 2, f"{m.flow}: {label} {m.status} {how}".rstrip()))
    for n in seen.notes:
        if n.person == person:
            rows.append((n.at_ms, 1, n.text))
    for c in seen.segments:
        if c.person == person:
            rows.append((c.at_ms, 3, f"segment {c.segment}: {'entered' if c.entered else 'left'}"))
    rows.sort()
    return [f"{_when(scenario, at)}  {text}" for at, _, text in rows] or ["(nothing happened)"]


def problems_of(docs: Sequence[Document]) -> list[Problem]:
    """What is wrong with each scenario document (``flows validate`` checks them too)."""
    out: list[Problem] = []
    for doc in docs:
        parsed = parse_scenario(doc)
        if isinstance(parsed, list):
            out += parsed
    return out
