"""Elevation: ``on_deny="ask"``, a human answers through the store, the call proceeds once.

On SQLite and on a real Redis: approve, deny, timeout, single use and binding
to the exact call, the webhook, async callers, and an agent in one process
approved from another.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest_store import Worker

from agentsudo_cli.main import cli
from agentsudo_tokens import Agent, Issuer, KeyDirectory, PermissionDeniedError, sudo
from agentsudo_tokens.errors import ConfigError, UnknownApprovalError
from agentsudo_tokens.guard.decision import ApprovalContext, Policy
from agentsudo_tokens.guard.elevation import Ask, _Waiting, ask
from agentsudo_tokens.state import Store
from agentsudo_tokens.state.approvals import (
    ANSWER,
    REQUEST,
    ApprovalRequest,
    approve,
    arguments_digest,
    deny,
    pending,
)

AGENTSUDO = Path(sys.executable).parent / "agentsudo"
SUPPORT = Agent("SupportBot", ["read:orders"])
FAST = 0.02  # seconds between polls in these tests


def answer_when_asked(
    store: Store, respond: Callable[[Store, ApprovalRequest], object], *, count: int = 1
) -> threading.Thread:
    """A human in another thread: wait for ``count`` requests, answer each with ``respond``."""

    def human() -> None:
        seen: set[str] = set()
        deadline = time.monotonic() + 10
        while len(seen) < count and time.monotonic() < deadline:
            for request in pending(store):
                if request.id not in seen:
                    seen.add(request.id)
                    respond(store, request)
            time.sleep(0.01)

    thread = threading.Thread(target=human, daemon=True)
    thread.start()
    return thread


def _events(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.agentsudo for r in caplog.records if hasattr(r, "agentsudo")]  # type: ignore[attr-defined]


# -- approve, deny, timeout ------------------------------------------------------------------


def test_an_approved_call_proceeds_once(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agentsudo")
    seen: list[ApprovalRequest] = []

    def yes(store: Store, request: ApprovalRequest) -> None:
        seen.append(request)
        approve(store, request.id, by="alice")

    @sudo(scope="write:refunds", on_deny=ask(timeout=10, store=store, poll_interval=FAST))
    def process_refund(order_id: str, amount: int, currency: str = "USD") -> str:
        return f"refunded {amount} {currency} on {order_id}"

    human = answer_when_asked(store, yes)
    with SUPPORT.start_session():
        assert process_refund("o-1", amount=5000) == "refunded 5000 USD on o-1"
    human.join()
    (request,) = seen
    assert request.agent == "SupportBot" and request.scope == "write:refunds"
    assert request.function.endswith("process_refund")
    assert dict(request.arguments) == {"amount": "5000", "currency": '"USD"', "order_id": '"o-1"'}
    assert request.arguments_json == '{"amount":5000,"currency":"USD","order_id":"o-1"}'
    assert request.reason == "not granted"
    assert request.id.startswith("apr_") and len(request.id) >= 4 + 22
    assert pending(store) == []  # settled: gone from the list
    assert store.get(REQUEST + request.id) is None and store.get(ANSWER + request.id) is None
    approved = [e for e in _events(caplog) if e["outcome"] == "approved"]
    assert len(approved) == 1 and "by alice" in approved[0]["reason"]


def test_a_denied_call_raises(store: Store) -> None:
    @sudo(scope="write:refunds", on_deny=ask(timeout=10, store=store, poll_interval=FAST))
    def process_refund(order_id: str, amount: int) -> str:
        return "refunded"

    human = answer_when_asked(
        store, lambda s, r: deny(s, r.id, by="bob", reason="too large for a bot")
    )
    with SUPPORT.start_session(), pytest.raises(PermissionDeniedError) as refused:
        process_refund("o-1", 5000)
    human.join()
    message = str(refused.value)
    assert "lacks scope 'write:refunds'" in message
    assert "denied by bob (too large for a bot; apr_" in message
    assert refused.value.agent == "SupportBot" and refused.value.scope == "write:refunds"


def test_no_answer_before_the_timeout_denies(store: Store) -> None:
    @sudo(scope="write:refunds", on_deny=ask(timeout=0.3, store=store, poll_interval=FAST))
    def process_refund() -> str:
        return "refunded"

    started = time.monotonic()
    with (
        SUPPORT.start_session(),
        pytest.raises(PermissionDeniedError, match=r"no answer within 0.3s"),
    ):
        process_refund()
    assert 0.3 <= time.monotonic() - started < 2
    assert pending(store) == []
    late = [json.loads(v)["id"] for v in store.items(REQUEST).values()]
    assert late == []  # the request is closed; a late answer finds nothing


def test_a_late_answer_is_refused(store: Store) -> None:
    waiting = _Waiting(ask(timeout=0.1), store, SUPPORT, "write:refunds", ApprovalContext("f", {}))
    waiting.start()
    time.sleep(0.15)
    assert waiting.expire().approved is False
    with pytest.raises(UnknownApprovalError):
        approve(store, waiting.request.id)


def test_an_answer_just_before_the_timeout_stands(store: Store) -> None:
    waiting = _Waiting(ask(timeout=5), store, SUPPORT, "write:refunds", ApprovalContext("f", {}))
    waiting.start()
    approve(store, waiting.request.id)
    assert waiting.expire().approved is True  # the answer came first: it wins


# -- single use, and bound to the exact call -------------------------------------------------


def _started(store: Store, agent: Agent, arguments: dict[str, Any]) -> _Waiting:
    context = ApprovalContext("mod.process_refund", arguments)
    waiting = _Waiting(ask(timeout=10), store, agent, "write:refunds", context)
    waiting.start()
    return waiting


def test_an_approval_is_single_use(store: Store) -> None:
    waiting = _started(store, SUPPORT, {"amount": 50})
    approve(store, waiting.request.id)
    first = waiting.poll()
    assert first is not None and first.approved
    again = waiting.settle()  # the answer was taken: nothing is left for a second use
    assert again.approved is False and "no usable answer" in again.why


@pytest.mark.parametrize(
    ("agent", "scope", "function", "arguments"),
    [
        (SUPPORT, "write:refunds", "mod.process_refund", {"order_id": "o-1", "amount": 5000}),
        (SUPPORT, "write:refunds", "mod.delete_orders", {"order_id": "o-1", "amount": 50}),
        (SUPPORT, "admin:all", "mod.process_refund", {"order_id": "o-1", "amount": 50}),
        (
            Agent("EvilBot", ["x:y"]),
            "write:refunds",
            "mod.process_refund",
            {"order_id": "o-1", "amount": 50},
        ),
    ],
    ids=["other arguments", "other function", "other scope", "other agent"],
)
def test_an_approval_cannot_serve_another_call(
    store: Store, agent: Agent, scope: str, function: str, arguments: dict[str, Any]
) -> None:
    original = _started(store, SUPPORT, {"order_id": "o-1", "amount": 50})
    approve(store, original.request.id)
    replay = _Waiting(ask(timeout=10), store, agent, scope, ApprovalContext(function, arguments))
    replay.request = original.request  # claim the approved request's id for another call
    verdict = replay.settle()
    assert verdict.approved is False and "does not match this call" in verdict.why
    assert original.settle().approved is False  # and the answer is spent: fail closed


def test_arguments_changed_while_waiting_are_refused(store: Store) -> None:
    order = {"amount": 50}
    waiting = _started(store, SUPPORT, {"order": order})
    approve(store, waiting.request.id)
    order["amount"] = 5000  # mutated after the human looked
    verdict = waiting.poll()
    assert verdict is not None and verdict.approved is False
    assert "does not match this call" in verdict.why


def test_one_answer_only(store: Store) -> None:
    waiting = _started(store, SUPPORT, {})
    approve(store, waiting.request.id)
    with pytest.raises(UnknownApprovalError, match="already answered"):
        deny(store, waiting.request.id)
    with pytest.raises(UnknownApprovalError, match="already answered"):
        approve(store, waiting.request.id)


@pytest.mark.parametrize("bad", ["", "apr_short", "../etc", "apr_" + "x" * 200, "-rf"])
def test_unknown_request_ids(store: Store, bad: str) -> None:
    with pytest.raises(UnknownApprovalError):
        approve(store, bad)
    with pytest.raises(UnknownApprovalError):
        approve(store, "apr_" + "A" * 22)  # well-formed, never issued


def test_request_ids_are_unguessable(store: Store) -> None:
    ids = {_started(store, SUPPORT, {"n": n}).request.id for n in range(50)}
    assert len(ids) == 50
    assert all(i.startswith("apr_") and len(i) == 26 for i in ids)  # 16 random bytes


def test_the_arguments_digest_is_canonical() -> None:
    assert arguments_digest({"a": 1, "b": [1, 2]}) == arguments_digest({"b": [1, 2], "a": 1})
    assert arguments_digest({"a": 1}) != arguments_digest({"a": "1"})
    assert arguments_digest({"a": 1.0}) != arguments_digest({"a": "1.0"})

    class Opaque:
        def __repr__(self) -> str:
            return "Opaque()"

    assert arguments_digest({"x": Opaque()}) == arguments_digest({"x": Opaque()})
    assert arguments_digest({"x": Opaque()}) != arguments_digest({"x": "Opaque()"})
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    assert len(arguments_digest({"x": cyclic, "n": float("nan")})) == 64  # repr fallback


# -- the policy ------------------------------------------------------------------------------


def test_ask_string_uses_the_configured_store(
    store: Store, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTSUDO_STORE", store_url)
    policy = Policy("ask")
    assert isinstance(policy.elevation, Ask) and policy.elevation.timeout == 300

    @sudo(scope="write:refunds", on_deny="ask")
    def process_refund() -> str:
        return "refunded"

    human = answer_when_asked(store, lambda s, r: approve(s, r.id))
    with SUPPORT.start_session():
        assert process_refund() == "refunded"
    human.join()


def test_no_session_is_refused_without_asking(store: Store) -> None:
    @sudo(scope="write:refunds", on_deny=ask(timeout=5, store=store))
    def process_refund() -> str:
        return "refunded"

    with pytest.raises(PermissionDeniedError, match="no active agent session"):
        process_refund()
    assert store.items(REQUEST) == {}


@pytest.mark.parametrize(
    "options",
    [
        {"timeout": 0},
        {"timeout": -1},
        {"timeout": True},
        {"poll_interval": 0},
        {"notify": "file:///etc/passwd"},
        {"notify": 42},
        {"store": 42},
    ],
)
def test_bad_ask_options_fail_at_decoration(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        ask(**options)


def test_a_webhook_url_is_never_shown() -> None:
    policy = ask(notify="https://hooks.slack.com/services/T000/B000/SECRET")
    assert "SECRET" not in repr(policy)


# -- async -----------------------------------------------------------------------------------


def test_an_async_call_waits_without_blocking_the_loop(store: Store) -> None:
    @sudo(scope="write:refunds", on_deny=ask(timeout=10, store=store, poll_interval=FAST))
    async def process_refund(amount: int) -> str:
        return f"refunded {amount}"

    async def ticker(ticks: list[float]) -> None:
        for _ in range(20):
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    def slow_yes(store: Store, request: ApprovalRequest) -> None:
        time.sleep(0.3)
        approve(store, request.id)

    async def main() -> tuple[str, list[float]]:
        ticks: list[float] = []
        async with SUPPORT.start_session():
            result, _ = await asyncio.gather(process_refund(70), ticker(ticks))
        return result, ticks

    human = answer_when_asked(store, slow_yes)
    result, ticks = asyncio.run(main())
    human.join()
    assert result == "refunded 70"
    assert len(ticks) == 20 and ticks[-1] - ticks[0] < 0.5  # ticked while the human thought


def test_an_async_call_can_be_denied_and_time_out(store: Store) -> None:
    @sudo(scope="write:refunds", on_deny=ask(timeout=0.2, store=store, poll_interval=FAST))
    async def process_refund() -> str:
        return "refunded"

    async def main() -> None:
        async with SUPPORT.start_session():
            with pytest.raises(PermissionDeniedError, match="no answer within"):
                await process_refund()

    asyncio.run(main())


def test_a_cancelled_wait_closes_its_request(store: Store) -> None:
    @sudo(scope="write:refunds", on_deny=ask(timeout=10, store=store, poll_interval=FAST))
    async def process_refund() -> str:
        return "refunded"

    async def main() -> None:
        async with SUPPORT.start_session():
            task = asyncio.create_task(process_refund())
            while not pending(store):
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    assert pending(store) == []


# -- the webhook -----------------------------------------------------------------------------


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            length = int(self.headers["Content-Length"])
            body = json.loads(self.rfile.read(length))
            body["content_type"] = self.headers["Content-Type"]
            received.append(body)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()


def test_the_webhook_gets_the_request_as_json(
    store: Store, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = webhook

    @sudo(
        scope="write:refunds",
        on_deny=ask(timeout=10, store=store, poll_interval=FAST, notify=url),
    )
    def process_refund(order_id: str, amount: int) -> str:
        return "refunded"

    human = answer_when_asked(store, lambda s, r: approve(s, r.id))
    with SUPPORT.start_session():
        assert process_refund("o-9", 900) == "refunded"
    human.join()
    (posted,) = received
    assert posted["content_type"] == "application/json"
    request = posted["agentsudo"]
    assert posted["text"].startswith("agentsudo: agent 'SupportBot' asks for 'write:refunds'")
    assert f"agentsudo approve {request['id']}" in posted["text"]
    assert request["agent"] == "SupportBot" and request["scope"] == "write:refunds"
    assert request["arguments"] == {"order_id": "o-9", "amount": 900}
    assert len(request["arguments_sha256"]) == 64


def test_a_failed_notification_still_waits_and_times_out(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    from conftest_store import free_port

    caplog.set_level(logging.WARNING, logger="agentsudo")
    url = f"http://127.0.0.1:{free_port()}/nobody-listens"

    @sudo(
        scope="write:refunds", on_deny=ask(timeout=0.3, store=store, poll_interval=FAST, notify=url)
    )
    def process_refund() -> str:
        return "refunded"

    with SUPPORT.start_session(), pytest.raises(PermissionDeniedError, match="no answer within"):
        process_refund()
    assert any("notification failed" in r.getMessage() for r in caplog.records)
    assert all("nobody-listens" not in r.getMessage() for r in caplog.records)


def test_a_callable_notifier(store: Store) -> None:
    told: list[ApprovalRequest] = []

    def tell(request: ApprovalRequest) -> None:
        told.append(request)
        threading.Timer(0.05, approve, (store, request.id)).start()

    @sudo(
        scope="write:refunds",
        on_deny=ask(timeout=5, store=store, poll_interval=FAST, notify=tell),
    )
    def process_refund() -> str:
        return "refunded"

    with SUPPORT.start_session():
        assert process_refund() == "refunded"
    assert len(told) == 1


# -- the command line ------------------------------------------------------------------------


def test_cli_lists_approves_and_denies(store: Store, store_url: str, tmp_path: Path) -> None:
    env = {"AGENTSUDO_STORE": store_url, "AGENTSUDO_KEYS_DIR": str(tmp_path)}
    runner = CliRunner()
    empty = runner.invoke(cli, ["approvals"], env=env)
    assert empty.exit_code == 0 and empty.stdout == ""
    assert "no approval requests are waiting" in empty.stderr
    first = _started(store, SUPPORT, {"order_id": "o-1", "amount": 5000})
    second = _started(store, Agent("OpsBot", ["read:x"]), {"host": "db-1"})
    listed = runner.invoke(cli, ["approvals"], env=env)
    lines = listed.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{first.request.id}  SupportBot  write:refunds  ")
    assert 'mod.process_refund(amount=5000, order_id="o-1")' in lines[0]
    as_json = json.loads(runner.invoke(cli, ["approvals", "--json"], env=env).stdout)
    assert [r["id"] for r in as_json] == [first.request.id, second.request.id]

    approved = runner.invoke(cli, ["approve", first.request.id], env=env)
    assert approved.exit_code == 0, approved.stderr
    assert approved.stdout.startswith(f"approved: {first.request.id}: agent 'SupportBot'")
    assert first.poll() is not None
    denied = runner.invoke(cli, ["deny", second.request.id, "--reason", "no", "--json"], env=env)
    assert json.loads(denied.stdout)["answer"] == "denied"
    verdict = second.poll()
    assert verdict is not None and not verdict.approved and "(no; " in verdict.why

    again = runner.invoke(cli, ["approve", first.request.id], env=env)
    assert again.exit_code == 1 and "no approval request" in again.stderr


# -- across processes ------------------------------------------------------------------------


@pytest.mark.parametrize("answer", ["approve", "deny"])
def test_an_agent_process_waits_for_a_human_in_another_process(
    answer: str, store: Store, store_url: str, key_dir: KeyDirectory, issuer: Issuer
) -> None:
    token = issuer.issue("SupportBot", "read:orders").token
    agent = Worker("elevate", store_url, str(key_dir.jwks_path), token, "20")
    try:
        deadline = time.monotonic() + 15
        while not (waiting := pending(store)):
            assert time.monotonic() < deadline, "the agent process made no request"
            assert agent.process.poll() is None, (
                agent.process.stderr and agent.process.stderr.read()
            )
            time.sleep(0.02)
        (request,) = waiting
        assert request.agent == "SupportBot" and request.scope == "write:refunds"
        assert request.function.endswith("refund")
        assert dict(request.arguments) == {"amount": "5000", "order_id": '"o-77"'}
        assert request.jti is not None
        human = subprocess.run(
            [str(AGENTSUDO), answer, request.id, "--store", store_url],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert human.returncode == 0, human.stderr
        outcome = agent.read()
    finally:
        agent.close()
    if answer == "approve":
        assert outcome == "proceeded: refunded 5000 on o-77"
    else:
        assert outcome.startswith("refused: ") and "denied by " in outcome
