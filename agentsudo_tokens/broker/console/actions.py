"""The console's actions: approve, deny, revoke a token, the kill switch (each a checked POST).

Revocation and the kill switch come after a confirmation page (a GET that changes
nothing); every action is audited as the broker's API audits it, ``by`` naming the
admin and ``(console)``; a refused one is a ``broker_refused`` line.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ...errors import AgentSudoError
from ...state.approvals import approve, deny
from ...tokens.revocation import revoke, revoke_agent
from . import pages
from ._broker import ConsoleBroker
from .auth import Session
from .guard import Refused, checked_form, logged_in
from .html import Markup, fill, url
from .respond import HEADERS, html, text_field

__all__ = ["approve_request", "deny_request", "kill", "kill_asked", "revoke_asked", "revoke_token"]

_log = logging.getLogger("agentsudo.broker")
_MAX_REASON = 200


async def _answer(request: Request, broker: ConsoleBroker, approved: bool) -> Response:
    session = await logged_in(request, broker)
    form = await checked_form(request, broker, session)
    reason = None if approved else text_field(form, "reason", 1000)
    request_id = str(request.path_params["request_id"])
    who = f"{session.admin} (console)"
    try:
        if approved:
            answered = await asyncio.to_thread(approve, broker.store, request_id, by=who)
        else:
            answered = await asyncio.to_thread(
                deny, broker.store, request_id, by=who, reason=reason
            )
    except AgentSudoError as exc:
        action = "approve" if approved else "deny"
        broker.audit.refused(session.caller, f"console {action} {request_id[:90]}", str(exc))
        raise
    verb = "approved" if approved else "denied"
    _log.warning("%s %s approval request %s", who, verb, request_id)
    broker.audit.answered(session.caller, answered, approved=approved, by=who, reason=reason)
    return RedirectResponse(url(session.base + "/", done=verb), status_code=303, headers=HEADERS)


async def approve_request(request: Request, broker: ConsoleBroker) -> Response:
    return await _answer(request, broker, True)


async def deny_request(request: Request, broker: ConsoleBroker) -> Response:
    return await _answer(request, broker, False)


def _confirm(
    session: Session, title: str, question: Markup, action: str, **fields: str
) -> Response:
    body = pages.confirm_body(question, action, fields, session)
    return html(title, body, session)


async def revoke_asked(request: Request, broker: ConsoleBroker) -> Response:
    session = await logged_in(request, broker)
    jti = request.query_params.get("jti", "")
    if not jti or len(jti) > 256 or not jti.isprintable():
        raise Refused(400, "Bad request", "jti: expected a token's jti")
    question = fill(
        "Revoke the token with jti <code>{jti}</code>? It is refused from now on by every "
        "verifier that asks this broker's store or revocation list.",
        jti=jti,
    )
    return _confirm(session, "Revoke a token", question, session.base + "/revoke", jti=jti)


async def kill_asked(request: Request, broker: ConsoleBroker) -> Response:
    session = await logged_in(request, broker)
    agent = request.query_params.get("agent", "")
    if not agent or len(agent) > 256 or not agent.isprintable():
        raise Refused(400, "Bad request", "agent: expected an agent's name")
    question = fill(
        "Turn on the kill switch of agent <strong>{agent}</strong>? Every token of it issued "
        "until now is refused, and it gets no new token until the switch expires.",
        agent=agent,
    )
    return _confirm(session, "Kill switch", question, session.base + "/kill", agent=agent)


async def _revoke(request: Request, broker: ConsoleBroker, *, kill: bool) -> Response:
    session = await logged_in(request, broker)
    form = await checked_form(request, broker, session)
    if form.get("confirm") != "yes":
        raise Refused(400, "Not confirmed", "confirm it on the confirmation page: nothing done")
    reason = text_field(form, "reason", _MAX_REASON) or f"from the console by {session.admin}"
    settings = broker.settings
    target = form.get("agent" if kill else "jti", "")
    try:
        if kill:
            done = await asyncio.to_thread(
                lambda: revoke_agent(
                    broker.store, target, reason=reason, max_ttl=settings.max_ttl,
                    leeway=settings.leeway,
                )
            )  # fmt: skip
        else:
            done = await asyncio.to_thread(
                lambda: revoke(broker.store, target, reason=reason, max_ttl=settings.max_ttl)
            )
    except AgentSudoError as exc:
        action = "console kill switch" if kill else "console revoke"
        broker.audit.refused(session.caller, action, str(exc))
        raise
    _log.warning("%s revoked %s %r from the console", session.admin, done.kind, done.target)
    broker.audit.revoked(session.caller, done.kind, done.target, reason)
    code = "killed" if kill else "revoked"
    back = url(session.base + "/agents", done=code)
    return RedirectResponse(back, status_code=303, headers=HEADERS)


async def revoke_token(request: Request, broker: ConsoleBroker) -> Response:
    return await _revoke(request, broker, kill=False)


async def kill(request: Request, broker: ConsoleBroker) -> Response:
    return await _revoke(request, broker, kill=True)
