"""The ``momently`` command line. Parses, calls down, prints; no rules live here."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import click

from momently.domain.credentials import KeyKind
from momently.domain.profile import document
from momently.domain.timestamps import format_timestamp, from_millis
from momently.services import Services
from momently.settings import Settings
from momently.store.database import DatabaseError
from momently.store.workspaces import WorkspaceError


class _Ctx:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._services: Services | None = None

    @property
    def services(self) -> Services:
        if self._services is None:
            try:
                self._services = Services.build(self.settings)
            except DatabaseError as exc:
                raise click.ClickException(str(exc)) from None
        return self._services

    def close(self) -> None:
        if self._services is not None:
            self._services.close()
            self._services = None


pass_ctx = click.make_pass_decorator(_Ctx)


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
    """Momently: micro-moments engine. Ingests Segment-spec events, keeps profiles, and
    (coming) runs flows that send guarded, measured messages.

    \b
    Quick start:
      momently workspace create acme        # prints a write key and an admin token
      momently serve                        # http://127.0.0.1:8000, docs at /docs
    """
    ctx.obj = _Ctx(Settings().with_overrides(database_url=database_url))
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
    "--engine/--no-engine", "run_engine", default=None, help="Run the profile projector (default on)."
)
@pass_ctx
def serve(c: _Ctx, host: str | None, port: int | None, workers: int, run_engine: bool | None) -> None:
    """Run the HTTP API (ingest + admin) and the engine."""
    import uvicorn

    from momently.api import create_app

    c.settings = c.settings.with_overrides(host=host, port=port, run_engine=run_engine)
    st = c.settings
    click.echo(f"Momently on http://{st.host}:{st.port} using {c.services.db.safe_url}", err=True)
    if workers == 1:
        uvicorn.run(
            create_app(c.services), host=st.host, port=st.port, log_level=st.log_level, access_log=False
        )
        return
    # Workers are fresh processes that read their settings from the environment.
    os.environ["MOMENTLY_DATABASE_URL"] = st.database_url
    if st.run_engine:
        c.services.projector.start()
    uvicorn.run(
        "momently.api.app:app_from_env",
        factory=True,
        workers=workers,
        host=st.host,
        port=st.port,
        log_level=st.log_level,
        access_log=False,
    )


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
    "--keys/--no-keys", default=True, help="Also issue a write key and an admin token (default on)."
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
        for kind in (KeyKind.WRITE, KeyKind.ADMIN):
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
    """Issue, list and revoke write keys and admin tokens."""


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
    """Rebuild every derived table (profiles, identities) from the event log."""
    s = c.services
    targets = [workspace_id] if workspace_id else [w.id for w in s.workspaces.all()]
    started = time.monotonic()

    def progress(ws: str, cursor: int, last: int) -> None:
        if ws in targets:
            click.echo(f"\r{ws}: {cursor}/{last} events", nl=False, err=True)

    total = 0
    for ws in targets:
        if s.workspaces.get(ws) is None:
            raise click.ClickException(f"no workspace {ws!r}")
        total += s.projector.replay(ws, progress)
        click.echo("", err=True)
    click.echo(f"replayed {total} events in {time.monotonic() - started:.1f}s")


@main.command()
@click.option("--port", type=int, default=None)
@click.option("--people", default=50, show_default=True, help="Synthetic customers to send events for.")
@click.option("--exit", "exit_after", is_flag=True, help="Stop after the walkthrough instead of serving.")
@pass_ctx
def demo(c: _Ctx, port: int | None, people: int, exit_after: bool) -> None:
    """Serve a ready 'demo' workspace, send it synthetic shop traffic, show a profile."""
    from momently.demo import run_demo

    c.settings = c.settings.with_overrides(port=port)
    sys.exit(run_demo(c.services, people=people, exit_after=exit_after))
