"""Experiment assignment inside an engine batch: each person's sticky arm, read once per batch
for the people the batch decides about, drawn (``domain.experiments``) and stored the first
time, and the ``Experiment Viewed`` event that records it.

Only a batch with a candidate in a flow with an experiment builds one of these, so a workspace
without experiments pays nothing for them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection

from momently.domain.event import Event, derived_event
from momently.domain.experiments import EXPERIMENT_VIEWED, HOLDOUT, Experiment
from momently.domain.flow import Flow
from momently.domain.profile import Profile
from momently.domain.timestamps import from_millis
from momently.store.engine_state import EngineState, Exposure


class Assigner:
    """The batch's view of experiment states and of its people's assignments."""

    def __init__(
        self,
        state: EngineState,
        conn: Connection,
        workspace_id: str,
        persons: Iterable[str],
        merged: Mapping[str, str],
    ) -> None:
        self.ws = workspace_id
        self.states = state.experiment_states(conn, workspace_id)
        wanted = set(persons)
        losers = {loser for loser, winner in merged.items() if winner in wanted}
        self.sticky: dict[tuple[str, str], Exposure] = {}
        for x in state.exposures(conn, workspace_id, wanted | losers):
            pid = merged.get(x.person_id, x.person_id)
            key = (x.experiment_id, pid)
            current = self.sticky.get(key)
            # two people merged in this batch: the earlier assignment wins, as in the store
            if current is None or (x.first_exposed_ms, x.person_id != pid) < (
                current.first_exposed_ms,
                current.person_id != pid,
            ):
                self.sticky[key] = x
        self.new: list[Exposure] = []

    def state(self, experiment: Experiment) -> tuple[str, str | None]:
        """(running | stopped | shipped, the shipped arm)."""
        return self.states.get(experiment.id, ("running", None))

    def assign(self, flow: Flow, person_id: str, key: str, now_ms: int) -> str:
        """The person's arm (or ``holdout``): the stored one while it is still one of the
        experiment's and drawn with its salt, else drawn now and stored."""
        exp = flow.experiment
        assert exp is not None
        stored = self.sticky.get((exp.id, person_id))
        if stored is not None and stored.salt == exp.salt and _valid(exp, stored.arm):
            return stored.arm
        arm = exp.assign(key)
        x = Exposure(exp.id, person_id, arm, exp.salt, now_ms, flow.id, flow.version)
        self.sticky[(exp.id, person_id)] = x
        self.new.append(x)
        return arm


def _valid(exp: Experiment, arm: str) -> bool:
    return exp.holdout > 0 if arm == HOLDOUT else exp.arm(arm) is not None


def viewed(
    workspace_id: str,
    flow: Flow,
    profile: Profile,
    *,
    person_id: str,
    occurrence: str,
    arm: str,
    channel: str | None,
    decided_ms: int,
    send_at_ms: int,
) -> Event:
    """Segment's ``Experiment Viewed``, stamped when the message goes (or, for the holdout,
    would go); its messageId is the enrollment's, so a replay cannot record it twice."""
    exp = flow.experiment
    assert exp is not None
    props: dict[str, Any] = {
        "experiment_id": exp.id,
        "experiment_name": exp.name,
        "variation_id": arm,
        "variation_name": arm,
        "flow_id": flow.id,
        "flow_version": flow.version,
        "occurrence": occurrence,
        "person_id": person_id,
    }
    if channel is not None:
        props["channel"] = channel
    return derived_event(
        message_id=f"momently:exposure:{workspace_id}:{flow.id}:{person_id}:{occurrence}",
        name=EXPERIMENT_VIEWED,
        user_id=profile.user_id,
        anonymous_id=profile.anonymous_id,
        at=from_millis(send_at_ms),
        # decided now: a future arrival would move the engine's clock (deadlines) forward
        received_at=from_millis(min(decided_ms, send_at_ms)),
        properties=props,
    )
