"""End to end in a real browser: the demo page, served by ``wsharbor run``, in headless Chromium.

Uses Debian's Chromium (``/usr/bin/chromium``, installed by
``scripts/install-system-deps.sh``) driven by Playwright; Playwright's own browser
downloads are never used. Without Chromium the test is skipped, or fails when
``CI=true``.

Set ``DEMO_SCREENSHOT=/path/shot.png`` to keep a screenshot of the chat page.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from .test_demo import TIMEOUT, DemoServer

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


try:
    from playwright.async_api import Browser, Page, async_playwright, expect
except ImportError:  # pragma: no cover - playwright is a test dependency
    PLAYWRIGHT_MISSING = True
else:
    PLAYWRIGHT_MISSING = False


def require_chromium() -> None:
    """Skip when Chromium or Playwright is missing; fail instead when CI=true."""
    what = None
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        what = (
            f"Chromium not found at {CHROMIUM}: run scripts/install-system-deps.sh "
            "(apt-get install chromium) or set CHROMIUM"
        )
    elif PLAYWRIGHT_MISSING:
        what = "the playwright package is not installed: pip install -e '.[test]'"
    if what is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} (required when CI=true)", pytrace=False)
    pytest.skip(what)


pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(sys.platform != "linux", reason="Debian's Chromium"),
]


@pytest.fixture
def demo() -> Iterator[DemoServer]:
    server = DemoServer()
    try:
        yield server.start()
    finally:
        assert server.stop() == 0, server.output


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    require_chromium()
    expect.set_options(timeout=TIMEOUT * 1000)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=TIMEOUT * 1000
        )
        try:
            yield browser
        finally:
            await browser.close()


async def open_chat(browser: Browser, demo: DemoServer, name: str, errors: list[str]) -> Page:
    """A new page on the demo, joined to the chat as ``name``."""
    page = await browser.new_page(viewport={"width": 800, "height": 640})
    page.set_default_timeout(TIMEOUT * 1000)

    def on_console(message: Any) -> None:
        if message.type == "error":  # a CSP violation would show up here
            errors.append(f"{name}: console: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(f"{name}: page error: {exc}"))
    response = await page.goto(f"http://127.0.0.1:{demo.port}/")
    assert response is not None and response.status == 200
    await expect(page).to_have_title("wsharbor chat")
    await page.fill("#name", name)
    await page.click("#join")
    await expect(page.locator("#status")).to_have_text(f"connected as {name}")
    await expect(page.locator("#text")).to_be_visible()
    await expect(page.locator("#messages li.notice").last).to_contain_text(f"{name} joined")
    return page


async def say(page: Page, text: str) -> None:
    await page.fill("#text", text)
    await page.press("#text", "Enter")
    await expect(page.locator("#text")).to_have_value("")


def message_item(page: Page, name: str, text: str) -> Any:
    return (
        page.locator("#messages li.message")
        .filter(has=page.locator(".name", has_text=name))
        .filter(has=page.locator(".text", has_text=text))
    )


async def test_two_pages_chat(browser: Browser, demo: DemoServer, tmp_path: Path) -> None:
    errors: list[str] = []
    alice = await open_chat(browser, demo, "alice", errors)
    bob = await open_chat(browser, demo, "bob", errors)
    await expect(alice.locator("#messages li.notice").last).to_have_text("bob joined (2 here)")

    # Typed in one page, the message appears in both; markup stays text.
    text = "hello <b>bob</b> & <img src=x onerror=alert(1)>"
    await say(alice, text)
    for page in (alice, bob):
        item = message_item(page, "alice", text)
        await expect(item).to_have_count(1)
        await expect(item.locator(".text")).to_have_text(text)
        await expect(page.locator("#messages b, #messages img")).to_have_count(0)

    await say(bob, "hi alice")
    for page in (alice, bob):
        await expect(message_item(page, "bob", "hi alice")).to_have_count(1)

    screenshot = Path(os.environ.get("DEMO_SCREENSHOT") or tmp_path / "chat.png")
    await alice.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 0

    # Leaving closes the connection cleanly and the room is told.
    await bob.click("#leave")
    await expect(bob.locator("#status")).to_have_text("disconnected (1000)")
    await expect(bob.locator("#name")).to_be_visible()
    await expect(alice.locator("#messages li.notice").last).to_have_text("bob left (1 here)")

    assert errors == []
    demo.wait_for(r'"GET /chat" 101 1000 ')  # the access log saw bob's clean close


async def test_page_resumes_after_a_dropped_connection(browser: Browser, demo: DemoServer) -> None:
    """The page's socket drops; messages are sent meanwhile; it reconnects by itself
    with its last position and shows every one of them, once, in order."""
    errors: list[str] = []
    alice = await open_chat(browser, demo, "alice", errors)
    bob = await open_chat(browser, demo, "bob", errors)
    await say(alice, "before")
    await expect(message_item(alice, "alice", "before")).to_have_count(1)
    await expect(alice.locator("#members")).to_have_text("here: alice, bob")

    # Offline: the socket that drops now can't reconnect until we're back.
    await alice.context.set_offline(True)
    await alice.evaluate("socket.close(4000, 'test: connection dropped')")
    await expect(alice.locator("#status")).to_contain_text("reconnecting")
    await expect(bob.locator("#messages li.notice").last).to_have_text("alice left (1 here)")
    missed = [f"missed {n}" for n in range(3)]
    for text in missed:
        await say(bob, text)
        await expect(message_item(bob, "bob", text)).to_have_count(1)
    assert await alice.locator("#messages li.message").count() == 1  # only "before"

    await alice.context.set_offline(False)
    await expect(alice.locator("#status")).to_have_text("connected as alice")
    for text in missed:
        await expect(message_item(alice, "bob", text)).to_have_count(1)
    texts = await alice.locator("#messages li.message .text").all_text_contents()
    assert texts == ["before", *missed]
    await expect(alice.locator("#messages li.notice").last).to_have_text("alice joined (2 here)")
    await expect(alice.locator("#members")).to_have_text("here: alice, bob")
    assert await alice.locator("text=some messages may be missing").count() == 0

    # Live again, both ways.
    await say(alice, "back")
    await expect(message_item(bob, "alice", "back")).to_have_count(1)
    await expect(message_item(alice, "alice", "back")).to_have_count(1)
    # The attempts made while offline (if one came before the network was back:
    # a matter of timers) failed in alice's page, and nothing else failed.
    offline = [e for e in errors if "ERR_INTERNET_DISCONNECTED" in e]
    assert all(e.startswith("alice: console:") for e in offline)
    assert [e for e in errors if e not in offline] == []
