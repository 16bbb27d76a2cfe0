"""Elevation through the broker: a waiting call asks the broker, an admin answers, one call runs.

A real broker (``agentsudo serve``) on a Unix socket and on TCP; its admin is a
broker credential (``credential:admin``), presented over TCP, so the agent's own
uid, which obtains the agent's tokens on the socket, is no admin. The agent is a
real process with ``AGENTSUDO_BROKER`` and ``AGENTSUDO_TOKEN`` set, as ``agentsudo
run`` starts it. The elevation token's verifier is also tested alone, with hostile
tokens, and the broker's side with its own store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from installed_cli import AGENTSUDO, sh

from agentsudo_tokens import KeySet, Verifier
from agentsudo_tokens.broker.client import BrokerClient
from agentsudo_tokens.broker.elevation import (
    ELEVATION_AUDIENCE,
    ELEVATION_TYPE,
    TooManyPendingError,
    call_digest,
    elevation_status,
    file_elevation,
)
from agentsudo_tokens.errors import (
    AgentSudoError,
    InvalidTokenError,
    PermissionDeniedError,
    UnknownApprovalError,
)
from agentsudo_tokens.guard.agent import Agent
from agentsudo_tokens.guard.broker_elevation import ElevationWaiting, verify_elevation
from agentsudo_tokens.guard.decision import ApprovalContext
from agentsudo_tokens.state import open_store
from agentsudo_tokens.state.approvals import (
    REQUEST,
    ApprovalRequest,
    approve,
    binding,
    canonical_arguments,
    canonical_json,
    deny,
    text_digest,
)
from agentsudo_tokens.tokens.issuer import Issuer
from agentsudo_tokens.tokens.jws import encode
from agentsudo_tokens.tokens.keydir import KeyDirectory
from agentsudo_tokens.tokens.keys import SigningKey

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

ME = os.getuid()
POLICY = f"""
[broker]
admins = ["credential:admin"]

[agents.SupportBot]
scopes = ["read:orders"]
ask = ["delete:customer"]
callers = ["uid:{ME}"]

[agents.OtherBot]
scopes = ["read:orders"]
ask = ["delete:customer"]
callers = ["uid:{ME}"]
"""
WAIT = 120  # seconds a waiting agent gives a test's admin: generous on a loaded machine

AGENT = """
import json, os, sys
from agentsudo_tokens import Agent, ask, sudo
from agentsudo_tokens.errors import PermissionDeniedError

runs = []

def notify(request):
    if len(sys.argv) > 3:  # what a webhook would be told: the request, whole
        with open(sys.argv[3] + ".part", "w") as out:
            json.dump(request.to_dict(), out)
        os.replace(sys.argv[3] + ".part", sys.argv[3])

@sudo(
    scope="delete:customer",
    on_deny=ask(timeout=float(sys.argv[2]), poll_interval=0.05, notify=notify),
)
def delete_customer(customer_id, hard=False):
    runs.append(customer_id)
    return f"deleted {customer_id}"

with Agent.from_token(os.environ["AGENTSUDO_TOKEN"]).start_session():
    try:
        print(json.dumps({"result": delete_customer(sys.argv[1]), "runs": runs}), flush=True)
    except PermissionDeniedError as exc:
        print(json.dumps({"refused": str(exc), "runs": runs}), flush=True)
"""


class Broker:
    """``agentsudo serve`` on a Unix socket and on TCP, its stderr read in a thread."""

    def __init__(self, root: Path) -> None:
        assert sh("keys", "init", "--keys-dir", str(root / "keys"), cwd=root).returncode == 0
        self.root, self.keys = root, root / "keys"
        (root / "agentsudo.toml").write_text(POLICY)
        self.socket = root / "broker.sock"
        self.process = subprocess.Popen(
            [AGENTSUDO, "serve", "--policy", str(root / "agentsudo.toml"), "--keys-dir",
             str(self.keys), "--socket", str(self.socket), "--listen", "127.0.0.1:0"],
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
        tcp = next(a for a in addresses if a.startswith("http://"))
        self.client = BrokerClient(self.address)  # this uid, on the socket
        key = KeyDirectory(self.keys).signing_key()
        credential = Issuer(key).issue("admin", ["broker:admin"], audience="agentsudo-broker")
        self.admin = BrokerClient(tcp, credential=credential.token)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def token(self, agent: str = "SupportBot") -> str:
        return str(self.client.issue(agent, scopes=["read:orders"])["token"])

    def agent(
        self, token: str, customer: str = "c-42", timeout: float = WAIT, notified: str = ""
    ) -> Any:
        env = {**os.environ, "AGENTSUDO_BROKER": self.address, "AGENTSUDO_TOKEN": token}
        for name in ("AGENTSUDO_JWKS", "AGENTSUDO_STORE", "AGENTSUDO_KEYS_DIR"):
            env.pop(name, None)
        return subprocess.Popen(
            [sys.executable, "-c", AGENT, customer, str(timeout), *[notified][: bool(notified)]],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            cwd=home(self.root),
        )  # fmt: skip

    def waiting(self, agent: str = "SupportBot") -> dict[str, Any]:
        """The first request ``agent`` filed, as the admin sees it (waits for it to come)."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            found = self.admin.request("GET", "/v1/approvals")["approvals"]
            mine = [item for item in found if item["agent"] == agent]
            if mine:
                return dict(mine[0])
            time.sleep(0.05)
        raise AssertionError(f"no request of {agent} came")

    def answer(self, request_id: str, verb: str, body: dict[str, Any] | None = None) -> Any:
        return self.admin.request("POST", f"/v1/approvals/{request_id}/{verb}", body or {})

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


def home(root: Path) -> Path:
    """The agent's working directory: no key directory, no state file, only the broker."""
    path = root / "agent-home"
    path.mkdir(exist_ok=True)
    return path


def stop(process: subprocess.Popen[str]) -> None:
    """Kill an agent still waiting, and close its pipes."""
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=WAIT)


def finished(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = process.communicate(timeout=WAIT)
    assert process.returncode == 0, err
    return dict(json.loads(out.strip().splitlines()[-1]))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    running = Broker(tmp_path)
    yield running
    running.stop()


# --- through a real broker, with a real agent process -----------------------------------


def test_an_approval_through_the_broker_runs_the_waiting_call_once(broker: Broker) -> None:
    agent = broker.agent(broker.token())
    try:
        shown = broker.waiting()
        assert shown["scope"] == "delete:customer"
        assert shown["function"].endswith("delete_customer")
        assert shown["arguments"] == {"customer_id": "c-42", "hard": False}  # whole
        broker.answer(shown["id"], "approve", {"by": "alice"})
        done = finished(agent)
    finally:
        stop(agent)
    assert done == {"result": "deleted c-42", "runs": ["c-42"]}
    assert not broker.admin.request("GET", "/v1/approvals")["approvals"]  # settled


def test_the_notification_names_the_request_the_admin_sees(broker: Broker, tmp_path: Path) -> None:
    notified = tmp_path / "notified.json"
    agent = broker.agent(broker.token(), customer="c-9", notified=str(notified))
    try:
        shown = broker.waiting()
        deadline = time.monotonic() + WAIT
        while not notified.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        told = json.loads(notified.read_text())
        assert told["id"] == shown["id"]
        assert told["arguments"] == shown["arguments"] == {"customer_id": "c-9", "hard": False}
        assert told["binding"] == shown["binding"]
        broker.answer(told["id"], "approve")
        done = finished(agent)
    finally:
        stop(agent)
    assert done == {"result": "deleted c-9", "runs": ["c-9"]}


def test_a_denial_refuses_the_call(broker: Broker) -> None:
    agent = broker.agent(broker.token())
    try:
        shown = broker.waiting()
        broker.answer(shown["id"], "deny", {"reason": "not this customer"})
        done = finished(agent)
    finally:
        stop(agent)
    assert done["runs"] == []
    assert "denied" in done["refused"] and "not this customer" in done["refused"]


def test_no_answer_before_the_timeout_refuses(broker: Broker) -> None:
    done = finished(broker.agent(broker.token(), timeout=1))
    assert done["runs"] == []
    assert "no answer within" in done["refused"]


def test_the_agents_own_user_cannot_approve(broker: Broker) -> None:
    token = broker.token()
    agent = broker.agent(token)
    try:
        shown = broker.waiting()
        with pytest.raises(PermissionDeniedError, match="not an admin"):
            broker.client.request("POST", f"/v1/approvals/{shown['id']}/approve", {})
        as_agent = BrokerClient(broker.admin.address, credential=token)  # its token, over TCP
        with pytest.raises(InvalidTokenError):
            as_agent.request("POST", f"/v1/approvals/{shown['id']}/approve", {})
        broker.answer(shown["id"], "deny")
        done = finished(agent)
    finally:
        stop(agent)
    assert done["runs"] == []


def test_a_request_altered_in_the_store_runs_nothing(broker: Broker) -> None:
    agent = broker.agent(broker.token())
    try:
        shown = broker.waiting()
        # someone with the store rewrites the request, consistently, to another customer
        store = open_store(f"sqlite:///{broker.keys / 'agentsudo-state.db'}")
        try:
            stored = json.loads(store.get(REQUEST + shown["id"]) or "{}")
            assert stored["arguments"]["customer_id"] == "c-42"
            forged = dict(stored, arguments={"customer_id": "c-1", "hard": True})
            forged_json = canonical_arguments(forged["arguments"])
            forged["arguments_sha256"] = text_digest(forged_json)
            forged["binding"] = binding(
                forged["id"], forged["agent"], forged["jti"], forged["scope"],
                forged["function"], forged["arguments_sha256"],
            )  # fmt: skip
            store.put(REQUEST + shown["id"], json.dumps(forged), expires_at=time.time() + 600)
        finally:
            store.close()
        broker.answer(shown["id"], "approve")  # the admin approves what it now shows
        done = finished(agent)
    finally:
        stop(agent)
    assert done["runs"] == []  # neither c-1 nor c-42
    assert "function or arguments" in done["refused"]


def test_only_an_ask_scope_may_be_asked_for_and_only_by_a_live_token(broker: Broker) -> None:
    token = broker.token()
    arguments = canonical_arguments({"x": 1})
    body = {"token": token, "scope": "write:anything", "function": "f", "arguments": arguments}
    with pytest.raises(PermissionDeniedError, match="does not let agent 'SupportBot' ask"):
        broker.client.request("POST", "/v1/elevations", body)
    body["scope"] = "delete:customer"
    with pytest.raises(InvalidTokenError):
        broker.client.request("POST", "/v1/elevations", dict(body, token=token[:-4] + "AAAA"))
    with pytest.raises(AgentSudoError, match="canonical"):
        broker.client.request("POST", "/v1/elevations", dict(body, arguments='{"x": 1}'))
    broker.admin.request("POST", "/v1/revocations", {"agent": "SupportBot"})
    with pytest.raises(InvalidTokenError, match="revoked"):
        broker.client.request("POST", "/v1/elevations", body)


def test_pending_requests_are_bounded_per_agent(broker: Broker) -> None:
    token, other = broker.token(), broker.token("OtherBot")
    body = {"token": token, "scope": "delete:customer", "function": "f", "arguments": "{}"}
    for _ in range(100):
        filed = broker.client.request("POST", "/v1/elevations", body)
        assert filed["id"].startswith("apr_")
    with pytest.raises(AgentSudoError, match="100 requests waiting"):
        broker.client.request("POST", "/v1/elevations", body)
    assert broker.client.request("POST", "/v1/elevations", dict(body, token=other))["id"]
    assert broker.client.health() == {"status": "ok"}


def test_the_elevation_token_is_handed_out_once_to_its_own_token_and_used_once(
    broker: Broker,
) -> None:
    token = broker.token()
    arguments = {"customer_id": "c-7", "hard": False}
    body = {
        "token": token,
        "scope": "delete:customer",
        "function": "app.delete_customer",
        "arguments": canonical_arguments(arguments),
    }
    request_id = broker.client.request("POST", "/v1/elevations", body)["id"]
    mine = BrokerClient(broker.address, credential=token)
    other = BrokerClient(broker.address, credential=broker.token("OtherBot"))
    path = f"/v1/elevations/{request_id}"
    assert mine.request("GET", path) == {"status": "pending"}
    with pytest.raises(UnknownApprovalError):
        other.request("GET", path)  # another agent's token learns nothing of it
    broker.answer(request_id, "approve", {"by": "alice"})
    with pytest.raises(UnknownApprovalError):
        other.request("GET", path)
    answer = mine.request("GET", path)
    assert answer["status"] == "approved"
    assert mine.request("GET", path) == {"status": "consumed"}  # handed out once
    with pytest.raises(InvalidTokenError):  # no access token: its typ and aud are not one's
        Verifier(KeySet.from_dict(broker.client.jwks())).verify(answer["elevation_token"])

    keys = KeySet.from_dict(broker.client.jwks())
    agent = Agent.from_token(token, verifier=Verifier(keys))
    context = ApprovalContext("app.delete_customer", arguments)
    waiting = ElevationWaiting(broker.client, agent, "delete:customer", context, timeout=5,
                               issuer=agent.claims.issuer if agent.claims else "")  # fmt: skip
    waiting.request_id = request_id
    first = waiting._settle(answer["elevation_token"], "alice")
    assert first.approved, first.why
    again = waiting._settle(answer["elevation_token"], "alice")
    assert not again.approved and "used already" in again.why
    other_call = ElevationWaiting(
        broker.client, agent, "delete:customer",
        ApprovalContext("app.delete_customer", {"customer_id": "c-8", "hard": False}),
        timeout=5, issuer=waiting.issuer,
    )  # fmt: skip
    other_call.request_id = request_id
    refused = other_call._settle(answer["elevation_token"], "alice")
    assert not refused.approved and "function or arguments" in refused.why


# --- the broker's side, on its own store --------------------------------------------------


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Any]:
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    yield store
    store.close()


def _claims(key: SigningKey, agent: str = "SupportBot") -> Any:
    token = Issuer(key).issue(agent, ["read:orders"]).token
    return Verifier(KeySet([_public(key)])).verify(token)


def _public(key: SigningKey) -> Any:
    return KeySet.from_dict({"keys": [_jwk(key)]})[key.kid]


def _jwk(key: SigningKey) -> dict[str, Any]:
    from agentsudo_tokens.tokens.keys import PublicKey

    return PublicKey.from_object(key.key.public_key(), kid=key.kid).to_jwk()


def _file(store: Any, claims: Any, **extra: Any) -> ApprovalRequest:
    options: dict[str, Any] = {
        "scope": "delete:customer",
        "function": "app.delete_customer",
        "arguments": canonical_arguments({"customer_id": "c-42"}),
        "reason": None,
        "timeout": 60,
        "may_ask": True,
    }
    return file_elevation(store, claims, **{**options, **extra})


def test_an_approval_altered_after_it_was_given_mints_nothing(state: Any) -> None:
    key = SigningKey.generate()
    claims = _claims(key)
    request = _file(state, claims)
    approve(state, request.id, by="alice")
    stored = json.loads(state.get(REQUEST + request.id))
    stored["arguments"] = {"customer_id": "c-1"}  # consistent again, but not what was approved
    stored["arguments_sha256"] = text_digest(canonical_arguments(stored["arguments"]))
    stored["binding"] = binding(
        request.id, request.agent, request.jti, request.scope, request.function,
        stored["arguments_sha256"],
    )  # fmt: skip
    state.put(REQUEST + request.id, json.dumps(stored), expires_at=time.time() + 600)
    answer = elevation_status(state, claims, request.id, key=key, issuer="agentsudo")
    assert answer["status"] == "denied" and "elevation_token" not in answer


def test_a_denial_and_an_inconsistent_request_mint_nothing(state: Any) -> None:
    key = SigningKey.generate()
    claims = _claims(key)
    denied = _file(state, claims)
    deny(state, denied.id, by="bob", reason="no")
    answer = elevation_status(state, claims, denied.id, key=key, issuer="agentsudo")
    assert answer == {"status": "denied", "by": "bob", "reason": "no"}
    broken = _file(state, claims)
    stored = json.loads(state.get(REQUEST + broken.id))
    stored["arguments"] = {"customer_id": "c-1"}  # binding left as it was
    state.put(REQUEST + broken.id, json.dumps(stored), expires_at=time.time() + 600)
    with pytest.raises(UnknownApprovalError):
        approve(state, broken.id)  # not shown, so not approvable
    assert elevation_status(state, claims, broken.id, key=key, issuer="agentsudo")["status"] == (
        "denied"
    )


def test_pending_bound_and_askable_scopes(state: Any) -> None:
    claims = _claims(SigningKey.generate())
    for _ in range(3):
        _file(state, claims, max_pending=3)
    with pytest.raises(TooManyPendingError):
        _file(state, claims, max_pending=3)
    with pytest.raises(PermissionDeniedError):
        _file(state, claims, may_ask=False)


# --- the elevation token's verifier, with hostile tokens ----------------------------------

CALL = {"function": "app.delete_customer", "arguments": canonical_arguments({"id": "c-42"})}
EXPECTED = {
    "issuer": "agentsudo",
    "agent": "SupportBot",
    "scope": "delete:customer",
    "request_id": "apr_" + "a" * 22,
    "token_jti": "jti-of-the-asking-token",
    **CALL,
}


def _elevation(key: SigningKey, header: dict[str, Any] | None = None, **claims: Any) -> str:
    now = int(time.time())
    base = {
        "iss": "agentsudo",
        "aud": ELEVATION_AUDIENCE,
        "sub": "SupportBot",
        "iat": now,
        "nbf": now,
        "exp": now + 60,
        "jti": "e-1",
        "elevated_scope": "delete:customer",
        "approver": "alice",
        "request_id": EXPECTED["request_id"],
        "call_sha256": call_digest(CALL["function"], CALL["arguments"]),
        "token_jti": EXPECTED["token_jti"],
    }
    base.update(claims)
    head = header or {"alg": key.alg, "kid": key.kid, "typ": ELEVATION_TYPE}
    return encode(head, {k: v for k, v in base.items() if v is not None}, key)


def test_a_good_elevation_token_verifies() -> None:
    key = SigningKey.generate()
    keys = KeySet.from_dict({"keys": [_jwk(key)]})
    claims = verify_elevation(_elevation(key), keys, **EXPECTED)
    assert claims["approver"] == "alice"


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"arguments": canonical_arguments({"id": "c-1"})}, "function or arguments"),
        ({"function": "app.drop_everything"}, "function or arguments"),
        ({"agent": "OtherBot"}, "another agent"),
        ({"scope": "delete:everything"}, "another elevated scope"),
        ({"request_id": "apr_" + "b" * 22}, "another request id"),
        ({"token_jti": "another-token"}, "another token jti"),
        ({"issuer": "someone-else"}, "another iss"),
    ],
)
def test_an_elevation_token_for_another_call_is_refused(change: dict[str, Any], why: str) -> None:
    key = SigningKey.generate()
    keys = KeySet.from_dict({"keys": [_jwk(key)]})
    with pytest.raises(PermissionDeniedError, match=why):
        verify_elevation(_elevation(key), keys, **{**EXPECTED, **change})


def test_hostile_elevation_tokens_are_refused() -> None:
    key, stranger = SigningKey.generate(), SigningKey.generate()
    keys = KeySet.from_dict({"keys": [_jwk(key)]})
    now = int(time.time())
    hostile = {
        "another key": _elevation(stranger),
        "a key it names but did not sign with": _elevation(
            stranger, {"alg": key.alg, "kid": key.kid, "typ": ELEVATION_TYPE}
        ),
        "an access token's typ": _elevation(key, {"alg": key.alg, "kid": key.kid, "typ": "JWT"}),
        "alg none": _elevation(key, {"alg": "none", "kid": key.kid, "typ": ELEVATION_TYPE}),
        "expired": _elevation(key, iat=now - 120, nbf=now - 120, exp=now - 60),
        "too long a life": _elevation(key, exp=now + 3600),
        "another audience": _elevation(key, aud="agentsudo"),
        "a claim too many": _elevation(key, scope="**"),
        "a claim missing": _elevation(key, approver=None),
        "a string time": _elevation(key, exp=str(now + 60)),
        "not a token": "not.a.token",
        "nothing": None,
    }
    for name, token in hostile.items():
        with pytest.raises(PermissionDeniedError):
            verify_elevation(token, keys, **EXPECTED)
            pytest.fail(f"accepted: {name}")
    good = _elevation(key)
    head, body, signature = good.split(".")
    other_body = _elevation(key, sub="OtherBot").split(".")[1]
    with pytest.raises(PermissionDeniedError, match="bad signature"):
        verify_elevation(f"{head}.{other_body}.{signature}", keys, **EXPECTED)
    assert canonical_json([1]) == "[1]"


def test_in_dev_mode_any_scope_may_be_asked_and_this_user_answers(tmp_path: Path) -> None:
    """``agentsudo serve --dev``: the same code asks; the laptop's user is the admin."""
    assert sh("keys", "init", "--keys-dir", str(tmp_path / "keys"), cwd=tmp_path).returncode == 0
    sock = tmp_path / "dev.sock"
    log = (tmp_path / "broker.log").open("w")
    process = subprocess.Popen(
        [AGENTSUDO, "serve", "--dev", "--keys-dir", str(tmp_path / "keys"), "--socket", str(sock)],
        stderr=log, cwd=tmp_path,
    )  # fmt: skip
    try:
        client = BrokerClient(f"unix://{sock}")
        deadline = time.monotonic() + WAIT
        while "listening on" not in (tmp_path / "broker.log").read_text():
            assert process.poll() is None and time.monotonic() < deadline, "no dev broker"
            time.sleep(0.05)
        token = str(client.issue("LaptopBot", scopes=["read:orders"])["token"])
        env = {**os.environ, "AGENTSUDO_BROKER": client.address, "AGENTSUDO_TOKEN": token}
        for name in ("AGENTSUDO_JWKS", "AGENTSUDO_STORE", "AGENTSUDO_KEYS_DIR"):
            env.pop(name, None)
        agent = subprocess.Popen(
            [sys.executable, "-c", AGENT, "c-5", str(WAIT)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            cwd=home(tmp_path),
        )  # fmt: skip
        try:
            while not (found := client.request("GET", "/v1/approvals")["approvals"]):
                assert agent.poll() is None and time.monotonic() < deadline, "no request came"
                time.sleep(0.05)
            assert found[0]["agent"] == "LaptopBot" and found[0]["scope"] == "delete:customer"
            client.request("POST", f"/v1/approvals/{found[0]['id']}/approve", {})
            done = finished(agent)
        finally:
            stop(agent)
        assert done == {"result": "deleted c-5", "runs": ["c-5"]}
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


ASYNC_AGENT = """
import asyncio, json, os, sys
from agentsudo_tokens import Agent, ask, sudo
from agentsudo_tokens.errors import PermissionDeniedError

runs = []

@sudo(scope="delete:customer", on_deny=ask(timeout=float(sys.argv[2]), poll_interval=0.05))
async def delete_customer(customer_id):
    runs.append(customer_id)
    return f"deleted {customer_id}"

async def main():
    with Agent.from_token(os.environ["AGENTSUDO_TOKEN"]).start_session():
        ticks = 0
        async def tick():  # the event loop keeps running while the call waits
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)
        ticker = asyncio.create_task(tick())
        try:
            result = {"result": await delete_customer(sys.argv[1])}
        except PermissionDeniedError as exc:
            result = {"refused": str(exc)}
        ticker.cancel()
        print(json.dumps({**result, "runs": runs, "ticked": ticks > 1}), flush=True)

asyncio.run(main())
"""


def test_an_async_call_waits_without_blocking_its_loop(broker: Broker) -> None:
    env = {**os.environ, "AGENTSUDO_BROKER": broker.address, "AGENTSUDO_TOKEN": broker.token()}
    for name in ("AGENTSUDO_JWKS", "AGENTSUDO_STORE", "AGENTSUDO_KEYS_DIR"):
        env.pop(name, None)
    agent = subprocess.Popen(
        [sys.executable, "-c", ASYNC_AGENT, "c-3", str(WAIT)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        cwd=home(broker.root),
    )  # fmt: skip
    try:
        shown = broker.waiting()
        assert shown["arguments"] == {"customer_id": "c-3"}
        broker.answer(shown["id"], "approve")
        done = finished(agent)
    finally:
        stop(agent)
    assert done == {"result": "deleted c-3", "runs": ["c-3"], "ticked": True}
