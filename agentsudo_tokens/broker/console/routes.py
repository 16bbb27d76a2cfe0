"""The console's routes under ``/console``: pages, the feed's JSON, and the admin's actions.

    routes = console_routes()       # added to the broker's app (broker.app.create_app)

Pages answer HTML; a refusal is a clear page (401, 403, 404), never data, and
changes nothing. Every action (approve, deny, revoke, kill switch) is a POST
checked by ``guard.checked_form`` and audited as the broker's API audits it,
``by`` naming the admin and ``(console)``. Every answer carries a strict Content
Security Policy (scripts and styles from ``/console/static`` only), no caching,
no framing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from ...errors import AgentSudoError
from ...state.approvals import approve, deny, lookup, pending
from ...tokens.revocation import revoke, revoke_agent
from ..audit_verify import AuditReport
from ..problems import TooMany, problem_for
from . import pages
from ._broker import ConsoleBroker
from .auth import LoginRefused, Session, end_session, redeem_link
from .guard import COOKIE, Refused, address_of, checked_form, logged_in
from .html import Markup, fill, page, url
from .minted import kill_switches, live_tokens
from .static import CSS, JS

__all__ = ["console_routes"]

_log = logging.getLogger("agentsudo.broker")
HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}
_MAX_REASON = 200

Handler = Callable[[Request, ConsoleBroker], Awaitable[Response]]


def _page(status: int, title: str, message: str) -> Response:
    body = fill(
        '<p class="refusal">{message}</p><p><a href="/console">Back to the console</a></p>',
        message=message,
    )
    return HTMLResponse(page(title, body), status_code=status, headers=HEADERS)


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _handled(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A console handler with the broker at hand; every error a clear page (or JSON)."""

    async def endpoint(request: Request) -> Response:
        broker: ConsoleBroker = request.app.state.broker
        try:
            response = await handler(request, broker)
        except Refused as exc:
            status, title, message = exc.status, exc.title, exc.message
        except Exception as exc:
            problem = problem_for(exc)
            if problem.status >= 500 and not isinstance(exc, AgentSudoError):
                _log.exception("%s %s failed", request.method, request.url.path)
            status, title, message = problem.status, problem.kind.replace("-", " "), problem.detail
            if isinstance(problem, TooMany):
                message += f" (retry in {problem.retry_after} s)"
        else:
            for name, value in HEADERS.items():
                response.headers.setdefault(name, value)
            return response
        if _wants_json(request):
            return JSONResponse({"error": title, "detail": message}, status, headers=HEADERS)
        return _page(status, title.capitalize(), message)

    return endpoint


def _html(title: str, body: Markup, session: Session) -> Response:
    text = page(title, body, admin=session.admin, csrf=session.csrf)
    return HTMLResponse(text, headers=HEADERS)


def _done(request: Request) -> str | None:
    return request.query_params.get("done")


def _text(form: dict[str, str], name: str, limit: int) -> str | None:
    """An optional one-line text field.

    :raises Refused: 400, not printable or too long.
    """
    value = form.get(name, "").strip()
    if not value:
        return None
    if len(value) > limit or not value.isprintable():
        raise Refused(400, "Bad request", f"{name}: expected printable text of at most {limit}")
    return value


# --- login and logout ---------------------------------------------------------------------


async def _login(request: Request, broker: ConsoleBroker) -> Response:
    """Follow a one-time link: a session cookie, and on to the console."""
    try:
        session, cookie = await asyncio.to_thread(
            redeem_link, broker.store, request.query_params.get("t")
        )
    except LoginRefused as exc:
        who = address_of(request)
        broker.quiet.refuse(
            "console login refused", who, action="console login", reason=str(exc), address=who
        )
        raise Refused(401, "Login refused", str(exc)) from None
    if not broker.policy.is_admin(session.caller):
        await asyncio.to_thread(end_session, broker.store, session)
        why = f"{session.admin} is not an admin of this broker"
        broker.audit.refused(session.caller, "console login", why)
        raise Refused(403, "Forbidden", why)
    broker.audit.record(
        "console_login",
        caller=session.admin,
        session=session.key[-12:],
        address=address_of(request),
    )
    response = RedirectResponse("/console", status_code=303, headers=HEADERS)
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=int(session.expires_at - session.created_at),
        path="/console",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


async def _logout(request: Request, broker: ConsoleBroker) -> Response:
    session = await logged_in(request, broker)
    await checked_form(request, broker, session)
    await asyncio.to_thread(end_session, broker.store, session)
    broker.audit.record("console_logout", caller=session.admin, session=session.key[-12:])
    response = HTMLResponse(
        page("Logged out", Markup("<p>Logged out. <code>agentsudo console</code> logs in.</p>")),
        headers=HEADERS,
    )
    response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="strict")
    return response


# --- pages --------------------------------------------------------------------------------


async def _chain(broker: ConsoleBroker) -> tuple[AuditReport | str, float]:
    keys = broker.keys.public_keys()
    return await asyncio.to_thread(broker.console.chain.report, keys, broker.anchor.latest)


async def _approvals(request: Request, broker: ConsoleBroker) -> Response:
    session = await logged_in(request, broker)
    waiting = await asyncio.to_thread(pending, broker.store)
    report, checked = await _chain(broker)
    chain = pages.chain_line(report, checked)
    body = pages.approvals_body(waiting, session.csrf, chain, _done(request))
    return _html("Approvals", body, session)


async def _pending(request: Request, broker: ConsoleBroker) -> Response:
    await logged_in(request, broker)
    waiting = await asyncio.to_thread(pending, broker.store)
    return JSONResponse({"ids": [item.id for item in waiting]}, headers=HEADERS)


async def _agents(request: Request, broker: ConsoleBroker) -> Response:
    session = await logged_in(request, broker)
    live = await asyncio.to_thread(live_tokens, broker.store)
    policy = broker.policy
    names = sorted(set(getattr(policy, "agents", {})) | set(live))
    switches = await asyncio.to_thread(kill_switches, broker.store, names)
    body = pages.agents_body(policy, live, switches, _done(request))
    return _html("Agents", body, session)


async def _feed(request: Request, broker: ConsoleBroker) -> Response:
    session = await logged_in(request, broker)
    feed = broker.console.feed
    await asyncio.to_thread(feed.refresh)
    latest, events = feed.since(0, 100)
    return _html("Decisions", pages.feed_body(events, latest, feed.skipped_bytes), session)


async def _feed_events(request: Request, broker: ConsoleBroker) -> Response:
    await logged_in(request, broker)
    after_text = request.query_params.get("after", "0")
    if not after_text.isascii() or not after_text.isdigit() or len(after_text) > 18:
        raise Refused(400, "Bad request", "after: expected a whole number")
    feed = broker.console.feed
    await asyncio.to_thread(feed.refresh)
    latest, events = feed.since(int(after_text))
    return JSONResponse({"latest": latest, "events": events}, headers=HEADERS)


async def _audit(request: Request, broker: ConsoleBroker) -> Response:
    session = await logged_in(request, broker)
    report, checked = await _chain(broker)
    body = pages.audit_body(report, checked, str(broker.audit.path))
    return _html("Audit chain", body, session)


# --- actions ------------------------------------------------------------------------------


async def _answer(request: Request, broker: ConsoleBroker, approved: bool) -> Response:
    session = await logged_in(request, broker)
    form = await checked_form(request, broker, session)
    reason = None if approved else _text(form, "reason", 1000)
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
    return RedirectResponse(url("/console", done=verb), status_code=303, headers=HEADERS)


async def _approve(request: Request, broker: ConsoleBroker) -> Response:
    return await _answer(request, broker, True)


async def _deny(request: Request, broker: ConsoleBroker) -> Response:
    return await _answer(request, broker, False)


def _confirm(
    session: Session, title: str, question: Markup, action: str, **fields: str
) -> Response:
    body = pages.confirm_body(question, action, fields, session.csrf)
    return _html(title, body, session)


async def _revoke_ask(request: Request, broker: ConsoleBroker) -> Response:
    session = await logged_in(request, broker)
    jti = request.query_params.get("jti", "")
    if not jti or len(jti) > 256 or not jti.isprintable():
        raise Refused(400, "Bad request", "jti: expected a token's jti")
    question = fill(
        "Revoke the token with jti <code>{jti}</code>? It is refused from now on by every "
        "verifier that asks this broker's store or revocation list.",
        jti=jti,
    )
    return _confirm(session, "Revoke a token", question, "/console/revoke", jti=jti)


async def _kill_ask(request: Request, broker: ConsoleBroker) -> Response:
    session = await logged_in(request, broker)
    agent = request.query_params.get("agent", "")
    if not agent or len(agent) > 256 or not agent.isprintable():
        raise Refused(400, "Bad request", "agent: expected an agent's name")
    question = fill(
        "Turn on the kill switch of agent <strong>{agent}</strong>? Every token of it issued "
        "until now is refused, and it gets no new token until the switch expires.",
        agent=agent,
    )
    return _confirm(session, "Kill switch", question, "/console/kill", agent=agent)


async def _revoke(request: Request, broker: ConsoleBroker, *, kill: bool) -> Response:
    session = await logged_in(request, broker)
    form = await checked_form(request, broker, session)
    if form.get("confirm") != "yes":
        raise Refused(400, "Not confirmed", "confirm it on the confirmation page: nothing done")
    reason = _text(form, "reason", _MAX_REASON) or f"from the console by {session.admin}"
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
    return RedirectResponse(url("/console/agents", done=code), status_code=303, headers=HEADERS)


async def _revoke_token(request: Request, broker: ConsoleBroker) -> Response:
    return await _revoke(request, broker, kill=False)


async def _kill(request: Request, broker: ConsoleBroker) -> Response:
    return await _revoke(request, broker, kill=True)


async def _request_shown(request: Request, broker: ConsoleBroker) -> Response:
    """One request, whole (a link target for a notification)."""
    session = await logged_in(request, broker)
    found = await asyncio.to_thread(lookup, broker.store, str(request.path_params["request_id"]))
    report, checked = await _chain(broker)
    body = pages.approvals_body([found], session.csrf, pages.chain_line(report, checked), None)
    return _html("Approval request", body, session)


async def _css(request: Request, broker: ConsoleBroker) -> Response:
    return Response(CSS, media_type="text/css", headers={"cache-control": "max-age=300"})


async def _js(request: Request, broker: ConsoleBroker) -> Response:
    return Response(JS, media_type="text/javascript", headers={"cache-control": "max-age=300"})


def console_routes() -> list[Route]:
    """The console's routes, for the broker's app."""
    get, post = ["GET"], ["POST"]
    return [
        Route("/console", _handled(_approvals), methods=get),
        Route("/console/login", _handled(_login), methods=get),
        Route("/console/logout", _handled(_logout), methods=post),
        Route("/console/pending", _handled(_pending), methods=get),
        Route("/console/agents", _handled(_agents), methods=get),
        Route("/console/feed", _handled(_feed), methods=get),
        Route("/console/feed/events", _handled(_feed_events), methods=get),
        Route("/console/audit", _handled(_audit), methods=get),
        Route("/console/approvals/{request_id}", _handled(_request_shown), methods=get),
        Route("/console/approvals/{request_id}/approve", _handled(_approve), methods=post),
        Route("/console/approvals/{request_id}/deny", _handled(_deny), methods=post),
        Route("/console/revoke", _handled(_revoke_ask), methods=get),
        Route("/console/revoke", _handled(_revoke_token), methods=post),
        Route("/console/kill", _handled(_kill_ask), methods=get),
        Route("/console/kill", _handled(_kill), methods=post),
        Route("/console/static/console.css", _handled(_css), methods=get),
        Route("/console/static/console.js", _handled(_js), methods=get),
    ]
