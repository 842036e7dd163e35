"""The in-app widget in a real browser: Debian's headless Chromium driven by Playwright loads
a test page on another origin with the one script tag; the card shows, is marked seen, its
button is clicked, and the flow's goal event lands in the log. A card decided while the page
is open arrives over the server-sent-events stream."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from momently.domain.credentials import KeyKind
from momently.domain.trust import user_token
from tests.conftest import ON_CI
from tests.flows.conftest import FlowEnv, make_env
from tests.flows.test_dispatch_e2e import dispatch, log_of
from tests.local_http import LocalServer, QuietHandler

CHROMIUM = os.environ.get("MOMENTLY_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]

if not shutil.which(CHROMIUM):
    if ON_CI:
        raise RuntimeError(f"the browser test needs Chromium at {CHROMIUM} (apt-get install chromium)")
    pytest.skip(f"no Chromium at {CHROMIUM}", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")


class Site:
    """The customer's web page, on its own origin: ``/`` embeds the widget, ``/thanks`` is
    where the card's action leads."""

    def __init__(self) -> None:
        self.page = ""
        site = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                body = (site.page if self.path == "/" else "<h1>Thanks</h1>").encode()
                self.send_response(200)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.http = LocalServer(Handler)
        self.url = f"http://127.0.0.1:{self.http.port}"

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    yield s
    s.close()


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> Iterator[FlowEnv]:
    with make_env(database_url, console_path=str(tmp_path / "console.jsonl")) as e:
        yield e


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        b.close()


TIP = """
id: export-tip
trigger: {event: Feature Used, where: {event: properties.feature, equals: export}}
reentry: every_time
channels: [in_app]
goal: {event: Shortcut Tried, within: 1d}
message:
  expires_in: 2h
  variants:
    - id: main
      title: "Export faster"
      body: "Press E to export in one step, {{ traits.name | default: 'friend' }}."
      action: {label: Show me, url: "%s/thanks", event: Shortcut Tried}
"""


def snippet(env: FlowEnv, user_id: str = "ada", *, defer: bool = True) -> str:
    """The host page's script tag, as docs/security.md shows it: the public write key and the
    user token the customer's backend made for the logged-in person."""
    s = env.services
    public = s.workspaces.issue_key(env.workspace, KeyKind.WRITE, label="web", now=s.clock.now()).secret
    token = user_token(s.workspaces.identity_secret(env.workspace, now=s.clock.now()), user_id)
    return (
        f'<script src="{env.url}/widget.js" data-write-key="{public}" data-user-id="{user_id}" '
        f'data-user-token="{token}"{" async" if defer else ""}></script>'
    )


def used(env: FlowEnv) -> None:
    env.send(
        {"type": "identify", "userId": "ada", "traits": {"name": "Ada"}},
        {"type": "track", "userId": "ada", "event": "Feature Used", "properties": {"feature": "export"}},
    )
    dispatch(env)


def test_widget_shows_the_card_and_its_action_records_the_goal(
    env: FlowEnv, site: Site, browser: Any
) -> None:
    env.flow("export-tip", TIP % site.url)
    used(env)
    site.page = "<!doctype html><title>App</title><h1>Your app</h1>" + snippet(env)
    page = browser.new_page()
    page.goto(site.url + "/")
    card = page.locator("[data-momently] .card")
    card.wait_for(state="visible", timeout=10_000)
    assert "Export faster" in card.inner_text()
    assert "Press E to export in one step, Ada." in card.inner_text()
    assert page.locator("[data-momently] .card").evaluate("e => getComputedStyle(e).animationName") == "in"

    page.locator("[data-momently] button.act").click()
    page.wait_for_url(site.url + "/thanks", timeout=10_000)
    env.settle()
    assert [e["card_id"] for e in log_of(env, "Message Seen")] == [1]
    assert [e["flow_id"] for e in log_of(env, "Message Clicked")] == ["export-tip"]
    [goal] = log_of(env, "Shortcut Tried")
    assert goal["via"] == "in_app"  # recorded by the act call for the verified person
    # acted on: not shown again
    with httpx.Client(base_url=env.url, auth=(env.write_key, "")) as c:
        assert c.get("/v1/inbox", params={"userId": "ada"}).json() == {"cards": []}


def test_a_new_card_arrives_live_and_can_be_dismissed(env: FlowEnv, site: Site, browser: Any) -> None:
    env.flow("export-tip", TIP % site.url)
    env.send({"type": "identify", "userId": "ada", "traits": {"name": "Ada"}})
    site.page = "<!doctype html><title>App</title>" + snippet(env, defer=False)
    page = browser.new_page()
    page.goto(site.url + "/")
    page.wait_for_timeout(500)
    assert page.locator("[data-momently] .card").count() == 0
    used(env)  # decided and handed to the in-app channel while the page is open
    card = page.locator("[data-momently] .card")
    card.wait_for(state="visible", timeout=10_000)
    page.locator("[data-momently] button.close").click()
    card.wait_for(state="detached", timeout=5_000)
    env.settle()
    recorded(env, "Message Dismissed", 1)
    assert log_of(env, "Shortcut Tried") == []


def test_inbox_api_checks_its_inputs_and_cards_expire(env: FlowEnv, site: Site) -> None:
    env.flow("export-tip", TIP % site.url)
    used(env)
    with httpx.Client(base_url=env.url) as c:
        assert c.get("/v1/inbox", params={"userId": "ada"}).status_code == 401
        ok = c.get("/v1/inbox", params={"userId": "ada", "writeKey": env.write_key}).json()
        assert [card["title"] for card in ok["cards"]] == ["Export faster"]
        assert c.get("/v1/inbox", params={"writeKey": env.write_key}).json()["code"] == "no_user_anon_id"
        other = c.post("/v1/inbox/1/seen", json={"writeKey": env.write_key, "userId": "mallory"})
        assert other.json() == {"id": 1, "marked": False, "redirect": None}  # not their card
        env.advance(hours=3)
        assert c.get("/v1/inbox", params={"userId": "ada", "writeKey": env.write_key}).json() == {"cards": []}


def recorded(env: FlowEnv, name: str, count: int) -> None:
    """Wait until the log holds ``count`` events ``name``: the widget posts a mark without
    waiting for it (a beacon), so the card can leave the screen before the mark arrives."""
    deadline = time.monotonic() + 10
    while True:
        env.settle()
        found = len(log_of(env, name))
        if found >= count or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert found == count


def widget_page(env: FlowEnv, site: Site, browser: Any) -> Any:
    site.page = "<!doctype html><title>App</title><h1>Your app</h1>" + snippet(env)
    page = browser.new_page()
    # the browser's clock agrees with the server's virtual one (the test moves both)
    page.clock.install(time=env.clock.now())
    page.goto(site.url + "/")
    return page


def test_the_card_is_a_dialog_named_by_its_title_and_escape_dismisses_it(
    env: FlowEnv, site: Site, browser: Any
) -> None:
    env.flow("export-tip", TIP % site.url)
    used(env)
    page = widget_page(env, site, browser)
    # the accessibility tree has a dialog named by the card's title, described by its body
    dialog = page.get_by_role("dialog", name="Export faster")
    dialog.wait_for(state="visible", timeout=10_000)
    sync_api.expect(dialog).to_have_accessible_description("Press E to export in one step, Ada.")
    # Escape, with the page focused and nothing in it, dismisses the card
    page.keyboard.press("Escape")
    page.locator("[data-momently] .card").wait_for(state="detached", timeout=5_000)
    recorded(env, "Message Dismissed", 1)

    # and so does Escape from inside the card (here: its action button focused)
    used(env)
    dialog.wait_for(state="visible", timeout=10_000)
    page.locator("[data-momently] button.act").focus()
    page.keyboard.press("Escape")
    page.locator("[data-momently] .card").wait_for(state="detached", timeout=5_000)
    recorded(env, "Message Dismissed", 2)
    assert log_of(env, "Message Clicked") == []


def test_a_card_that_expires_while_shown_leaves_the_screen(env: FlowEnv, site: Site, browser: Any) -> None:
    env.flow("export-tip", TIP % site.url)  # expires_in: 2h
    used(env)
    page = widget_page(env, site, browser)
    card = page.locator("[data-momently] .card")
    card.wait_for(state="visible", timeout=10_000)
    # an hour on, it is still there
    env.advance(hours=1)
    page.clock.run_for("01:00:00")
    page.wait_for_timeout(300)
    assert card.count() == 1
    # past its expiry on both clocks, it leaves the screen, without being dismissed
    env.advance(hours=2)
    page.clock.run_for("02:00:00")
    card.wait_for(state="detached", timeout=10_000)
    env.settle()
    assert log_of(env, "Message Dismissed") == []
