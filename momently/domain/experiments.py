"""Experiments: a flow's arms and holdout, who gets which, and the experiment's lifecycle.

Assignment is a pure function of (salt, person key): SHA-256 of ``salt:key`` read as a number
in [0, 1). The first ``holdout`` share of that interval is the holdout (tracked, sent
nothing), the rest is split between the arms in proportion to their weights. The same person
lands in the same arm on every machine, restart and replay; the engine also stores each
person's first assignment (``exposures``) so it survives identity changes and new flow
versions (see docs/experiments.md).

The workspace's **global control group** uses the same hash with the salt ``global:`` plus
the workspace id: people in it get no tier-B message at all.

Lifecycle: an experiment is ``running`` from the moment its flow is applied; ``stop`` sends
everyone the flow's own message (nobody assigned), ``ship`` sends one arm to everyone, and
``resume`` goes back to running with the assignments kept.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from momently.domain.delays import Delay, compile_delay

ARM_ID: Final = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
HOLDOUT: Final = "holdout"
MAX_HOLDOUT: Final = 0.5
# the derived event recorded for each assignment (Segment's spec for experiment exposures)
EXPERIMENT_VIEWED: Final = "Experiment Viewed"
# lifecycle events, appended to the log by whoever changes the state
EXPERIMENT_STARTED: Final = "Experiment Started"
EXPERIMENT_STOPPED: Final = "Experiment Stopped"
EXPERIMENT_SHIPPED: Final = "Experiment Shipped"
EXPERIMENT_RESUMED: Final = "Experiment Resumed"
LIFECYCLE_EVENTS: Final = (EXPERIMENT_STARTED, EXPERIMENT_STOPPED, EXPERIMENT_SHIPPED, EXPERIMENT_RESUMED)

State = Literal["running", "stopped", "shipped"]
Action = Literal["start", "stop", "ship", "resume"]
_UNIT: Final = float(2**53)


class InvalidShare(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Arm:
    """What an arm changes; None keeps the flow's own."""

    id: str
    weight: float
    variant: str | None = None
    channels: tuple[str, ...] | None = None
    delay: Delay | None = None


@dataclass(frozen=True, slots=True)
class Experiment:
    id: str
    name: str
    salt: str
    holdout: float
    arms: tuple[Arm, ...]

    def arm(self, arm_id: str) -> Arm | None:
        return next((a for a in self.arms if a.id == arm_id), None)

    def assign(self, key: str) -> str:
        """The arm id (or ``holdout``) of the person whose key is ``key``."""
        return pick(unit(self.salt, key), self.holdout, self.arms)


def unit(salt: str, key: str) -> float:
    """A uniform number in [0, 1) from SHA-256 of ``salt:key`` (53 bits: a double's precision)."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / _UNIT


def pick(u: float, holdout: float, arms: Sequence[Arm]) -> str:
    """The first ``holdout`` share of [0, 1) is the holdout; the rest goes to the arms in
    proportion to their weights (the last arm takes what rounding leaves)."""
    if u < holdout:
        return HOLDOUT
    rest = (u - holdout) / (1 - holdout)
    total = sum(a.weight for a in arms)
    edge = 0.0
    for a in arms:
        edge += a.weight / total
        if rest < edge:
            return a.id
    return arms[-1].id


def in_global_control(workspace_id: str, key: str, share: float) -> bool:
    return share > 0 and unit(f"global:{workspace_id}", key) < share


def person_key(user_id: str | None, anonymous_ids: Sequence[str], person_id: str) -> str:
    """What a person is hashed by: their userId when known, else their (first) anonymousId."""
    if user_id:
        return user_id
    return anonymous_ids[0] if anonymous_ids else person_id


def parse_share(value: object, *, what: str, at_most: float) -> float:
    """A share written as a percentage, ``"10%"`` (``0`` also means none)."""
    if value == 0:
        return 0.0
    text = str(value).strip() if isinstance(value, str) else None
    if text is None or not text.endswith("%"):
        raise InvalidShare(f'{what}: {value!r}: write a percentage, e.g. "10%"')
    try:
        share = float(text[:-1]) / 100
    except ValueError:
        raise InvalidShare(f'{what}: {value!r}: write a percentage, e.g. "10%"') from None
    if not 0 <= share <= at_most:
        raise InvalidShare(f"{what}: {value!r}: from 0% to {at_most * 100:g}%")
    return share


def format_share(share: float) -> str:
    return f"{share * 100:g}%"


def problems(
    spec: Mapping[str, Any], *, variants: Sequence[str], channels: Sequence[str]
) -> list[tuple[tuple[str | int, ...], str]]:
    """What is wrong with a flow's ``experiment`` block beyond its schema: (path under
    ``experiment``, message). ``variants``: the ids the flow's message defines."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    try:
        parse_share(spec.get("holdout", 0), what="holdout", at_most=MAX_HOLDOUT)
    except InvalidShare as exc:
        out.append((("holdout",), str(exc).removeprefix("holdout: ")))
    arms = spec.get("arms") or []
    seen: set[str] = set()
    for i, arm in enumerate(arms):
        if not isinstance(arm, Mapping):
            continue
        arm_id = str(arm.get("id", ""))
        if arm_id == HOLDOUT:
            out.append(
                (("arms", i, "id"), "'holdout' is the name of the holdout: use the holdout share instead")
            )
        elif not ARM_ID.match(arm_id):
            out.append((("arms", i, "id"), f"arm id {arm_id!r}: lowercase letters, digits, - and _"))
        if arm_id in seen:
            out.append((("arms", i, "id"), f"arm '{arm_id}' is defined twice"))
        seen.add(arm_id)
        variant = arm.get("variant")
        if variant is not None and str(variant) not in variants:
            known = ", ".join(variants)
            out.append((("arms", i, "variant"), f"unknown variant '{variant}': the message has {known}"))
        delay = arm.get("delay")
        if isinstance(delay, Mapping) and "cancel_if" in delay:
            out.append(
                (
                    ("arms", i, "delay", "cancel_if"),
                    "an arm changes only when its message goes: put cancel_if in the flow's own delay",
                )
            )
    return out


def compile_experiment(spec: Mapping[str, Any], flow_id: str) -> Experiment:
    """An ``experiment`` block that passed validation."""
    exp_id = str(spec.get("id", flow_id))
    arms = tuple(
        Arm(
            id=str(a["id"]),
            weight=float(a.get("weight", 1)),
            variant=str(a["variant"]) if "variant" in a else None,
            channels=tuple(a["channels"]) if "channels" in a else None,
            delay=compile_delay(a["delay"]) if "delay" in a else None,
        )
        for a in spec["arms"]
    )
    return Experiment(
        id=exp_id,
        name=str(spec.get("name", exp_id)),
        salt=str(spec.get("salt", exp_id)),
        holdout=parse_share(spec.get("holdout", 0), what="holdout", at_most=MAX_HOLDOUT),
        arms=arms,
    )


@dataclass(frozen=True, slots=True)
class Status:
    """An experiment's current state; ``arm`` is the shipped one."""

    state: State = "running"
    arm: str | None = None
    version: int = 0  # 0: never changed since its flow was applied


class InvalidChange(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


_EVENT: Final[dict[Action, str]] = {
    "start": EXPERIMENT_STARTED,
    "stop": EXPERIMENT_STOPPED,
    "ship": EXPERIMENT_SHIPPED,
    "resume": EXPERIMENT_RESUMED,
}


def change(
    current: Status | None, action: Action, arm: str | None, arms: Sequence[str]
) -> tuple[Status, str]:
    """The state after ``action``, and the name of the event that records it. ``current`` is
    None for an experiment whose start was never recorded."""
    now = current or Status()
    version = (current.version if current else 0) + 1
    if action == "start":
        if current is not None:
            raise InvalidChange(
                "experiment_started", "the experiment was started already; resume it after stop or ship"
            )
        return Status("running", None, version), _EVENT[action]
    if action == "stop":
        if now.state == "stopped":
            raise InvalidChange("experiment_stopped", "the experiment is stopped already")
        return Status("stopped", None, version), _EVENT[action]
    if action == "ship":
        if arm is None or arm not in arms:
            raise InvalidChange(
                "unknown_arm", f"ship one of the experiment's arms: {', '.join(arms)} (got {arm!r})"
            )
        if now.state == "shipped" and now.arm == arm:
            raise InvalidChange("experiment_shipped", f"arm '{arm}' is shipped already")
        return Status("shipped", arm, version), _EVENT[action]
    if now.state == "running":
        raise InvalidChange("experiment_running", "the experiment is running already")
    return Status("running", None, version), _EVENT[action]
