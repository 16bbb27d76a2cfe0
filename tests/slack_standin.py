"""Slack, stood in for: a local webhook that records what the broker posts, and clicks signed
as Slack signs them, sent to a real broker's TCP listener.

    slack = SlackStandIn()                       # http://127.0.0.1:PORT/services/T/B/<secret>
    broker = SlackBroker(tmp_path, slack.url, users={"U0ALICE1": "alice"})
    message = slack.next()                       # the Block Kit message the broker posted
    status, body = broker.click(click_body("U0ALICE1", APPROVE, request_id, slack))

The signature is computed here from Slack's documented recipe (``v0=`` and the hex
HMAC-SHA256 of ``v0:{timestamp}:{raw body}``), not with the broker's own code.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import http.server
import json
import os
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from installed_cli import AGENTSUDO, sh

from agentsudo_tokens.broker.client import BrokerClient
from agentsudo_tokens.tokens.issuer import Issuer
from agentsudo_tokens.tokens.keydir import KeyDirectory

WAIT = 60.0  # seconds a test waits for something to arrive: generous on a loaded machine
HOOK_SECRET = "T000/B000/hook-secret-path"  # the webhook's path is its secret
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # 32 characters, as Slack's are
APPROVE, DENY = "agentsudo_approve", "agentsudo_deny"
ME = os.getuid()


class SlackStandIn:
    """A local HTTP server recording each JSON body POSTed to it (webhook and response_url)."""

    def __init__(self) -> None:
        self.received: queue.Queue[dict[str, Any]] = queue.Queue()
        self._seen: list[dict[str, Any]] = []
        standin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length))
                standin.received.put({"path": self.path, "body": body})
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = f"{self.origin}/services/{HOOK_SECRET}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def next(self) -> dict[str, Any]:
        """The next POST: ``{"path": ..., "body": ...}``."""
        return self.received.get(timeout=WAIT)

    def posted(self, path: str, match: str) -> dict[str, Any]:
        """The body POSTed to ``path`` whose JSON text holds ``match`` (waits for it)."""
        deadline = time.monotonic() + WAIT
        while True:
            for item in self._seen:
                if item["path"] == path and match in json.dumps(item["body"]):
                    return dict(item["body"])
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"nothing with {match!r} was POSTed to {path}")
            try:
                self._seen.append(self.received.get(timeout=left))
            except queue.Empty:
                pass

    def message_for(self, request_id: str) -> dict[str, Any]:
        """The Block Kit message the broker posted for ``request_id``."""
        return self.posted(f"/services/{HOOK_SECRET}", request_id)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def secret_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


def slack_policy(
    users: dict[str, str], admins: str = '"credential:admin", "credential:alice"'
) -> str:
    table = "\n".join(f'{user} = "{name}"' for user, name in users.items())
    return f"""
[broker]
admins = [{admins}]

[agents.SupportBot]
scopes = ["read:orders"]
ask = ["delete:customer"]
callers = ["uid:{ME}"]

[slack]
webhook_url_file = "slack-webhook"
signing_secret_file = "slack-signing-secret"

[slack.users]
{table}
"""


def signed(body: bytes, *, secret: str = SIGNING_SECRET, at: float | None = None) -> dict[str, str]:
    """The headers Slack sends with ``body``, signed at ``at`` (default: now)."""
    timestamp = str(int(time.time() if at is None else at))
    base = b"v0:" + timestamp.encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": f"v0={digest}"}


def payload(user: str, action: str, request_id: str, response_url: str | None) -> dict[str, Any]:
    """A ``block_actions`` payload as Slack sends one for a button click (fields we ignore too)."""
    data: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": user, "username": "alice", "name": "alice", "team_id": "T000"},
        "api_app_id": "A000",
        "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": "1.2", "channel_id": "C000"},
        "trigger_id": "1.2.3",
        "team": {"id": "T000", "domain": "example"},
        "channel": {"id": "C000", "name": "approvals"},
        "message": {"type": "message", "text": "agentsudo: ...", "blocks": []},
        "actions": [
            {
                "action_id": action,
                "block_id": "agentsudo_answer",
                "text": {"type": "plain_text", "text": "Approve", "emoji": False},
                "value": request_id,
                "style": "primary",
                "type": "button",
                "action_ts": "1.3",
            }
        ],
    }
    if response_url is not None:
        data["response_url"] = response_url
    return data


def form(data: Any) -> bytes:
    """The body Slack POSTs: ``payload=<JSON>``, form-encoded."""
    return urlencode({"payload": json.dumps(data)}).encode()


class SlackBroker:
    """``agentsudo serve`` with ``[slack]``, on a Unix socket and on TCP (where Slack calls)."""

    def __init__(
        self,
        root: Path,
        webhook: str,
        users: dict[str, str],
        *extra: str,
        slack: bool = True,
    ) -> None:
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o700)
        assert sh("keys", "init", "--keys-dir", str(root / "keys"), cwd=root).returncode == 0
        self.root, self.keys = root, root / "keys"
        secret_file(root / "slack-webhook", webhook)
        secret_file(root / "slack-signing-secret", SIGNING_SECRET)
        policy = slack_policy(users)
        if not slack:  # the same policy, without its [slack] tables
            policy = policy.partition("[slack]")[0]
        (root / "agentsudo.toml").write_text(policy)
        self.socket = root / "broker.sock"
        self.process = subprocess.Popen(
            [AGENTSUDO, "serve", "--policy", str(root / "agentsudo.toml"), "--keys-dir",
             str(self.keys), "--socket", str(self.socket), "--listen", "127.0.0.1:0", *extra],
            stderr=subprocess.PIPE, text=True, cwd=root,
        )  # fmt: skip
        assert self.process.stderr is not None
        addresses = []
        for _ in range(2):
            line = self.process.stderr.readline()
            if "listening on" not in line:
                self.process.kill()
                raise AssertionError(f"the broker did not start: {line}")
            addresses.append(line.rsplit(" ", 1)[1].strip())
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.address = next(a for a in addresses if a.startswith("unix://"))
        self.tcp = next(a for a in addresses if a.startswith("http://"))
        self.client = BrokerClient(self.address)  # this uid: a caller of SupportBot, no admin
        key = KeyDirectory(self.keys).signing_key()
        credential = Issuer(key).issue("admin", ["broker:admin"], audience="agentsudo-broker")
        self.admin = BrokerClient(self.tcp, credential=credential.token)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def click(
        self, body: bytes, headers: dict[str, str], content_type: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """POST ``body`` to the broker's Slack endpoint over TCP; the status and the JSON."""
        parts = urlsplit(self.tcp)
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=WAIT)
        try:
            kind = content_type or "application/x-www-form-urlencoded"
            connection.request(
                "POST",
                "/v1/slack/interactions",
                body=body,
                headers={"Content-Type": kind, **headers},
            )
            answer = connection.getresponse()
            return answer.status, json.loads(answer.read())
        finally:
            connection.close()

    def file_request(self, customer: str = "c-1", **arguments: Any) -> str:
        """File an elevation request of SupportBot's (as its guard would); its id."""
        from agentsudo_tokens.state.approvals import canonical_arguments

        token = str(self.client.issue("SupportBot")["token"])
        body = {
            "token": token,
            "scope": "delete:customer",
            "function": "shop.delete_customer",
            "arguments": canonical_arguments({"customer_id": customer, **arguments}),
            "reason": "not granted",
            "timeout": 600,
        }
        return str(self.client.request("POST", "/v1/elevations", body)["id"])

    def pending(self) -> set[str]:
        """The ids of the requests still waiting, as an admin sees them."""
        return {item["id"] for item in self.admin.request("GET", "/v1/approvals")["approvals"]}

    def audited(self, outcome: str, **match: Any) -> dict[str, Any]:
        """The broker's audit event ``outcome`` with ``match``ing fields (waits for it)."""
        path = self.keys / "broker-audit.jsonl"
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            for line in path.read_text().splitlines():
                event = json.loads(line)
                if event.get("outcome") == outcome and all(
                    event.get(k) == v for k, v in match.items()
                ):
                    return dict(event)
            time.sleep(0.05)
        raise AssertionError(f"no {outcome} event with {match} in the broker's audit")

    def events(self, outcome: str) -> list[dict[str, Any]]:
        path = self.keys / "broker-audit.jsonl"
        return [
            event
            for event in map(json.loads, path.read_text().splitlines())
            if event.get("outcome") == outcome
        ]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self.reader.join(timeout=30)
            assert self.process.stderr is not None
            self.process.stderr.close()
