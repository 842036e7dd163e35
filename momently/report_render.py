"""How a report (``momently.reports``) is printed: a terminal table per flow, or CSV rows.
A hidden cell prints as ``<k``; JSON keeps it ``null`` with its name under ``hidden``."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any


def rows(report: dict[str, Any]) -> Iterator[tuple[str, str, str, str]]:
    """(flow, variant, metric, value) for every number of the report, in print order."""
    hidden_as = f"<{report['min_count']}"
    for flow in report["flows"]:
        for group in flow["groups"]:
            for metric, value in _metrics(group, hidden_as):
                yield flow["flow"], group["variant"], metric, value


def _metrics(group: dict[str, Any], hidden_as: str) -> Iterator[tuple[str, str]]:
    def count(value: Any) -> str:
        return hidden_as if value is None else str(value)

    for name, value in group["funnel"].items():
        yield name, count(value)
    for reason, value in sorted(group["suppressed"]["enrollment"].items()):
        yield f"suppressed (enrollment): {reason}", count(value)
    for reason, value in sorted(group["suppressed"]["message"].items()):
        yield f"suppressed (message): {reason}", count(value)
    yield "not sent (waiting, failed, expired)", count(group["suppressed"]["not_sent"])
    conversion = group["conversion"]
    if conversion is None:
        yield "conversion", "-"
    else:
        ci = conversion["ci"]
        interval = f" [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else ""
        yield "conversion (95% CI)", f"{_pct(conversion['rate'])}{interval}"
    yield "ctr", "-" if group["ctr"] is None else _pct(group["ctr"])
    ttr = group["time_to_resolution_ms"]
    yield "time to resolution p50 / p90", "-" if ttr is None else f"{_ms(ttr['p50'])} / {_ms(ttr['p90'])}"
    ack = group["acknowledgement"]
    if ack is None:
        yield "ack latency p50 / p99", "-"
    else:
        yield "ack latency p50 / p99", f"{_ms(ack['p50'])} / {_ms(ack['p99'])}"
        yield "ack under 300 ms", _pct(ack["under_300ms"])
    pers = group["personalisation"]
    yield (
        "consent-aligned personalisation",
        "-" if pers is None or pers["rate"] is None else _pct(pers["rate"]),
    )
    revenue = group["revenue"]
    if revenue is not None:
        yield "orders after send (people)", count(revenue["orders"])
        yield "revenue after send", f"{revenue['total']:g}"
        if revenue["per_send"] is not None:
            yield "revenue per send", f"{revenue['per_send']:g}"


def table(report: dict[str, Any]) -> str:
    """One block per flow: a row per metric, a column per variant (``all`` first)."""
    out: list[str] = []
    noise = report.get("noise")
    head = (
        f"{report['workspace']}: {report['since']} to {report['until']}; "
        f"cells under {report['min_count']} people hidden"
    )
    if noise:
        head += f"; Laplace noise, epsilon {noise['epsilon']:g}"
    out.append(head)
    if not report["flows"]:
        out.append("no enrollments in this window")
    for flow in report["flows"]:
        columns = [g["variant"] for g in flow["groups"]]
        cells: dict[str, dict[str, str]] = {}
        order: list[str] = []
        for f_id, variant, metric, value in rows({**report, "flows": [flow]}):
            del f_id
            if metric not in cells:
                cells[metric] = {}
                order.append(metric)
            cells[metric][variant] = value
        width = max(len(m) for m in order) if order else 10
        widths = [max(len(c), *(len(cells[m].get(c, "")) for m in order)) for c in columns]
        goal = flow.get("goal")
        title = f"\n{flow['flow']}" + (
            f"  (goal: {goal['event']} within {goal.get('within', '1d')})" if goal else ""
        )
        out.append(title)
        out.append(" " * width + "  " + "  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True)))
        for metric in order:
            values = [cells[metric].get(c, "").rjust(w) for c, w in zip(columns, widths, strict=True)]
            out.append(metric.ljust(width) + "  " + "  ".join(values))
        out.extend(_experiment(flow.get("experiment")))
    return "\n".join(out)


def _experiment(section: dict[str, Any] | None) -> Iterator[str]:
    """The flow's experiment: people per arm, the split check, each arm against control."""
    if not section:
        return
    people = ", ".join(f"{a} {'<k' if n is None else n}" for a, n in section["exposures"].items())
    srm = section["srm_p"]
    yield f"experiment {section['experiment']} (control: {section['control']}): {people or 'no exposures'}"
    if srm is not None:
        warning = "  (MISMATCH: check assignment)" if srm < 0.001 else ""
        yield f"  sample ratio check p = {srm:.3f}{warning}"
    for metric, m in section["metrics"].items():
        for arm_id, r in m["arms"].items():
            if r is None or r["lift"] is None:
                continue
            lo, hi = r["ci"] if r["ci"] is not None else (float("nan"), float("nan"))
            win = "" if r["chance_to_win"] is None else f", chance to beat control {_pct(r['chance_to_win'])}"
            value = _pct if m.get("kind") == "proportion" else (lambda x: f"{x:.4g}")
            yield (
                f"  {metric:16} {arm_id}: {value(r['mean'])} vs {value(r['control_mean'])}, "
                f"lift {r['lift']:+.1%} [{lo:+.1%}, {hi:+.1%}], p {r['p']:.3f}{win}"
            )


def as_csv(report: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["flow", "variant", "metric", "value"])
    writer.writerows(rows(report))
    return buffer.getvalue()


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _ms(value: float) -> str:
    if value < 1000:
        return f"{value:.0f} ms"
    if value < 120_000:
        return f"{value / 1000:.1f} s"
    if value < 7_200_000:
        return f"{value / 60_000:.1f} min"
    return f"{value / 3_600_000:.1f} h"
