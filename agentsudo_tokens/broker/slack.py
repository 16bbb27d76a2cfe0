"""Slack approvals: each elevation request posted with Approve and Deny buttons, each click
checked and answered as the admin the Slack user is.

    slack = SlackApprovals(audit)          # the broker's; posts from background threads
    slack.filed(policy, request)           # where the policy's notify webhook fires too
    POST /v1/slack/interactions            # Slack's interactivity callback (the Request URL)
    -> 200 {"replace_original": true, "text": "Approved by alice: ..."}

A click is refused, nothing changed, when: Slack approvals are not configured
(404); the body is not a bounded form (413, 415, 408); the signature or its
timestamp is missing, malformed, outside five minutes or not the body's (401);
the same signature came before (409 ``replayed``: each is kept in the store until
it leaves the window); the payload is not one of our buttons (400); the Slack
user maps to no admin (403); the request is unknown or expired (404) or already
answered (409). A refusal before the signature is known good is audited once per
address a minute (``QuietRefusals``); a signed one, whole. An answer goes the way
``POST /v1/approvals/{id}/approve`` goes (the first answer wins), audited as
``elevation_answered`` with ``by = "alice via slack"`` and the ``slack_user``.

The reply replaces the message; Slack also takes that reply at the click's
``response_url``, which is posted to (in the background) only when it is
``https://hooks.slack.com/...`` or on the origin of the policy's webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from ..errors import AgentSudoError, UnknownApprovalError
from .audit import clipped
from .notify import Notifier
from .peer import _peer_key
from .problems import Problem
from .slack_message import answered_message, post_json, request_message
from .slack_request import WINDOW, Click, SlackRefusal, check_signature, parse_interaction

if TYPE_CHECKING:
    from ..state.approvals import ApprovalRequest
    from .audit import BrokerAudit
    from .slack_config import SlackConfig

__all__ = ["MAX_BODY", "REPLAY", "SLACK_PATH", "SlackApprovals", "interactions_endpoint"]

SLACK_PATH = "/v1/slack/interactions"
MAX_BODY = 128 * 1024  # a click's form carries the message it came from
REPLAY = "slack-signature:"  # a signature seen, kept in the store until it leaves the window
SLACK_HOOKS = "hooks.slack.com"
_FORM = "application/x-www-form-urlencoded"
_ACTION = f"POST {SLACK_PATH}"
_log = logging.getLogger("agentsudo.broker")


def _post_request(url: str, request: ApprovalRequest, timeout: float) -> None:
    post_json(url, request_message(request), timeout=timeout)


class SlackApprovals:
    """The broker's Slack side: posting requests, and replacing answered messages."""

    def __init__(self, audit: BrokerAudit) -> None:
        self.audit = audit
        self.notifier = Notifier(on_failure=self._failed, send=_post_request)
        self._replies: set[asyncio.Task[None]] = set()

    def filed(self, slack: SlackConfig | None, request: ApprovalRequest) -> None:
        """Post ``request`` to the policy's Slack webhook, if any; never waits, never raises."""
        if slack is not None and slack.webhook_url is not None:
            self.notifier.submit(slack.webhook_url, request)

    def _failed(self, request: ApprovalRequest, why: str) -> None:
        with contextlib.suppress(AgentSudoError):  # logged by the audit itself
            self.audit.elevation(
                "elevation_notify_failed",
                None,
                request.id,
                agent=request.agent,
                reason=why,
                via="slack",
            )

    def reply(self, slack: SlackConfig, url: str | None, body: dict[str, Any]) -> None:
        """Post ``body`` to a click's ``response_url`` in the background, if it is Slack's."""
        if url is None or not _may_reply(url, slack.webhook_url):
            return
        if len(self._replies) >= 16:  # answered anyway: only the message stays as it was
            _log.warning("a Slack message was not replaced: too many replies in flight")
            return
        task = asyncio.get_running_loop().create_task(self._post_reply(url, body))
        self._replies.add(task)
        task.add_done_callback(self._replies.discard)

    async def _post_reply(self, url: str, body: dict[str, Any]) -> None:
        try:
            await asyncio.to_thread(post_json, url, body, timeout=5.0)
        except Exception as exc:  # the answer stands; only the message was not replaced
            _log.warning("a Slack message was not replaced: %s", type(exc).__name__)

    def close(self) -> None:
        self.notifier.close()


def _may_reply(url: str, webhook: str | None) -> bool:
    """Whether ``url`` is Slack's (https://hooks.slack.com) or on the webhook's origin."""
    try:
        parts = urlsplit(url)
        origin = (parts.scheme, parts.hostname, parts.port)
        theirs = urlsplit(webhook) if webhook else None
        mine = (theirs.scheme, theirs.hostname, theirs.port) if theirs else None
    except ValueError:
        return False
    if parts.username is not None or parts.password is not None or not url.isascii():
        return False
    return origin == ("https", SLACK_HOOKS, None) or origin == mine


def _address(request: Request) -> str:
    client = request.client
    return _peer_key(None, (client.host, client.port) if client else None) or "unknown"


async def _form_body(request: Request, timeout: float) -> bytes:
    """The raw form body, bounded in size and in time (the signature covers these bytes)."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != _FORM:
        raise SlackRefusal(415, "unsupported-media-type", f"expected {_FORM}")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise SlackRefusal(413, "body-too-large", f"a Slack request is at most {MAX_BODY} bytes")

    async def read() -> bytes:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise SlackRefusal(
                    413, "body-too-large", f"a Slack request is at most {MAX_BODY} bytes"
                )
        return bytes(body)

    try:
        return await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        raise SlackRefusal(408, "request-timeout", "the request body came too slowly") from None
    except ClientDisconnect:
        raise SlackRefusal(400, "client-disconnected", "the client left before its body") from None


def _refuse(broker: Any, status: int, kind: str, detail: str, **fields: Any) -> Problem:
    """A signed click refused: audited whole (Slack's users click at human speed)."""
    broker.audit.record("broker_refused", action=_ACTION, reason=clipped(detail), **fields)
    return Problem(status, kind, detail)


async def interactions_endpoint(request: Request, broker: Any) -> Response:
    """Slack's interactivity callback: a click on Approve or Deny, checked, then answered."""
    slack: SlackConfig | None = getattr(broker.policy, "slack", None)
    if slack is None or slack.signing_secret is None:
        raise Problem(
            404, "not-found", "Slack approvals are not configured ([slack] in the policy)"
        )
    address = _address(request)
    headers = request.headers
    signature = headers.get("x-slack-signature")
    try:
        raw = await _form_body(request, broker.config.body_timeout)
        sent = check_signature(
            slack.signing_secret,
            headers.get("x-slack-request-timestamp"),
            raw,
            signature,
            now=time.time(),
        )
    except SlackRefusal as exc:
        broker.quiet.refuse(
            "unsigned Slack request", address, action=_ACTION, reason=exc.detail, address=address
        )
        raise Problem(exc.status, exc.kind, exc.detail) from None
    assert signature is not None  # check_signature refused a missing one
    kept_until = max(sent, time.time()) + WINDOW + 1
    if not await asyncio.to_thread(
        broker.store.add, REPLAY + signature, str(sent), expires_at=kept_until
    ):
        detail = "this signed request came before: refused as a replay"
        broker.quiet.refuse(
            "replayed Slack request", address, action=_ACTION, reason=detail, address=address
        )
        raise Problem(409, "replayed", detail)
    try:
        click = parse_interaction(raw)
    except SlackRefusal as exc:
        raise _refuse(broker, exc.status, exc.kind, exc.detail, address=address) from None
    return await _answer(request, broker, slack, click)


async def _answer(request: Request, broker: Any, slack: SlackConfig, click: Click) -> Response:
    from ..state.approvals import approve, deny

    admin = slack.users.get(click.user)
    caller = admin.caller() if admin is not None else None  # its groups as they are now
    if admin is None or caller is None or not broker.policy.is_admin(caller):
        detail = f"Slack user {click.user} is not mapped to an admin of this broker"
        raise _refuse(
            broker, 403, "forbidden", detail, slack_user=click.user, request=click.request_id
        )
    by = f"{admin.name} via slack"
    try:
        if click.approve:
            answered = await asyncio.to_thread(approve, broker.store, click.request_id, by=by)
            reason = None
        else:
            reason = f"denied in Slack by {admin.name}"
            answered = await asyncio.to_thread(
                deny, broker.store, click.request_id, by=by, reason=reason
            )
    except UnknownApprovalError as exc:
        status, kind = (
            (409, "already-answered") if exc.found == "answered" else (404, "unknown-approval")
        )
        raise _refuse(
            broker, status, kind, str(exc), slack_user=click.user, request=click.request_id
        ) from None
    verb = "approved" if click.approve else "denied"
    _log.warning("%s %s approval request %s", by, verb, answered.id)
    broker.audit.elevation(
        "elevation_answered",
        caller,
        answered.id,
        approved=click.approve,
        agent=answered.agent,
        scope=answered.scope,
        function=answered.function,
        arguments_sha256=answered.arguments_sha256,
        by=by,
        reason=reason,
        slack_user=click.user,
    )
    body = answered_message(answered, approved=click.approve, name=admin.name)
    broker.slack.reply(slack, click.response_url, body)
    return JSONResponse(body, headers={"cache-control": "no-store"})
