"""The ``momently`` command line. Parses, calls down, prints; no rules live here."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from momently import heap
from momently.clock import Clock
from momently.domain import consent
from momently.domain.credentials import KeyKind
from momently.domain.experiments import Action
from momently.domain.profile import document
from momently.domain.timestamps import format_timestamp, from_millis
from momently.services import Services
from momently.settings import Settings
from momently.settings_errors import InvalidSettings
from momently.store.database import DatabaseError
from momently.store.definitions import Kind, Status
from momently.store.ledger_key import LedgerKeyError
from momently.store.workspaces import WorkspaceError


class _Ctx:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.clock: Clock | None = None  # serve --clock virtual
        self._services: Services | None = None

    @property
    def services(self) -> Services:
        if self._services is None:
            try:
                self._services = Services.build(self.settings, clock=self.clock)
            except (DatabaseError, LedgerKeyError) as exc:
                raise click.ClickException(str(exc)) from None
        return self._services

    def close(self) -> None:
        if self._services is not None:
            self._services.close()
            self._services = None


pass_ctx = click.make_pass_decorator(_Ctx)


@contextmanager
def _checked_settings() -> Iterator[None]:
    """A malformed setting is one line each on stderr (credentials masked) and exit code 2,
    like a bad command-line option, not a traceback."""
    try:
        yield
    except InvalidSettings as exc:
        click.echo(str(exc), err=True)
        raise click.exceptions.Exit(2) from None


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--database-url",
    envvar="MOMENTLY_DATABASE_URL",
    default=None,
    help="sqlite:///PATH (default ./momently.db) or postgresql://USER@HOST/DB.",
)
@click.version_option(package_name="momently")
@click.pass_context
def main(ctx: click.Context, database_url: str | None) -> None:
    """Momently: micro-moments engine. Ingests Segment-spec events, keeps profiles and
    segments, and runs flows (YAML) that turn events into enrollments and decisions.

    \b
    Quick start:
      momently workspace create acme        # prints a public write key, a server key and an admin token
      momently flows apply flows/ --workspace acme
      momently serve                        # http://127.0.0.1:8000, docs at /docs
    """
    if ctx.get_parameter_source("database_url") is click.core.ParameterSource.ENVIRONMENT:
        database_url = None  # Settings reads it and names the variable if it is malformed
    with _checked_settings():
        ctx.obj = _Ctx(Settings.from_env().with_overrides(database_url=database_url))
    ctx.call_on_close(ctx.obj.close)


# serve ---------------------------------------------------------------------------------
@main.command()
@click.option("--host", default=None, help="Bind address (default 127.0.0.1, env MOMENTLY_HOST).")
@click.option("--port", type=int, default=None, help="Port (default 8000, env MOMENTLY_PORT).")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="HTTP worker processes. More than one uses more cores for ingest; the engine still runs once.",
)
@click.option(
    "--engine/--no-engine",
    "run_engine",
    default=None,
    help="Run the engine in this process (default on; use `momently worker` to run it apart).",
)
@click.option(
    "--clock",
    "clock_spec",
    default="system",
    show_default=True,
    metavar="system|virtual[=START]",
    help="virtual: time stands still (at START, ISO-8601, or now) and moves only by POST /v1/clock; "
    "for trying flows by hand, never for production.",
)
@pass_ctx
def serve(
    c: _Ctx, host: str | None, port: int | None, workers: int, run_engine: bool | None, clock_spec: str
) -> None:
    """Run the HTTP API (ingest + admin) and the engine."""
    import uvicorn

    from momently.api import create_app

    with _checked_settings():
        c.settings = c.settings.with_overrides(host=host, port=port, run_engine=run_engine)
    st = c.settings
    c.clock = _serve_clock(clock_spec, workers=workers, run_engine=st.run_engine)
    click.echo(f"Momently on http://{st.host}:{st.port} using {c.services.db.safe_url}", err=True)
    if c.clock is not None:
        click.echo(
            f"virtual clock at {format_timestamp(c.clock.now())}: move it with POST /v1/clock", err=True
        )
    if workers == 1:
        uvicorn.run(
            create_app(c.services, settle_heap=True),
            host=st.host,
            port=st.port,
            log_level=st.log_level,
            access_log=False,
        )
        return
    # Workers are fresh processes that read their settings from the environment. They parse
    # and validate; one log writer process commits for all of them (engine.log_service).
    import shutil
    import tempfile

    from momently.api.workers import PortInUse, WorkerPool, WorkerStartupFailed
    from momently.engine.log_service import WriterProcess

    os.environ["MOMENTLY_DATABASE_URL"] = st.database_url
    os.environ.pop("MOMENTLY_LOG_WRITER_SOCKET", None)
    socket_dir = tempfile.mkdtemp(prefix="momently-")
    socket_path = os.path.join(socket_dir, "log-writer.sock")
    writer = WriterProcess(socket_path, dict(os.environ))
    try:
        writer.start()
        os.environ["MOMENTLY_LOG_WRITER_SOCKET"] = socket_path
        if st.run_engine:  # here, in the supervisor; the writer's commits wake it
            c.services.start_engine(watch_commits=True)
            heap.settle_after_startup()  # as in `worker`: the engine's person cache
        else:
            c.services.db.start_checkpoints()
        # each worker listens on a socket of its own, so connections spread over them
        WorkerPool(workers, st.host, st.port, st.log_level).run()
    except (WorkerStartupFailed, PortInUse) as exc:
        raise click.ClickException(str(exc)) from None
    finally:  # after the workers: they wait for the writer's replies to what they accepted
        writer.stop()
        shutil.rmtree(socket_dir, ignore_errors=True)


def _serve_clock(spec: str, *, workers: int, run_engine: bool) -> Clock | None:
    """``system`` (None: the default clock) or ``virtual[=START]``: a ManualClock, which only
    makes sense with the engine in this one process."""
    from datetime import UTC, datetime

    from momently.clock import ManualClock
    from momently.domain.timestamps import InvalidTimestamp, parse_timestamp

    kind, _, start = spec.partition("=")
    if kind == "system" and not start:
        return None
    if kind != "virtual":
        raise click.BadParameter("system, virtual or virtual=2026-03-02T09:00:00Z", param_hint="--clock")
    if workers != 1 or not run_engine:
        raise click.BadParameter(
            "a virtual clock lives in one process: use --workers 1 with the engine (no --no-engine)",
            param_hint="--clock",
        )
    try:
        return ManualClock(parse_timestamp(start) if start else datetime.now(UTC))
    except InvalidTimestamp as exc:
        raise click.BadParameter(str(exc), param_hint="--clock") from None


@main.command("log-writer", hidden=True)
@click.option("--socket", "socket_path", required=True, help="Unix socket to serve HTTP workers on.")
@click.option("--parent", "parent_pid", type=int, default=None, help="Stop when this process is gone.")
@pass_ctx
def log_writer(c: _Ctx, socket_path: str, parent_pid: int | None) -> None:
    """The log writer process of `serve --workers N` (started by it; see engine.log_service)."""
    import signal
    import threading

    from momently.engine.log_service import run_log_service
    from momently.engine.log_writer import LogWriter

    s = c.services
    if not isinstance(s.writer, LogWriter):
        raise click.ClickException("MOMENTLY_LOG_WRITER_SOCKET must not be set for the log writer itself")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # The supervisor starts this process in a session of its own and stops it with SIGTERM
    # after the HTTP workers (they wait for its replies); a stray Ctrl-C is ignored.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    s.db.start_checkpoints()
    run_log_service(s.writer, socket_path, stop=stop, parent=parent_pid)


@main.command()
@pass_ctx
def migrate(c: _Ctx) -> None:
    """Create or upgrade the database schema (also done by every other command)."""
    click.echo(f"schema is up to date in {c.services.db.safe_url}")


# workspaces and keys -------------------------------------------------------------------
@main.group()
def workspace() -> None:
    """Create and list workspaces (tenants)."""


@workspace.command("create")
@click.argument("workspace_id")
@click.option("--name", default=None, help="Display name (default: the id).")
@click.option("--rate-limit", type=float, default=None, help="Ingest limit in events/s (default: none).")
@click.option(
    "--keys/--no-keys", default=True, help="Also issue a public write key, a server key and an admin token."
)
@pass_ctx
def workspace_create(
    c: _Ctx, workspace_id: str, name: str | None, rate_limit: float | None, keys: bool
) -> None:
    """Create WORKSPACE_ID and print its first keys (shown only once)."""
    s = c.services
    try:
        ws = s.workspaces.create(workspace_id, name=name, now=s.clock.now(), rate_limit=rate_limit)
    except WorkspaceError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created workspace {ws.id}")
    if keys:
        for kind in (KeyKind.WRITE, KeyKind.SERVER, KeyKind.ADMIN):
            issued = s.workspaces.issue_key(ws.id, kind, label="initial", now=s.clock.now())
            click.echo(f"{kind.value} key: {issued.secret}")
        click.echo("Keep these now: they are stored hashed and cannot be shown again.")


@workspace.command("list")
@pass_ctx
def workspace_list(c: _Ctx) -> None:
    """List workspaces with their event counts."""
    for ws in c.services.workspaces.all():
        limit = f"{ws.rate_limit:g} events/s" if ws.rate_limit else "no rate limit"
        click.echo(f"{ws.id}\t{ws.name}\tlast seq {ws.last_seq}\t{limit}")


@workspace.command("set-rate-limit")
@click.argument("workspace_id")
@click.argument("rate", type=float, required=False)
@pass_ctx
def workspace_rate(c: _Ctx, workspace_id: str, rate: float | None) -> None:
    """Set the ingest limit in events/s; leave RATE out to remove it."""
    try:
        c.services.workspaces.set_rate_limit(workspace_id, rate)
    except WorkspaceError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{workspace_id}: " + (f"{rate:g} events/s" if rate else "no rate limit"))


@main.group()
def keys() -> None:
    """Issue, list and revoke write keys (public and server) and admin tokens."""


@keys.command("create")
@click.option("--workspace", "workspace_id", required=True)
@click.option("--kind", type=click.Choice([k.value for k in KeyKind]), default="write", show_default=True)
@click.option("--label", default="", help="What the key is for, e.g. 'web app'.")
@pass_ctx
def keys_create(c: _Ctx, workspace_id: str, kind: str, label: str) -> None:
    """Issue a key and print it once."""
    try:
        issued = c.services.workspaces.issue_key(
            workspace_id, KeyKind(kind), label=label, now=c.services.clock.now()
        )
    except WorkspaceError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"key id {issued.key.id} ({kind}): {issued.secret}")


@keys.command("identity-secret")
@click.option("--workspace", "workspace_id", required=True)
@click.option("--rotate", is_flag=True, help="Make a new one; tokens made with the old one stop working.")
@pass_ctx
def keys_identity_secret(c: _Ctx, workspace_id: str, rotate: bool) -> None:
    """Print the workspace's identity secret, which your backend signs user tokens with
    (identity verification for the public write key; docs/security.md)."""
    s = c.services
    _require_workspace(s, workspace_id)
    if rotate:
        secret = s.workspaces.rotate_identity_secret(workspace_id, now=s.clock.now())
    else:
        secret = s.workspaces.identity_secret(workspace_id, now=s.clock.now())
    click.echo(secret)


@keys.command("list")
@click.option("--workspace", "workspace_id", required=True)
@pass_ctx
def keys_list(c: _Ctx, workspace_id: str) -> None:
    """List keys (prefix only; secrets are never stored)."""
    for k in c.services.workspaces.list_keys(workspace_id):
        state = f"revoked {format_timestamp(from_millis(k.revoked_ms))}" if k.revoked_ms else "active"
        click.echo(f"{k.id}\t{k.kind.value}\t{k.prefix}…\t{k.label or '-'}\t{state}")


@keys.command("revoke")
@click.argument("key_id", type=int)
@pass_ctx
def keys_revoke(c: _Ctx, key_id: int) -> None:
    """Revoke a key by id; running servers stop accepting it within auth_cache_seconds."""
    try:
        key = c.services.workspaces.revoke_key(key_id, now=c.services.clock.now())
    except WorkspaceError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"revoked key {key.id} ({key.kind.value}, {key.prefix}…) of {key.workspace_id}")


# profiles and events -------------------------------------------------------------------
@main.group()
def profile() -> None:
    """Look at people's profiles."""


@profile.command("show")
@click.argument("ident")
@click.option("--workspace", "workspace_id", required=True)
@click.option("--anonymous", is_flag=True, help="IDENT is an anonymousId, not a userId.")
@pass_ctx
def profile_show(c: _Ctx, ident: str, workspace_id: str, anonymous: bool) -> None:
    """Print a profile as JSON, after catching up with the log."""
    s = c.services
    s.projector.run_until_idle()
    person = s.profiles.person_for(workspace_id, ("anon" if anonymous else "user", ident))
    found = s.profiles.get(workspace_id, person) if person else None
    if found is None:
        raise click.ClickException(f"no profile for {ident!r} in {workspace_id}")
    _print_json(document(found))


@main.group()
def events() -> None:
    """Read the event log."""


@events.command("tail")
@click.option("--workspace", "workspace_id", required=True)
@click.option("-n", "count", default=20, show_default=True, help="How many recent events to show.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events as they arrive.")
@pass_ctx
def events_tail(c: _Ctx, workspace_id: str, count: int, follow: bool) -> None:
    """Print the newest events, one JSON object per line."""
    s = c.services
    last = 0
    for ev in s.events.tail(workspace_id, limit=count):
        click.echo(json.dumps({"seq": ev.seq, **ev.body}, ensure_ascii=False))
        last = ev.seq
    try:
        while follow:
            time.sleep(1.0)
            for ev in s.events.read(workspace_id, after_seq=last, limit=1000):
                click.echo(json.dumps({"seq": ev.seq, **ev.body}, ensure_ascii=False))
                last = ev.seq
    except KeyboardInterrupt:
        pass  # Ctrl-C is how --follow ends


@main.command()
@click.option("--workspace", "workspace_id", default=None, help="Only this workspace (default: all).")
@pass_ctx
def replay(c: _Ctx, workspace_id: str | None) -> None:
    """Rebuild every derived table (profiles, identities, segments, timers, experiment
    outcomes) from the event log. Enrollments are kept, so nobody is enrolled twice."""
    s = c.services
    targets = [workspace_id] if workspace_id else [w.id for w in s.workspaces.all()]
    started = time.monotonic()

    def progress(ws: str, cursor: int, last: int) -> None:
        if ws in targets:
            click.echo(f"\r{ws}: {cursor}/{last} events", nl=False, err=True)

    s.db.start_checkpoints()  # as in `worker`: off the engine's commits
    heap.settle_after_startup()  # see momently.heap
    total = 0
    for ws in targets:
        if s.workspaces.get(ws) is None:
            raise click.ClickException(f"no workspace {ws!r}")
        total += s.projector.replay(ws, progress)
        s.outcomes.replay(ws)  # experiment outcomes, behind the profiles it reads
        click.echo("", err=True)
    click.echo(f"replayed {total} events in {time.monotonic() - started:.1f}s")


# flows and segments --------------------------------------------------------------------
def _require_workspace(s: Services, workspace_id: str) -> None:
    if s.workspaces.get(workspace_id) is None:
        raise click.ClickException(f"no workspace {workspace_id!r} (see `momently workspace list`)")


def _print_problems(problems: list[Any]) -> None:
    for p in problems:
        click.echo(str(p), err=True)
    raise click.ClickException(f"{len(problems)} problem(s); nothing was applied")


@main.group()
def flows() -> None:
    """Validate, apply and operate flows (YAML files; see docs/flows.md)."""


@flows.command("validate")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--workspace",
    "workspace_id",
    default=None,
    help="Check event and segment references against this workspace's log and segments.",
)
@pass_ctx
def flows_validate(c: _Ctx, path: Path, workspace_id: str | None) -> None:
    """Check every flow and segment document under PATH (a file or a directory)."""
    from momently import catalog
    from momently.domain import scenario
    from momently.domain.definitions import validate

    loaded = catalog.read_path(path)
    if workspace_id is not None:
        _require_workspace(c.services, workspace_id)
        problems = catalog.check(c.services, workspace_id, loaded)
    else:
        problems = loaded.problems + validate(loaded.documents)
    problems += scenario.problems_of(loaded.scenarios)
    if problems:
        for p in problems:
            click.echo(str(p), err=True)
        raise click.ClickException(f"{len(problems)} problem(s) in {path}")
    kinds = [d.kind for d in loaded.documents]
    tests = f", {len(loaded.scenarios)} scenario(s)" if loaded.scenarios else ""
    click.echo(f"ok: {kinds.count('flow')} flow(s), {kinds.count('segment')} segment(s){tests} in {path}")


@flows.command("schema")
def flows_schema() -> None:
    """Print the JSON Schema of flow and segment documents (also docs/flow.schema.json)."""
    from momently.domain.flow_schema import SCHEMA

    _print_json(SCHEMA)


@flows.command("apply")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--workspace", "workspace_id", required=True)
@pass_ctx
def flows_apply(c: _Ctx, path: Path, workspace_id: str) -> None:
    """Validate PATH, then store a new version of each changed flow, segment and events catalog."""
    from momently import catalog

    _require_workspace(c.services, workspace_id)
    try:
        applied = catalog.apply(c.services, workspace_id, catalog.read_path(path))
    except catalog.InvalidDefinitions as exc:
        _print_problems(exc.problems)
    for a in applied:
        state = "new version" if a.changed else "unchanged"
        click.echo(f"{a.kind:8} {a.id:32} v{a.version}  {state}")


@flows.command("list")
@click.option("--workspace", "workspace_id", required=True)
@pass_ctx
def flows_list(c: _Ctx, workspace_id: str) -> None:
    """Every flow with its version, status, tier and trigger."""
    for f in c.services.definitions.heads(workspace_id, "flow"):
        trigger = next((k for k in f.body.get("trigger", {}) if k != "where"), "?")
        click.echo(f"{f.id:32} v{f.version:<4} {f.status:9} tier {f.body.get('tier', 'B')}  {trigger}")


@flows.command("show")
@click.argument("flow_id")
@click.option("--workspace", "workspace_id", required=True)
@click.option("--version", type=int, default=None, help="An older version (default: current).")
@pass_ctx
def flows_show(c: _Ctx, flow_id: str, workspace_id: str, version: int | None) -> None:
    """Print a flow as YAML, with its status and decision counts."""
    import yaml

    from momently.store.definitions import UnknownDefinition

    s = c.services
    try:
        f = s.definitions.get(workspace_id, "flow", flow_id, version)
    except UnknownDefinition as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"# {f.id} v{f.version} ({f.status}) from {f.source}")
    click.echo(yaml.safe_dump(f.body, sort_keys=False, allow_unicode=True).rstrip())
    counts = s.engine_state.decision_counts(workspace_id, flow_id)
    if counts:
        click.echo("# decisions: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


@main.command("report")
@click.option(
    "--workspace", "workspace_id", default=None, help="Default: the only workspace, if there is one."
)
@click.option("--flow", "flow_id", default=None, help="One flow (default: every flow with enrollments).")
@click.option("--since", default="30d", show_default=True, help="The window: enrollments decided since.")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True
)
@click.option(
    "--noise-epsilon",
    type=float,
    default=None,
    help="Add Laplace noise of scale 1/E to every published count (docs/reports.md).",
)
@pass_ctx
def report(
    c: _Ctx, workspace_id: str | None, flow_id: str | None, since: str, fmt: str, noise_epsilon: float | None
) -> None:
    """Per-flow KPIs: funnel, suppressions, conversion, latency; cells under k people hidden."""
    from momently import report_render, reports

    s = c.services
    if workspace_id is None:
        every = s.workspaces.all()
        if len(every) != 1:
            raise click.ClickException("name the workspace: --workspace W (see `momently workspace list`)")
        workspace_id = every[0].id
    _require_workspace(s, workspace_id)
    try:
        options = reports.options_for(s, workspace_id, since=since, epsilon=noise_epsilon)
        result = reports.workspace_report(s, workspace_id, options, flow_id=flow_id)
    except (reports.InvalidReport, reports.UnknownFlow) as exc:
        raise click.ClickException(str(exc)) from None
    if fmt == "json":
        _print_json(result)
    elif fmt == "csv":
        click.echo(report_render.as_csv(result), nl=False)
    else:
        click.echo(report_render.table(result))


def _set_status(c: _Ctx, kind: Kind, ident: str, workspace_id: str, status: Status) -> None:
    from momently.domain.timestamps import to_millis
    from momently.store.definitions import UnknownDefinition

    try:
        c.services.definitions.set_status(
            workspace_id,
            kind,
            ident,
            status,
            now_ms=to_millis(c.services.clock.now()),
        )
    except UnknownDefinition as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{kind} {ident}: {status}")


@flows.command("pause")
@click.argument("flow_id")
@click.option("--workspace", "workspace_id", required=True)
@pass_ctx
def flows_pause(c: _Ctx, flow_id: str, workspace_id: str) -> None:
    """Stop enrolling: new trigger occurrences are recorded as suppressed (flow_paused)."""
    _set_status(c, "flow", flow_id, workspace_id, "paused")


@flows.command("resume")
@click.argument("flow_id")
@click.option("--workspace", "workspace_id", required=True)
@pass_ctx
def flows_resume(c: _Ctx, flow_id: str, workspace_id: str) -> None:
    """Resume a paused (or archived) flow."""
    _set_status(c, "flow", flow_id, workspace_id, "active")


@flows.command("archive")
@click.argument("flow_id")
@click.option("--workspace", "workspace_id", required=True)
@pass_ctx
def flows_archive(c: _Ctx, flow_id: str, workspace_id: str) -> None:
    """Retire a flow; its versions and enrollments are kept."""
    _set_status(c, "flow", flow_id, workspace_id, "archived")


@flows.command("backtest")
@click.argument("flow_id")
@click.option("--workspace", "workspace_id", required=True)
@click.option(
    "--since", default="7d", show_default=True, help="Count decisions from this long ago (e.g. 7d, 12h)."
)
@click.option(
    "--file",
    "file_",
    type=click.Path(path_type=Path),
    default=None,
    help="Take the flow from this YAML file or directory instead of the stored version.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_ctx
def flows_backtest(
    c: _Ctx, flow_id: str, workspace_id: str, since: str, file_: Path | None, as_json: bool
) -> None:
    """Replay the workspace's history through one flow without sending: who it would have
    enrolled, and every decision by reason."""
    from momently import catalog
    from momently.backtest import backtest
    from momently.domain.durations import InvalidDuration, parse_duration
    from momently.store.definitions import UnknownDefinition

    s = c.services
    _require_workspace(s, workspace_id)
    try:
        span = parse_duration(since)
    except InvalidDuration as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    if file_ is not None:
        loaded = catalog.read_path(file_)
        problems = catalog.check(s, workspace_id, loaded)
        if problems:
            _print_problems(problems)
        docs = [d for d in loaded.documents if d.kind == "flow" and d.id == flow_id]
        if not docs:
            raise click.ClickException(f"no flow {flow_id!r} in {file_}")
        body = {k: v for k, v in docs[0].data.items() if k != "kind"}
    else:
        try:
            body = s.definitions.get(workspace_id, "flow", flow_id).body
        except UnknownDefinition as exc:
            raise click.ClickException(str(exc)) from None
    from datetime import timedelta

    until = s.clock.now()

    def progress(stage: str, done: int, total: int) -> None:
        click.echo(f"\r{stage}: {done}/{total}", nl=False, err=True)

    report = backtest(
        s, workspace_id, body, since=until - timedelta(milliseconds=span), until=until, progress=progress
    )
    click.echo("", err=True)
    if as_json:
        _print_json(report.as_json())
        return
    click.echo(f"flow {report.flow_id}: {report.events} events replayed, decisions since {since} ago:")
    click.echo(f"  people enrolled (send): {report.people_enrolled}")
    for reason, n in report.decisions.items():
        click.echo(f"  {reason:24} {n}")
    if not report.decisions:
        click.echo("  (no trigger occurrences)")


@flows.command("test")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--flows",
    "flows_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Run against the flows and segments here (default: those next to each scenario).",
)
@click.option("--json", "as_json", is_flag=True, help="Print every result as JSON.")
@pass_ctx
def flows_test(c: _Ctx, paths: tuple[Path, ...], flows_path: Path | None, as_json: bool) -> None:
    """Run the scenarios (kind: scenario) in PATHS against the flows next to them, on virtual
    time in a scratch database: exit 1 when an expectation fails (see docs/flows.md)."""
    from momently import flowtest

    suite = flowtest.load_suite(list(paths), flows=flows_path)
    if suite.problems:
        for p in suite.problems:
            click.echo(str(p), err=True)
        raise click.ClickException(f"{len(suite.problems)} problem(s) in the scenarios; nothing was run")
    results = []
    for scenario, documents in suite.scenarios:
        result = flowtest.run(scenario, documents, default_timezone=c.settings.default_timezone)
        results.append(result)
        if not as_json:
            click.echo(result.report())
    failed = sum(not r.passed for r in results)
    if as_json:
        _print_json(
            {"passed": len(results) - failed, "failed": failed, "scenarios": [r.as_json() for r in results]}
        )
    else:
        click.echo(f"{len(results) - failed} passed, {failed} failed")
    if failed:
        raise click.exceptions.Exit(1)


@main.group()
def segments() -> None:
    """Look at segments and their members (define them in flow files, kind: segment)."""


@segments.command("list")
@click.option("--workspace", "workspace_id", required=True)
@pass_ctx
def segments_list(c: _Ctx, workspace_id: str) -> None:
    """Every segment with its version, status and current size."""
    s = c.services
    sizes = s.engine_state.segment_sizes(workspace_id)
    for seg in s.definitions.heads(workspace_id, "segment"):
        click.echo(f"{seg.id:32} v{seg.version:<4} {seg.status:9} {sizes.get(seg.id, 0)} members")


@segments.command("show")
@click.argument("segment_id")
@click.option("--workspace", "workspace_id", required=True)
@pass_ctx
def segments_show(c: _Ctx, segment_id: str, workspace_id: str) -> None:
    """Print a segment's rule as YAML, with its size."""
    import yaml

    from momently.store.definitions import UnknownDefinition

    try:
        seg = c.services.definitions.get(workspace_id, "segment", segment_id)
    except UnknownDefinition as exc:
        raise click.ClickException(str(exc)) from None
    size = c.services.engine_state.segment_sizes(workspace_id).get(segment_id, 0)
    click.echo(f"# {seg.id} v{seg.version} ({seg.status}), {size} members")
    click.echo(yaml.safe_dump({"kind": "segment", **seg.body}, sort_keys=False, allow_unicode=True).rstrip())


@segments.command("members")
@click.argument("segment_id")
@click.option("--workspace", "workspace_id", required=True)
@click.option("--limit", default=100, show_default=True)
@pass_ctx
def segments_members(c: _Ctx, segment_id: str, workspace_id: str, limit: int) -> None:
    """Print the segment's members (person id, userId, member since), after catching up."""
    s = c.services
    s.projector.run_until_idle()
    rows = s.engine_state.segment_members(workspace_id, segment_id, limit=limit)
    with s.db.read() as conn:
        people = s.profiles.load(conn, workspace_id, [p for p, _ in rows])
    for pid, since in rows:
        user = people[pid].user_id if pid in people else None
        click.echo(f"{pid}  {user or '-':24} since {format_timestamp(from_millis(since))}")


@main.group()
def push() -> None:
    """Web push setup."""


@push.command("keys")
def push_keys() -> None:
    """Make a VAPID key pair: the private key for MOMENTLY_VAPID_PRIVATE_KEY, the public one
    for the browser's pushManager.subscribe({applicationServerKey})."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from py_vapid import Vapid02

    v = Vapid02()
    v.generate_keys()
    private = v.private_key.private_numbers().private_value.to_bytes(32, "big")
    public = v.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    click.echo(f"MOMENTLY_VAPID_PRIVATE_KEY={b64(private)}")
    click.echo(f"# applicationServerKey for the browser: {b64(public)}")


# channels per workspace ----------------------------------------------------------------
@main.group("channels")
def channels_group() -> None:
    """A workspace's own channel configuration (SMTP, SMS account and numbers, webhook
    destinations, VAPID keys). Secrets are stored encrypted (MOMENTLY_SECRETS_KEY) and only
    ever shown masked. A workspace without its own uses the process-level settings."""


@channels_group.command("key")
def channels_key() -> None:
    """Make a MOMENTLY_SECRETS_KEY (keep it outside the database, like a password)."""
    from momently.store.channel_config import new_key

    click.echo(f"MOMENTLY_SECRETS_KEY={new_key()}")


def _channel_values(pairs: tuple[str, ...]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r}: use KEY=VALUE", param_hint="SETTINGS")
        values[key.strip()] = value
    return values


@channels_group.command("set")
@click.argument("channel", type=click.Choice(["email", "sms", "webhook", "push"]))
@click.argument("settings", nargs=-1)
@click.option("--workspace", "workspace_id", required=True)
@click.option("--destination", default=None, help="webhook destination name (default: default)")
@pass_ctx
def channels_set(
    c: _Ctx, channel: str, settings: tuple[str, ...], workspace_id: str, destination: str | None
) -> None:
    """Set a channel's configuration from KEY=VALUE settings; secrets left out keep their
    stored value.

    \b
      email    smtp_url=smtp://USER:PASS@HOST:587 from='Acme <hi@acme.example>'
      sms      account_sid=AC… auth_token=… from=+15550000000 [numbers=+1555…,+1556…] [base_url=…]
      webhook  url=https://hooks.example/momently secret=whsec_… [--destination crm]
      push     vapid_private_key=… [vapid_subject=mailto:ops@acme.example]
    """
    from momently.domain.channel_config import ConfigError
    from momently.domain.timestamps import to_millis

    s = c.services
    _require_workspace(s, workspace_id)
    try:
        shown = s.channels.configure(
            workspace_id, channel, destination, _channel_values(settings), now_ms=to_millis(s.clock.now())
        )
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    _print_json(shown)


@channels_group.command("list")
@click.option("--workspace", "workspace_id", required=True)
@pass_ctx
def channels_list(c: _Ctx, workspace_id: str) -> None:
    """The workspace's own channel configuration, secrets masked."""
    s = c.services
    _require_workspace(s, workspace_id)
    _print_json(s.channels.shown(workspace_id))


@channels_group.command("remove")
@click.argument("channel", type=click.Choice(["email", "sms", "webhook", "push"]))
@click.option("--workspace", "workspace_id", required=True)
@click.option("--destination", default=None, help="webhook destination name (default: default)")
@pass_ctx
def channels_remove(c: _Ctx, channel: str, workspace_id: str, destination: str | None) -> None:
    """Remove a channel's own configuration: the process-level settings apply again."""
    from momently.domain.channel_config import ConfigError

    s = c.services
    _require_workspace(s, workspace_id)
    try:
        removed = s.channels.unconfigure(workspace_id, channel, destination)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("removed" if removed else "nothing to remove")


@main.group()
def messages() -> None:
    """Look at message content before it is sent."""


@messages.command("preview")
@click.argument("flow_id")
@click.option("--workspace", "workspace_id", required=True)
@click.option("--user", "user_id", required=True, help="Render for this person (their userId).")
@pass_ctx
def messages_preview(c: _Ctx, flow_id: str, workspace_id: str, user_id: str) -> None:
    """Render every variant of FLOW on every channel of its plan, for a real profile, with the
    person's latest event of the trigger's name as the trigger event."""
    from momently.domain.message import NotRendered, render, template_data
    from momently.store.definitions import UnknownDefinition

    s = c.services
    s.projector.run_until_idle()
    try:
        flow = s.definitions.get(workspace_id, "flow", flow_id).body
    except UnknownDefinition as exc:
        raise click.ClickException(str(exc)) from None
    person = s.profiles.person_for(workspace_id, ("user", user_id))
    profile = s.profiles.get(workspace_id, person) if person else None
    if profile is None or person is None:
        raise click.ClickException(f"no profile for {user_id!r} in {workspace_id}")
    trigger = flow.get("trigger", {})
    trigger_name = (
        trigger.get("event")
        or trigger.get("absence", {}).get("first", {}).get("event")
        or trigger.get("cohort", {}).get("event")
    )
    latest = None
    if isinstance(trigger_name, str):
        seqs = s.profiles.event_seqs(workspace_id, person, before_seq=None, limit=500)
        latest = next((e for e in s.events.by_seqs(workspace_id, seqs) if e.name == trigger_name), None)
    raw_message = flow.get("message")
    message: dict[str, Any] = raw_message if isinstance(raw_message, dict) else {}
    raw_variants = message.get("variants")
    variants: list[Any] = raw_variants if isinstance(raw_variants, list) else [message]
    data = template_data(profile, latest.body if latest is not None else None)
    about = f", trigger event seq {latest.seq}" if latest is not None else ", no trigger event"
    click.echo(f"# {flow_id} for {user_id}{about}")
    for variant in variants:
        vid = str(variant.get("id", "default")) if isinstance(variant, dict) else "default"
        for channel in flow.get("channels", ["console"]):
            out = render(message, vid, channel, data)
            if isinstance(out, NotRendered):
                click.echo(f"[{vid} / {channel}] NOT SENT: {out.reason}: {out.detail}")
                continue
            click.echo(f"[{vid} / {channel}]")
            if out.title:
                click.echo(f"  title:  {out.title}")
            click.echo(f"  body:   {out.body}")
            if out.action_label or out.action_url:
                click.echo(f"  action: {out.action_label or ''} -> {out.action_url or '(confirmation page)'}")


@main.group()
def deliveries() -> None:
    """The outbox: what was sent, what is waiting, what failed."""


@deliveries.command("list")
@click.option("--workspace", "workspace_id", required=True)
@click.option("--failed", is_flag=True, help="Only dead deliveries (every channel of the plan failed).")
@click.option(
    "--status", "statuses", multiple=True, help="pending, sending, sent, dead, suppressed or expired."
)
@click.option("--limit", default=50, show_default=True)
@pass_ctx
def deliveries_list(c: _Ctx, workspace_id: str, failed: bool, statuses: tuple[str, ...], limit: int) -> None:
    """Newest first: id, status, channel, attempts, flow, person, last error."""
    wanted = ["dead"] if failed else list(statuses) or None
    rows = c.services.outbox.list(workspace_id, statuses=wanted, limit=limit)
    for d in rows:
        when = format_timestamp(from_millis(d.updated_ms))
        click.echo(
            f"{d.id:>8}  {d.status:10} {d.channel or '-':8} attempts {d.attempts}  {d.flow_id:24} "
            f"{d.person_id}  {when}  {d.last_error or ''}".rstrip()
        )
    if not rows:
        click.echo("no deliveries" + (" have failed" if failed else ""), err=True)


@deliveries.command("retry")
@click.argument("delivery_id", type=int)
@click.option("--workspace", "workspace_id", required=True)
@pass_ctx
def deliveries_retry(c: _Ctx, delivery_id: int, workspace_id: str) -> None:
    """Send a dead delivery again, from the first channel of its plan."""
    from momently.domain.timestamps import to_millis

    if not c.services.outbox.retry(workspace_id, delivery_id, now_ms=to_millis(c.services.clock.now())):
        raise click.ClickException(f"no dead delivery {delivery_id} in {workspace_id}")
    click.echo(f"delivery {delivery_id}: pending again; a running engine sends it within a second")


# consent ------------------------------------------------------------------------------
CONSENT_CHANNELS = click.Choice(["*", *consent.CHANNELS])
CONSENT_PURPOSES = click.Choice(["*", *consent.PURPOSES])


@main.group("consent")
def consent_group() -> None:
    """The consent ledger: grants, revokes, stop-contact, history, policy, verification."""


def _who(ident: str, anonymous: bool) -> tuple[str | None, str | None]:
    return (None, ident) if anonymous else (ident, None)


def _record_consent(c: _Ctx, workspace_id: str, grants: list[consent.Grant]) -> None:
    _require_workspace(c.services, workspace_id)
    try:
        records = c.services.consent.record(workspace_id, grants)
    except consent.ConsentError as exc:
        raise click.ClickException(str(exc)) from None
    for r in records:
        g = r.grant
        verb = "granted" if g.granted else "revoked"
        click.echo(f"#{r.seq} {verb} {g.channel}/{g.purpose} for {g.user_id or g.anonymous_id} ({g.source})")


@consent_group.command("grant")
@click.argument("ident")
@click.option("--workspace", "workspace_id", required=True)
@click.option("--channel", type=CONSENT_CHANNELS, required=True)
@click.option("--purpose", type=CONSENT_PURPOSES, required=True)
@click.option("--expires-in", default=None, help="Grant lapses after this duration, e.g. 365d.")
@click.option("--anonymous", is_flag=True, help="IDENT is an anonymousId, not a userId.")
@click.option("--note", default=None)
@pass_ctx
def consent_grant(
    c: _Ctx,
    ident: str,
    workspace_id: str,
    channel: str,
    purpose: str,
    expires_in: str | None,
    anonymous: bool,
    note: str | None,
) -> None:
    """Record an opt-in for IDENT (a userId) on a channel for a purpose."""
    from momently.domain.durations import parse_duration
    from momently.domain.timestamps import to_millis

    now = to_millis(c.services.clock.now())
    try:
        expires = now + parse_duration(expires_in) if expires_in else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--expires-in") from None
    user, anon = _who(ident, anonymous)
    _record_consent(
        c, workspace_id, [consent.Grant(user, anon, channel, purpose, True, "cli", now, expires, note)]
    )


@consent_group.command("revoke")
@click.argument("ident")
@click.option("--workspace", "workspace_id", required=True)
@click.option("--channel", type=CONSENT_CHANNELS, required=True)
@click.option("--purpose", type=CONSENT_PURPOSES, required=True)
@click.option("--anonymous", is_flag=True, help="IDENT is an anonymousId, not a userId.")
@click.option("--note", default=None)
@pass_ctx
def consent_revoke(
    c: _Ctx, ident: str, workspace_id: str, channel: str, purpose: str, anonymous: bool, note: str | None
) -> None:
    """Record an opt-out for IDENT on a channel for a purpose."""
    from momently.domain.timestamps import to_millis

    now = to_millis(c.services.clock.now())
    user, anon = _who(ident, anonymous)
    _record_consent(
        c, workspace_id, [consent.Grant(user, anon, channel, purpose, False, "cli", now, None, note)]
    )


@consent_group.command("stop")
@click.argument("ident")
@click.option("--workspace", "workspace_id", required=True)
@click.option("--all", "everything", is_flag=True, help="Also stop transactional messages.")
@click.option("--anonymous", is_flag=True, help="IDENT is an anonymousId, not a userId.")
@click.option("--note", default=None)
@pass_ctx
def consent_stop(
    c: _Ctx, ident: str, workspace_id: str, everything: bool, anonymous: bool, note: str | None
) -> None:
    """Stop contact: revoke everything but transactional messages (or everything, --all).
    Queued messages are checked again when they are sent, so nothing more goes out."""
    from momently.domain.timestamps import to_millis

    user, anon = _who(ident, anonymous)
    grants = consent.stop_contact(
        user, anon, at_ms=to_millis(c.services.clock.now()), include_transactional=everything, note=note
    )
    _record_consent(c, workspace_id, grants)


@consent_group.command("show")
@click.argument("ident")
@click.option("--workspace", "workspace_id", required=True)
@click.option("--anonymous", is_flag=True, help="IDENT is an anonymousId, not a userId.")
@pass_ctx
def consent_show(c: _Ctx, ident: str, workspace_id: str, anonymous: bool) -> None:
    """A person's consent history, then what it allows now on each channel."""
    from momently.domain.timestamps import to_millis

    s = c.services
    _require_workspace(s, workspace_id)
    user, anon = _who(ident, anonymous)
    records = s.consent.of_person(workspace_id, s.profiles, user_id=user, anonymous_id=anon)
    for r in records:
        g = r.grant
        until = f" until {format_timestamp(from_millis(g.expires_ms))}" if g.expires_ms else ""
        click.echo(
            f"#{r.seq:<6} {format_timestamp(from_millis(g.at_ms))}  {'grant ' if g.granted else 'revoke'} "
            f"{g.channel}/{g.purpose}{until}  ({g.source}{': ' + g.note if g.note else ''})"
        )
    if not records:
        click.echo("no consent records", err=True)
    policy = s.consent.policy(workspace_id)
    now = to_millis(s.clock.now())
    click.echo("\nnow:" + "".join(f"  {p:16}" for p in consent.PURPOSES))
    for channel in consent.CHANNELS:
        cells = []
        for p in consent.PURPOSES:
            v = consent.check(records, channel, p, policy, now_ms=now)
            cells.append(f"  {'yes' if v.allowed else 'no: ' + (v.reason or ''):16}")
        click.echo(f"{channel:8}" + "".join(cells))


@consent_group.command("verify")
@click.option("--workspace", "workspace_id", required=True)
@pass_ctx
def consent_verify(c: _Ctx, workspace_id: str) -> None:
    """Recompute the ledger's keyed hash chain; exit 1 if any row was edited, inserted or
    deleted, or is not keyed yet (see `consent rekey`)."""
    _require_workspace(c.services, workspace_id)
    report = c.services.consent.verify(workspace_id)
    for b in report.breaks:
        click.echo(f"record {b.seq}: {b.problem}", err=True)
    if not report.ok:
        raise click.ClickException(f"the consent ledger of {workspace_id} was tampered with or is not keyed")
    click.echo(f"{report.records} records, chain intact")


@consent_group.command("head")
@click.option("--workspace", "workspace_id", required=True)
@pass_ctx
def consent_head(c: _Ctx, workspace_id: str) -> None:
    """Print the ledger's latest record and its MAC, to keep somewhere the database's writers
    cannot reach (anchoring): a later `consent verify` plus this line show nothing before it
    was removed or rewritten."""
    _require_workspace(c.services, workspace_id)
    seq, mac = c.services.consent.head(workspace_id)
    click.echo(f"{workspace_id}\t{seq}\t{mac}")


@consent_group.command("rekey")
@click.option("--workspace", "workspace_id", required=True)
@click.option(
    "--accept-breaks",
    is_flag=True,
    help="Re-chain even a chain that does not verify, vouching for its rows as they now are.",
)
@pass_ctx
def consent_rekey(c: _Ctx, workspace_id: str, accept_breaks: bool) -> None:
    """Re-chain the ledger under the ledger key (MOMENTLY_LEDGER_KEY or the key file): for
    records written before the ledger was keyed, which are not obeyed until then."""
    _require_workspace(c.services, workspace_id)
    report = c.services.consent.rekey(workspace_id, accept_breaks=accept_breaks)
    for b in report.breaks:
        click.echo(f"record {b.seq}: {b.problem}", err=True)
    if not report.ok and not accept_breaks:
        raise click.ClickException(
            f"the consent ledger of {workspace_id} does not verify: nothing re-chained "
            "(look at the records above; --accept-breaks re-chains them as they are)"
        )
    click.echo(f"{report.records} records re-chained under the ledger key")


@consent_group.command("alignment")
@click.option("--workspace", "workspace_id", required=True)
@click.option("--since", default=None, help="Only sends in this last duration, e.g. 30d.")
@pass_ctx
def consent_alignment(c: _Ctx, workspace_id: str, since: str | None) -> None:
    """The consent-aligned personalisation rate: of the messages sent personalised, how many
    had personalisation consent at that moment (recomputed from the log and the ledger)."""
    from momently.alignment import personalisation_alignment
    from momently.domain.durations import parse_duration
    from momently.domain.timestamps import to_millis

    s = c.services
    _require_workspace(s, workspace_id)
    try:
        since_ms = to_millis(s.clock.now()) - parse_duration(since) if since else 0
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    s.projector.run_until_idle()
    report = personalisation_alignment(s, workspace_id, since_ms=since_ms)
    rate = f"{report.rate:.1%}" if report.rate is not None else "n/a (nothing personalised)"
    click.echo(
        f"sent {report.sent}, personalised {report.personalised}, with consent {report.aligned}: {rate}"
    )
    for key in report.misaligned:
        click.echo(f"  without consent: {key}", err=True)
    if report.misaligned:
        raise SystemExit(1)


@consent_group.command("policy")
@click.option("--workspace", "workspace_id", required=True)
@click.option(
    "--set", "policy_file", type=click.File(), default=None, help="JSON policy file to store (- for stdin)."
)
@pass_ctx
def consent_policy(c: _Ctx, workspace_id: str, policy_file: Any) -> None:
    """Print the workspace's consent policy, or replace it with --set FILE."""
    from momently.domain.timestamps import to_millis

    s = c.services
    _require_workspace(s, workspace_id)
    if policy_file is None:
        _print_json(s.consent.policy(workspace_id).as_json())
        return
    try:
        doc = json.load(policy_file)
        if not isinstance(doc, dict):
            raise consent.ConsentError("the policy must be a JSON object")
        policy = s.consent.set_policy(workspace_id, doc, now_ms=to_millis(s.clock.now()))
    except (ValueError, consent.ConsentError) as exc:
        raise click.ClickException(f"invalid policy: {exc}") from None
    _print_json(policy.as_json())


# data rights and retention --------------------------------------------------------------
@main.group()
def people() -> None:
    """Data rights: export everything about a person, or erase them."""


def _person(c: _Ctx, ident: str, workspace_id: str, anonymous: bool) -> str:
    s = c.services
    _require_workspace(s, workspace_id)
    s.projector.run_until_idle()  # everything the log holds about them, folded in
    pid = s.profiles.person_for(workspace_id, ("anon" if anonymous else "user", ident))
    if pid is None:
        raise click.ClickException(f"no person {ident!r} in {workspace_id}")
    return pid


@people.command("export")
@click.argument("ident")
@click.option("--workspace", "workspace_id", required=True)
@click.option("--anonymous", is_flag=True, help="IDENT is an anonymousId, not a userId.")
@click.option("-o", "--output", type=click.File("w"), default="-", help="File to write (default: stdout).")
@pass_ctx
def people_export(c: _Ctx, ident: str, workspace_id: str, anonymous: bool, output: Any) -> None:
    """All data about a person as JSON: profile, events, consent, messages, segments."""
    found = c.services.people.export(workspace_id, _person(c, ident, workspace_id, anonymous))
    output.write(json.dumps(found, indent=2, ensure_ascii=False) + "\n")


@people.command("erase")
@click.argument("ident")
@click.option("--workspace", "workspace_id", required=True)
@click.option("--anonymous", is_flag=True, help="IDENT is an anonymousId, not a userId.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_ctx
def people_erase(c: _Ctx, ident: str, workspace_id: str, anonymous: bool, yes: bool) -> None:
    """Erase a person: their events, profile, engine state and messages. The consent ledger
    records the erasure; later events with their ids are dropped unless they opt in again."""
    from momently.domain.timestamps import to_millis

    pid = _person(c, ident, workspace_id, anonymous)
    if not yes:
        click.confirm(f"Erase {ident} ({pid}) from {workspace_id}? This cannot be undone", abort=True)
    counts = c.services.people.erase(workspace_id, pid, now_ms=to_millis(c.services.clock.now()))
    for table, n in (counts or {}).items():
        if n:
            click.echo(f"{table:20} {n:>8} deleted")
    click.echo(f"{ident} erased from {workspace_id}")


@main.group()
def retention() -> None:
    """How long each workspace keeps its events."""


@retention.command("set")
@click.argument("days")
@click.option("--workspace", "workspace_id", required=True)
@pass_ctx
def retention_set(c: _Ctx, days: str, workspace_id: str) -> None:
    """Keep DAYS days of events (or 'off' to keep everything). The engine deletes older
    events hourly; profiles, segments, enrollments and counts are kept."""
    value: int | None = None
    if days != "off":
        if not days.isdigit() or int(days) < 1:
            raise click.BadParameter("a whole number of days >= 1, or off", param_hint="DAYS")
        value = int(days)
    _require_workspace(c.services, workspace_id)
    c.services.workspaces.set_retention(workspace_id, value)
    click.echo(f"{workspace_id}: " + (f"events kept {value} days" if value else "all events kept"))


@retention.command("run")
@pass_ctx
def retention_run(c: _Ctx) -> None:
    """Apply every workspace's retention now (a running engine does it hourly)."""
    from momently.domain.timestamps import to_millis

    s = c.services
    s.projector.run_until_idle()
    for ws, n in s.people.apply_retention(now_ms=to_millis(s.clock.now())).items():
        click.echo(f"{ws}: {n} old events deleted")


# experiments --------------------------------------------------------------------------
@main.group("experiments")
def experiments_group() -> None:
    """Flows' experiments: list, show, start, stop, ship an arm, resume (docs/experiments.md)."""


def _experiment_change(
    c: _Ctx, experiment_id: str, workspace_id: str, action: Action, arm: str | None, reason: str
) -> None:
    from momently import experiment_admin
    from momently.domain.experiments import InvalidChange

    s = c.services
    _require_workspace(s, workspace_id)
    try:
        out = experiment_admin.change(
            s,
            workspace_id,
            experiment_id,
            action,
            arm=arm,
            by="cli",
            reason=reason,
        )
    except (experiment_admin.UnknownExperiment, InvalidChange) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{out['id']}: {out['state']}" + (f" ({out['shippedArm']})" if out["shippedArm"] else ""))


@experiments_group.command("list")
@click.option("--workspace", "workspace_id", required=True)
@pass_ctx
def experiments_list(c: _Ctx, workspace_id: str) -> None:
    """Every experiment of the workspace's flows, with its state and people assigned per arm."""
    from momently import experiment_admin

    s = c.services
    _require_workspace(s, workspace_id)
    for found in experiment_admin.all_of(s, workspace_id):
        d = experiment_admin.describe(s, workspace_id, found)
        state = d["state"] + (f" ({d['shippedArm']})" if d["shippedArm"] else "")
        assigned = " ".join(f"{arm}={n}" for arm, n in sorted(d["assigned"].items())) or "nobody assigned yet"
        click.echo(f"{d['id']:<24} {state:<20} flow {d['flowId']} v{d['flowVersion']}  {assigned}")


@experiments_group.command("show")
@click.argument("experiment_id")
@click.option("--workspace", "workspace_id", required=True)
@pass_ctx
def experiments_show(c: _Ctx, experiment_id: str, workspace_id: str) -> None:
    """An experiment as JSON: arms, state, history of changes, people assigned per arm."""
    from momently import experiment_admin

    s = c.services
    _require_workspace(s, workspace_id)
    try:
        found = experiment_admin.find(s, workspace_id, experiment_id)
    except experiment_admin.UnknownExperiment as exc:
        raise click.ClickException(str(exc)) from None
    _print_json(experiment_admin.describe(s, workspace_id, found, history=True))


_REASON = click.option("--reason", default="", help="Why, for the record (in the event and the history).")


@experiments_group.command("start")
@click.argument("experiment_id")
@click.option("--workspace", "workspace_id", required=True)
@_REASON
@pass_ctx
def experiments_start(c: _Ctx, experiment_id: str, workspace_id: str, reason: str) -> None:
    """Record the start of an experiment whose start was never recorded (applying its flow does)."""
    _experiment_change(c, experiment_id, workspace_id, "start", None, reason)


@experiments_group.command("stop")
@click.argument("experiment_id")
@click.option("--workspace", "workspace_id", required=True)
@_REASON
@pass_ctx
def experiments_stop(c: _Ctx, experiment_id: str, workspace_id: str, reason: str) -> None:
    """Stop: nobody is assigned any more, everyone gets the flow's own message."""
    _experiment_change(c, experiment_id, workspace_id, "stop", None, reason)


@experiments_group.command("ship")
@click.argument("experiment_id")
@click.argument("arm")
@click.option("--workspace", "workspace_id", required=True)
@_REASON
@pass_ctx
def experiments_ship(c: _Ctx, experiment_id: str, arm: str, workspace_id: str, reason: str) -> None:
    """Send ARM's message to everyone; nobody is assigned any more."""
    _experiment_change(c, experiment_id, workspace_id, "ship", arm, reason)


@experiments_group.command("resume")
@click.argument("experiment_id")
@click.option("--workspace", "workspace_id", required=True)
@_REASON
@pass_ctx
def experiments_resume(c: _Ctx, experiment_id: str, workspace_id: str, reason: str) -> None:
    """Run a stopped or shipped experiment again; everyone keeps the arm they had."""
    _experiment_change(c, experiment_id, workspace_id, "resume", None, reason)


# guardrails ---------------------------------------------------------------------------
@main.group("guardrails")
def guardrails_group() -> None:
    """Quiet hours, frequency caps and kill switches (pause a workspace or a channel)."""


@guardrails_group.command("show")
@click.option("--workspace", "workspace_id", required=True)
@pass_ctx
def guardrails_show(c: _Ctx, workspace_id: str) -> None:
    """Print the workspace's guardrail policy as JSON."""
    _require_workspace(c.services, workspace_id)
    _print_json(c.services.guardrails.get(workspace_id, fresh=True).as_json())


@guardrails_group.command("set")
@click.argument("policy_file", type=click.File())
@click.option("--workspace", "workspace_id", required=True)
@pass_ctx
def guardrails_set(c: _Ctx, policy_file: Any, workspace_id: str) -> None:
    """Replace the policy with POLICY_FILE (JSON; - for stdin)."""
    from momently.domain.guardrails import InvalidGuardrails, Policy
    from momently.domain.timestamps import to_millis

    s = c.services
    _require_workspace(s, workspace_id)
    try:
        doc = json.load(policy_file)
        if not isinstance(doc, dict):
            raise InvalidGuardrails("the policy must be a JSON object")
        policy = Policy.from_json(doc)
    except (ValueError, InvalidGuardrails) as exc:
        raise click.ClickException(f"invalid policy: {exc}") from None
    _print_json(s.guardrails.put(workspace_id, policy, now_ms=to_millis(s.clock.now())).as_json())


def _switch(c: _Ctx, workspace_id: str, channel: str | None, on: bool) -> None:
    from momently.domain.timestamps import to_millis

    s = c.services
    _require_workspace(s, workspace_id)
    s.guardrails.update(workspace_id, lambda p: p.with_pause(channel, on), now_ms=to_millis(s.clock.now()))
    what = f"channel {channel}" if channel else "workspace"
    click.echo(f"{what} {'paused' if on else 'resumed'} in {workspace_id}; dispatchers follow within seconds")


@guardrails_group.command("pause")
@click.option("--workspace", "workspace_id", required=True)
@click.option("--channel", default=None, help="Only this channel (default: everything).")
@pass_ctx
def guardrails_pause(c: _Ctx, workspace_id: str, channel: str | None) -> None:
    """Kill switch: nothing more is sent (queued messages wait) until resumed."""
    _switch(c, workspace_id, channel, True)


@guardrails_group.command("resume")
@click.option("--workspace", "workspace_id", required=True)
@click.option("--channel", default=None)
@pass_ctx
def guardrails_resume(c: _Ctx, workspace_id: str, channel: str | None) -> None:
    """Undo a pause."""
    _switch(c, workspace_id, channel, False)


@main.command()
@click.option(
    "--role",
    type=click.Choice(["all", "engine", "dispatcher"]),
    default="all",
    show_default=True,
    help="engine: profiles, segments, flows, timers; dispatcher: sending the outbox; "
    "run one of each in its own process to give each a core",
)
@pass_ctx
def worker(c: _Ctx, role: str) -> None:
    """Run the engine and the dispatcher apart from the API, next to `serve --no-engine`."""
    import signal
    import threading

    s = c.services
    heap.settle_after_startup()  # the engine's person cache makes a large long-lived heap
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # the API runs elsewhere: its commits (and the engine's, for the dispatcher) wake this one
    s.start_engine(watch_commits=True, engine=role != "dispatcher", dispatcher=role != "engine")
    click.echo(f"{role if role != 'all' else 'engine'} running on {s.db.safe_url}; Ctrl-C to stop", err=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if s.watcher is not None:
            s.watcher.stop()
        s.dispatcher.stop()
        s.outcomes.stop()
        s.projector.stop()
    click.echo("engine stopped", err=True)


@main.command()
@click.option("--port", type=int, default=None)
@click.option("--people", default=50, show_default=True, help="Synthetic customers to send events for.")
@click.option("--exit", "exit_after", is_flag=True, help="Stop after the walkthrough instead of serving.")
@pass_ctx
def demo(c: _Ctx, port: int | None, people: int, exit_after: bool) -> None:
    """Serve a ready 'demo' workspace, send it synthetic shop traffic, show a profile."""
    from datetime import UTC, datetime, timedelta

    from momently.clock import CatchUpClock
    from momently.demo import run_demo

    with _checked_settings():
        engine = c.settings.run_engine
        # the engine's loops start once the synthetic past is played (run_demo drives it then)
        c.settings = c.settings.with_overrides(
            port=port, console_path=c.settings.console_path or "momently-messages.jsonl", run_engine=False
        )
    # the synthetic shop day started two hours ago: its events arrive as they would have
    c.clock = CatchUpClock(datetime.now(UTC) - timedelta(hours=2))
    sys.exit(run_demo(c.services, people=people, exit_after=exit_after, start_engine=engine))
