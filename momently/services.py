"""Wiring: builds the store adapters and engine parts from ``Settings``, once, for a face."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from momently.clock import Clock, SystemClock
from momently.engine.log_writer import LogWriter
from momently.engine.profile_projector import ProfileProjector
from momently.settings import Settings
from momently.store.database import Database
from momently.store.events import EventLog
from momently.store.profiles import ProfileStore
from momently.store.workspaces import Workspaces


@dataclass
class Services:
    settings: Settings
    clock: Clock
    db: Database
    events: EventLog
    workspaces: Workspaces
    profiles: ProfileStore
    writer: LogWriter
    projector: ProfileProjector

    @classmethod
    def build(cls, settings: Settings, *, clock: Clock | None = None, migrate: bool = True) -> Services:
        clock = clock or SystemClock()
        db = Database(settings.database_url)
        if migrate:
            db.migrate()
        events = EventLog(db)
        profiles = ProfileStore(db)
        projector = ProfileProjector(db, events, profiles)
        writer = LogWriter(
            db,
            events,
            clock,
            dedup_window=timedelta(days=settings.dedup_window_days),
            on_commit=projector.wake,
        )
        return cls(settings, clock, db, events, Workspaces(db), profiles, writer, projector)

    def start(self) -> None:
        """Start the background parts a server needs: the log writer, and the engine if enabled."""
        self.writer.start()
        if self.settings.run_engine:
            self.projector.start()

    def close(self) -> None:
        self.projector.stop()
        self.writer.stop()
        self.db.dispose()
