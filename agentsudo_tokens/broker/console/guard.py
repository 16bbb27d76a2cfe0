"""Who may see the console, and which POSTs it takes: session, Origin and CSRF checks.

    session = await logged_in(request, broker)        # Refused(401/403): no data, nothing done
    form = await checked_form(request, broker, session)   # Refused(403) without Origin + CSRF

Every refusal worth noting (a stale or forged cookie, a POST without its CSRF token or
from another origin, an admin no longer in the policy) is audited quietly: the first of
an address in a window whole, the rest counted (``ratelimit.QuietRefusals``).
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qsl

from starlette.requests import Request

from ..audit import principal
from ..peer import peer_of
from ._broker import ConsoleBroker
from .auth import Session, csrf_ok, session_of

__all__ = ["COOKIE", "MAX_FORM", "Refused", "address_of", "checked_form", "logged_in"]

COOKIE = "agentsudo_console"
MAX_FORM = 8 * 1024  # bytes of a form's body
_MAX_FIELDS = 16
_MAX_COOKIES = 4  # values of the console's cookie looked up in one request


class Refused(Exception):
    """A console request refused: the status, a title and a one-line message for the page."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


def address_of(request: Request) -> str:
    """Who is asking, as far as the connection says: ``uid:N`` on the socket, else the address."""
    peer = peer_of(request.scope)
    if peer is not None:
        return f"uid:{peer.uid}"
    client = request.client
    return f"{client.host}" if client is not None else "unknown"


def _refuse_quietly(
    request: Request, broker: ConsoleBroker, kind: str, reason: str, caller: str | None = None
) -> None:
    who = address_of(request)
    broker.quiet.refuse(
        kind,
        who,
        action=f"console {request.method} {request.url.path}",
        reason=reason,
        caller=caller,
        address=who,
    )


async def logged_in(request: Request, broker: ConsoleBroker) -> Session:
    """The admin's live session, checked against the policy as it is now.

    :raises Refused: 401 without a session (none, stale, forged, ended); 403 when its
        admin is no longer one.
    """
    cookies = _cookies(request)
    secret = request.path_params.get("secret")
    if not cookies or secret is None:
        raise Refused(401, "Not logged in", "log in with the link `agentsudo console` prints")
    session = await asyncio.to_thread(_session, broker, cookies, secret)
    if session is None:
        _refuse_quietly(request, broker, "console session refused", "a stale or forged session")
        raise Refused(
            401,
            "Not logged in",
            "this session is unknown, ended or expired: log in with a new link from "
            "`agentsudo console`",
        )
    if not broker.policy.is_admin(session.caller):
        why = f"{session.admin} is no longer an admin of this broker"
        _refuse_quietly(request, broker, "console session refused", why, principal(session.caller))
        raise Refused(403, "Forbidden", why)
    return session


def _cookies(request: Request) -> list[str]:
    """Every value of the console's cookie the browser sent (a cookie of another path, set
    by another port of this host, must not hide ours), at most ``_MAX_COOKIES``."""
    found = []
    for part in request.headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and value:
            found.append(value.strip('"'))
    return found[:_MAX_COOKIES]


def _session(broker: ConsoleBroker, cookies: list[str], secret: object) -> Session | None:
    for cookie in cookies:
        session = session_of(broker.store, cookie, secret)
        if session is not None:
            return session
    return None


def _same_origin(request: Request, broker: ConsoleBroker) -> bool:
    """Whether the POST comes from a page of this console (Origin, else Referer)."""
    public = broker.console.public_url  # behind a proxy: the origin browsers use, only
    host = request.headers.get("host")
    if public is None and not host:
        return False
    expected = public or f"{request.url.scheme}://{host}"
    origin = request.headers.get("origin")
    if origin is not None:
        return origin == expected
    referer = request.headers.get("referer")
    return referer is not None and referer.startswith(expected + "/console")


async def _body(request: Request) -> bytes | None:
    """The request's body, or ``None`` when longer than ``MAX_FORM``."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_FORM):
        return None
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_FORM:
            return None
    return bytes(data)


async def checked_form(request: Request, broker: ConsoleBroker, session: Session) -> dict[str, str]:
    """The POSTed form, once its Origin is this console's and its CSRF token the session's.

    :raises Refused: 403 (nothing is done): another origin, no or a wrong CSRF token;
        413 a body over ``MAX_FORM``; 400 a form that is not one.
    """
    caller = principal(session.caller)
    if not _same_origin(request, broker):
        _refuse_quietly(request, broker, "console csrf", "a POST from another origin", caller)
        raise Refused(403, "Forbidden", "this form was not sent from the console's own pages")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        _refuse_quietly(request, broker, "console csrf", "a POST that is not a form", caller)
        raise Refused(403, "Forbidden", "expected a form from the console's own pages")
    body = await _body(request)
    if body is None:
        raise Refused(413, "Too large", f"a form of at most {MAX_FORM} bytes")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body),
            max_num_fields=_MAX_FIELDS,
        )  # fmt: skip
    except (UnicodeDecodeError, ValueError):
        raise Refused(400, "Bad request", "expected a form of a few fields") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise Refused(400, "Bad request", f"the field {name!r} is given twice")
        form[name] = value
    if not csrf_ok(session, form.get("csrf")):
        _refuse_quietly(request, broker, "console csrf", "a POST without the CSRF token", caller)
        raise Refused(403, "Forbidden", "this form lacks the session's CSRF token: nothing done")
    return form
