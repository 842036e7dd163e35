"""From YAML text to validated flow and segment documents, with errors a person can act on:
file, line, what is wrong and, for a misspelt key or name, a suggestion
(``unknown key 'withn' (did you mean 'within'?)``).

Pure: callers read the files and pass their text, plus what the workspace already knows
(event names seen in its log, stored segments) so references can be checked.

YAML is bounded before it is built: a file of at most ``MAX_YAML_CHARS``, nested at most
``MAX_YAML_DEPTH`` levels, and anchors/aliases (handy to share a condition between flows)
that add at most ``MAX_ALIAS_NODES`` nodes once expanded. An alias inside its own anchor (a
loop) and an alias bomb ("billion laughs") are refused by counting the composed graph, which
costs as much as its distinct nodes, before anything is expanded.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import yaml

from momently.domain import experiments
from momently.domain.chain import loops
from momently.domain.conditions import ConditionError, compile_condition
from momently.domain.durations import (
    TIME_OF_DAY,
    InvalidDuration,
    duration_problem,
    parse_duration,
    parse_offset,
    time_of_day_problem,
)
from momently.domain.flow import FLOW_MESSAGE_EVENTS, NOT_TRIGGERS, SYSTEM_EVENTS, TRIGGER_KINDS
from momently.domain.flow_schema import SCHEMA, condition_keys
from momently.domain.lateness import MAX_LATENESS_MS
from momently.domain.lint import DEFAULT_LINK_BASE, LinkSpec, lint_message

Path = tuple[str | int, ...]
MAX_YAML_CHARS = 256 * 1024
MAX_YAML_DEPTH = 64
MAX_ALIAS_NODES = 10_000
TOO_COMPLEX = "definition_too_complex"


@dataclass(frozen=True, slots=True)
class Problem:
    source: str
    line: int
    message: str
    code: str | None = None  # set for a document refused before it is read (``TOO_COMPLEX``)

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.message}"


@dataclass(slots=True)
class Document:
    """One YAML document, with the line of every key and value for error messages."""

    source: str
    line: int
    data: Any
    lines: dict[Path, int] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return str(self.data.get("kind", "flow")) if isinstance(self.data, dict) else "flow"

    @property
    def id(self) -> str:
        return str(self.data.get("id", "")) if isinstance(self.data, dict) else ""

    def line_of(self, path: Sequence[str | int]) -> int:
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return self.line


class _Loader(yaml.SafeLoader):
    """Safe loading, and YAML 1.2 booleans: ``on: enter`` must stay the key "on", not True."""


for first, resolvers in list(_Loader.yaml_implicit_resolvers.items()):
    _Loader.yaml_implicit_resolvers[first] = [
        (tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"
    ]
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


class _TooLarge(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


def load(text: str, source: str) -> tuple[list[Document], list[Problem]]:
    """Every document in ``text`` (several per file, separated by ``---``)."""
    docs: list[Document] = []
    if len(text) > MAX_YAML_CHARS:
        message = f"a definition file may be at most {MAX_YAML_CHARS} characters"
        return [], [Problem(source, 1, message, TOO_COMPLEX)]
    try:
        _check_depth(text)
        nodes = list(yaml.compose_all(text, Loader=_Loader))
        for node in nodes:
            if node is not None:
                _check_aliases(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        return [], [Problem(source, line, f"not valid YAML: {problem}")]
    except _TooLarge as exc:
        return [], [Problem(source, exc.line, str(exc), TOO_COMPLEX)]
    for node in nodes:
        if node is None:
            continue
        lines: dict[Path, int] = {}
        data = _construct(node, (), lines)
        docs.append(Document(source, node.start_mark.line + 1, data, lines))
    return docs, []


def _check_depth(text: str) -> None:
    """Nesting, from the parser's event stream (iterative): composing and building the
    document recurse once a level, so a deep one is refused before either runs."""
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark else 1
                raise _TooLarge(line, f"the YAML is nested more than {MAX_YAML_DEPTH} levels deep")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _check_aliases(root: yaml.Node) -> None:
    """Refuse a document whose aliases loop or expand by more than ``MAX_ALIAS_NODES`` nodes.
    The composer shares one node object for an anchor and its aliases, so reaching a node a
    second time is an alias; its expanded size is counted once per node (memoised), and the
    walk keeps an explicit stack, so an alias bomb costs its size in bytes, not its expansion."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    extra = 0
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        if done:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in children)
            continue
        if key in on_path:
            raise _TooLarge(node.start_mark.line + 1, "a YAML alias refers to its own anchor (a loop)")
        if key in size:  # seen before: an alias, expanded where it is used
            extra += size[key]
            if extra > MAX_ALIAS_NODES:
                raise _TooLarge(
                    node.start_mark.line + 1,
                    f"YAML aliases expand to more than {MAX_ALIAS_NODES} nodes",
                )
            continue
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in reversed(children))


def _construct(node: yaml.Node, path: Path, lines: dict[Path, int]) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            lines[(*path, key)] = key_node.start_mark.line + 1
            out[key] = _construct(value_node, (*path, key), lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(child, (*path, i), lines) for i, child in enumerate(node.value)]
    loader = _Loader("")
    return loader.construct_object(node, deep=True)


def suggest(word: str, choices: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


_validator = jsonschema.Draft202012Validator(SCHEMA)


@dataclass(frozen=True, slots=True)
class Known:
    """What references may point at, besides what the validated files define themselves."""

    events: frozenset[str] = frozenset()
    segments: frozenset[str] = frozenset()
    link_base: str = DEFAULT_LINK_BASE  # ``{public URL}/a/{workspace}``: one-tap links' length in SMS
    flows: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # stored, not archived: id -> body


def validate(docs: Sequence[Document], known: Known = Known()) -> list[Problem]:
    """Schema, then meaning: one trigger kind, compilable conditions, durations, references
    to events and segments that exist, and no flows triggering each other in a loop (with the
    workspace's stored flows). Returns every problem found."""
    problems: list[Problem] = []
    seen: dict[tuple[str, str], Document] = {}
    catalog = set(known.events) | set(SYSTEM_EVENTS)
    for doc in docs:
        if doc.kind == "events" and isinstance(doc.data, dict):
            catalog.update(str(n) for n in doc.data.get("names", []) if isinstance(n, str))
    # names are checked once the workspace knows some (its log, a catalog); the events the
    # flows' actions declare are new names they bring, valid references but no catalog
    checked = bool(catalog - set(SYSTEM_EVENTS))
    for doc in docs:
        if doc.kind == "flow" and isinstance(doc.data, dict):
            catalog.update(declared_events(doc.data.get("message")))  # a goal may be a tap's own event
    segments = set(known.segments) | {d.id for d in docs if d.kind == "segment"}
    for doc in docs:
        if not isinstance(doc.data, dict):
            problems.append(Problem(doc.source, doc.line, "a flow document is a mapping with an 'id'"))
            continue
        schema_problems = _schema_problems(doc)
        problems += schema_problems
        if schema_problems:
            continue
        key = (doc.kind, doc.id)
        if key in seen:
            first = seen[key]
            problems.append(
                Problem(
                    doc.source,
                    doc.line,
                    f"{doc.kind} '{doc.id}' is defined twice (also {first.source}:{first.line})",
                )
            )
        seen[key] = doc
        if doc.kind == "events":
            continue
        problems += _meaning(doc, catalog if checked else set(), segments, known.link_base)
    flow_docs = [d for (kind, _), d in seen.items() if kind == "flow"]
    problems += _loops(flow_docs, known.flows)
    problems += _shared_experiments(flow_docs, known.flows)
    return sorted(problems, key=lambda p: (p.source, p.line))


def _loops(docs: Sequence[Document], stored: Mapping[str, Mapping[str, Any]]) -> list[Problem]:
    """Flows that would trigger themselves through other flows' messages: checked over the
    files and what the workspace already runs, reported on the files' flows."""
    flows: dict[str, Mapping[str, Any]] = {**stored, **{d.id: d.data for d in docs}}
    declared = {fid: declared_events(body.get("message")) for fid, body in flows.items()}
    found = loops(flows, declared)
    return [Problem(d.source, d.line_of(("trigger",)), str(found[d.id])) for d in docs if d.id in found]


def _experiment_id(body: Mapping[str, Any]) -> str | None:
    spec = body.get("experiment")
    return str(spec.get("id", body.get("id"))) if isinstance(spec, Mapping) else None


def _shared_experiments(docs: Sequence[Document], stored: Mapping[str, Mapping[str, Any]]) -> list[Problem]:
    """An experiment belongs to one flow: its assignments and exposures are that flow's."""
    owner: dict[str, str] = {}
    for fid, body in stored.items():
        exp_id = _experiment_id(body)
        if exp_id is not None and fid not in {d.id for d in docs}:
            owner[exp_id] = fid
    out: list[Problem] = []
    for d in docs:
        exp_id = _experiment_id(d.data)
        if exp_id is None:
            continue
        other = owner.setdefault(exp_id, d.id)
        if other != d.id:
            out.append(
                Problem(
                    d.source,
                    d.line_of(("experiment",)),
                    f"experiment '{exp_id}' is flow '{other}''s already: give this one its own experiment.id",
                )
            )
    return out


def variant_ids(message: object) -> list[str]:
    """The ids of a message's variants (``default`` for a message without ``variants``)."""
    variants = message.get("variants") if isinstance(message, Mapping) else None
    if isinstance(variants, list) and variants:
        return [str(v.get("id", "default")) for v in variants if isinstance(v, Mapping)]
    return ["default"]


def _experiment(doc: Document, link: LinkSpec) -> list[Problem]:
    data = doc.data
    spec = data["experiment"]
    out: list[Problem] = []
    flow_channels = list(data.get("channels", ["console"]))
    for path, message in experiments.problems(
        spec, variants=variant_ids(data.get("message")), channels=flow_channels
    ):
        where = ".".join(map(str, ("experiment", *path)))
        out.append(Problem(doc.source, doc.line_of(("experiment", *path)), f"{where}: {message}"))
    reported: set[str] = set()
    for i, arm in enumerate(spec["arms"]):
        at: Path = ("experiment", "arms", i)
        delay = arm.get("delay")
        if delay is not None:
            try:
                parse_duration(delay["for"] if isinstance(delay, dict) else delay)
            except InvalidDuration as exc:
                out.append(
                    Problem(doc.source, doc.line_of((*at, "delay")), f"experiment.arms.{i}.delay: {exc}")
                )
        channels = arm.get("channels")
        if channels is None:
            continue
        if "follow_up" in data and data["follow_up"]["channel"] == channels[0]:
            out.append(
                Problem(
                    doc.source,
                    doc.line_of((*at, "channels")),
                    f"arm '{arm['id']}': follow up on a different channel than the first one of its plan",
                )
            )
        new = [c for c in channels if c not in flow_channels]
        if new:
            for finding in lint_message(data.get("message"), new, link):
                if finding.message not in reported:
                    reported.add(finding.message)
                    out.append(
                        Problem(
                            doc.source, doc.line_of(finding.path), f"arm '{arm['id']}': {finding.message}"
                        )
                    )
    return out


def _schema_problems(doc: Document) -> list[Problem]:
    out: list[Problem] = []
    errors = sorted(_validator.iter_errors(doc.data), key=lambda e: list(map(str, e.absolute_path)))
    reported: set[str] = set()
    for error in _leaves(errors):
        path = tuple(error.absolute_path)
        at, message = _explain(error, path)
        if message in reported:
            continue
        reported.add(message)
        out.append(Problem(doc.source, doc.line_of(at), message))
    return out


def _leaves(errors: Iterable[jsonschema.ValidationError]) -> list[jsonschema.ValidationError]:
    """The most specific errors: ``oneOf``/``allOf``/``$ref`` wrappers are replaced by their causes.
    Of a ``oneOf``'s branches, those the value's shape fits speak for it: ``reentry: {once_pr:
    1d}`` is a misspelt ``once_per``, not a wrong word for ``once``."""
    out: list[jsonschema.ValidationError] = []
    for error in errors:
        if error.validator in ("allOf", "oneOf", "anyOf", "$ref", "if") and error.context:
            context = list(error.context)
            if error.validator in ("oneOf", "anyOf") and isinstance(error.schema, dict):
                branches = error.schema.get(str(error.validator), [])
                context = [e for e in context if _fits(branches, e, error.instance)] or context
                unknown = [e for e in context if e.validator == "additionalProperties"]
                context = unknown[:1] or context  # a misspelt key, rather than the key it lacks
            out.append(jsonschema.exceptions.best_match(context))
        else:
            out.append(error)
    return out


def _fits(branches: list[Any], error: jsonschema.ValidationError, instance: object) -> bool:
    """Is ``instance`` the kind of value the branch ``error`` came from describes (a mapping for
    an object branch, a word for an enum or a constant)?"""
    index = error.relative_schema_path[0] if error.relative_schema_path else None
    branch = branches[index] if isinstance(index, int) and index < len(branches) else None
    if not isinstance(branch, dict):
        return True
    if "enum" in branch or "const" in branch:
        return not isinstance(instance, (dict, list))
    kind = branch.get("type")
    if kind == "object":
        return isinstance(instance, dict)
    if kind == "string":
        return isinstance(instance, str)
    return True


def _explain(error: jsonschema.ValidationError, path: Path) -> tuple[Path, str]:
    """The message for one schema error, and the path whose line it should point at."""
    where = ".".join(str(p) for p in path) or "document"
    schema: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties":
        allowed = list(schema.get("properties", {}))
        unknown = [k for k in error.instance if k not in allowed] if isinstance(error.instance, dict) else []
        if unknown:
            return (*path, unknown[0]), f"unknown key '{unknown[0]}' in {where}{suggest(unknown[0], allowed)}"
    pattern = str(schema.get("pattern", ""))
    if error.validator in ("pattern", "type") and pattern.endswith("(?:ms|s|m|h|d|w))+$"):
        return path, f"{where}: {error.instance!r}: {duration_problem(error.instance)}"
    if error.validator in ("pattern", "type") and pattern == TIME_OF_DAY:
        return path, f"{where}: {error.instance!r}: {time_of_day_problem(error.instance)}"
    if error.validator == "required" and path == ("delay",):
        return path, "delay: 'for' is required: how long to wait, e.g. {for: 2d, at: \"10:00\"}"
    if error.validator in ("exclusiveMinimum", "type") and path[-1:] == ("weight",):
        return (
            path,
            f"{where}: {error.instance!r}: a weight is a positive number, e.g. 1 (arms split in proportion)",
        )
    if error.validator == "enum":
        allowed = [str(v) for v in schema.get("enum", [])]
        hint = suggest(str(error.instance), allowed)
        return path, f"{where}: {error.instance!r} is not one of {', '.join(allowed)}{hint}"
    return path, f"{where}: {error.message}"


def _meaning(doc: Document, events: set[str], segments: set[str], link_base: str) -> list[Problem]:
    data = doc.data
    problems: list[Problem] = []

    def problem(path: Path, message: str) -> None:
        problems.append(Problem(doc.source, doc.line_of(path), message))

    def condition(spec: object, path: Path, *, in_segment: bool = False, decided: bool = False) -> None:
        if spec is None:
            return
        try:
            compile_condition(spec, path=path, in_segment=in_segment, decided=decided)
        except ConditionError as exc:
            message = str(exc)
            if message.startswith("unknown key"):
                bad = str(exc.path[-1])
                message += suggest(bad, condition_keys())
            problem(exc.path or path, message)
            return
        for ref_path, kind, name in _references(spec, path):
            if kind == "event":
                check_event(ref_path, name)
            elif name not in segments:
                problem(ref_path, f"unknown segment '{name}'{suggest(name, segments)}")

    def check_event(path: Path, name: str) -> None:
        if events and name not in events:
            problem(path, f"unknown event '{name}'{suggest(name, events)}")

    def check_trigger_event(path: Path, name: str, *, inactivity: bool = False) -> None:
        if name in NOT_TRIGGERS:
            problem(path, f"'{name}' is not a trigger: {NOT_TRIGGERS[name]}")
        elif inactivity and name in FLOW_MESSAGE_EVENTS:
            problem(
                path,
                f"inactivity of '{name}' is not a trigger (every message would re-arm it, this "
                "flow's own too): follow a message with an absence trigger, e.g. first: "
                "{event: Message Sent, where: {event: properties.flow_id, equals: tip}}, "
                "then: {event: Message Clicked}",
            )
        else:
            check_event(path, name)

    if doc.kind == "segment":
        condition(data["rule"], ("rule",), in_segment=True)
        return problems

    trigger = data["trigger"]
    kinds = [k for k in trigger if k in TRIGGER_KINDS]
    if len(kinds) != 1:
        problem(
            ("trigger",),
            f"a trigger has exactly one kind ({', '.join(TRIGGER_KINDS)}); found {kinds or 'none'}",
        )
        return problems
    kind = kinds[0]
    if "where" in trigger and kind != "event":
        problem(("trigger", "where"), f"'where' belongs inside the {kind} trigger")
    if kind == "event":
        check_trigger_event(("trigger", "event"), trigger["event"])
        condition(trigger.get("where"), ("trigger", "where"))
    elif kind == "absence":
        a = trigger["absence"]
        for part in ("first", "then"):
            check_trigger_event(("trigger", "absence", part, "event"), a[part]["event"])
            condition(a[part].get("where"), ("trigger", "absence", part, "where"))
        if a["first"]["event"] == a["then"]["event"] and "where" not in a["then"]:
            problem(
                ("trigger", "absence", "then"), "'then' is the same event as 'first': it would cancel itself"
            )
    elif kind == "inactivity" and "event" in trigger["inactivity"]:
        name = trigger["inactivity"]["event"]
        check_trigger_event(("trigger", "inactivity", "event"), name, inactivity=True)
    elif kind == "segment":
        name = trigger["segment"]["id"]
        if name not in segments:
            problem(("trigger", "segment", "id"), f"unknown segment '{name}'{suggest(name, segments)}")
    elif kind == "date":
        try:
            parse_offset(trigger["date"].get("offset", "0s"))
        except InvalidDuration as exc:
            problem(("trigger", "date", "offset"), str(exc))
    elif kind == "cohort":
        check_trigger_event(("trigger", "cohort", "event"), trigger["cohort"]["event"])
        condition(trigger["cohort"].get("where"), ("trigger", "cohort", "where"))
    condition(data.get("audience"), ("audience",))
    link = LinkSpec(link_base, doc.id)
    for finding in lint_message(data.get("message"), list(data.get("channels", ["console"])), link):
        problem(finding.path, finding.message)
    if "goal" in data:
        check_event(("goal", "event"), data["goal"]["event"])
        condition(data["goal"].get("where"), ("goal", "where"))
    if "delay" in data:
        delay = data["delay"]
        at: Path = ("delay", "for") if isinstance(delay, dict) else ("delay",)
        try:
            parse_duration(delay["for"] if isinstance(delay, dict) else delay)
        except InvalidDuration as exc:
            problem(at, f"{'.'.join(map(str, at))}: {exc}")
        if isinstance(delay, dict):
            condition(delay.get("cancel_if"), ("delay", "cancel_if"), decided=True)
    if "experiment" in data:
        problems += _experiment(doc, link)
    if data.get("quiet_hours") == "bypass" and data.get("tier", "B") != "A":
        problem(("quiet_hours",), "only transactional (tier A) flows may bypass quiet hours")
    quiet = data.get("quiet_hours")
    if isinstance(quiet, dict) and quiet["start"] == quiet["end"]:
        problem(("quiet_hours",), "quiet hours must not start and end at the same time")
    if "lateness" in data:
        try:
            if parse_duration(data["lateness"], allow_zero=True) > MAX_LATENESS_MS:
                problem(("lateness",), "allowed lateness is at most 1d: a deadline must fire some day")
        except InvalidDuration as exc:
            problem(("lateness",), str(exc))
    if "follow_up" in data:
        if "goal" not in data:
            problem(
                ("follow_up",), "a follow-up is sent when the goal is not reached: give the flow a 'goal'"
            )
        try:
            parse_duration(data["follow_up"]["after"])
        except InvalidDuration as exc:
            problem(("follow_up", "after"), str(exc))
        if data["follow_up"]["channel"] == (data.get("channels") or ["console"])[0]:
            problem(
                ("follow_up", "channel"), "follow up on a different channel than the first one of the plan"
            )
    return problems


def declared_events(message: object) -> set[str]:
    """The events a message's actions declare (``action: {event: ...}``) in any variant or
    channel block: new names the flow itself brings into the log."""
    found: set[str] = set()
    if isinstance(message, Mapping):
        action = message.get("action")
        if isinstance(action, Mapping) and isinstance(action.get("event"), str):
            found.add(action["event"])
        for key, value in message.items():
            if key != "action":
                found |= declared_events(value)
    elif isinstance(message, list):
        for item in message:
            found |= declared_events(item)
    return found


def _references(spec: object, path: Path) -> list[tuple[Path, str, str]]:
    """(path, 'event' | 'segment', name) for every event and segment a condition names."""
    out: list[tuple[Path, str, str]] = []
    if isinstance(spec, Mapping):
        for key in ("all", "any"):
            if isinstance(spec.get(key), list):
                for i, item in enumerate(spec[key]):
                    out += _references(item, (*path, key, i))
        if "not" in spec:
            out += _references(spec["not"], (*path, "not"))
        for subject in ("count", "last"):
            if isinstance(spec.get(subject), str):
                out.append(((*path, subject), "event", spec[subject]))
        if isinstance(spec.get("segment"), str):
            out.append(((*path, "segment"), "segment", spec["segment"]))
    return out
