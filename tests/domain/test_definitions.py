from __future__ import annotations

from momently.domain.definitions import Known, load, validate
from momently.domain.flow import AbsenceTrigger, compile_flow

KNOWN = Known(
    events=frozenset({"Product Added", "Order Completed", "App Opened"}), segments=frozenset({"vip"})
)


def problems(text: str, known: Known = KNOWN) -> list[str]:
    docs, bad = load(text, "f.yaml")
    return [str(p) for p in bad + validate(docs, known)]


def test_a_valid_file_with_several_documents() -> None:
    text = """
id: cart
trigger:
  absence:
    {first: {event: Product Added}, then: {event: Order Completed}, within: 30m, key: properties.cart_id}
audience: {all: [{segment: vip}, {trait: plan, equals: pro}, {segment: loyal, is: false}]}
goal: {event: Order Completed, within: 1d}
reentry: {once_per: 7d}
---
kind: segment
id: loyal
rule: {count: Order Completed, in_last: 90d, gte: 3}
"""
    assert problems(text) == []
    docs, _ = load(text, "f.yaml")
    flow = compile_flow(docs[0].data, 1)
    assert isinstance(flow.trigger, AbsenceTrigger)
    assert flow.trigger.within_ms == 30 * 60_000
    assert flow.reentry.period_ms == 7 * 86_400_000


def test_misspelt_keys_point_at_their_line_with_a_suggestion() -> None:
    text = "id: a\ntrigger:\n  event: App Opened\nreentri: once\naudience:\n  trait: plan\n  equls: pro\n"
    assert problems(text) == [
        "f.yaml:4: unknown key 'reentri' in document (did you mean 'reentry'?)",
        "f.yaml:7: unknown key 'equls' in audience (did you mean 'equals'?)",
    ]


def test_bad_durations_enums_and_types() -> None:
    text = "id: a\ntier: D\ntrigger: {inactivity: {for: 2 weeks}}\npriority: high\n"
    out = problems(text)
    assert any("f.yaml:3: trigger.inactivity.for: '2 weeks' is not a duration" in p for p in out), out
    assert any("f.yaml:2: tier: 'D' is not one of A, B, C" in p for p in out), out
    assert any("f.yaml:4: priority: 'high' is not of type 'integer'" in p for p in out), out


def test_unknown_event_and_segment_references_suggest_the_nearest() -> None:
    text = (
        "id: a\ntrigger: {event: Product Aded}\n"
        "audience: {all: [{segment: vipp}, {count: Order Complete, gte: 1}]}\n"
        "---\nid: b\ntrigger: {segment: {id: loyl}}\n"
    )
    assert problems(text) == [
        "f.yaml:2: unknown event 'Product Aded' (did you mean 'Product Added'?)",
        "f.yaml:3: unknown segment 'vipp' (did you mean 'vip'?)",
        "f.yaml:3: unknown event 'Order Complete' (did you mean 'Order Completed'?)",
        "f.yaml:6: unknown segment 'loyl'",
    ]


def test_event_catalog_document_declares_names_before_traffic() -> None:
    text = (
        "kind: events\nid: catalog\nnames: [Parcel At Hub]\n---\nid: eta\ntrigger: {event: Parcel At Hub}\n"
    )
    assert problems(text) == []


def test_one_trigger_kind_duplicates_and_bad_yaml() -> None:
    assert problems("id: a\ntrigger: {event: App Opened, inactivity: {for: 1d}}\n") == [
        "f.yaml:2: a trigger has exactly one kind (event, absence, inactivity, segment, date, cohort); "
        "found ['event', 'inactivity']"
    ]
    dup = "id: a\ntrigger: {event: App Opened}\n---\nid: a\ntrigger: {event: App Opened}\n"
    assert problems(dup) == ["f.yaml:4: flow 'a' is defined twice (also f.yaml:1)"]
    assert problems("id: a\ntrigger: [\n")[0].startswith("f.yaml:3: not valid YAML")


def test_on_stays_a_key_not_a_boolean() -> None:
    assert problems("id: a\ntrigger: {segment: {id: vip, on: leave}}\n") == []
