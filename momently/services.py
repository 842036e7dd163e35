"""Wiring: builds the store adapters and engine parts from ``Settings``, once, for a face."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from momently.clock import Clock, SystemClock
from momently.engine.flows import FlowStage
from momently.engine.log_writer import LogWriter
from momently.engine.profile_projector import ProfileProjector
from momently.settings import Settings
from momently.store.database import Database
from momently.store.definitions import Definitions
from momently.store.engine_state import EngineState
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
    definitions: Definitions
    engine_state: EngineState

    @classmethod
    def build(cls, settings: Settings, *, clock: Clock | None = None, migrate: bool = True) -> Services:
        clock = clock or SystemClock()
        db = Database(settings.database_url)
        if migrate:
            db.migrate()
        events = EventLog(db)
        profiles = ProfileStore(db)
        definitions = Definitions(db)
        engine_state = EngineState(db, events)
        flows = FlowStage(definitions, engine_state, default_timezone=settings.default_timezone)
        projector = ProfileProjector(db, events, profiles, flows=flows, clock=clock)
        writer = LogWriter(
            db,
            events,
            clock,
            dedup_window=timedelta(days=settings.dedup_window_days),
            on_commit=projector.wake,
        )
        return cls(
            settings,
            clock,
            db,
            events,
            Workspaces(db),
            profiles,
            writer,
            projector,
            definitions,
            engine_state,
        )

    def start(self) -> None:
        """Start the background parts a server needs: the log writer, and the engine if enabled."""
        self.writer.start()
        if self.settings.run_engine:
            self.projector.start()

    def close(self) -> None:
        self.projector.stop()
        self.writer.stop()
        self.db.dispose()
