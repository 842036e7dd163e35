"""Experiments for the CLI and the admin API: found through the flows that declare them,
described with their state, history and assignments, and changed (start, stop, ship, resume).
One place for both faces."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from momently.domain import experiments as rules
from momently.domain.experiments import Experiment, format_share
from momently.domain.flow import compile_flow
from momently.domain.timestamps import format_timestamp, from_millis, to_millis
from momently.services import Services


class UnknownExperiment(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class Found:
    experiment: Experiment
    flow_id: str
    flow_version: int
    flow_status: str


def all_of(services: Services, workspace_id: str) -> list[Found]:
    """The experiments of the workspace's flows (archived flows' left out), by id."""
    out: list[Found] = []
    for head in services.definitions.heads(workspace_id, "flow"):
        if head.status == "archived" or "experiment" not in head.body:
            continue
        flow = compile_flow(head.body, head.version)
        assert flow.experiment is not None
        out.append(Found(flow.experiment, flow.id, head.version, head.status))
    return sorted(out, key=lambda f: f.experiment.id)


def find(services: Services, workspace_id: str, experiment_id: str) -> Found:
    for found in all_of(services, workspace_id):
        if found.experiment.id == experiment_id:
            return found
    raise UnknownExperiment(f"no experiment '{experiment_id}' in a flow of this workspace")


def describe(services: Services, workspace_id: str, found: Found, *, history: bool = False) -> dict[str, Any]:
    exp = found.experiment
    status = services.experiments.statuses(workspace_id).get(exp.id, rules.Status())
    out: dict[str, Any] = {
        "id": exp.id,
        "name": exp.name,
        "flowId": found.flow_id,
        "flowVersion": found.flow_version,
        "flowStatus": found.flow_status,
        "state": status.state,
        "shippedArm": status.arm,
        "version": status.version,
        "salt": exp.salt,
        "holdout": format_share(exp.holdout),
        "arms": [
            {
                "id": a.id,
                "weight": a.weight,
                "variant": a.variant,
                "channels": list(a.channels) if a.channels is not None else None,
                "delay": a.delay is not None,
            }
            for a in exp.arms
        ],
        "assigned": services.experiments.assigned(workspace_id, exp.id),
    }
    if history:
        out["history"] = [
            {
                "version": c.version,
                "state": c.state,
                "arm": c.arm,
                "by": c.by,
                "reason": c.reason,
                "at": format_timestamp(from_millis(c.at_ms)),
            }
            for c in services.experiments.history(workspace_id, exp.id)
        ]
    return out


def change(
    services: Services,
    workspace_id: str,
    experiment_id: str,
    action: rules.Action,
    *,
    arm: str | None = None,
    by: str,
    reason: str = "",
) -> dict[str, Any]:
    """Raises ``UnknownExperiment`` or ``rules.InvalidChange``."""
    found = find(services, workspace_id, experiment_id)
    services.experiments.change(
        workspace_id,
        found.experiment,
        found.flow_id,
        action,
        arm=arm,
        by=by,
        reason=reason,
        now_ms=to_millis(services.clock.now()),
    )
    services.projector.wake()
    return describe(services, workspace_id, found, history=True)
