"""Flow and segment definitions as files: read a directory, validate it against what the
workspace knows, apply it as new versions. One place for the CLI and the admin API."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from momently.domain.definitions import Document, Known, Problem, load, validate
from momently.domain.flow import compile_flow
from momently.domain.timestamps import to_millis
from momently.services import Services
from momently.store.definitions import Applied, Kind
from momently.store.engine_state import Changes

SUFFIXES = (".yaml", ".yml")
SCENARIO = "scenario"


class InvalidDefinitions(ValueError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Loaded:
    """``scenarios`` are the ``kind: scenario`` documents (flow tests, ``momently flows
    test``): read with the flows they sit next to, never applied."""

    documents: list[Document]
    problems: list[Problem]
    scenarios: list[Document] = field(default_factory=list)


def read_path(path: Path) -> Loaded:
    """Every YAML document in a file, or in a directory's ``*.yaml``/``*.yml`` files (recursively)."""
    if not path.exists():
        return Loaded([], [Problem(str(path), 0, "no such file or directory")])
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES)
    if not files:
        return Loaded([], [Problem(str(path), 0, "no .yaml or .yml files here")])
    docs: list[Document] = []
    problems: list[Problem] = []
    scenarios: list[Document] = []
    for f in files:
        found, bad = load(f.read_text(encoding="utf-8"), str(f))
        docs += [d for d in found if d.kind != SCENARIO]
        scenarios += [d for d in found if d.kind == SCENARIO]
        problems += bad
    return Loaded(docs, problems, scenarios)


def known(services: Services, workspace_id: str) -> Known:
    """What references may point at besides the files themselves: the event names the
    workspace's log has seen or its stored ``kind: events`` catalogs declare, the segments
    already stored, and the stored flows (a new flow must not close a loop with them)."""
    names = set(services.engine_state.known_event_names(workspace_id))
    for c in services.definitions.heads(workspace_id, "events"):
        if c.status != "archived":
            names.update(str(n) for n in c.body.get("names", []) if isinstance(n, str))
    segments = {s.id for s in services.definitions.heads(workspace_id, "segment") if s.status != "archived"}
    flows = {f.id: f.body for f in services.definitions.heads(workspace_id, "flow") if f.status != "archived"}
    settings = services.settings
    base = (settings.public_url or f"http://{settings.host}:{settings.port}").rstrip("/")
    return Known(
        events=frozenset(names),
        segments=frozenset(segments),
        link_base=f"{base}/a/{workspace_id}",
        flows=flows,
    )


def check(services: Services, workspace_id: str, loaded: Loaded) -> list[Problem]:
    return loaded.problems + validate(loaded.documents, known(services, workspace_id))


def apply(services: Services, workspace_id: str, loaded: Loaded, *, by: str = "cli") -> list[Applied]:
    """Validate everything first; store nothing unless all of it is valid. A flow's experiment
    starts (``Experiment Started``, by ``by``) the first time its flow is applied."""
    problems = check(services, workspace_id, loaded)
    if problems:
        raise InvalidDefinitions(problems)
    now_ms = to_millis(services.clock.now())
    out: list[Applied] = []
    # catalogs, then segments, then flows: later flows are checked against what came first
    order = {"events": 0, "segment": 1}
    for doc in sorted(loaded.documents, key=lambda d: order.get(d.kind, 2)):
        body: dict[str, Any] = dict(doc.data)
        body.pop("kind", None)
        kind: Kind = "events" if doc.kind == "events" else "segment" if doc.kind == "segment" else "flow"
        out.append(
            services.definitions.apply(
                workspace_id,
                kind,
                doc.id,
                body,
                source=f"{doc.source}:{doc.line}",
                now_ms=now_ms,
            )
        )
    for a in out:
        if a.kind == "flow" and a.changed:
            _plan_dates(services, workspace_id, a.id, a.version, now_ms)
            _start_experiment(services, workspace_id, a.id, a.version, now_ms, by)
    services.projector.wake()
    return out


def _start_experiment(
    services: Services, workspace_id: str, flow_id: str, version: int, now_ms: int, by: str
) -> None:
    body = services.definitions.get(workspace_id, "flow", flow_id, version).body
    if "experiment" not in body:
        return
    flow = compile_flow(body, version)
    assert flow.experiment is not None
    services.experiments.change(
        workspace_id,
        flow.experiment,
        flow_id,
        "start",
        by=by,
        reason="flow applied",
        now_ms=now_ms,
        only_if_new=True,
    )


def _plan_dates(services: Services, workspace_id: str, flow_id: str, version: int, now_ms: int) -> None:
    """A new or changed date flow: plan its timers for everyone who already has the trait."""
    body = services.definitions.get(workspace_id, "flow", flow_id, version).body
    if "date" not in body.get("trigger", {}):
        return
    flow = compile_flow(body, version)
    stage = services.projector.flows
    if stage is None:
        return
    after = ""
    while page := services.profiles.page(workspace_id, after=after, limit=1000):
        after = page[-1].person_id
        timers = stage.plan_dates(flow, page, now_ms=now_ms)
        if timers:
            with services.db.write() as conn:
                services.engine_state.save(
                    conn, workspace_id, Changes(timers={t.identity: t for t in timers})
                )


def document(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """A stored body back in its file form (segments and catalogs carry their ``kind``)."""
    return {"kind": kind, **body} if kind in ("segment", "events") else body
