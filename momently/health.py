"""What ``/healthz`` reports: each part of this process, and one overall status an
orchestrator can act on.

    status    HTTP  meaning                                       what to do
    ok        200   everything works
    degraded  200   a channel keeps failing (SMTP refuses, the    alert a person: restarting or
                    provider is down); events are still taken     routing elsewhere would not help
    failing   503   the database is unreachable, its disk is      take the process out of the load
                    nearly full, or the engine or the dispatcher  balancer (readiness) and alert
                    in this process fails every round

Liveness is separate (``/livez``): the process answers at all. A failing database is not
fixed by restarting the server, so a liveness probe must not restart on ``failing``.

Checks that find a problem name its kind, never the database's own error text (which may
quote SQL, parameters or the server's address): that goes to the log."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any, Final

from sqlalchemy import text

from momently.domain.timestamps import format_timestamp, from_millis
from momently.engine.background import LoopHealth
from momently.services import Services

OK: Final = "ok"
DEGRADED: Final = "degraded"
FAILING: Final = "failing"
SKIPPED: Final = "skipped"  # not checked by this process (the part runs elsewhere, or does not apply)

log = logging.getLogger(__name__)


def report(services: Services) -> tuple[int, dict[str, Any]]:
    """The HTTP status and the body of ``/healthz``. Blocking (it queries the database)."""
    dispatcher = services.dispatcher.health()
    checks: dict[str, Any] = {
        "database": _database(services),
        "disk": _disk(services),
        "engine": _loop(services.projector.health()),
        "dispatcher": _loop(dispatcher),
        # reports lag while it fails; ingest and sending do not: degraded, not failing
        "experiments": _loop(services.outcomes.health()),
        "channels": _channels(services, dispatcher_running=dispatcher.running),
    }
    parts = [checks["database"], checks["disk"], checks["engine"], checks["dispatcher"]]
    if any(part["status"] == FAILING for part in parts):
        status = FAILING
    elif checks["experiments"]["status"] == FAILING or any(
        channel["status"] == FAILING for channel in checks["channels"].values()
    ):
        status = DEGRADED
    else:
        status = OK
    body = {
        "status": status,
        "process": os.getpid(),  # which process answered: one of serve --workers N's
        "eventsCommitted": services.writer.events_committed,
        "checks": checks,
    }
    return (503 if status == FAILING else 200), body


def _database(services: Services) -> dict[str, Any]:
    try:
        with services.db.read() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:
        log.exception("health check: the database %s did not answer", services.db.safe_url)
        return {
            "status": FAILING,
            "dialect": services.db.dialect,
            "error": "unreachable (see the server log)",
        }
    return {"status": OK, "dialect": services.db.dialect}


def _disk(services: Services) -> dict[str, Any]:
    """Free space where SQLite writes (the database, its WAL). A PostgreSQL server's disk is
    its own host's to watch."""
    path = services.db.sqlite_path
    if path is None:
        return {"status": SKIPPED, "reason": "the database is PostgreSQL"}
    minimum = int(services.settings.health_min_free_disk_mb * 1024 * 1024)
    try:
        free = shutil.disk_usage(Path(path).resolve().parent).free
    except OSError:
        log.exception("health check: cannot read the free space next to %s", path)
        return {"status": FAILING, "error": "free space unknown (see the server log)"}
    return {"status": OK if free >= minimum else FAILING, "freeBytes": free, "minFreeBytes": minimum}


def _loop(health: LoopHealth) -> dict[str, Any]:
    if not health.running:
        return {"status": SKIPPED, "running": False}
    return {
        "status": FAILING if health.failing else OK,
        "running": True,
        "consecutiveFailures": health.consecutive_failures,
        "lastError": health.last_error,
    }


def _channels(services: Services, *, dispatcher_running: bool) -> dict[str, dict[str, Any]]:
    """Every configured channel when the dispatcher runs here; otherwise only those this
    process sent through (a dispatcher elsewhere keeps its own counts)."""
    statuses = services.dispatcher.channel_health.snapshot()
    names = (
        sorted(set(services.dispatcher.channels.defaults) | set(statuses))
        if dispatcher_running
        else sorted(statuses)
    )
    channels: dict[str, dict[str, Any]] = {}
    for name in names:
        s = statuses.get(name)
        channels[name] = {
            "status": FAILING if s is not None and s.failing else OK,
            "consecutiveFailures": s.consecutive_failures if s else 0,
            "lastError": s.last_error if s else None,
            "lastSuccessAt": _iso(s.last_success_ms) if s else None,
            "lastFailureAt": _iso(s.last_failure_ms) if s else None,
        }
    return channels


def _iso(ms: int | None) -> str | None:
    return None if ms is None else format_timestamp(from_millis(ms))
