"""The console in a real browser: headless Chromium (Debian's) driven by Selenium.

A real broker, a real agent process whose ``@sudo(on_deny=ask)`` call waits at the
broker; the admin logs in through the link ``agentsudo console`` prints, sees the
request with its arguments whole, clicks Approve, and the agent's call completes.
Also: a forged POST (without the CSRF token, and from another site) is refused and
changes nothing; a replayed login link is refused. Screenshots of the main pages go
to ``$AGENTSUDO_SCREENSHOTS`` (``.ci/run`` sets ``ci-output/console``), else the
test's temporary directory.
"""

from __future__ import annotations

import http.server
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from console_harness import WAIT, ConsoleBroker, finished, stop

pytest.importorskip("uvicorn")
selenium = pytest.importorskip("selenium", reason="selenium is in the test extra")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = os.environ.get("AGENTSUDO_SCREENSHOTS")  # read now: fixtures clear AGENTSUDO_*
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-dev-shm-usage",
)  # fmt: skip
HOSTILE = '<script>alert("x")</script>"><img src=x onerror=alert(1)>'

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason=f"no {CHROMIUM} and {CHROMEDRIVER}: apt-get install -y chromium chromium-driver",
)


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    profile = tempfile.mkdtemp(prefix="agentsudo-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}", "--window-size=1100,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[ConsoleBroker]:
    running = ConsoleBroker(tmp_path / "broker")
    yield running
    running.stop()


def until(check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Wait for ``check()`` to be truthy; its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"never: {what}")


def heading(driver: webdriver.Chrome) -> str:
    return str(driver.find_element(By.TAG_NAME, "h1").text)


def test_an_admin_approves_in_the_browser_and_the_waiting_call_completes(
    broker: ConsoleBroker, browser: webdriver.Chrome, shots: Path
) -> None:
    agent = broker.agent(broker.token(), customer="c-42", note=HOSTILE)
    try:
        shown = broker.waiting()
        link = broker.link()
        browser.get(link)
        home = browser.current_url
        assert re.fullmatch(re.escape(broker.tcp) + r"/console/s/[A-Za-z0-9_-]{32}/", home)
        assert heading(browser) == "Approvals"
        card = browser.find_element(By.ID, f"request-{shown['id']}")
        assert card.find_element(By.CLASS_NAME, "agent").text == "SupportBot"
        assert card.find_element(By.CLASS_NAME, "scope").text == "delete:customer"
        assert card.find_element(By.CLASS_NAME, "function").text.endswith("delete_customer")
        arguments = card.find_element(By.CLASS_NAME, "arguments").text
        assert '"customer_id": "c-42"' in arguments and '"hard": true' in arguments
        # the hostile argument is shown whole, as text: no script ran, no element was made
        assert "alert" in arguments and HOSTILE.replace('"', '\\"') in arguments
        assert not browser.find_elements(By.CSS_SELECTOR, "main img")
        browser.save_screenshot(str(shots / "approvals.png"))
        browser.set_window_size(412, 915)  # a phone
        browser.save_screenshot(str(shots / "approvals-phone.png"))
        browser.set_window_size(1100, 1000)
        card.find_element(By.CSS_SELECTOR, "button.approve").click()
        until(lambda: "done=approved" in browser.current_url, "the approval page")
        assert "Approved" in browser.find_element(By.CLASS_NAME, "notice").text
        done = finished(agent)
    finally:
        stop(agent)
    assert done == {"result": "deleted c-42"}  # the waiting agent's call ran
    assert not broker.admin.request("GET", "/v1/approvals")["approvals"]
    answered = [e for e in broker.audit() if e["outcome"] == "elevation_answered"]
    assert answered[-1]["approved"] is True
    assert answered[-1]["by"] == "credential:admin (console)"

    browser.get(home + "feed")
    rows = until(
        lambda: [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#feed tbody tr")
                 if "elevation_answered" in r.text],
        "the answer in the feed",
    )  # fmt: skip
    assert "SupportBot" in rows[0]
    browser.save_screenshot(str(shots / "feed.png"))
    browser.get(home + "agents")
    assert browser.find_element(By.ID, "agent-SupportBot")
    assert browser.find_elements(By.CSS_SELECTOR, "#agent-SupportBot table.tokens tbody tr")
    browser.save_screenshot(str(shots / "agents.png"))
    browser.get(home + "audit")
    until(lambda: "verified" in browser.find_element(By.ID, "chain-state").text, "verified")
    assert "NOT" not in browser.find_element(By.ID, "chain-state").text
    browser.save_screenshot(str(shots / "audit.png"))

    browser.get(link)  # the same link again: refused, and no data shown
    assert heading(browser) == "Login refused"
    assert "SupportBot" not in browser.page_source
    browser.save_screenshot(str(shots / "login-replayed.png"))


class _Attacker(http.server.BaseHTTPRequestHandler):
    """Another site: a page that posts a form to the console, with no CSRF token."""

    target = ""

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        page = (
            f'<form id="f" method="post" action="{self.target}"><input name="x" value="1">'
            "</form><script>document.getElementById('f').submit()</script>"
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_forged_posts_are_refused_and_change_nothing(
    broker: ConsoleBroker, browser: webdriver.Chrome, shots: Path
) -> None:
    agent = broker.agent(broker.token(), customer="c-7", note="customer asked to be forgotten")
    try:
        shown = broker.waiting()
        browser.get(broker.link())
        assert heading(browser) == "Approvals"
        browser.set_window_size(900, 820)  # the README's picture (docs/console.png)
        browser.save_screenshot(str(shots / "approvals-small.png"))
        target = f"{browser.current_url}approvals/{shown['id']}/approve"  # even knowing it
        # from the console's own page, with the session's cookie, but without the CSRF token
        browser.execute_script(
            "var f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];"
            "document.body.appendChild(f); f.submit();",
            target,
        )
        until(lambda: "/approve" in browser.current_url, "the forged POST's answer")
        assert heading(browser) == "Forbidden"
        assert "CSRF" in browser.page_source
        browser.save_screenshot(str(shots / "csrf-refused.png"))
        # from another site (another origin), as a real attack would
        _Attacker.target = target
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Attacker)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            browser.get(f"http://localhost:{server.server_address[1]}/")
            until(lambda: "/approve" in browser.current_url, "the cross-site POST's answer")
            assert heading(browser) in ("Not logged in", "Forbidden")  # no cookie goes along
        finally:
            server.shutdown()
            server.server_close()
        still = broker.admin.request("GET", "/v1/approvals")["approvals"]
        assert [item["id"] for item in still] == [shown["id"]]  # nothing changed
        assert agent.poll() is None  # still waiting
        refused = [e for e in broker.audit() if e["outcome"] == "broker_refused"]
        assert any("CSRF" in e.get("reason", "") for e in refused)
    finally:
        stop(agent)


class _AgentApp(http.server.BaseHTTPRequestHandler):
    """An agent's own little server on another port of 127.0.0.1: it notes every cookie."""

    cookies: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        if self.headers.get("cookie"):
            self.cookies.append(self.headers["cookie"])
        page = b"<p>agent</p>" + b"".join(
            b'<img src="%s">' % path.encode() for path in ("/console/x", "/console/s/", "/")
        )
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_another_port_of_the_host_gets_no_session_cookie(
    broker: ConsoleBroker, browser: webdriver.Chrome
) -> None:
    """Browsers do not separate cookies by port: the cookie's secret path keeps it home."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AgentApp)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        browser.get(broker.link())
        assert heading(browser) == "Approvals"
        assert browser.get_cookie("agentsudo_console") is not None
        seen = len(_AgentApp.cookies)
        browser.get(f"http://127.0.0.1:{server.server_address[1]}/console")
        until(lambda: browser.execute_script(
            "return Array.from(document.images).every(function (i) { return i.complete; })"
        ), "the agent's page loaded")  # fmt: skip
        assert not [c for c in _AgentApp.cookies[seen:] if "agentsudo_console" in c]
    finally:
        server.shutdown()
        server.server_close()
