"""The flows and segments admin API: errors, versions, statuses, on both databases."""

from __future__ import annotations

from tests.flows.conftest import FlowEnv

FLOW = "id: tip\ntrigger: {event: Feature Used}\nreentry: every_time\n"


def test_put_validates_with_lines_and_suggestions(env: FlowEnv) -> None:
    r = env.put("flow", "tip", "id: tip\ntrigger:\n  event: Feature Used\nreentri: once\n")
    assert r.status_code == 400
    body = r.json()
    assert body["code"] == "invalid_definition"
    assert body["problems"] == [
        {"line": 4, "message": "unknown key 'reentri' in document (did you mean 'reentry'?)"}
    ]
    assert env.put("flow", "other", FLOW).json()["code"] == "invalid_definition"  # id mismatch
    assert env.put("segment", "tip", FLOW).status_code == 400  # a flow sent as a segment
    assert env.put("flow", "tip", "id: tip\ntrigger: [").json()["message"].startswith("1 problem")
    with env.admin() as c:
        assert c.get("/v1/flows/tip").status_code == 404
        assert c.get("/v1/flows/tip").json()["code"] == "flow_not_found"
        assert c.post("/v1/flows/tip/pause").status_code == 404
        assert c.get("/v1/flows", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_versions_status_and_enrollments(env: FlowEnv) -> None:
    assert env.put("flow", "tip", FLOW).json() == {"id": "tip", "kind": "flow", "version": 1, "changed": True}
    assert env.put("flow", "tip", FLOW).json()["changed"] is False
    json_body = '{"id": "tip", "trigger": {"event": "Feature Used"}, "reentry": "once"}'
    assert env.put("flow", "tip", json_body).json()["version"] == 2
    env.send({"type": "track", "userId": "ada", "event": "Feature Used"})
    with env.admin() as c:
        listed = c.get("/v1/flows").json()["flows"]
        assert [(f["id"], f["version"], f["status"], f["trigger"]) for f in listed] == [
            ("tip", 2, "active", "event")
        ]
        versions = c.get("/v1/flows/tip/versions").json()["versions"]
        assert [v["definition"].get("reentry") for v in versions] == ["every_time", "once"]
        assert c.get("/v1/flows/tip/versions/1").json()["definition"]["reentry"] == "every_time"
        rows = c.get("/v1/flows/tip/enrollments").json()["enrollments"]
        assert [(e["flowVersion"], e["outcome"], e["trigger"]) for e in rows] == [(2, "send", "event")]
        assert c.delete("/v1/flows/tip").json()["status"] == "archived"
    env.send({"type": "track", "userId": "ada", "event": "Feature Used"})
    assert len(env.enrollments("tip")) == 1  # archived: no longer enrolls
    assert env.put("flow", "tip", json_body).json()["version"] == 3  # applying again revives it
    with env.admin() as c:
        assert c.get("/v1/flows/tip").json()["status"] == "active"


def test_segments_list_with_sizes(env: FlowEnv) -> None:
    env.segment("pro", "kind: segment\nid: pro\nrule: {trait: plan, equals: pro}\n")
    env.send(
        {"type": "identify", "userId": "ada", "traits": {"plan": "pro"}},
        {"type": "identify", "userId": "bob", "traits": {"plan": "free"}},
    )
    with env.admin() as c:
        assert [(s["id"], s["members"]) for s in c.get("/v1/segments").json()["segments"]] == [("pro", 1)]
        assert c.get("/v1/segments/pro").json()["definition"]["kind"] == "segment"
        page = c.get("/v1/segments/pro/members", params={"limit": 1}).json()
        assert [m["userId"] for m in page["members"]] == ["ada"]
        assert page["next"] is not None
    env.send({"type": "identify", "userId": "ada", "traits": {"plan": "free"}})
    with env.admin() as c:
        assert c.get("/v1/segments").json()["segments"][0]["members"] == 0


def test_put_refuses_broken_liquid_with_the_field_and_line(env: FlowEnv) -> None:
    body = FLOW + 'message:\n  title: Hi\n  body: "{% if traits.vip %}VIP {{ traits.name | upcasee }}"\n'
    r = env.put("flow", "tip", body)
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_definition"
    [problem] = r.json()["problems"]
    assert problem["line"] == 6
    assert problem["message"].startswith("message.body: not valid Liquid: expected tag endif")
    fixed = body.replace("upcasee }}", "upcase }}{% endif %}")
    assert env.put("flow", "tip", fixed).status_code == 200
    r = env.put("flow", "tip", fixed.replace("upcase", "upcasee"))
    assert r.json()["problems"][0]["message"] == (
        "message.body: not valid Liquid: unknown filter 'upcasee' (did you mean 'upcase'?)"
    )


def test_yaml_alias_loops_and_bombs_are_refused_with_a_code(env: FlowEnv) -> None:
    loop = FLOW + "audience: &a\n  all: [*a]\n"
    r = env.put("flow", "tip", loop)
    assert (r.status_code, r.json()["code"]) == (400, "definition_too_complex")
    assert r.json()["message"] == "a YAML alias refers to its own anchor (a loop)"
    levels = ["x0: &x0 lol"] + [f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * 9)}]" for i in range(1, 40)]
    r = env.put("flow", "tip", FLOW + "\n".join(levels) + "\n")  # 9**39 strings if expanded
    assert (r.status_code, r.json()["code"]) == (400, "definition_too_complex")
    r = env.put("flow", "tip", FLOW + "x: " + "[" * 10_000 + "\n")
    assert (r.status_code, r.json()["code"]) == (400, "definition_too_complex")
    assert env.send({"type": "track", "userId": "ada", "event": "Feature Used"})["success"] is True


ON_NEW_EVENT = """
id: slot-kept-thanks
trigger: {event: Slot Kept}
message: {body: "Thanks!"}
"""
CATALOG = """
kind: events
id: delivery
names: [Slot Kept]
"""


def test_a_flow_on_a_new_event_is_put_with_its_events_catalog(env: FlowEnv) -> None:
    # Given a workspace with traffic, which has never seen 'Slot Kept'
    env.send({"type": "track", "userId": "ada", "event": "App Opened"})
    alone = env.put("flow", "slot-kept-thanks", ON_NEW_EVENT)
    assert alone.status_code == 400
    assert "unknown event 'Slot Kept'" in alone.json()["problems"][0]["message"]
    # When the flow is sent together with the catalog declaring it
    r = env.put("flow", "slot-kept-thanks", CATALOG + "---" + ON_NEW_EVENT)
    # Then both are applied, and the catalog is kept for the flow's next versions
    assert r.status_code == 200, r.text
    assert r.json() == {
        "id": "slot-kept-thanks",
        "kind": "flow",
        "version": 1,
        "changed": True,
        "events": [{"id": "delivery", "version": 1, "changed": True}],
    }
    again = env.put("flow", "slot-kept-thanks", ON_NEW_EVENT.replace("Thanks!", "Thank you!"))
    assert (again.status_code, again.json()["version"]) == (200, 2)
    env.send({"type": "track", "userId": "ada", "event": "Slot Kept"})
    assert len(env.sends("slot-kept-thanks")) == 1
    # and a body is still one definition (plus catalogs)
    two = env.put(
        "flow", "slot-kept-thanks", ON_NEW_EVENT + "---" + ON_NEW_EVENT.replace("slot-kept", "other")
    )
    assert two.status_code == 400
    assert two.json()["message"] == "send exactly one flow document, optionally with 'kind: events' documents"
    bad_catalog = env.put(
        "flow", "slot-kept-thanks", "kind: events\nid: x\nnames: Slot Kept\n---" + ON_NEW_EVENT
    )
    assert bad_catalog.status_code == 400
    assert "names" in bad_catalog.json()["problems"][0]["message"]
