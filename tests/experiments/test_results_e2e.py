"""Through the real HTTP API: a flow with an experiment, exposures and outcomes sent with a
server key, folded by the running engine; the report's counts are exact and its lift is
momently.stats' lift of those counts. An arm under k people is hidden."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from momently.domain.outcomes import DAY_MS
from momently.engine.experiment_projector import CONSUMER
from momently.experiments.results import experiment_results
from momently.stats import Cuped, Mean, Proportion, compare, srm_p_value
from momently.store.experiment_outcomes import OutcomeStore
from tests.conftest import LiveServer

FLOW = """
id: nudge
trigger: {event: Cart Viewed}
goal: {event: Order Completed, within: 1h}
experiment:
  arms: [{id: short}, {id: long}]
  holdout: 50%
"""


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def send(server: LiveServer, events: list[dict[str, Any]]) -> None:
    with httpx.Client(base_url=server.url, auth=(server.write_key, ""), timeout=10) as c:
        for i in range(0, len(events), 100):
            r = c.post("/v1/batch", json={"batch": events[i : i + 100]})
            assert r.status_code == 200, r.text
            assert not r.json().get("rejected"), r.json()


def wait_for_outcomes(server: LiveServer, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(cursor >= last for _, cursor, last in server.services.profiles.backlog(CONSUMER)):
            return
        time.sleep(0.02)
    raise AssertionError("experiment outcomes did not catch up")


def test_report_counts_and_lift_from_http_ingest(live_server: LiveServer) -> None:
    server = live_server
    with server.admin() as c:
        r = c.put("/v1/flows/nudge", content=FLOW, headers={"Content-Type": "application/yaml"})
        assert r.status_code == 200, r.text
    exposed = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    # Given 20 people held out (4 order within the hour), 20 on "short" (10 do), 3 on "long"
    cohorts = {"holdout": (20, 4), "short": (20, 10), "long": (3, 1)}
    people = [(f"{arm}-{i}", arm, i < converted) for arm, (n, converted) in cohorts.items() for i in range(n)]
    send(
        server,
        [
            {"type": "identify", "userId": u, "timestamp": iso(exposed - timedelta(hours=1))}
            for u, _, _ in people
        ],
    )
    views = [
        {
            "type": "track",
            "userId": u,
            "event": "Experiment Viewed",
            "timestamp": iso(exposed),
            "properties": {
                "experiment_id": "nudge",
                "variation_id": arm,
                "flow_id": "nudge",
                "flow_version": 1,
            },
        }
        for u, arm, _ in people
    ]
    orders = [
        {
            "type": "track",
            "userId": u,
            "event": "Order Completed",
            "timestamp": iso(exposed + timedelta(minutes=10)),
            "properties": {"total": 10},
        }
        for u, _, buys in people
        if buys
    ]
    late = [  # after the goal's hour: revenue and conversion ignore it, 30-day orders count it
        {
            "type": "track",
            "userId": "holdout-19",
            "event": "Order Completed",
            "timestamp": iso(exposed + timedelta(hours=2)),
            "properties": {"total": 50},
        }
    ]
    send(server, views + orders + late)
    # a web page (public key) cannot put anyone in an arm
    with httpx.Client(base_url=server.url, auth=(server.public_key, ""), timeout=10) as c:
        forged = {
            **views[0],
            "userId": "mallory",
            "properties": {**views[0]["properties"], "variation_id": "long"},
        }
        assert c.post("/v1/batch", json={"batch": [forged]}).status_code == 200
    server.wait_for_engine()
    wait_for_outcomes(server)
    health = httpx.get(f"{server.url}/healthz", timeout=10).json()
    assert health["checks"]["experiments"]["status"] == "ok"  # the consumer runs next to the engine

    # When the report is read after every window has closed
    now_ms = int((exposed.timestamp() + 200 * 86400) * 1000)
    s = server.services
    report = experiment_results(OutcomeStore(s.db), s.definitions, server.workspace, "nudge", now_ms=now_ms)

    # Then the counts are exact, and the lift is momently.stats' on those counts
    assert report.control == "holdout"
    assert report.weights == {"short": 0.25, "long": 0.25, "holdout": 0.5}
    assert report.exposures == {"short": 20, "long": None, "holdout": 20}  # long: under k=10, hidden
    assert report.srm_p == srm_p_value([20, 3, 20], [0.25, 0.25, 0.5])
    conversion = report.metrics["conversion"]
    assert conversion.samples["holdout"] == Cuped(Proportion(20, 4), Mean(20, 0.0, 0.0), 0.0)
    assert conversion.samples["short"] == Cuped(Proportion(20, 10), Mean(20, 0.0, 0.0), 0.0)
    assert conversion.samples["long"] is None
    short = conversion.results["short"]
    assert short is not None
    expected = compare(Proportion(20, 4), Proportion(20, 10))
    assert short.lift == expected.lift
    assert short.lift == pytest.approx(1.5)  # 50 % against 20 %
    assert short.ci == expected.ci
    assert short.p_value == expected.p_value
    assert short.p_adjusted is not None
    assert short.p_adjusted >= short.p_value
    assert conversion.results["long"] is None  # resting on 3 people
    revenue = report.metrics["revenue"].samples
    assert revenue["short"] == Cuped(Mean(20, 100.0, 1000.0), Mean(20, 0.0, 0.0), 0.0)
    assert revenue["holdout"] == Cuped(Mean(20, 40.0, 400.0), Mean(20, 0.0, 0.0), 0.0)
    orders_30d = report.metrics["orders_30d"].samples["holdout"]
    assert isinstance(orders_30d, Cuped)
    assert orders_30d.post == Proportion(20, 5)
    ttg = report.metrics["time_to_goal"].samples
    assert ttg["short"] == Mean(10, 6000.0, 10 * 600.0**2)
    assert ttg["holdout"] is None  # 4 converted: under k

    # While the 30-day windows are open, 30-day metrics count no one (by default)
    early = experiment_results(
        OutcomeStore(s.db), s.definitions, server.workspace, "nudge", now_ms=now_ms - 190 * DAY_MS
    )
    assert early.metrics["orders_30d"].days == 0
    assert early.metrics["conversion"].days == 1
    so_far = experiment_results(
        OutcomeStore(s.db),
        s.definitions,
        server.workspace,
        "nudge",
        now_ms=now_ms - 190 * DAY_MS,
        open_windows="so_far",
    )
    held = so_far.metrics["orders_30d"].samples["holdout"]
    assert isinstance(held, Cuped)
    assert held.post == Proportion(20, 5)

    # And the flow report carries the experiment: people per arm (long hidden), the split
    # check, and each arm against the holdout
    with server.admin() as c:
        r = c.get("/v1/reports/flows/nudge", params={"since": "30d"})
    assert r.status_code == 200, r.text
    section = r.json()["flows"][0]["experiment"]
    assert section["experiment"] == "nudge"
    assert section["control"] == "holdout"
    assert section["exposures"] == {"short": 20, "long": None, "holdout": 20}
    assert section["srm_p"] == pytest.approx(srm_p_value([20, 3, 20], [0.25, 0.25, 0.5]))
    reported = section["metrics"]["conversion"]["arms"]["short"]
    assert reported["lift"] == pytest.approx(1.5)
    assert reported["n"] == 20
    assert section["metrics"]["conversion"]["arms"]["long"] is None
