from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from momently.domain.definitions import load, validate
from momently.domain.lint import GSM7_BASIC, GSM7_EXTENDED, LinkSpec, lint_message, sms_segments

SEGMENTS = [
    # GSM-7: 160 septets in one SMS, 153 a part; € is escape + septet and is never split
    ("a" * 160, 1, "GSM-7"),
    ("a" * 161, 2, "GSM-7"),
    ("a" * 158 + "€", 1, "GSM-7"),
    ("a" * 159 + "€", 2, "GSM-7"),
    ("€" * 80, 1, "GSM-7"),
    ("€" * 81, 2, "GSM-7"),
    ("a" * 306, 2, "GSM-7"),
    ("a" * 307, 3, "GSM-7"),
    ("a" * 152 + "€" + "a" * 151, 2, "GSM-7"),
    ("a" * 152 + "€" + "a" * 152, 3, "GSM-7"),  # 306 septets, but the € cannot straddle two parts
    ("a" * 153 * 3, 3, "GSM-7"),
    ("a" * 152 + "€" + "a" * 153 * 2, 4, "GSM-7"),
    # UCS-2: 70 UTF-16 units in one SMS, 67 a part; an emoji is a surrogate pair, never split
    ("ж" * 70, 1, "UCS-2"),
    ("ж" * 71, 2, "UCS-2"),
    ("ж" * 68 + "📦", 1, "UCS-2"),
    ("ж" * 69 + "📦", 2, "UCS-2"),
    ("📦" * 35, 1, "UCS-2"),
    ("📦" * 36, 2, "UCS-2"),
    ("ж" * 134, 2, "UCS-2"),
    ("ж" * 135, 3, "UCS-2"),
    ("ж" * 65 + "📦" + "ж" * 66, 2, "UCS-2"),
    ("ж" * 66 + "📦" + "ж" * 66, 3, "UCS-2"),  # 134 units, but the pair cannot straddle two parts
    ("a" * 69 + "📦", 2, "UCS-2"),  # one emoji makes the whole text UCS-2
]


@pytest.mark.parametrize(("text", "segments", "encoding"), SEGMENTS)
def test_sms_segment_limits(text: str, segments: int, encoding: str) -> None:
    assert sms_segments(text) == (segments, encoding)


def test_sms_segments_gsm7_and_ucs2() -> None:
    assert sms_segments("a" * 160) == (1, "GSM-7")
    assert sms_segments("a" * 161) == (2, "GSM-7")
    assert sms_segments("a" * 306) == (2, "GSM-7")  # 153 per part once split
    assert sms_segments("a" * 307) == (3, "GSM-7")
    assert sms_segments("€" * 80) == (1, "GSM-7")  # extension characters cost two septets
    assert sms_segments("€" * 81) == (2, "GSM-7")
    assert sms_segments("Parcel at the hub 📦") == (1, "UCS-2")
    assert sms_segments("a" * 70 + "📦") == (2, "UCS-2")  # the emoji is two UTF-16 units


@given(st.text(alphabet=sorted(GSM7_BASIC | GSM7_EXTENDED), max_size=700))
def test_gsm7_segments_hold_the_text(text: str) -> None:
    segments, encoding = sms_segments(text)
    assert encoding == "GSM-7"
    septets = sum(2 if c in GSM7_EXTENDED else 1 for c in text)
    assert septets <= (160 if segments == 1 else 153 * segments)
    assert segments == 1 or septets > 160


def test_lint_findings() -> None:
    long_sms = {"body": "Your order is ready " * 30, "action": {"label": "Go", "url": "https://x.example"}}
    assert [f.message[:31] for f in lint_message(long_sms, ["sms"])] == ["the SMS body with its call to a"]
    assert (
        lint_message({"body": "Hi {{ traits.name }}" + "x" * 140}, ["push"]) == []
    )  # the tag does not count
    push = lint_message({"title": "t" * 60, "body": "b" * 200}, ["push"])
    assert {f.path[-1] for f in push} == {"title", "body"}
    two = lint_message({"body": "hi", "actions": [{"label": "a"}, {"label": "b"}]}, ["email"])
    assert two[0].message.startswith("a micro-moment asks for one thing")
    bad_link = lint_message({"body": "hi", "action": {"label": "Go", "url": "shop.example/cart"}}, ["email"])
    assert bad_link[0].path == ("message", "action", "url")
    templated = {"body": "hi", "action": {"label": "Go", "url": "{{ traits.link }}"}}
    [open_redirect] = lint_message(templated, ["email"])
    assert open_redirect.path == ("message", "action", "url")
    assert open_redirect.message.startswith("the action link's host comes from data: list the hosts")
    assert lint_message({**templated, "link_hosts": ["links.example"]}, ["email"]) == []
    [bad_hosts] = lint_message({**templated, "link_hosts": ["https://links.example/"]}, ["email"])
    assert bad_hosts.path == ("message", "link_hosts")
    assert lint_message({"push": {"body": "only for push"}}, ["push", "console"])[0].message == (
        "no body for the console channel"
    )


def test_validate_reports_lint_with_lines() -> None:
    text = (
        "id: eta\ntrigger: {event: Parcel At Hub}\nchannels: [sms]\nmessage:\n"
        "  body: '" + "Your parcel is at the hub. " * 20 + "'\n"
        "  action: {label: Keep, url: 'not a link'}\n"
    )
    docs, _ = load(text, "f.yaml")
    found = [str(p) for p in validate(docs)]
    assert found[0].startswith("f.yaml:5: the SMS body with its call to action and link (")
    assert found[1] == "f.yaml:6: the action link 'not a link' is not an http(s) URL"


BROKEN_LIQUID = [
    ("{% if traits.vip %}VIP", "not valid Liquid: expected tag endif"),
    ("Hi {{ traits.name | upcasee }}", "not valid Liquid: unknown filter 'upcasee' (did you mean 'upcase'?)"),
    ("{% frobnicate %}", "not valid Liquid: unexpected tag 'frobnicate'"),
    ("Hi {{ traits.name }", "not valid Liquid: expected '}}'"),
]


@pytest.mark.parametrize(("body", "error"), BROKEN_LIQUID)
def test_broken_liquid_is_refused_with_its_field(body: str, error: str) -> None:
    [finding] = lint_message({"body": body}, ["console"])
    assert finding.path == ("message", "body")
    assert error in finding.message


def test_every_template_of_every_variant_and_channel_block_is_parsed() -> None:
    message = {
        "variants": [
            {"id": "a", "body": "fine", "email": {"subject": "{% if x %}open", "body": "ok"}},
            {
                "id": "b",
                "body": "ok",
                "action": {
                    "label": "{{ x | nope }}",
                    "url": "https://a.example/{{ x }",
                },
            },
        ]
    }
    paths = sorted(f.path for f in lint_message(message, ["email"]))
    assert paths == [
        ("message", "variants", 0, "email", "subject"),
        ("message", "variants", 1, "action", "label"),
        ("message", "variants", 1, "action", "url"),
    ]


def test_validate_points_at_the_line_of_the_broken_template() -> None:
    text = "id: tip\ntrigger: {event: Feature Used}\nmessage:\n  title: ok\n"
    text += "  body: '{% if traits.vip %}VIP'\n"
    docs, _ = load(text, "f.yaml")
    [problem] = validate(docs)
    assert str(problem).startswith("f.yaml:5: message.body: not valid Liquid: expected tag endif")


def test_the_sms_lint_counts_the_one_tap_link() -> None:
    body = "Your parcel arrives tomorrow between 9 and 11. " * 9  # 423 characters: 3 segments alone
    assert sms_segments(body) == (3, "GSM-7")
    assert lint_message({"body": body}, ["sms"]) == []
    action = {"label": "Reschedule", "url": "https://shop.example/reschedule"}
    [finding] = lint_message({"body": body, "action": action}, ["sms"])
    assert finding.message.startswith("the SMS body with its call to action and link (")
    assert " is 5 GSM-7 segments " in finding.message
    assert lint_message({"body": body, "action": action}, ["email"]) == []  # only SMS appends it
    short = lint_message({"body": "a" * 150, "action": action}, ["sms"], LinkSpec("https://m.example/a/acme"))
    assert short == []
