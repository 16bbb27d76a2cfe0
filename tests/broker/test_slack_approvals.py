"""Slack approvals end to end: a real broker posts Block Kit messages to a local stand-in for
Slack, and answers clicks signed as Slack signs them, sent to its TCP listener.

The waiting agent is a real process (``AGENTSUDO_BROKER``, ``AGENTSUDO_TOKEN``); the
admins are broker credentials and Slack users mapped to them; this uid obtains the
agent's tokens and is no admin. Every refusal leaves the request waiting.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from slack_standin import (
    APPROVE,
    DENY,
    HOOK_SECRET,
    SIGNING_SECRET,
    WAIT,
    SlackBroker,
    SlackStandIn,
    form,
    payload,
    signed,
)

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

ALICE, BOB, MALLORY = "U0ALICE1", "U0BOB222", "U0MALLORY"
USERS = {ALICE: "alice", BOB: "admin"}  # MALLORY is in Slack, not in the policy


@pytest.fixture(scope="module")
def slack() -> Iterator[SlackStandIn]:
    standin = SlackStandIn()
    yield standin
    standin.close()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, slack: SlackStandIn) -> Iterator[SlackBroker]:
    running = SlackBroker(tmp_path_factory.mktemp("slack") / "broker", slack.url, USERS)
    yield running
    running.stop()


AGENT = """
import json, os, sys
from agentsudo_tokens import Agent, ask, sudo
from agentsudo_tokens.errors import PermissionDeniedError

@sudo(scope="delete:customer", on_deny=ask(timeout=120, poll_interval=0.05))
def delete_customer(customer_id, hard=False):
    return f"deleted {customer_id}"

with Agent.from_token(os.environ["AGENTSUDO_TOKEN"]).start_session():
    try:
        print(json.dumps({"result": delete_customer(sys.argv[1])}), flush=True)
    except PermissionDeniedError as exc:
        print(json.dumps({"refused": str(exc)}), flush=True)
"""


def start_agent(broker: SlackBroker, customer: str) -> subprocess.Popen[str]:
    token = str(broker.client.issue("SupportBot")["token"])
    env = {**os.environ, "AGENTSUDO_BROKER": broker.address, "AGENTSUDO_TOKEN": token}
    for name in ("AGENTSUDO_JWKS", "AGENTSUDO_STORE", "AGENTSUDO_KEYS_DIR"):
        env.pop(name, None)
    home = broker.root / "agent-home"
    home.mkdir(exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-c", AGENT, customer],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=home,
    )  # fmt: skip


def waiting_id(broker: SlackBroker, customer: str) -> str:
    """The id of the request filed for ``customer`` (waits for the agent to file it)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        for item in broker.admin.request("GET", "/v1/approvals")["approvals"]:
            if item["arguments"].get("customer_id") == customer:
                return str(item["id"])
        time.sleep(0.05)
    raise AssertionError(f"no request for {customer} came")


def outcome(agent: subprocess.Popen[str]) -> dict[str, Any]:
    try:
        out, err = agent.communicate(timeout=WAIT)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate(timeout=WAIT)
    assert agent.returncode == 0, err
    return dict(json.loads(out.strip().splitlines()[-1]))


def click(
    broker: SlackBroker,
    slack: SlackStandIn,
    user: str,
    action: str,
    request_id: str,
    reply: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """A signed click, as Slack sends it; its ``response_url`` on the stand-in."""
    url = f"{slack.origin}/actions/{reply or request_id}"
    body = form(payload(user, action, request_id, url))
    return broker.click(body, signed(body))


def test_a_filed_request_is_posted_whole_and_a_signed_approve_runs_the_waiting_call(
    broker: SlackBroker, slack: SlackStandIn
) -> None:
    agent = start_agent(broker, "c-42")
    try:
        request_id = waiting_id(broker, "c-42")
        message = slack.message_for(request_id)
        blocks = message["blocks"]
        text = json.dumps(blocks)
        for shown in ("SupportBot", "delete:customer", "delete_customer", "c-42", "Reason"):
            assert shown in text
        buttons = next(block for block in blocks if block["type"] == "actions")["elements"]
        assert [(b["action_id"], b["value"]) for b in buttons] == [
            (APPROVE, request_id),
            (DENY, request_id),
        ]
        assert request_id in broker.pending()
        status, answer = click(broker, slack, ALICE, APPROVE, request_id)
        assert status == 200, answer
        assert answer["replace_original"] is True
        assert answer["text"].startswith("Approved by alice")
        assert outcome(agent) == {"result": "deleted c-42"}
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate(timeout=WAIT)
    event = broker.audited("elevation_answered", request=request_id)
    assert event["approved"] is True
    assert event["by"] == "alice via slack"
    assert event["slack_user"] == ALICE
    assert event["caller"] == "credential:alice"
    replaced = slack.posted(f"/actions/{request_id}", "Approved by alice")
    assert replaced["replace_original"] is True
    assert request_id not in broker.pending()


def test_a_signed_deny_refuses_the_waiting_call(broker: SlackBroker, slack: SlackStandIn) -> None:
    agent = start_agent(broker, "c-43")
    request_id = waiting_id(broker, "c-43")
    status, answer = click(broker, slack, BOB, DENY, request_id)
    assert status == 200, answer
    assert answer["text"].startswith("Denied by admin")
    refused = outcome(agent)
    assert "refused" in refused and "denied in Slack by admin" in refused["refused"]
    event = broker.audited("elevation_answered", request=request_id)
    assert (event["approved"], event["by"], event["caller"]) == (
        False,
        "admin via slack",
        "credential:admin",
    )


def test_a_wrongly_signed_click_is_refused_and_changes_nothing(
    broker: SlackBroker, slack: SlackStandIn
) -> None:
    request_id = broker.file_request("c-50")
    body = form(payload(ALICE, APPROVE, request_id, None))
    status, answer = broker.click(body, signed(body, secret="another-apps-signing-secret-0000"))
    assert status == 401 and answer["type"].endswith(":bad-signature"), answer
    assert request_id in broker.pending()
    refused = broker.audited("broker_refused", action="POST /v1/slack/interactions")
    assert refused["address"].startswith("ip:127.0.0.1")


@pytest.mark.parametrize(
    "change",
    ["body altered after signing", "signature of another timestamp", "no signature",
     "no timestamp", "signature in upper case", "v1 signature", "timestamp not a number"],
)  # fmt: skip
def test_a_click_whose_signature_does_not_hold_is_refused(
    broker: SlackBroker, slack: SlackStandIn, change: str
) -> None:
    request_id = broker.file_request(f"c-sig-{len(change)}")
    body = form(payload(ALICE, APPROVE, request_id, None))
    headers = signed(body)
    if change == "body altered after signing":
        body = form(payload(ALICE, APPROVE, request_id, "https://hooks.slack.com/x"))
    elif change == "signature of another timestamp":
        headers["X-Slack-Request-Timestamp"] = str(int(headers["X-Slack-Request-Timestamp"]) - 1)
    elif change == "no signature":
        del headers["X-Slack-Signature"]
    elif change == "no timestamp":
        del headers["X-Slack-Request-Timestamp"]
    elif change == "signature in upper case":
        headers["X-Slack-Signature"] = "v0=" + headers["X-Slack-Signature"][3:].upper()
    elif change == "v1 signature":
        headers["X-Slack-Signature"] = "v1=" + headers["X-Slack-Signature"][3:]
    else:
        headers["X-Slack-Request-Timestamp"] = "1e9"
    status, answer = broker.click(body, headers)
    assert status == 401 and answer["type"].endswith(":bad-signature"), answer
    assert request_id in broker.pending()


@pytest.mark.parametrize("seconds", [-301, -3600, 301, 10**9])
def test_a_stale_or_future_timestamp_is_refused_even_correctly_signed(
    broker: SlackBroker, slack: SlackStandIn, seconds: int
) -> None:
    request_id = broker.file_request(f"c-stale{seconds}")
    body = form(payload(ALICE, APPROVE, request_id, None))
    status, answer = broker.click(body, signed(body, at=time.time() + seconds))
    assert status == 401 and answer["type"].endswith(":stale-timestamp"), answer
    assert "within 300s" in answer["detail"]
    assert request_id in broker.pending()


def test_a_timestamp_within_five_minutes_is_accepted(
    broker: SlackBroker, slack: SlackStandIn
) -> None:
    request_id = broker.file_request("c-old-but-fresh")
    body = form(payload(ALICE, DENY, request_id, None))
    status, answer = broker.click(body, signed(body, at=time.time() - 280))
    assert status == 200, answer


def test_a_replayed_click_is_refused(broker: SlackBroker, slack: SlackStandIn) -> None:
    first = broker.file_request("c-replay")
    body = form(payload(ALICE, DENY, first, None))
    headers = signed(body)
    assert broker.click(body, headers)[0] == 200
    status, answer = broker.click(body, headers)  # the very same request, again
    assert status == 409 and answer["type"].endswith(":replayed"), answer
    # a replay is refused before the payload is read: even for an unknown request
    ghost = form(payload(ALICE, APPROVE, "apr_" + "g" * 22, None))
    ghost_headers = signed(ghost)
    assert broker.click(ghost, ghost_headers)[0] == 404
    assert broker.click(ghost, ghost_headers)[0] == 409


def test_a_click_for_an_unknown_request_is_refused_and_audited(
    broker: SlackBroker, slack: SlackStandIn
) -> None:
    unknown = "apr_" + "u" * 22
    status, answer = click(broker, slack, ALICE, APPROVE, unknown)
    assert status == 404 and answer["type"].endswith(":unknown-approval"), answer
    event = broker.audited("broker_refused", request=unknown)
    assert event["slack_user"] == ALICE


def test_a_slack_user_mapped_to_no_admin_is_refused_and_audited(
    broker: SlackBroker, slack: SlackStandIn
) -> None:
    request_id = broker.file_request("c-mallory")
    status, answer = click(broker, slack, MALLORY, APPROVE, request_id)
    assert status == 403 and answer["type"].endswith(":forbidden"), answer
    assert MALLORY in answer["detail"]
    assert request_id in broker.pending()
    event = broker.audited("broker_refused", request=request_id)
    assert event["slack_user"] == MALLORY
    assert not [e for e in broker.events("elevation_answered") if e["request"] == request_id]


def test_a_second_answer_is_refused_and_the_first_stands(
    broker: SlackBroker, slack: SlackStandIn
) -> None:
    agent = start_agent(broker, "c-twice")
    request_id = waiting_id(broker, "c-twice")
    assert click(broker, slack, ALICE, APPROVE, request_id)[0] == 200
    status, answer = click(broker, slack, BOB, DENY, request_id, reply="second")
    assert status == 409 and answer["type"].endswith(":already-answered"), answer
    assert outcome(agent) == {"result": "deleted c-twice"}
    answers = [e for e in broker.events("elevation_answered") if e["request"] == request_id]
    assert [(e["approved"], e["by"]) for e in answers] == [(True, "alice via slack")]


@pytest.mark.parametrize(
    "body",
    [
        b"payload=not-json",
        b"payload={}",
        b"",
        b"other=1",
        b"payload=%7B%7D&payload=%7B%7D",
        b"\xff\xfe",
        form({"type": "view_submission", "user": {"id": ALICE}}),
        form({**payload(ALICE, APPROVE, "apr_" + "m" * 22, None), "actions": []}),
        form({**payload(ALICE, "agentsudo_sudo", "apr_" + "m" * 22, None)}),
        form(payload(ALICE, APPROVE, "not-a-request-id", None)),
        form(payload("alice", APPROVE, "apr_" + "m" * 22, None)),
        form({**payload(ALICE, APPROVE, "apr_" + "m" * 22, None), "user": "U0ALICE1"}),
        b'payload={"type":"block_actions","type":"block_actions"}',
    ],
    ids=["not-json", "empty-object", "empty", "no-payload", "two-payloads", "not-utf8",
         "other-type", "no-action", "unknown-action", "bad-value", "bad-user", "user-string",
         "duplicate-key"],
)  # fmt: skip
def test_a_malformed_signed_payload_is_refused(
    broker: SlackBroker, slack: SlackStandIn, body: bytes
) -> None:
    status, answer = broker.click(body, signed(body))
    assert status == 400 and answer["type"].endswith(":malformed-payload"), answer
    assert "\n" not in answer["detail"]


def test_a_click_that_is_not_a_form_or_too_large_is_refused(
    broker: SlackBroker, slack: SlackStandIn
) -> None:
    body = json.dumps(payload(ALICE, APPROVE, "apr_" + "j" * 22, None)).encode()
    status, answer = broker.click(body, signed(body), content_type="application/json")
    assert status == 415, answer
    big = b"payload=" + b"x" * (200 * 1024)
    status, answer = broker.click(big, signed(big))
    assert status == 413, answer


def test_the_message_escapes_what_the_agent_chose(broker: SlackBroker, slack: SlackStandIn) -> None:
    hostile = "<!channel> *bold* ```done``` <https://evil.example|click> & `x`"
    request_id = broker.file_request("c-hostile", note=hostile, blob="z" * 5000)
    text = json.dumps(slack.message_for(request_id)["blocks"])
    assert "<!channel>" not in text and "<https://" not in text
    assert "&lt;!channel&gt;" in text and "&amp;" in text
    assert "```done```" not in text and "\\\\u0060\\\\u0060\\\\u0060done" in text
    assert "more characters not shown" in text and "the approval covers the call whole" in text
    assert f"agentsudo approvals show {request_id}" in text
    assert "z" * 5000 not in text


def test_the_webhook_url_is_never_logged(broker: SlackBroker) -> None:
    assert HOOK_SECRET not in "".join(broker.lines)
    assert SIGNING_SECRET not in "".join(broker.lines)
    assert SIGNING_SECRET not in (broker.keys / "broker-audit.jsonl").read_text()


def down_url() -> str:
    """A loopback URL nothing listens on (the port was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/services/{HOOK_SECRET}"


def test_slack_down_costs_the_message_only(tmp_path: Path) -> None:
    broker = SlackBroker(tmp_path / "broker", down_url(), USERS)
    try:
        request_id = broker.file_request("c-down")
        failed = broker.audited("elevation_notify_failed", request=request_id)
        assert failed["via"] == "slack" and failed["reason"].startswith("unreachable")
        assert request_id in broker.pending()  # it waits for an admin all the same
        assert broker.client.health() == {"status": "ok"}
    finally:
        broker.stop()
    assert HOOK_SECRET not in "".join(broker.lines)


def test_without_slack_in_the_policy_the_endpoint_refuses(tmp_path: Path) -> None:
    broker = SlackBroker(tmp_path / "broker", down_url(), USERS, slack=False)
    try:
        request_id = broker.file_request("c-none")
        body = form(payload(ALICE, APPROVE, request_id, None))
        status, answer = broker.click(body, signed(body))
        assert status == 404 and "not configured" in answer["detail"], answer
        assert request_id in broker.pending()
    finally:
        broker.stop()


def test_a_click_replayed_to_another_broker_on_the_same_redis_is_refused(
    tmp_path: Path, redis_url: str, slack: SlackStandIn
) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    first = SlackBroker(tmp_path / "first", slack.url, USERS, "--store", redis_url)
    try:
        second = SlackBroker(tmp_path / "second", slack.url, USERS, "--store", redis_url)
        try:
            request_id = first.file_request("c-redis")
            body = form(payload(ALICE, DENY, request_id, None))
            headers = signed(body)
            status, answer = second.click(body, headers)  # filed through one, answered via another
            assert status == 200, answer
            status, answer = first.click(body, headers)
            assert status == 409 and answer["type"].endswith(":replayed"), answer
        finally:
            second.stop()
    finally:
        first.stop()
