"""A real broker for the console's tests, on a Unix socket and on TCP, and its admin.

    broker = ConsoleBroker(tmp_path)
    link = broker.link()                      # `agentsudo console` as the admin: the URL
    web = broker.browser()                    # an httpx client on the TCP listener
    agent = broker.agent(broker.token())      # a real agent process waiting on on_deny="ask"

The admin is a broker credential (``credential:admin``) over TCP; this uid, which
obtains the agents' tokens on the socket, is no admin.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from installed_cli import AGENTSUDO, sh

from agentsudo_tokens.broker.client import BrokerClient
from agentsudo_tokens.tokens.issuer import Issuer
from agentsudo_tokens.tokens.keydir import KeyDirectory

ME = os.getuid()
WAIT = 120  # seconds a waiting agent gives a test: generous on a loaded machine
POLICY = f"""
[broker]
admins = ["credential:admin"]
forwarders = ["credential:orders-service"]

[agents.SupportBot]
scopes = ["read:orders"]
ask = ["delete:customer"]
callers = ["uid:{ME}"]
"""

AGENT = """
import json, os, sys
from agentsudo_tokens import Agent, ask, sudo
from agentsudo_tokens.errors import PermissionDeniedError

@sudo(scope="delete:customer", on_deny=ask(timeout=float(sys.argv[2]), poll_interval=0.05))
def delete_customer(customer_id, hard=False, note=None):
    return f"deleted {customer_id}"

with Agent.from_token(os.environ["AGENTSUDO_TOKEN"]).start_session():
    try:
        result = delete_customer(sys.argv[1], hard=True, note=sys.argv[3])
        print(json.dumps({"result": result}), flush=True)
    except PermissionDeniedError as exc:
        print(json.dumps({"refused": str(exc)}), flush=True)
"""


class Browser(httpx.Client):
    """An HTTP client holding cookies; ``base`` is its session's secret path once logged in."""

    base = ""


class ConsoleBroker:
    """``agentsudo serve`` on a socket and on 127.0.0.1, its stderr read in a thread."""

    def __init__(self, root: Path, policy: str = POLICY, *serve: str) -> None:
        root.mkdir(parents=True, exist_ok=True)
        assert sh("keys", "init", "--keys-dir", str(root / "keys"), cwd=root).returncode == 0
        self.root, self.keys = root, root / "keys"
        self.policy = root / "agentsudo.toml"
        self.policy.write_text(policy)
        self.socket = root / "broker.sock"
        self.process = subprocess.Popen(
            [AGENTSUDO, "serve", "--policy", str(self.policy), "--keys-dir", str(self.keys),
             "--socket", str(self.socket), "--listen", "127.0.0.1:0", *serve],
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
        self.clients: list[httpx.Client] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.address = next(a for a in addresses if a.startswith("unix://"))
        self.tcp = next(a for a in addresses if a.startswith("http://"))
        self.client = BrokerClient(self.address)  # this uid, on the socket: no admin
        self.admin_credential = self.credential("admin")
        self.admin = BrokerClient(self.tcp, credential=self.admin_credential)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def credential(self, name: str) -> str:
        """A broker credential for ``name`` (audience agentsudo-broker), minted with its key."""
        key = KeyDirectory(self.keys).signing_key()
        return Issuer(key).issue(name, ["broker:use"], audience="agentsudo-broker").token

    def console(self, *args: str, env: dict[str, str] | None = None) -> Any:
        """``agentsudo console`` as the admin over TCP (``env`` replaces who asks)."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
        asking = env or {
            "AGENTSUDO_BROKER": self.tcp,
            "AGENTSUDO_BROKER_CREDENTIAL": self.admin_credential,
        }
        return subprocess.run(
            [AGENTSUDO, "console", *args], env={**base, **asking}, capture_output=True,
            text=True, timeout=60, cwd=self.root,
        )  # fmt: skip

    def link(self) -> str:
        done = self.console()
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def browser(self) -> Browser:
        """An HTTP client on the console's listener that keeps cookies, follows nothing
        (closed when the broker stops)."""
        client = Browser(base_url=self.tcp, follow_redirects=False, timeout=30)
        self.clients.append(client)
        return client

    def logged_in(self) -> Browser:
        """A browser logged in; its pages are under ``web.base`` (``/console/s/<secret>``)."""
        web = self.browser()
        answer = web.get(self.link())
        assert answer.status_code == 303, answer.text
        web.base = answer.headers["location"].rstrip("/")
        return web

    def token(self, agent: str = "SupportBot") -> str:
        return str(self.client.issue(agent, scopes=["read:orders"])["token"])

    def agent(self, token: str, customer: str = "c-42", note: str = "n") -> subprocess.Popen[str]:
        """A real agent process whose guarded call asks the broker and waits."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
        env.update(AGENTSUDO_BROKER=self.address, AGENTSUDO_TOKEN=token)
        home = self.root / "agent-home"
        home.mkdir(exist_ok=True)
        return subprocess.Popen(
            [sys.executable, "-c", AGENT, customer, str(WAIT), note],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=home,
        )  # fmt: skip

    def waiting(self) -> dict[str, Any]:
        """The first request waiting, as the admin's API shows it (waits for one)."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            found = self.admin.request("GET", "/v1/approvals")["approvals"]
            if found:
                return dict(found[0])
            time.sleep(0.05)
        raise AssertionError("no request came")

    def audit(self) -> list[dict[str, Any]]:
        """The broker's audit file, line by line."""
        path = self.keys / "broker-audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self.reader.join(timeout=30)
            assert self.process.stderr is not None
            self.process.stderr.close()


def finished(process: subprocess.Popen[str]) -> dict[str, Any]:
    """The agent's last line of output, once it ends."""
    out, err = process.communicate(timeout=WAIT)
    assert process.returncode == 0, err
    return dict(json.loads(out.strip().splitlines()[-1]))


def stop(process: subprocess.Popen[str]) -> None:
    """Kill an agent still waiting, and close its pipes."""
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=WAIT)
