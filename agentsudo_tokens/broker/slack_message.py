"""The Block Kit message an elevation request is posted as, and the one it is replaced with.

    body = request_message(request)        # header, fields, arguments, reason, two buttons
    post_json(webhook_url, body, timeout=5.0)
    answered_message(request, approved=True, name="alice")   # {"replace_original": true, ...}

Everything the agent chose (function, arguments, reason) is shown as JSON in code
formatting: exact, ASCII with ``\\u`` escapes (a look-alike letter or a control
character shows as what it is), a backtick as ``\\u0060`` so no value closes its
code span, and ``&``, ``<``, ``>`` escaped as Slack's mrkdwn wants (so no value
mentions ``@channel`` or makes a link). A value longer than ``MAX_VALUE`` characters,
or arguments beyond ``MAX_ARGUMENTS_TEXT`` in all, are cut and the message says so:
the approval still covers the call whole (``agentsudo approvals show ID`` shows it).
The buttons' ``value`` is the request id; their ``action_id`` says approve or deny.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..state.approvals import ApprovalRequest

__all__ = [
    "APPROVE",
    "DENY",
    "MAX_ARGUMENTS_TEXT",
    "MAX_VALUE",
    "answered_message",
    "code",
    "mrkdwn_escape",
    "post_json",
    "request_message",
]

APPROVE = "agentsudo_approve"  # the buttons' action_id
DENY = "agentsudo_deny"
MAX_VALUE = 600  # characters of one argument's JSON shown; more is cut, saying so
MAX_ARGUMENTS_TEXT = 2800  # characters of arguments in all (a section holds 3000)
MAX_REASON = 1000
MAX_NAME = 200  # characters of an argument's name shown
MAX_FUNCTION = 1800  # a field's text holds 2000


def mrkdwn_escape(text: str) -> str:
    """``&``, ``<`` and ``>`` as Slack's mrkdwn wants them (no mention, no link)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=True, sort_keys=True, separators=(",", ":"))


def code(json_text: str) -> str:
    """JSON text for a code span: a backtick as ``\\u0060`` (still the same JSON), escaped."""
    return mrkdwn_escape(json_text.replace("`", "\\u0060"))


def escaped_cut(json_text: str, limit: int) -> str:
    """``code(json_text)`` cut to ``limit`` characters AFTER escaping (``&amp;`` and
    ``\\u00e9`` are longer than what they stand for), never inside an entity."""
    escaped = code(json_text)
    if len(escaped) <= limit:
        return escaped
    cut = escaped[:limit]
    amp = cut.rfind("&")
    if amp >= 0 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return f"{cut}… ({len(escaped) - len(cut)} more characters not shown)"


def _arguments(request: ApprovalRequest) -> str:
    lines: list[str] = []
    used, shown = 0, 0
    arguments = request.arguments
    for name, value in arguments.items():
        line = f"{escaped_cut(_json(name), MAX_NAME)}: {escaped_cut(value, MAX_VALUE)}"
        if used + len(line) > MAX_ARGUMENTS_TEXT and lines:
            break
        lines.append(line)
        used += len(line) + 1
        shown += 1
    text = "\n".join(lines) if lines else "(none)"
    notes = []
    if shown < len(arguments):
        notes.append(f"{len(arguments) - shown} more arguments not shown")
    if any(len(code(value)) > MAX_VALUE for value in arguments.values()):
        notes.append("some values cut")
    body = f"*Arguments*\n```{text}```"
    if notes:
        body += (
            f"\n_{'; '.join(notes)}: the approval covers the call whole; "
            f"see it with_ `agentsudo approvals show {request.id}`"
        )
    return body


def request_message(request: ApprovalRequest, *, now: float | None = None) -> dict[str, Any]:
    """The Block Kit message for a filed elevation request, with Approve and Deny buttons."""
    left = max(0, int(request.expires_at - (time.time() if now is None else now)))
    chain = " > ".join(request.chain) if request.delegated else request.agent
    fields = [
        ("Agent", code(_json(request.agent))),
        ("Chain", code(_json(chain))),
        ("Scope", code(_json(request.scope))),
        ("Function", escaped_cut(_json(request.function), MAX_FUNCTION)),
    ]
    section_fields = [
        {"type": "mrkdwn", "text": f"*{title}*\n`{value}`"} for title, value in fields
    ]
    reason = escaped_cut(_json(request.reason or ""), MAX_REASON)
    fallback = mrkdwn_escape(
        f"agentsudo: agent {request.agent!r} asks for {request.scope!r} (request {request.id})"
    )
    return {
        "text": fallback,
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": "Approval requested", "emoji": False},
            },
            {"type": "section", "fields": section_fields},
            {"type": "section", "text": {"type": "mrkdwn", "text": _arguments(request)}},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*Reason*\n`{reason}`"}},
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"Request `{request.id}`: no answer within {left}s denies.",
                    }
                ],
            },
            {
                "type": "actions",
                "block_id": "agentsudo_answer",
                "elements": [
                    _button("Approve", APPROVE, "primary", request.id),
                    _button("Deny", DENY, "danger", request.id),
                ],
            },
        ],
    }


def _button(text: str, action: str, style: str, request_id: str) -> dict[str, Any]:
    return {
        "type": "button",
        "action_id": action,
        "text": {"type": "plain_text", "text": text, "emoji": False},
        "style": style,
        "value": request_id,
    }


def answered_message(request: ApprovalRequest, *, approved: bool, name: str) -> dict[str, Any]:
    """What replaces the message once answered: ``Approved by alice`` and what it was."""
    verb = "Approved" if approved else "Denied"
    what = mrkdwn_escape(f"{request.scope} for agent {request.agent!r}, request {request.id}")
    return {
        "replace_original": True,
        "text": f"{verb} by {mrkdwn_escape(name)}: {what}",
    }


def post_json(url: str, body: dict[str, Any], *, timeout: float) -> None:
    """POST ``body`` as JSON to ``url`` (http or https: the policy and caller check which).

    :raises OSError: the URL could not be reached or answered with an error.
    """
    import urllib.request

    data = json.dumps(body).encode()
    post = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(post, timeout=timeout) as response:
        response.read(4096)
