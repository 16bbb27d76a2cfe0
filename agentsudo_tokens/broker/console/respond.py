"""How the console answers: its security headers, HTML pages, and every error as a clear page.

Route("/console", handled(approvals_page))   # a handler(request, broker) -> Response
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from ...errors import AgentSudoError
from ..problems import TooMany, problem_for
from ._broker import ConsoleBroker
from .auth import SESSION_PATH, Session
from .guard import Refused
from .html import Markup, fill, page, url

__all__ = ["HEADERS", "Handler", "done_of", "handled", "html", "text_field"]

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
Handler = Callable[[Request, ConsoleBroker], Awaitable[Response]]


def _page(request: Request, status: int, title: str, message: str) -> Response:
    secret = request.path_params.get("secret")
    home = f"{SESSION_PATH}{secret}/" if isinstance(secret, str) else "/console"
    body = fill(
        '<p class="refusal">{message}</p><p><a href="{home}">Back to the console</a></p>',
        message=message,
        home=url(home),
    )
    return HTMLResponse(page(title, body), status_code=status, headers=HEADERS)


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def handled(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
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
        return _page(request, status, title.capitalize(), message)

    return endpoint


def html(title: str, body: Markup, session: Session) -> Response:
    text = page(title, body, admin=session.admin, csrf=session.csrf, base=session.base)
    return HTMLResponse(text, headers=HEADERS)


def done_of(request: Request) -> str | None:
    return request.query_params.get("done")


def text_field(form: dict[str, str], name: str, limit: int) -> str | None:
    """An optional one-line text field.

    :raises Refused: 400, not printable or too long.
    """
    value = form.get(name, "").strip()
    if not value:
        return None
    if len(value) > limit or not value.isprintable():
        raise Refused(400, "Bad request", f"{name}: expected printable text of at most {limit}")
    return value
