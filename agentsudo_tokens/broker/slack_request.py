"""Slack's interactivity callback, checked: its signature, its time, then its payload, strictly.

    check_signature(secret, headers_timestamp, raw_body, headers_signature, now=time.time())
    click = parse_interaction(raw_body)    # Click(user="U0123ABC", approve=True, request_id=...)

Slack signs each request with the app's signing secret: ``X-Slack-Signature`` is
``v0=`` and the hex HMAC-SHA256 of ``v0:{X-Slack-Request-Timestamp}:{raw body}``.
The timestamp must be within ``WINDOW`` seconds of now, either way, and the
signature is compared in constant time over the raw bytes received (never a
re-encoded form). The body is ``application/x-www-form-urlencoded`` with one
field, ``payload``: JSON of a ``block_actions`` interaction with exactly one
action, one of our two buttons, whose value is a request id. Slack sends more
fields than we read; those we read must be there, of their type and form.
Each failure is a ``SlackRefusal`` with an HTTP status, a problem kind and one line.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from .slack_message import APPROVE, DENY

__all__ = ["WINDOW", "Click", "SlackRefusal", "check_signature", "parse_interaction"]

WINDOW = 300  # seconds a request's timestamp may be from now, either way (Slack's 5 minutes)
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")
_USER = re.compile(r"[UW][A-Z0-9]{2,31}")
_REQUEST_ID = re.compile(r"apr_[A-Za-z0-9_-]{22,86}")


class SlackRefusal(Exception):
    """A Slack callback refused: ``status``, a problem ``kind`` and the one-line ``detail``."""

    def __init__(self, status: int, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail


def check_signature(
    secret: bytes, timestamp: str | None, body: bytes, signature: str | None, *, now: float
) -> int:
    """The request's timestamp, once its signature and time are checked.

    :raises SlackRefusal: 401: a header missing or malformed, a time outside the window,
        or a signature that is not the body's under ``secret``.
    """
    if timestamp is None or signature is None:
        raise SlackRefusal(
            401, "bad-signature", "expected X-Slack-Request-Timestamp and X-Slack-Signature"
        )
    if _TIMESTAMP.fullmatch(timestamp) is None:
        raise SlackRefusal(401, "bad-signature", "X-Slack-Request-Timestamp: expected seconds")
    sent = int(timestamp)
    if abs(now - sent) > WINDOW:
        raise SlackRefusal(
            401,
            "stale-timestamp",
            f"X-Slack-Request-Timestamp: expected within {WINDOW}s of now, "
            f"found {int(now - sent)}s off",
        )
    if _SIGNATURE.fullmatch(signature) is None:
        raise SlackRefusal(401, "bad-signature", "X-Slack-Signature: expected v0= and 64 hex")
    mac = hmac.new(secret, b"v0:" + timestamp.encode("ascii") + b":" + body, hashlib.sha256)
    expected = "v0=" + mac.hexdigest()
    if not hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii")):
        raise SlackRefusal(
            401, "bad-signature", "X-Slack-Signature: not the body's under the signing secret"
        )
    return sent


@dataclass(frozen=True)
class Click:
    """One click on a request's button: who (Slack user id), approve or deny, which request."""

    user: str
    approve: bool
    request_id: str
    response_url: str | None  # where Slack takes a replacement message, if it gave one


def _malformed(detail: str) -> SlackRefusal:
    return SlackRefusal(400, "malformed-payload", detail)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _malformed(f"{where}: expected an object")
    return value


def _text(value: Any, where: str, form: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str) or (form is not None and form.fullmatch(value) is None):
        raise _malformed(f"{where}: expected {'a string' if form is None else form.pattern}")
    return value


def parse_interaction(body: bytes) -> Click:
    """The click a signed body carries.

    :raises SlackRefusal: 400: not one ``payload`` field of a ``block_actions`` interaction
        with exactly one of our buttons, whose value is a request id.
    """
    try:
        text = body.decode("utf-8")
        fields = parse_qsl(text, keep_blank_values=True, strict_parsing=True, max_num_fields=4)
    except (UnicodeDecodeError, ValueError):
        raise _malformed("expected a form with one field, payload") from None
    if len(fields) != 1 or fields[0][0] != "payload":
        raise _malformed("expected a form with one field, payload")
    try:
        payload = json.loads(
            fields[0][1], object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant
        )
    except (ValueError, RecursionError):
        raise _malformed("payload: expected JSON without duplicate keys") from None
    payload = _object(payload, "payload")
    if payload.get("type") != "block_actions":
        raise _malformed("payload.type: expected block_actions")
    user = _text(_object(payload.get("user"), "payload.user").get("id"), "payload.user.id", _USER)
    actions = payload.get("actions")
    if not isinstance(actions, list) or len(actions) != 1:
        raise _malformed("payload.actions: expected exactly one action")
    action = _object(actions[0], "payload.actions[0]")
    kind = _text(action.get("action_id"), "payload.actions[0].action_id")
    if kind not in (APPROVE, DENY) or action.get("type") != "button":
        raise _malformed(f"payload.actions[0]: expected a button {APPROVE} or {DENY}")
    request_id = _text(action.get("value"), "payload.actions[0].value", _REQUEST_ID)
    response_url = payload.get("response_url")
    if response_url is not None:
        response_url = _text(response_url, "payload.response_url")
    return Click(user, kind == APPROVE, request_id, response_url)
