"""``momently flows test``: run scenarios (``kind: scenario``) through the real engine on
virtual time, so "does my 14-day winback do the right thing" takes a second, not 14 days.

Each scenario gets a scratch SQLite database of its own and a :class:`ManualClock` at its
start. Its flows, segments and event catalogs are applied as ``flows apply`` would, then each
step goes through the HTTP API in process (the same validation and normalisation as live
traffic) with the clock set to the step's arrival, so ``receivedAt`` is when it arrived and
``timestamp`` when it happened. Between steps the clock walks from one due timer or delivery
to the next, draining the engine and the dispatcher at each, so every decision is taken when
it would be live. After the last step the clock runs on for the settle period (a day by
default), so timers held back by an allowed lateness fire too.

A **message** is a send decision (an enrollment with outcome ``send``) whose delivery the
dispatcher handed to a channel (a ``Message Sent`` in the log). Console and in-app are the
real channels; email, SMS, push and the webhook are sandboxes (``channels.sandbox``) that
reach the same people the real ones would and send nothing.
"""

from __future__ import annotations

import asyncio
import atexit
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from momently import catalog
from momently.channels.base import Channel
from momently.channels.sandbox import SandboxChannel
from momently.channels.webpush import identities
from momently.clock import ManualClock
from momently.domain.credentials import KeyKind
from momently.domain.definitions import Document, Problem
from momently.domain.flow import SEGMENT_ENTERED, SEGMENT_EXITED
from momently.domain.profile import LoggedEvent
from momently.domain.scenario import (
    Decision,
    Delivery,
    Failure,
    Note,
    Observed,
    Scenario,
    SegmentChange,
    Step,
    check,
    parse_scenario,
    timeline,
)
from momently.domain.timestamps import format_timestamp, from_millis
from momently.engine.dispatcher import MESSAGE_DEFERRED, MESSAGE_FAILED, MESSAGE_SUPPRESSED
from momently.services import Services
from momently.settings import Settings
from momently.virtual_time import Runaway, next_stop, walk

WORKSPACE = "scenario"
DISPATCH_NOTES = (MESSAGE_FAILED, MESSAGE_DEFERRED, MESSAGE_SUPPRESSED)


class ScenarioError(RuntimeError):
    """The scenario could not run (its flows are invalid, the API refused a step)."""


@dataclass(frozen=True, slots=True)
class Suite:
    """Scenarios and the flow, segment and catalog documents they run against."""

    scenarios: list[tuple[Scenario, list[Document]]]
    problems: list[Problem]


@dataclass(frozen=True, slots=True)
class Result:
    scenario: Scenario
    failures: list[Failure]
    seen: Observed
    seconds: float
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and not self.failures

    def report(self) -> str:
        """One line when it passed; otherwise each failed expectation and the timeline of
        each person concerned."""
        s = self.scenario
        where = f"{s.source}:{s.line}"
        if self.passed:
            return f"ok    {s.id} ({len(s.expect)} expectations, {self.seconds:.2f}s)  {where}"
        lines = [f"FAIL  {s.id} ({self.seconds:.2f}s)  {where}"]
        if self.error is not None:
            lines.append(f"  {self.error}")
            return "\n".join(lines)
        for f in self.failures:
            lines.append(f"  line {f.expectation.line}: expected {f.expectation.text}")
            lines.append(f"    got: {f.why}")
        for person in dict.fromkeys(f.expectation.person for f in self.failures):
            lines.append(f"  what happened to {person}:")
            lines += [f"    {row}" for row in timeline(s, self.seen, person)]
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        s = self.scenario

        def when(ms: int) -> dict[str, str]:
            return {"offset": s.offset(ms), "time": format_timestamp(from_millis(ms))}

        return {
            "id": s.id,
            "source": f"{s.source}:{s.line}",
            "passed": self.passed,
            "seconds": round(self.seconds, 3),
            "error": self.error,
            "failures": [
                {"line": f.expectation.line, "expected": f.expectation.text, "got": f.why}
                for f in self.failures
            ],
            "decisions": [
                {
                    "flow": d.flow,
                    "person": d.person,
                    **when(d.at_ms),
                    "outcome": d.outcome,
                    "reason": d.reason,
                }
                for d in self.seen.decisions
            ],
            "messages": [
                {
                    "flow": m.flow,
                    "person": m.person,
                    "decided": when(m.decided_ms),
                    "kind": m.kind,
                    "status": m.status,
                    "channel": m.channel,
                    "variant": m.variant,
                    "reason": m.reason,
                }
                for m in self.seen.deliveries
            ],
            "segments": [
                {"segment": c.segment, "person": c.person, **when(c.at_ms), "entered": c.entered}
                for c in self.seen.segments
            ],
        }


def load_suite(paths: Sequence[Path], *, flows: Path | None = None) -> Suite:
    """The scenarios under ``paths`` (files or directories). Each runs against the flows in
    ``flows``, or else in the directory it was found under (a file's own directory)."""
    out: list[tuple[Scenario, list[Document]]] = []
    problems: list[Problem] = []
    definitions: dict[Path, list[Document]] = {}

    def defs(root: Path) -> list[Document]:
        if root not in definitions:
            loaded = catalog.read_path(root)
            problems.extend(p for p in loaded.problems if p.line)  # not "no .yaml here"
            definitions[root] = loaded.documents
        return definitions[root]

    for path in paths:
        found = catalog.read_path(path)
        problems.extend(found.problems)
        if not found.scenarios and not found.problems:
            problems.append(Problem(str(path), 0, "no kind: scenario documents here"))
        for doc in found.scenarios:
            parsed = parse_scenario(doc)
            if isinstance(parsed, list):
                problems += parsed
                continue
            root = flows or (path if path.is_dir() else path.parent)
            out.append((parsed, defs(root)))
    ids: dict[tuple[str, str], Scenario] = {}
    for s, _ in out:
        first = ids.setdefault((s.source, s.id), s)
        if first is not s:
            problems.append(
                Problem(s.source, s.line, f"scenario '{s.id}' is defined twice (also line {first.line})")
            )
    return Suite(out, sorted(set(problems), key=lambda p: (p.source, p.line)))


def run(scenario: Scenario, documents: Sequence[Document], *, default_timezone: str = "UTC") -> Result:
    """Run one scenario from an empty database; never raises for a scenario's own mistakes."""
    started = time.perf_counter()
    seen = Observed()
    try:
        with _sandbox(scenario, default_timezone) as box:
            box.apply(_selected(scenario, documents))
            box.play(scenario)
            seen = box.observe(scenario)
    except ScenarioError as exc:
        return Result(scenario, [], seen, time.perf_counter() - started, error=str(exc))
    return Result(scenario, check(scenario, seen), seen, time.perf_counter() - started)


def _selected(scenario: Scenario, documents: Sequence[Document]) -> list[Document]:
    """Every segment and catalog; only the scenario's flows when it names them."""
    if scenario.flows is None:
        return list(documents)
    flows = {d.id for d in documents if d.kind == "flow"}
    missing = [f for f in scenario.flows if f not in flows]
    if missing:
        raise ScenarioError(
            f"no flow {', '.join(map(repr, missing))} next to the scenario (flows: {sorted(flows)})"
        )
    return [d for d in documents if d.kind != "flow" or d.id in scenario.flows]


# one scenario's world --------------------------------------------------------------------
_template: dict[str, Path] = {}


def _migrated_template() -> Path:
    """An empty migrated database, made once per process and copied for each scenario:
    migrating costs more than running a scenario."""
    path = _template.get("db")
    if path is None or not path.exists():
        folder = Path(tempfile.mkdtemp(prefix="momently-flowtest-"))
        atexit.register(shutil.rmtree, folder, True)
        path = folder / "template.db"
        Services.build(_settings(path, "UTC")).close()
        _template["db"] = path
    return path


def _settings(db: Path, default_timezone: str) -> Settings:
    # explicit, so nothing in the environment (a provider account, a writer socket) leaks in
    return Settings(
        database_url=f"sqlite:///{db}",
        run_engine=False,
        log_writer_socket=None,
        smtp_url=None,
        webhook_url=None,
        vapid_private_key=None,
        sms_account_sid=None,
        auth_cache_seconds=0.0,
        default_timezone=default_timezone,
        console_path=str(db.with_suffix(".console.jsonl")),
        public_url="http://flowtest.invalid",
    )


@contextmanager
def _sandbox(scenario: Scenario, default_timezone: str) -> Iterator[_World]:
    with tempfile.TemporaryDirectory(prefix="momently-scenario-") as tmp:
        db = Path(tmp) / "scenario.db"
        shutil.copyfile(_migrated_template(), db)
        clock = ManualClock(from_millis(scenario.start_ms))
        services = Services.build(_settings(db, default_timezone), clock=clock, migrate=False)
        try:
            world = _World(services, clock)
            try:
                yield world
            finally:
                world.close()
        finally:
            services.close()


class _World:
    def __init__(self, services: Services, clock: ManualClock) -> None:
        from momently.api import create_app

        self.s = services
        self.clock = clock
        push = services.push
        sandboxes: dict[str, Channel] = {
            "email": SandboxChannel("email", lambda _ws, p: p.email),
            "sms": SandboxChannel("sms", lambda _ws, p: p.phone),
            "push": SandboxChannel(
                "push", lambda ws, p: "push" if push.for_identities(ws, identities(p)) else None
            ),
            "webhook": SandboxChannel("webhook", lambda _ws, p: "sandbox"),
        }
        services.channels.defaults.update(sandboxes)
        now = clock.now()
        services.workspaces.create(WORKSPACE, name="flow test", now=now)
        key = services.workspaces.issue_key(WORKSPACE, KeyKind.SERVER, label="flowtest", now=now)
        services.writer.start()
        # the app in process, through httpx's ASGI transport: no port, no server thread
        self.loop = asyncio.new_event_loop()
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(services, manage_services=False)),
            base_url="http://flowtest.invalid",
            auth=(key.secret, ""),
        )
        self.users: set[str] = set()

    def close(self) -> None:
        self.loop.run_until_complete(self.http.aclose())
        self.loop.close()

    def apply(self, documents: list[Document]) -> None:
        try:
            catalog.apply(self.s, WORKSPACE, catalog.Loaded(documents, []))
        except catalog.InvalidDefinitions as exc:
            raise ScenarioError(
                "the flows are not valid:\n    " + "\n    ".join(map(str, exc.problems))
            ) from None

    def play(self, scenario: Scenario) -> None:
        self.drain()
        for n, (user, traits) in enumerate(scenario.people.items()):
            self.users.add(user)
            self.send(
                Step(
                    scenario.line,
                    "identify",
                    scenario.start_ms,
                    scenario.start_ms,
                    {"userId": user, "traits": traits},
                ),
                f"people-{n}",
            )
        for n, step in enumerate(scenario.steps):
            self.advance(step.arrives_ms)
            if step.kind != "wait":
                self.send(step, f"step-{n}")
        self.advance(scenario.end_ms)

    def send(self, step: Step, message_id: str) -> None:
        for key in ("userId", "previousId"):
            if isinstance(step.body.get(key), str):
                self.users.add(step.body[key])
        body = {
            "messageId": f"scenario-{message_id}",
            **step.body,
            "type": step.kind,
            "timestamp": format_timestamp(from_millis(step.at_ms)),
        }
        r = self.loop.run_until_complete(self.http.post("/v1/batch", json={"batch": [body]}))
        answer = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        if r.status_code != 200 or answer.get("rejected"):
            why = answer.get("rejected") or answer or r.text
            raise ScenarioError(
                f"line {step.line}: the API refused the {step.kind} (HTTP {r.status_code}): {why}"
            )
        self.drain()

    def drain(self) -> None:
        """Run the engine and the dispatcher until neither has anything to do: what the
        dispatcher writes (Message Sent, ...) is read by the engine, and the engine's
        decisions are sent by the dispatcher."""
        while self.s.projector.run_until_idle() + self.s.dispatcher.run_until_idle():
            pass

    def advance(self, target_ms: int) -> None:
        """Walk the clock to ``target_ms``, stopping at each due timer and delivery on the way."""
        try:
            walk(
                self.clock,
                from_millis(target_ms),
                stop=lambda: next_stop(self.s, [WORKSPACE]),
                settle=self.drain,
            )
        except Runaway as exc:
            raise ScenarioError(str(exc)) from None

    def observe(self, scenario: Scenario) -> Observed:
        """What happened, by userId (a person with none is shown by their person id)."""
        names: dict[str, str] = {}
        for user in sorted(self.users):
            pid = self.s.profiles.person_for(WORKSPACE, ("user", user))
            if pid is not None:
                names.setdefault(pid, user)

        def who(pid: str) -> str:
            return names.get(pid, pid)

        enrollments = self.s.engine_state.enrollments(WORKSPACE, limit=1_000_000)
        decisions = tuple(
            Decision(e.flow_id, who(e.person_id), e.decided_ms, e.outcome, e.reason, e.detail.get("variant"))
            for e in enrollments
        )
        rows = sorted(self.s.outbox.list(WORKSPACE, limit=1_000_000), key=lambda d: (d.created_ms, d.id))
        deliveries = tuple(
            Delivery(
                d.flow_id,
                who(d.person_id),
                d.created_ms,
                d.status,
                d.channel,
                d.variant,
                d.kind,
                (d.last_error or "").split(":", 1)[0] or None if d.status != "sent" else None,
                d.updated_ms,
            )
            for d in rows
        )
        segments: list[SegmentChange] = []
        notes: list[Note] = []
        after = 0
        while batch := self.s.events.read(WORKSPACE, after_seq=after, limit=5000):
            after = batch[-1].seq
            for ev in batch:
                if ev.name in DISPATCH_NOTES and ev.user_id is not None:
                    notes.append(_note(ev, ev.user_id))
                elif ev.name in (SEGMENT_ENTERED, SEGMENT_EXITED):
                    props = ev.body.get("properties") or {}
                    segments.append(
                        SegmentChange(
                            str(props.get("segment_id")),
                            who(str(props.get("person_id"))),
                            ev.timestamp_ms,
                            ev.name == SEGMENT_ENTERED,
                        )
                    )
        members: set[tuple[str, str]] = set()
        for seg in self.s.definitions.heads(WORKSPACE, "segment"):
            for pid, _since in self.s.engine_state.segment_members(WORKSPACE, seg.id, limit=1_000_000):
                members.add((seg.id, who(pid)))
        return Observed(decisions, deliveries, tuple(segments), frozenset(members), tuple(notes))


def _note(ev: LoggedEvent, person: str) -> Note:
    """``cart-nudge: email failed (no_consent), fell back to console``."""
    p = ev.body.get("properties") or {}
    what = {MESSAGE_FAILED: "failed", MESSAGE_DEFERRED: "deferred", MESSAGE_SUPPRESSED: "suppressed"}[
        str(ev.name)
    ]
    text = f"{p.get('flow_id')}: {p.get('channel')} {what} ({p.get('reason')})"
    if p.get("fallback"):
        text += f", fell back to {p['fallback']}"
    if p.get("until"):
        text += f" until {format_timestamp(from_millis(int(p['until'])))}"
    return Note(person, ev.timestamp_ms, text)
