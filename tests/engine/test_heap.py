"""An engine batch must leave no reference cycles: engine processes make full garbage
collections rare (``momently.heap``), so a batch that only the cyclic collector could free
would pile up, every batch, until one ran: before ``Pass.attach`` took the pass as an
argument, every batch's events, timers and enrollments were such garbage."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from momently import catalog
from momently.domain.definitions import load
from momently.domain.profile import LoggedEvent
from momently.engine.flows import Pass
from momently.engine.profile_projector import _Batch
from momently.services import Services
from momently.store.engine_state import Enrollment, Timer
from tests.engine.test_flow_idempotency import FLOWS
from tests.engine.test_profile_projector import STORY, append

ENGINE_TYPES = (Pass, _Batch, LoggedEvent, Timer, Enrollment)


@pytest.fixture
def saving_garbage() -> Iterator[list[object]]:
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def test_an_engine_batch_is_freed_without_the_cycle_collector(
    services: Services, saving_garbage: list[object]
) -> None:
    s = services
    s.workspaces.create("w", name=None, now=s.clock.now())
    docs, problems = load(FLOWS, "flows.yaml")
    assert not problems
    catalog.apply(s, "w", catalog.Loaded(docs, []))
    append(s, [*STORY, {"type": "track", "userId": "ada", "event": "Order Completed"}])
    gc.collect()
    saving_garbage.clear()
    assert s.projector.run_until_idle() > 0
    assert s.engine_state.enrollments("w")  # the batch did real work: a segment, a flow
    gc.collect()
    left = [type(o).__name__ for o in saving_garbage if isinstance(o, ENGINE_TYPES)]
    assert left == []
