"""The broker's webhook: each elevation request filed is POSTed to the policy's ``[broker] notify``.

A real broker (``agentsudo serve``) on a Unix socket; a real HTTP server on
127.0.0.1 stands in for the webhook (Slack-compatible JSON: ``text`` and the
request whole under ``agentsudo``). The agent itself is told no webhook: with
``AGENTSUDO_BROKER`` set it needs no network access to one. A webhook that is
down or slow costs the notification only: filing does not wait for it, the
broker keeps serving, and the failure is logged (never the URL) and audited.
"""

from __future__ import annotations

import http.server
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_harness import Broker, init_keys
from installed_cli import sh

from agentsudo_tokens.broker.notify import TIMEOUT, WORKERS, Notifier
from agentsudo_tokens.state.approvals import (
    ApprovalRequest,
    binding,
    canonical_arguments,
    text_digest,
)

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

ME = os.getuid()
WAIT = 60.0  # seconds a test waits for something to arrive: generous on a loaded machine
HOLD = 30.0  # seconds a slow webhook sits on each request before answering
SECRET = "T000/B000/secret-path"  # a webhook's path is its secret: never logged or shown


def policy(notify: str) -> str:
    return f"""
[broker]
admins = ["uid:{ME}"]
notify = "{notify}"

[agents.SupportBot]
scopes = ["read:orders"]
ask = ["delete:customer"]
callers = ["uid:{ME}"]
"""


class Webhook:
    """A local HTTP server that records what is POSTed to it, holding each for ``hold`` s."""

    def __init__(self, hold: float = 0.0) -> None:
        self.received: queue.Queue[dict[str, Any]] = queue.Queue()
        self.release = threading.Event()
        webhook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length))
                webhook.received.put({"path": self.path, **body})
                if hold:
                    webhook.release.wait(hold)
                try:
                    self.send_response(200)
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the broker gave up waiting for this answer

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/{SECRET}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def next(self) -> dict[str, Any]:
        return self.received.get(timeout=WAIT)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    running = Webhook()
    yield running
    running.close()


@pytest.fixture
def slow_webhook() -> Iterator[Webhook]:
    running = Webhook(hold=HOLD)
    yield running
    running.close()


def down_url() -> str:
    """A loopback URL nothing listens on (the port was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/services/{SECRET}"


def started(root: Path, notify: str) -> Broker:
    init_keys(root)
    return Broker(root, policy(notify))


def file_request(broker: Broker, token: str, customer: str) -> dict[str, Any]:
    body = {
        "token": token,
        "scope": "delete:customer",
        "function": "shop.delete_customer",
        "arguments": canonical_arguments({"customer_id": customer, "hard": False}),
        "reason": "not granted",
        "timeout": 600,
    }
    return dict(broker.client.request("POST", "/v1/elevations", body))


def audited(broker: Broker, outcome: str, request_id: str) -> dict[str, Any]:
    """The broker's audit event ``outcome`` for ``request_id`` (waits for it to be written)."""
    path = broker.root / "keys" / "broker-audit.jsonl"
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if event.get("outcome") == outcome and event.get("request") == request_id:
                return dict(event)
        time.sleep(0.05)
    raise AssertionError(f"no {outcome} event for {request_id} in the broker's audit")


AGENT = """
import json, os, sys
from agentsudo_tokens import Agent, ask, sudo
from agentsudo_tokens.errors import PermissionDeniedError

@sudo(scope="delete:customer", on_deny=ask(timeout=120, poll_interval=0.05))  # no notify=
def delete_customer(customer_id, hard=False):
    return f"deleted {customer_id}"

with Agent.from_token(os.environ["AGENTSUDO_TOKEN"]).start_session():
    try:
        print(json.dumps({"result": delete_customer(sys.argv[1])}), flush=True)
    except PermissionDeniedError as exc:
        print(json.dumps({"refused": str(exc)}), flush=True)
"""


def test_a_request_the_agent_files_reaches_the_policys_webhook_whole(
    tmp_path: Path, webhook: Webhook
) -> None:
    broker = started(tmp_path / "broker", webhook.url)
    try:
        token = str(broker.client.issue("SupportBot")["token"])
        env = {**os.environ, "AGENTSUDO_BROKER": broker.address, "AGENTSUDO_TOKEN": token}
        for name in ("AGENTSUDO_JWKS", "AGENTSUDO_STORE", "AGENTSUDO_KEYS_DIR"):
            env.pop(name, None)
        home = tmp_path / "agent-home"  # no key directory, no state file: only the broker
        home.mkdir()
        agent = subprocess.Popen(
            [sys.executable, "-c", AGENT, "c-42"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=home,
        )  # fmt: skip
        try:
            told = webhook.next()
            request = told["agentsudo"]
            waiting = broker.client.approvals()
            assert [item.id for item in waiting] == [request["id"]]
            shown = waiting[0].to_dict()
            assert request == shown  # the request whole, as an admin sees it
            assert request["id"].startswith("apr_")
            assert request["agent"] == "SupportBot"
            assert request["scope"] == "delete:customer"
            assert request["function"].endswith("delete_customer")
            assert request["arguments"] == {"customer_id": "c-42", "hard": False}
            assert told["path"] == f"/services/{SECRET}"
            assert "delete:customer" in told["text"] and request["id"] in told["text"]
            broker.client.approve(request["id"])
            out, err = agent.communicate(timeout=WAIT)
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.communicate(timeout=WAIT)
        assert agent.returncode == 0, err
        assert json.loads(out.strip().splitlines()[-1]) == {"result": "deleted c-42"}
        assert webhook.received.empty()  # told once, by the broker
    finally:
        broker.stop()


def test_a_slow_webhook_does_not_delay_filing_and_the_broker_keeps_serving(
    tmp_path: Path, slow_webhook: Webhook
) -> None:
    broker = started(tmp_path / "broker", slow_webhook.url)
    try:
        token = str(broker.client.issue("SupportBot")["token"])
        count = WORKERS + 2  # more than the notifier posts at once: some wait in its queue
        began = time.monotonic()
        filed = [file_request(broker, token, f"c-{n}") for n in range(count)]
        took = time.monotonic() - began
        # a broker that waited for the webhook would take HOLD s, or TIMEOUT s, per request
        assert took < min(HOLD, TIMEOUT * count) / 3, f"filing {count} requests took {took:.1f}s"
        first = slow_webhook.next()  # the webhook has it, and sits on it
        assert first["agentsudo"]["id"] in {item["id"] for item in filed}
        assert broker.client.health() == {"status": "ok"}
        assert broker.client.issue("SupportBot")["agent"] == "SupportBot"
        assert len(broker.client.approvals()) == count  # every request waits for an admin
        failed = audited(broker, "elevation_notify_failed", first["agentsudo"]["id"])
        assert failed["reason"] == "no answer in time"
        assert SECRET not in json.dumps(failed)
    finally:
        broker.stop()


def test_a_webhook_that_is_down_costs_the_notification_only(tmp_path: Path) -> None:
    broker = started(tmp_path / "broker", down_url())
    try:
        token = str(broker.client.issue("SupportBot")["token"])
        filed = file_request(broker, token, "c-1")
        failed = audited(broker, "elevation_notify_failed", filed["id"])
        assert failed["agent"] == "SupportBot"
        assert failed["reason"].startswith("unreachable")
        again = file_request(broker, token, "c-2")  # the broker keeps serving
        assert {item.id for item in broker.client.approvals()} == {filed["id"], again["id"]}
        assert broker.client.health() == {"status": "ok"}
    finally:
        assert broker.stop() == 0
    assert f"approval request {filed['id']}: the webhook was not notified" in broker.stderr
    assert SECRET not in broker.stderr


@pytest.mark.parametrize(
    "value",
    [
        "http://hooks.slack.com/services/" + SECRET,  # plain http beyond this machine
        "ftp://127.0.0.1/services/" + SECRET,
        "https://user:pw@hooks.example/services/" + SECRET,
        "hooks.example/services/" + SECRET,
        "https://hooks.example:99999/services/" + SECRET,
    ],
)
def test_a_bad_notify_is_a_line_numbered_policy_error(tmp_path: Path, value: str) -> None:
    path = tmp_path / "agentsudo.toml"
    path.write_text(policy(value))
    done = sh("policy", "check", str(path), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith(f"agentsudo: {path}:4: broker.notify: expected an https:// URL")
    assert len(done.stderr.splitlines()) == 1
    assert SECRET not in done.stderr


def test_a_number_for_notify_is_a_line_numbered_policy_error(tmp_path: Path) -> None:
    path = tmp_path / "agentsudo.toml"
    path.write_text(policy("x").replace('notify = "x"', "notify = 443"))
    done = sh("policy", "check", str(path), cwd=tmp_path)
    assert done.returncode == 1
    assert f"{path}:4: broker.notify: expected an https:// URL" in done.stderr
    assert done.stderr.rstrip().endswith("found 443")


@pytest.mark.parametrize(
    "value",
    ["https://hooks.slack.com/services/" + SECRET, "http://127.0.0.1:8080/hook", "http://[::1]/h"],
)
def test_an_https_or_loopback_notify_is_accepted(tmp_path: Path, value: str) -> None:
    path = tmp_path / "agentsudo.toml"
    path.write_text(policy(value))
    done = sh("policy", "check", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def approval(number: int) -> ApprovalRequest:
    """A consistent request, as the broker files one (for the notifier alone)."""
    arguments = canonical_arguments({"n": number})
    request_id, digest, now = f"apr_{'x' * 21}{number}", text_digest(arguments), time.time()
    bound = binding(request_id, "SupportBot", "jti", "delete:customer", "f", digest)
    return ApprovalRequest(
        request_id, "SupportBot", "jti", "delete:customer", "f", arguments, digest,
        "not granted", now, now + 600, bound,
    )  # fmt: skip


def test_a_full_queue_drops_the_notification_and_says_so() -> None:
    held = Webhook(hold=HOLD)
    failures: queue.Queue[tuple[str, str]] = queue.Queue()
    notifier = Notifier(
        lambda request, why: failures.put((request.id, why)), workers=1, max_queued=1
    )
    try:
        notifier.submit(held.url, approval(1))
        assert held.next()["agentsudo"]["id"] == approval(1).id  # the one worker sits on it
        notifier.submit(held.url, approval(2))  # waits in the queue
        notifier.submit(held.url, approval(3))  # no room: dropped, at once
        assert failures.get(timeout=WAIT) == (approval(3).id, "the queue is full (1 waiting)")
    finally:
        notifier.close()
        held.close()
