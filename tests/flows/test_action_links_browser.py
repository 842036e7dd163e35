"""A one-tap link opened in a real browser (headless Chromium driven by Playwright): the page
a GET shows submits itself, so the person's tap records the action and lands on the flow's
URL, while a scanner's plain GET records nothing (tests/flows/test_dispatch_e2e.py)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ON_CI
from tests.flows.conftest import FlowEnv
from tests.flows.test_dispatch_e2e import GOAL, dispatch, log_of
from tests.webhook_receiver import Receiver, webhook_env

CHROMIUM = os.environ.get("MOMENTLY_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

if not shutil.which(CHROMIUM):
    if ON_CI:
        raise RuntimeError(f"the browser test needs Chromium at {CHROMIUM} (apt-get install chromium)")
    pytest.skip(f"no Chromium at {CHROMIUM}", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def env(database_url: str, receiver: Receiver, tmp_path: Path) -> Iterator[FlowEnv]:
    with webhook_env(database_url, receiver, console_path=str(tmp_path / "console.jsonl")) as e:
        yield e


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        b.close()


def test_a_tap_in_a_browser_records_the_action_and_redirects(
    env: FlowEnv, receiver: Receiver, browser: Any
) -> None:
    env.flow("eta", GOAL)
    env.send({"type": "track", "userId": "ada", "event": "Parcel At Hub", "properties": {"slot": "14:00"}})
    dispatch(env)
    link = receiver.received[0]["message"]["action"]["url"]
    page = browser.new_page()
    page.route("https://shop.example/**", lambda route: route.fulfill(body="<h1>Kept</h1>"))
    page.goto(link)
    page.wait_for_url("https://shop.example/kept", timeout=10_000)
    env.settle()
    [confirmed] = log_of(env, "Delivery Confirmed")
    assert confirmed["via"] == "one_tap"
