"""The console's routes under ``/console``: pages, the feed's JSON, login, and the actions.

A session's pages live under its secret path, ``/console/s/<secret>/`` (``auth``), where
its cookie is scoped; ``/console`` itself shows nothing.

    routes = console_routes()       # added to the broker's app (broker.app.create_app)

Pages answer HTML; a refusal is a clear page (401, 403, 404), never data, and
changes nothing (``respond.handled``). Every POST is checked by ``guard.checked_form``
(``actions``). Every answer carries a strict Content Security Policy (scripts and
styles from ``/console/static`` only), no caching, no framing.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from ...state.approvals import lookup, pending
from ..audit_verify import AuditReport
from . import actions, pages, pages_agents
from ._broker import ConsoleBroker
from .auth import SESSION_PATH, LoginRefused, end_session, redeem_link
from .guard import COOKIE, Refused, address_of, checked_form, logged_in
from .html import Markup, page
from .minted import kill_switches
from .respond import HEADERS, done_of, handled, html
from .static import CSS, JS

__all__ = ["console_routes"]

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
    response = RedirectResponse(session.base + "/", status_code=303, headers=HEADERS)
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=int(session.expires_at - session.created_at),
        path=session.base + "/",  # sent to this session's secret path only
        secure=secure_cookie(request, broker),
        httponly=True,
        samesite="strict",
    )
    return response


def secure_cookie(request: Request, broker: ConsoleBroker) -> bool:
    """Whether the cookie is ``Secure``: https as browsers reach us (``--public-url``)."""
    public = broker.console.public_url
    return public.startswith("https://") if public else request.url.scheme == "https"


async def _logout(request: Request, broker: ConsoleBroker) -> Response:
    session = await logged_in(request, broker)
    await checked_form(request, broker, session)
    await asyncio.to_thread(end_session, broker.store, session)
    broker.audit.record("console_logout", caller=session.admin, session=session.key[-12:])
    response = HTMLResponse(
        page("Logged out", Markup("<p>Logged out. <code>agentsudo console</code> logs in.</p>")),
        headers=HEADERS,
    )
    response.delete_cookie(COOKIE, path=session.base + "/", httponly=True, samesite="strict")
    return response


# --- pages --------------------------------------------------------------------------------


async def _chain(broker: ConsoleBroker) -> tuple[AuditReport | str, float]:
    keys = broker.keys.public_keys()
    return await asyncio.to_thread(broker.console.chain.report, keys, broker.anchor.latest)


async def _outside(request: Request, broker: ConsoleBroker) -> Response:
    """``/console`` and any path not a session's: nothing here (each session's pages are
    under its secret path)."""
    raise Refused(401, "Not logged in", "log in with the link `agentsudo console` prints")


async def _approvals(request: Request, broker: ConsoleBroker) -> Response:
    session = await logged_in(request, broker)
    waiting = await asyncio.to_thread(pending, broker.store)
    report, checked = await _chain(broker)
    chain = pages.chain_line(report, checked)
    body = pages.approvals_body(waiting, session, chain, done_of(request))
    return html("Approvals", body, session)


async def _pending(request: Request, broker: ConsoleBroker) -> Response:
    await logged_in(request, broker)
    waiting = await asyncio.to_thread(pending, broker.store)
    return JSONResponse({"ids": [item.id for item in waiting]}, headers=HEADERS)


async def _agents(request: Request, broker: ConsoleBroker) -> Response:
    session = await logged_in(request, broker)
    live = await asyncio.to_thread(broker.console.minted.live, broker.store)
    policy = broker.policy
    names = sorted(set(getattr(policy, "agents", {})) | set(live))
    switches = await asyncio.to_thread(kill_switches, broker.store, names)
    body = pages_agents.agents_body(policy, live, switches, done_of(request), session.base)
    return html("Agents", body, session)


async def _feed(request: Request, broker: ConsoleBroker) -> Response:
    session = await logged_in(request, broker)
    feed = broker.console.feed
    await asyncio.to_thread(feed.refresh)
    latest, events = feed.since(0, 100)
    body = pages.feed_body(events, latest, feed.skipped_bytes, session.base)
    return html("Decisions", body, session)


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
    jwks = str(broker.keys.jwks_path)
    body = pages.audit_body(report, checked, str(broker.audit.path), jwks)
    return html("Audit chain", body, session)


async def _request_shown(request: Request, broker: ConsoleBroker) -> Response:
    """One request, whole (a link target for a notification)."""
    session = await logged_in(request, broker)
    found = await asyncio.to_thread(lookup, broker.store, str(request.path_params["request_id"]))
    report, checked = await _chain(broker)
    body = pages.approvals_body([found], session, pages.chain_line(report, checked), None)
    return html("Approval request", body, session)


async def _css(request: Request, broker: ConsoleBroker) -> Response:
    return Response(CSS, media_type="text/css", headers={"cache-control": "max-age=300"})


async def _js(request: Request, broker: ConsoleBroker) -> Response:
    return Response(JS, media_type="text/javascript", headers={"cache-control": "max-age=300"})


def console_routes() -> list[Route]:
    """The console's routes, for the broker's app."""
    get, post = ["GET"], ["POST"]
    base = f"{SESSION_PATH}{{secret}}"  # a session's secret path: its cookie goes nowhere else
    answer = f"{base}/approvals/{{request_id}}"
    return [
        Route("/console", handled(_outside), methods=get),
        Route("/console/login", handled(_login), methods=get),
        Route(f"{base}/", handled(_approvals), methods=get),
        Route(f"{base}/logout", handled(_logout), methods=post),
        Route(f"{base}/pending", handled(_pending), methods=get),
        Route(f"{base}/agents", handled(_agents), methods=get),
        Route(f"{base}/feed", handled(_feed), methods=get),
        Route(f"{base}/feed/events", handled(_feed_events), methods=get),
        Route(f"{base}/audit", handled(_audit), methods=get),
        Route(answer, handled(_request_shown), methods=get),
        Route(f"{answer}/approve", handled(actions.approve_request), methods=post),
        Route(f"{answer}/deny", handled(actions.deny_request), methods=post),
        Route(f"{base}/revoke", handled(actions.revoke_asked), methods=get),
        Route(f"{base}/revoke", handled(actions.revoke_token), methods=post),
        Route(f"{base}/kill", handled(actions.kill_asked), methods=get),
        Route(f"{base}/kill", handled(actions.kill), methods=post),
        Route("/console/static/console.css", handled(_css), methods=get),
        Route("/console/static/console.js", handled(_js), methods=get),
        Route("/console/{rest:path}", handled(_outside), methods=[*get, *post]),  # all else
    ]
