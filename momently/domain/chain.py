"""Flows that follow other flows' messages (``trigger: {event: Message Sent, where:
{event: properties.flow_id, equals: tip}}``): step 2 of a sequence, without letting flows
trigger each other for ever.

Two guards, because definitions change between validation and run time:

- ``loops`` finds, over every flow of a workspace, the ones that would trigger themselves
  through a cycle (a flow following its own messages, two following each other, a flow
  triggered by the event its own action declares); ``flows validate`` refuses them.
- At run time each enrollment has a chain depth: 0 when its trigger is anything but a
  message's event, one more than the enrollment that sent the message otherwise. The depth is
  part of the occurrence (``e42~c2``), so it travels in the ``delivery_key`` that every event
  about a message carries (sent, delivered, clicked, a tap's declared event) with no other
  plumbing, and the same log gives the same keys on replay. Beyond ``MAX_CHAIN`` the
  enrollment is suppressed (``chain_too_deep``).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from momently.domain.flow import FLOW_MESSAGE_EVENTS

MAX_CHAIN: Final = 5  # follow-ups of follow-ups; the sixth in a row is suppressed
_DEPTH = re.compile(r"~c(\d+)(?::follow-up)?$")
_FLOW_ID = "properties.flow_id"


def chained(occurrence: str, depth: int) -> str:
    """The occurrence of an enrollment at ``depth`` (unchanged at 0, as it always was)."""
    return occurrence if depth <= 0 else f"{occurrence}~c{depth}"


def depth_after(event: Mapping[str, Any] | None) -> int:
    """The chain depth of an enrollment triggered by ``event``: one more than the enrollment
    whose message the event is about (it carries that message's ``delivery_key``), else 0."""
    props = event.get("properties") if event is not None else None
    key = props.get("delivery_key") if isinstance(props, Mapping) else None
    if not isinstance(key, str):
        return 0
    found = _DEPTH.search(key)
    return (int(found.group(1)) if found else 0) + 1


@dataclass(frozen=True, slots=True)
class Follows:
    """The flows whose events a trigger part can match: those in ``only`` (any, when None),
    except those in ``unless``. Read from the part's ``where`` on ``properties.flow_id``."""

    only: frozenset[str] | None = None
    unless: frozenset[str] = frozenset()

    def admits(self, flow_id: str) -> bool:
        return (self.only is None or flow_id in self.only) and flow_id not in self.unless

    def both(self, other: Follows) -> Follows:
        if self.only is None:
            only = other.only
        else:
            only = self.only if other.only is None else self.only & other.only
        return Follows(only, self.unless | other.unless)


def follows(where: object) -> Follows:
    """What a condition says about ``properties.flow_id``. Only what it requires counts
    (atoms, and ``all`` of them); under ``any`` or ``not`` it may match any flow."""
    out = Follows()
    if not isinstance(where, Mapping):
        return out
    if isinstance(where.get("all"), list):
        for item in where["all"]:
            out = out.both(follows(item))
    if where.get("event") != _FLOW_ID:
        return out
    if "equals" in where:
        out = out.both(Follows(only=frozenset({str(where["equals"])})))
    if isinstance(where.get("in"), list):
        out = out.both(Follows(only=frozenset(str(v) for v in where["in"])))
    if "not_equals" in where:
        out = out.both(Follows(unless=frozenset({str(where["not_equals"])})))
    if isinstance(where.get("not_in"), list):
        out = out.both(Follows(unless=frozenset(str(v) for v in where["not_in"])))
    if where.get("exists") is False:
        out = out.both(Follows(only=frozenset()))
    return out


def enrolling_parts(trigger: Mapping[str, Any]) -> list[tuple[str, Follows]]:
    """(event name, flows it may come from) for each part of a trigger whose event enrolls:
    an event, an absence's ``first``, a cohort's event. An absence's ``then`` only cancels."""
    if isinstance(trigger.get("event"), str):
        return [(trigger["event"], follows(trigger.get("where")))]
    absence = trigger.get("absence")
    if isinstance(absence, Mapping) and isinstance(absence.get("first"), Mapping):
        first = absence["first"]
        return [(str(first.get("event")), follows(first.get("where")))]
    cohort = trigger.get("cohort")
    if isinstance(cohort, Mapping):
        return [(str(cohort.get("event")), follows(cohort.get("where")))]
    return []


@dataclass(frozen=True, slots=True)
class Loop:
    """A cycle through ``path`` (first and last the same flow), entered by ``event``."""

    path: tuple[str, ...]
    event: str

    def __str__(self) -> str:
        if len(self.path) == 2:
            return (
                f"flow '{self.path[0]}' would trigger itself: '{self.event}' matches its own "
                "messages; name the flows it follows, e.g. "
                "where: {event: properties.flow_id, equals: <the flow before it>}"
            )
        return (
            f"flows would trigger each other in a loop: {' -> '.join(self.path)} (the messages "
            "of each trigger the next); a flow may follow another one's messages, not one that "
            "follows its own"
        )


def loops(flows: Mapping[str, Mapping[str, Any]], declared: Mapping[str, Iterable[str]]) -> dict[str, Loop]:
    """For each flow on a cycle, the shortest one through it. ``flows``: id -> document;
    ``declared``: id -> the events its actions declare (a tap records them with its flow_id)."""
    declarers: dict[str, list[str]] = {}
    for fid, names in declared.items():
        for name in names:
            declarers.setdefault(name, []).append(fid)
    parts: dict[str, list[tuple[str, Follows]]] = {}
    for fid, doc in flows.items():
        trigger = doc.get("trigger")
        parts[fid] = enrolling_parts(trigger) if isinstance(trigger, Mapping) else []
    # Only flows that follow messages can be on a loop (each link of one is followed), so the
    # graph holds just them: its size does not grow with the flows triggered by customer events.
    ids = sorted(fid for fid, named in parts.items() if any(_followed(n, declarers) for n, _ in named))
    # after[b][a] = the event by which b's messages trigger a
    after: dict[str, dict[str, str]] = {fid: {} for fid in ids}
    for fid in ids:
        for name, which in parts[fid]:
            sources = ids if name in FLOW_MESSAGE_EVENTS else declarers.get(name, [])
            for source in sources:
                if source in after and which.admits(source):
                    after[source].setdefault(fid, name)
    found: dict[str, Loop] = {}
    for start in ids:
        path = _cycle(after, start)
        if path is not None:
            found[start] = Loop(path, after[path[-2]][start])
    return found


def _followed(name: str, declarers: Mapping[str, list[str]]) -> bool:
    """Whether an event is about some flow's message: its lifecycle, or an action's event."""
    return name in FLOW_MESSAGE_EVENTS or name in declarers


def _cycle(after: Mapping[str, Mapping[str, str]], start: str) -> tuple[str, ...] | None:
    """The shortest path from ``start`` back to itself, breadth first."""
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in sorted(after.get(node, {})):
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return (*reversed(path), start)
            if nxt not in parent:
                parent[nxt] = node
                queue.append(nxt)
    return None
