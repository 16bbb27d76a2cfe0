"""Slack's signature and payload checks alone (``broker.slack_request``), and the Block Kit
message (``broker.slack_message``): Slack's own worked example, the window's edges, and
what an agent could put in a message."""

from __future__ import annotations

import json
import time

import pytest
from slack_standin import form, payload

from agentsudo_tokens.broker.slack_message import (
    MAX_VALUE,
    answered_message,
    code,
    request_message,
)
from agentsudo_tokens.broker.slack_request import (
    WINDOW,
    SlackRefusal,
    check_signature,
    parse_interaction,
)
from agentsudo_tokens.state.approvals import ApprovalRequest, binding, canonical_arguments
from agentsudo_tokens.state.approvals import text_digest as digest_of

# The worked example of api.slack.com/authentication/verifying-requests-from-slack.
DOC_SECRET = b"8f742231b10e8888abcd99yyyzzz85a5"
DOC_TIMESTAMP = "1531420618"
DOC_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id="
    b"G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook"
    b"-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F3977"
    b"00885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d1"
    b"0d2c447fce8b6703c"
)
DOC_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
SENT = int(DOC_TIMESTAMP)


def test_slacks_worked_example_verifies() -> None:
    sent = check_signature(DOC_SECRET, DOC_TIMESTAMP, DOC_BODY, DOC_SIGNATURE, now=SENT + 60)
    assert sent == SENT


@pytest.mark.parametrize("offset", [-WINDOW, WINDOW, 0])
def test_the_window_holds_five_minutes_either_way(offset: int) -> None:
    now = SENT - offset
    assert check_signature(DOC_SECRET, DOC_TIMESTAMP, DOC_BODY, DOC_SIGNATURE, now=now) == SENT


@pytest.mark.parametrize("offset", [-WINDOW - 1, WINDOW + 1, 10**6])
def test_beyond_the_window_is_stale(offset: int) -> None:
    with pytest.raises(SlackRefusal) as caught:
        check_signature(DOC_SECRET, DOC_TIMESTAMP, DOC_BODY, DOC_SIGNATURE, now=SENT - offset)
    assert (caught.value.status, caught.value.kind) == (401, "stale-timestamp")


@pytest.mark.parametrize(
    ("secret", "timestamp", "body", "signature"),
    [
        (b"8f742231b10e8888abcd99yyyzzz85a6", DOC_TIMESTAMP, DOC_BODY, DOC_SIGNATURE),
        (DOC_SECRET, DOC_TIMESTAMP, DOC_BODY + b"&x=1", DOC_SIGNATURE),
        (DOC_SECRET, DOC_TIMESTAMP, DOC_BODY, DOC_SIGNATURE.upper().replace("V0", "v0")),
        (DOC_SECRET, DOC_TIMESTAMP, DOC_BODY, DOC_SIGNATURE[:-1]),
        (DOC_SECRET, DOC_TIMESTAMP, DOC_BODY, DOC_SIGNATURE + "0"),
        (DOC_SECRET, DOC_TIMESTAMP, DOC_BODY, " " + DOC_SIGNATURE),
        (DOC_SECRET, DOC_TIMESTAMP, DOC_BODY, "sha256=" + DOC_SIGNATURE[3:]),
        (DOC_SECRET, DOC_TIMESTAMP, DOC_BODY, None),
        (DOC_SECRET, None, DOC_BODY, DOC_SIGNATURE),
        (DOC_SECRET, "+1531420618", DOC_BODY, DOC_SIGNATURE),
        (DOC_SECRET, "1531420618.0", DOC_BODY, DOC_SIGNATURE),
        (DOC_SECRET, "١٥٣١٤٢٠٦١٨", DOC_BODY, DOC_SIGNATURE),  # digits, but not ASCII ones
    ],
    ids=["wrong-secret", "body-changed", "upper-hex", "short", "long", "space", "scheme",
         "no-signature", "no-timestamp", "plus-sign", "fraction", "arabic-digits"],
)  # fmt: skip
def test_a_signature_that_does_not_hold_is_refused(
    secret: bytes, timestamp: str | None, body: bytes, signature: str | None
) -> None:
    with pytest.raises(SlackRefusal) as caught:
        check_signature(secret, timestamp, body, signature, now=SENT)
    assert (caught.value.status, caught.value.kind) == (401, "bad-signature")


def test_a_click_is_read_from_its_payload() -> None:
    request_id = "apr_" + "a" * 22
    click = parse_interaction(form(payload("U0ALICE1", "agentsudo_deny", request_id, "https://x")))
    assert (click.user, click.approve, click.request_id) == ("U0ALICE1", False, request_id)
    assert click.response_url == "https://x"


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"type": "block_actions"},
        {"type": "block_actions", "user": {"id": "U0ALICE1"}, "actions": "approve"},
        {**payload("U0ALICE1", "agentsudo_approve", "apr_" + "a" * 22, None), "response_url": 7},
        {**payload("U0ALICE1", "agentsudo_approve", "apr_" + "a" * 22, None), "type": None},
    ],
)
def test_a_payload_missing_what_we_read_is_malformed(data: object) -> None:
    with pytest.raises(SlackRefusal) as caught:
        parse_interaction(form(data))
    assert (caught.value.status, caught.value.kind) == (400, "malformed-payload")


def test_a_deeply_nested_payload_is_malformed_not_a_crash() -> None:
    deep = b"payload=" + b"%5B" * 100000 + b"%5D" * 100000
    with pytest.raises(SlackRefusal):
        parse_interaction(deep)


def request_of(arguments: dict[str, object], chain: tuple[str, ...] = ()) -> ApprovalRequest:
    text = canonical_arguments(arguments)
    digest, now = digest_of(text), time.time()
    request_id = "apr_" + "r" * 22
    agent = chain[-1] if chain else "SupportBot"
    bound = binding(request_id, agent, "jti", "delete:customer", "f", digest, chain)
    return ApprovalRequest(
        request_id, agent, "jti", "delete:customer", "f", text, digest, "not granted",
        now, now + 300, bound, chain,
    )  # fmt: skip


def test_a_short_call_is_shown_whole_with_its_chain() -> None:
    request = request_of({"id": "c-1", "hard": True}, chain=("SupportBot", "Helper"))
    text = json.dumps(request_message(request))
    assert '\\"id\\"' in text and '\\"c-1\\"' in text and "true" in text
    assert "SupportBot &gt; Helper" in text
    assert "not shown" not in text and "cut" not in text
    assert "no answer within 300s" in text or "no answer within 299s" in text


def test_long_values_and_many_arguments_are_cut_saying_so() -> None:
    many = {f"a{n:03}": "v" * 100 for n in range(100)}
    text = json.dumps(request_message(request_of({**many, "_big": "x" * 10000})))
    assert "x" * (MAX_VALUE + 1) not in text
    assert "more characters not shown" in text
    assert "more arguments not shown" in text
    assert "the approval covers the call whole" in text
    for block in request_message(request_of(many))["blocks"]:
        assert len(json.dumps(block)) < 3500  # a section's text holds 3000 characters


def test_code_keeps_json_and_escapes_what_mrkdwn_reads() -> None:
    assert code('"a`b<c>&"') == '"a\\u0060b&lt;c&gt;&amp;"'
    assert json.loads(code('"a`b"')) == "a`b"  # still the same JSON value


def test_the_answered_message_replaces_the_original() -> None:
    body = answered_message(request_of({}), approved=True, name="<!here>")
    assert body["replace_original"] is True
    assert body["text"].startswith("Approved by &lt;!here&gt;: delete:customer")


def _texts(message: dict[str, object]) -> list[tuple[str, str]]:
    """Every mrkdwn text of a message: (kind, text), kind "section" or "field"."""
    found = []
    for block in message["blocks"]:  # type: ignore[attr-defined]
        if block.get("type") != "section":
            continue
        if "text" in block:
            found.append(("section", block["text"]["text"]))
        found += [("field", field["text"]) for field in block.get("fields", [])]
    return found


@pytest.mark.parametrize(
    ("arguments", "function", "reason"),
    [
        ({"a": "&" * 600}, "f", "r"),
        ({"x" * 5000: 1}, "f", "r"),
        ({"a": "é" * 600}, "f", "r"),
        ({}, "<" * 512, "r"),
        ({}, "f", "&" * 1000),
        ({}, "f", "é" * 1000),
    ],
)
def test_escaping_never_takes_a_block_past_slacks_limits(
    arguments: dict[str, object], function: str, reason: str
) -> None:
    """Cut after escaping: &amp; and \\u00e9 are longer than what they stand for."""
    request = request_of(arguments)
    request = ApprovalRequest(
        request.id, request.agent, request.jti, request.scope, function,
        request.arguments_json, request.arguments_sha256, reason,
        request.created_at, request.expires_at, request.binding, request.chain,
    )  # fmt: skip
    for kind, text in _texts(request_message(request)):
        assert len(text) <= (3000 if kind == "section" else 2000), (kind, len(text))
        assert "&am…" not in text and "&l…" not in text  # never cut inside an entity
