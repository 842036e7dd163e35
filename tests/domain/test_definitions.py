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
    assert any("f.yaml:3: trigger.inactivity.for: '2 weeks': write 2w" in p for p in out), out
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


def bomb(levels: int, fan_out: int = 10) -> str:
    """An alias bomb: each level an anchor of ``fan_out`` aliases to the level below, so the
    last one expands to ``fan_out ** levels`` strings."""
    lines = ["id: a", "trigger: {event: App Opened}", "x0: &x0 lol"]
    for i in range(1, levels + 1):
        lines.append(f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * fan_out)}]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_before_it_is_expanded() -> None:
    # 10**30 strings once expanded: this test can only finish if nothing expands it
    docs, bad = load(bomb(30), "f.yaml")
    assert docs == []
    assert [(p.line, p.message, p.code) for p in bad] == [
        (6, "YAML aliases expand to more than 10000 nodes", "definition_too_complex")
    ]


def test_an_alias_loop_is_refused() -> None:
    assert problems("id: a\ntrigger: &t\n  event: App Opened\n  more: [*t]\n") == [
        "f.yaml:2: a YAML alias refers to its own anchor (a loop)"
    ]


def test_a_few_aliases_are_fine() -> None:
    text = "id: a\ntrigger: {event: App Opened}\ngoal: &g {event: App Opened, within: 1d}\n---\n"
    text += "id: b\ntrigger: {event: App Opened}\naudience: &w {trait: plan, equals: pro}\n"
    text += "goal: {event: Order Completed, within: 1d, where: *w}\n"
    assert problems(text) == []
    assert load(bomb(3, fan_out=20), "f.yaml")[1] == []  # 8,420 extra nodes: under the bound


def test_deep_nesting_and_huge_files_are_refused() -> None:
    assert problems("id: a\nx: " + "[" * 100_000 + "\n") == [
        "f.yaml:2: the YAML is nested more than 64 levels deep"
    ]
    assert problems("id: a\n" + "#" * 300_000 + "\n") == [
        "f.yaml:1: a definition file may be at most 262144 characters"
    ]
