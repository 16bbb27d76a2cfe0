"""The console over HTTP, against a real broker: logins, sessions, CSRF, actions, bad input.

Each refusal is a clear page (401, 403, 404) without data, changes nothing, and is
audited where it matters. The broker, its agent and the admin's ``agentsudo console``
are real processes; the browser is an HTTP client holding cookies.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from console_harness import POLICY, ConsoleBroker, finished, stop
from installed_cli import sh

from agentsudo_tokens.broker.console.auth import new_link
from agentsudo_tokens.broker.policy import Caller
from agentsudo_tokens.errors import AgentSudoError, PermissionDeniedError
from agentsudo_tokens.state import open_store

pytest.importorskip("uvicorn")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[ConsoleBroker]:
    running = ConsoleBroker(tmp_path)
    yield running
    running.stop()


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


def post(
    web: httpx.Client, broker: ConsoleBroker, path: str, form: dict[str, str]
) -> httpx.Response:
    """A form POST as the console's own page sends it (its Origin)."""
    return web.post(path, data=form, headers={"origin": broker.tcp})


def events(broker: ConsoleBroker, outcome: str) -> list[dict[str, object]]:
    return [event for event in broker.audit() if event["outcome"] == outcome]


# --- logging in ----------------------------------------------------------------------------


def test_the_printed_link_logs_in_once_with_a_strict_httponly_cookie(broker: ConsoleBroker) -> None:
    link = broker.link()
    assert re.fullmatch(re.escape(broker.tcp) + r"/console/login\?t=[A-Za-z0-9_-]{43}", link)
    web = broker.browser()
    answer = web.get(link)
    home = answer.headers["location"]
    assert answer.status_code == 303 and re.fullmatch(r"/console/s/[A-Za-z0-9_-]{32}/", home)
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and f"Path={home}" in cookie
    assert "Max-Age=28800" in cookie and "Secure" not in cookie  # plain http on loopback
    page = web.get(home)
    assert page.status_code == 200 and "Waiting for an answer" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    assert [e["caller"] for e in events(broker, "console_login")] == ["credential:admin"]
    assert [e["caller"] for e in events(broker, "console_link")] == ["credential:admin"]
    # the store keeps the link and the session by their hashes only
    store = open_store(f"sqlite:///{broker.keys / 'agentsudo-state.db'}")
    kept = json.dumps(store.items("console-"))
    assert link.split("t=")[1] not in kept and web.cookies["agentsudo_console"] not in kept
    assert home.split("/")[3] not in kept

    replayed = broker.browser().get(link)  # once
    assert replayed.status_code == 401 and "Login refused" in replayed.text
    assert "set-cookie" not in replayed.headers
    refused = [e for e in events(broker, "broker_refused") if e["action"] == "console login"]
    assert refused and "unknown, used or expired" in str(refused[0]["reason"])


def test_an_expired_or_made_up_link_is_refused(broker: ConsoleBroker) -> None:
    store = open_store(f"sqlite:///{broker.keys / 'agentsudo-state.db'}")
    old, _ = new_link(store, Caller(uid=None, credential="admin"), now=time.time() - 301)
    for value in (old, "A" * 43, "", "../../etc", "x" * 5000, "%00"):
        answer = broker.browser().get("/console/login", params={"t": value})
        assert answer.status_code == 401, value
        assert "set-cookie" not in answer.headers
        assert "Waiting" not in answer.text
    assert broker.browser().get("/console/login").status_code == 401  # no t at all


def test_a_non_admin_gets_no_link(broker: ConsoleBroker) -> None:
    done = broker.console(env={"AGENTSUDO_BROKER": broker.address})  # this uid: no admin
    assert done.returncode == 1 and done.stdout == ""
    assert "not an admin" in done.stderr
    other = broker.console(
        env={
            "AGENTSUDO_BROKER": broker.tcp,
            "AGENTSUDO_BROKER_CREDENTIAL": broker.credential("eve"),
        }
    )
    assert other.returncode == 1 and "not an admin" in other.stderr
    reasons = [str(e["reason"]) for e in events(broker, "broker_refused")]
    assert any("not an admin" in reason for reason in reasons)
    assert not events(broker, "console_link")


def test_the_link_needs_a_broker_and_takes_a_base_url(broker: ConsoleBroker) -> None:
    done = broker.console(env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 2 and "AGENTSUDO_BROKER" in done.stderr
    moved = broker.console("--base-url", "https://tunnel.example:8443/")
    assert moved.returncode == 0
    assert moved.stdout.startswith("https://tunnel.example:8443/console/login?t=")
    for bad in ("ftp://x", "http://x/path", "http://user@x", "javascript:alert(1)"):
        assert broker.console("--base-url", bad).returncode == 2, bad


# --- sessions ------------------------------------------------------------------------------


PAGES = [
    "/",
    "/agents",
    "/feed",
    "/audit",
    "/pending",
    "/feed/events?after=0",
    "/revoke?jti=abc",
    "/kill?agent=X",
]


def shows_nothing(answer: httpx.Response) -> bool:
    text = answer.text
    return answer.status_code == 401 and "SupportBot" not in text and "jti" not in text.lower()


@pytest.mark.parametrize("cookie", [None, "forged-" + "a" * 40, "", "a" * 43, "<script>"])
def test_no_page_without_a_live_session(broker: ConsoleBroker, cookie: str | None) -> None:
    broker.token()  # something a leak would show
    web = broker.browser()
    headers = {} if cookie is None else {"cookie": f"agentsudo_console={cookie}"}
    for base in ("/console", "/console/s/" + "a" * 32):
        for path in PAGES:
            assert shows_nothing(web.get(base + path, headers=headers)), base + path


def test_a_cookie_is_nothing_away_from_its_own_secret_path(broker: ConsoleBroker) -> None:
    """Browsers send a host's cookies to each of its ports: another server on 127.0.0.1 (an
    agent's) may get the cookie, but never the path it is good for, and one without the
    other (or with another session's) shows nothing."""
    broker.token()
    mine, other = broker.logged_in(), broker.logged_in()
    assert mine.base != other.base and mine.get(mine.base + "/agents").status_code == 200
    stolen = {"cookie": f"agentsudo_console={mine.cookies['agentsudo_console']}"}
    thief = broker.browser()
    for base in ("/console", other.base, "/console/s/" + "A" * 32, mine.base + "x", "/console/s"):
        for path in PAGES:
            assert shows_nothing(thief.get(base + path, headers=stolen)), base + path
    for path in PAGES:  # the path without its cookie
        assert shows_nothing(thief.get(mine.base + path)), path
    csrf = csrf_of(mine.get(mine.base + "/").text)
    logout = thief.post(other.base + "/logout", data={"csrf": csrf},
                        headers={**stolen, "origin": broker.tcp})  # fmt: skip
    assert logout.status_code == 401 and other.get(other.base + "/").status_code == 200
    # a cookie of another path set by another port of this host does not hide ours
    tossed = {"cookie": f"{stolen['cookie']}; agentsudo_console={'B' * 43}"}
    assert thief.get(mine.base + "/agents", headers=tossed).status_code == 200


def test_a_logged_out_or_demoted_session_is_refused(broker: ConsoleBroker) -> None:
    web = broker.logged_in()
    cookie = web.cookies["agentsudo_console"]
    page = web.get(web.base + "/")
    assert post(web, broker, web.base + "/logout", {"csrf": csrf_of(page.text)}).status_code == 200
    again = broker.browser()
    stale = {"cookie": f"agentsudo_console={cookie}"}
    assert again.get(web.base + "/", headers=stale).status_code == 401  # nothing now
    assert events(broker, "console_logout")

    web = broker.logged_in()
    broker.policy.write_text(broker.policy.read_text().replace("credential:admin", "uid:4242"))
    broker.process.send_signal(1)  # SIGHUP: the policy again, without that admin
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not events(broker, "policy_reloaded"):
        time.sleep(0.05)
    answer = web.get(web.base + "/agents")
    assert answer.status_code == 403 and "no longer an admin" in answer.text
    assert "SupportBot" not in answer.text


# --- actions and CSRF ----------------------------------------------------------------------


def test_posts_without_csrf_or_from_elsewhere_change_nothing(broker: ConsoleBroker) -> None:
    agent = broker.agent(broker.token())
    try:
        shown = broker.waiting()
        web = broker.logged_in()
        csrf = csrf_of(web.get(web.base + "/").text)
        path = f"{web.base}/approvals/{shown['id']}/approve"
        wrong = [
            ({}, {"origin": broker.tcp}),  # no token
            ({"csrf": csrf[:-1] + ("A" if csrf[-1] != "A" else "B")}, {"origin": broker.tcp}),
            ({"csrf": ""}, {"origin": broker.tcp}),
            ({"csrf": csrf}, {"origin": "http://evil.example"}),  # another site
            ({"csrf": csrf}, {"origin": "null"}),
            ({"csrf": csrf}, {}),  # neither Origin nor Referer
            ({"csrf": csrf}, {"referer": "http://evil.example/console"}),
        ]
        for form, headers in wrong:
            answer = web.post(path, data=form, headers=headers)
            assert answer.status_code == 403, (form, headers)
            assert "Forbidden" in answer.text
        as_json = web.post(
            path, json={"csrf": csrf}, headers={"origin": broker.tcp}
        )  # not a form: a cross-site fetch could send this
        assert as_json.status_code == 403
        twice = web.post(
            path, content=f"csrf={csrf}&csrf={csrf}", headers={
                "origin": broker.tcp, "content-type": "application/x-www-form-urlencoded"},
        )  # fmt: skip
        assert twice.status_code == 400
        huge = post(web, broker, path, {"csrf": csrf, "pad": "x" * 10_000})
        assert huge.status_code == 413
        still = broker.admin.request("GET", "/v1/approvals")["approvals"]
        assert [item["id"] for item in still] == [shown["id"]]
        assert agent.poll() is None
        assert not events(broker, "elevation_answered")

        referer = web.post(path, data={"csrf": csrf}, headers={"referer": broker.tcp + "/console"})
        assert referer.status_code == 303  # a Referer of the console stands for the Origin
        assert finished(agent) == {"result": "deleted c-42"}
    finally:
        stop(agent)


def test_deny_with_a_reason_and_an_answer_given_twice(broker: ConsoleBroker) -> None:
    agent = broker.agent(broker.token())
    try:
        shown = broker.waiting()
        web = broker.logged_in()
        csrf = csrf_of(web.get(web.base + "/").text)
        answer = post(web, broker, f"{web.base}/approvals/{shown['id']}/deny",
                      {"csrf": csrf, "reason": "not this customer"})  # fmt: skip
        assert (
            answer.status_code == 303 and answer.headers["location"] == web.base + "/?done=denied"
        )
        done = finished(agent)
        assert "not this customer" in done["refused"]
        again = post(web, broker, f"{web.base}/approvals/{shown['id']}/approve", {"csrf": csrf})
        assert again.status_code == 404 and "already answered" in again.text
        bogus = post(web, broker, web.base + "/approvals/apr_<script>/approve", {"csrf": csrf})
        assert bogus.status_code == 404 and "<script>" not in bogus.text
        bad = post(web, broker, f"{web.base}/approvals/{shown['id']}/deny",
                   {"csrf": csrf, "reason": "a\nb"})  # fmt: skip
        assert bad.status_code == 400
    finally:
        stop(agent)
    answered = events(broker, "elevation_answered")
    assert len(answered) == 1 and answered[0]["approved"] is False
    assert answered[0]["reason"] == "not this customer"
    refused = [e for e in events(broker, "broker_refused") if "console approve" in str(e["action"])]
    assert refused


def test_arguments_are_shown_whole_and_escaped(broker: ConsoleBroker) -> None:
    hostile = '</pre><script>alert(1)</script><b onmouseover="x">' + "y" * 5000
    agent = broker.agent(broker.token(), note=hostile)
    try:
        broker.waiting()
        web = broker.logged_in()
        page = web.get(web.base + "/").text
        assert "<script>alert" not in page and "<b onmouseover" not in page
        assert "&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "y" * 5000 in page  # whole, never cut
    finally:
        stop(agent)


def test_revoke_and_kill_switch_each_behind_a_confirmation(broker: ConsoleBroker) -> None:
    issued = broker.client.issue("SupportBot", scopes=["read:orders"])
    web = broker.logged_in()
    agents = web.get(web.base + "/agents")
    assert issued["jti"] in agents.text
    confirm = web.get(web.base + "/revoke", params={"jti": issued["jti"]})
    assert confirm.status_code == 200 and 'name="confirm" value="yes"' in confirm.text
    csrf = csrf_of(confirm.text)
    unconfirmed = post(web, broker, web.base + "/revoke", {"csrf": csrf, "jti": issued["jti"]})
    assert unconfirmed.status_code == 400
    assert not events(broker, "revoked")
    form = {"csrf": csrf, "jti": issued["jti"], "confirm": "yes", "reason": "leaked"}
    done = post(web, broker, web.base + "/revoke", form)
    assert done.status_code == 303
    assert issued["jti"] not in web.get(web.base + "/agents").text  # no longer live
    revoked = events(broker, "revoked")
    assert revoked[-1]["jti"] == issued["jti"] and revoked[-1]["reason"] == "leaked"
    assert revoked[-1]["caller"] == "credential:admin"

    kill = web.get(web.base + "/kill", params={"agent": "SupportBot"})
    assert kill.status_code == 200
    done = post(web, broker, web.base + "/kill",
                {"csrf": csrf, "agent": "SupportBot", "confirm": "yes"})  # fmt: skip
    assert done.status_code == 303
    assert "Kill switch on" in web.get(web.base + "/agents").text
    with pytest.raises(PermissionDeniedError, match="revoked"):
        broker.client.issue("SupportBot", scopes=["read:orders"])
    assert events(broker, "revoked")[-1]["agent"] == "SupportBot"


# --- the feed ------------------------------------------------------------------------------


def test_the_feed_follows_the_audit_and_takes_forwarded_events(broker: ConsoleBroker) -> None:
    web = broker.logged_in()
    first = web.get(web.base + "/feed/events", params={"after": 0}).json()
    issued = broker.client.issue("SupportBot", scopes=["read:orders"])
    later = web.get(web.base + "/feed/events", params={"after": first["latest"]}).json()
    assert [e["outcome"] for e in later["events"]] == ["issued"]
    assert issued["jti"] in later["events"][0]["detail"]

    event = {"time": "2026-01-01T00:00:00Z", "outcome": "denied", "agent": "SupportBot",
             "jti": "j1", "scope": "write:refunds", "function": "refund", "signed": True,
             "reason": "<img src=x>", "chain": ["SupportBot"]}  # fmt: skip
    service = broker.browser()
    forwarder = {"authorization": f"Bearer {broker.credential('orders-service')}"}
    answer = service.post("/v1/console/events", json={"events": [event]}, headers=forwarder)
    assert answer.status_code == 202 and answer.json() == {"accepted": 1}
    shown = web.get(web.base + "/feed/events", params={"after": later["latest"]}).json()["events"]
    assert shown[-1]["source"] == "forwarded by credential:orders-service"
    assert shown[-1]["outcome"] == "denied" and shown[-1]["scope"] == "write:refunds"
    assert "&lt;img src=x&gt;" in web.get(web.base + "/feed").text

    stranger = {"authorization": f"Bearer {broker.credential('eve')}"}
    hostile = [
        ({"events": [event]}, stranger, 403),
        ({"events": [event]}, {}, 401),
        ({"events": []}, forwarder, 400),
        ({"events": [event] * 101}, forwarder, 400),
        ({"events": [{**event, "extra": 1}]}, forwarder, 400),
        ({"events": [{**event, "agent": 5}]}, forwarder, 400),
        ({"events": [{**event, "outcome": "x" * 65}]}, forwarder, 400),
        ({"events": [event], "more": 1}, forwarder, 400),
    ]
    before = web.get(web.base + "/feed/events", params={"after": 0}).json()["latest"]
    for body, headers, status in hostile:
        assert service.post("/v1/console/events", json=body, headers=headers).status_code == status
    after = web.get(web.base + "/feed/events", params={"after": before}).json()["events"]
    assert after and {e["outcome"] for e in after} == {"broker_refused"}  # audited, not shown
    for bad in ("-1", "x", "1e3", "9" * 30):
        assert web.get(web.base + "/feed/events", params={"after": bad}).status_code == 400


def test_the_audit_page_says_whether_the_chain_verifies(broker: ConsoleBroker) -> None:
    web = broker.logged_in()
    page = web.get(web.base + "/audit").text
    assert '<span class="ok">verified</span>' in page and "head signed at" in page
    path = broker.keys / "broker-audit.jsonl"
    command = re.search(r"<code>(agentsudo audit verify [^<]*)</code>", page)
    assert command is not None  # the page's own command runs as shown, from any directory
    checked = sh(*command.group(1).split()[1:], cwd=broker.root.parent)
    assert checked.returncode == 0, checked.stderr
    lines = path.read_text().splitlines(keepends=True)
    lines[0] = lines[0].replace('"broker_started"', '"broker_stopped"')  # rewritten history
    path.write_text("".join(lines))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        page = web.get(web.base + "/audit").text
        if "NOT verified" in page:
            break
        time.sleep(0.5)
    assert "NOT verified" in page


def test_a_store_error_is_a_page_not_a_traceback(broker: ConsoleBroker) -> None:
    web = broker.logged_in()
    answer = web.get(web.base + "/approvals/not-an-id")
    assert answer.status_code == 404 and "Traceback" not in answer.text
    with pytest.raises(AgentSudoError):
        broker.admin.request("POST", "/v1/console/events", {"events": "x"})


def test_an_admin_on_the_socket_gets_a_link_to_the_tcp_listener(tmp_path: Path) -> None:
    policy = f"""
[broker]
admins = ["uid:{os.getuid()}"]

[agents.SupportBot]
scopes = ["read:orders"]
callers = ["uid:{os.getuid()}"]
"""
    broker = ConsoleBroker(tmp_path, policy)
    try:
        done = broker.console(env={"AGENTSUDO_BROKER": broker.address})
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(broker.tcp + "/console/login?t=")
        web = broker.browser()
        login = web.get(done.stdout.strip())
        assert login.status_code == 303
        page = web.get(login.headers["location"] + "agents")
        assert page.status_code == 200 and f"uid:{os.getuid()}" in page.text
    finally:
        broker.stop()


def test_arguments_nested_too_deep_are_refused_and_the_page_stands(broker: ConsoleBroker) -> None:
    token = broker.token()

    def filed(arguments: str) -> dict[str, object]:
        body = {"token": token, "scope": "delete:customer", "function": "delete_customer",
                "arguments": arguments, "reason": "r", "timeout": 600}  # fmt: skip
        return dict(broker.client.request("POST", "/v1/elevations", body))

    for depth in (33, 970):
        with pytest.raises(AgentSudoError, match="at most 32 levels of nesting") as refused:
            filed('{"a":' + "[" * (depth - 1) + "]" * (depth - 1) + "}")
        assert "\n" not in str(refused.value)
    deepest = filed('{"a":' + "[" * 31 + "]" * 31 + "}")  # 32 levels: taken
    quoted = filed('{"a":"' + "[" * 500 + '"}')  # brackets in a string nest nothing
    web = broker.logged_in()
    page = web.get(web.base + "/")
    assert page.status_code == 200 and deepest["id"] in page.text and quoted["id"] in page.text
    listed = broker.admin.request("GET", "/v1/approvals")["approvals"]
    assert {item["id"] for item in listed} == {deepest["id"], quoted["id"]}


def test_behind_a_tls_proxy_the_public_url_is_the_origin(tmp_path: Path) -> None:
    public = "https://console.example.com"
    broker = ConsoleBroker(tmp_path, POLICY, "--public-url", public + ":443/")
    try:
        filed = broker.client.request("POST", "/v1/elevations", {
            "token": broker.token(), "scope": "delete:customer", "function": "f",
            "arguments": '{"customer_id":"c-1"}', "reason": "r", "timeout": 600})  # fmt: skip
        link = broker.link()
        assert link.startswith(public + "/console/login?t=")
        proxied = {"host": "console.example.com", "x-forwarded-proto": "https"}
        web = broker.browser()
        login = web.get(link.removeprefix(public), headers=proxied)
        assert login.status_code == 303
        assert "Secure" in login.headers["set-cookie"] and "HttpOnly" in login.headers["set-cookie"]
        home = login.headers["location"]
        cookie = {"cookie": f"agentsudo_console={web.cookies['agentsudo_console']}"}
        csrf = csrf_of(web.get(home, headers={**proxied, **cookie}).text)
        path = f"{home}approvals/{filed['id']}/approve"
        for origin in (
            broker.tcp,
            "http://console.example.com",
            "https://console.example.com:8443",
        ):
            answer = web.post(
                path, data={"csrf": csrf}, headers={**proxied, **cookie, "origin": origin}
            )
            assert answer.status_code == 403, origin  # only the public origin
        done = web.post(path, data={"csrf": csrf}, headers={**proxied, **cookie, "origin": public})
        assert done.status_code == 303 and events(broker, "elevation_answered")
    finally:
        broker.stop()


@pytest.mark.parametrize(
    "bad", ["http://x/console", "ftp://x", "https://user@x", "https://x?a=1", "https://", "x"]
)
def test_a_public_url_that_is_not_an_origin_is_refused(tmp_path: Path, bad: str) -> None:
    done = sh("serve", "--dev", "--keys-dir", str(tmp_path / "k"), "--public-url", bad,
              cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2 and "--public-url" in done.stderr and "HOST[:PORT]" in done.stderr
    assert "Traceback" not in done.stderr
