"""Console logins: one-time links and server-side sessions, kept in the store by their hash.

    link = new_link(store, caller)              # "t" of /console/login?t=..., 5 minutes, once
    session, cookie = redeem_link(store, link)  # LoginRefused: unknown, used or expired
    session.base                     # "/console/s/<secret>": its pages, its cookie's Path
    session = session_of(store, cookie, secret)  # None: no such session, or not at its path
    csrf_ok(session, form_token)                # constant-time comparison

A link and a session cookie are 256-bit random values; the store holds only their
SHA-256 (``console-link:<hex>``, ``console-session:<hex>``), so reading the store
gives no way in. A link is taken atomically: of two racing uses, one logs in. A
session lasts at most ``SESSION_TTL`` and carries the admin it was made for and its
CSRF token; the admin is checked against the policy again on every request.

Each session has its own secret path (``/console/s/<128+ random bits>``): its pages
are served under it and its cookie's ``Path`` is it, so a browser sends the cookie
nowhere else, not even to another port of the same host (browsers do not separate
cookies by port). The store keeps the path's hash with the session: a cookie without
its path, or a path without its cookie, is no session.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeGuard

from ...errors import PermissionDeniedError
from ..audit import principal
from ..policy import Caller

if TYPE_CHECKING:
    from ...state import Store

__all__ = [
    "LINK_TTL",
    "SESSION_TTL",
    "SESSION_PATH",
    "LoginRefused",
    "Session",
    "csrf_ok",
    "end_session",
    "new_link",
    "redeem_link",
    "session_of",
]

LINK_TTL = 300  # seconds a login link may be used in
SESSION_TTL = 8 * 3600  # seconds a session lasts, at most
LINK = "console-link:"
SESSION = "console-session:"
SESSION_PATH = "/console/s/"  # + a session's secret: where its pages and cookie live
_TOKEN_BYTES = 32  # 256 bits
_PATH_BYTES = 24  # 192 bits of a session's secret path
_MAX_TOKEN = 64  # characters of a link or cookie value we look up at all


class LoginRefused(PermissionDeniedError):
    """A login link that is unknown, already used, or expired."""


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("ascii", "replace")).hexdigest()


def _plausible(value: object) -> TypeGuard[str]:
    """A value shaped like ours (urlsafe base64 of 32 bytes): anything else is not looked up."""
    return (
        isinstance(value, str)
        and 20 <= len(value) <= _MAX_TOKEN
        and value.isascii()
        and all(c.isalnum() or c in "-_" for c in value)
    )


def _caller_json(caller: Caller) -> dict[str, object]:
    return {"uid": caller.uid, "gids": sorted(caller.gids), "credential": caller.credential}


def _caller_of(data: object) -> Caller | None:
    if not isinstance(data, dict):
        return None
    uid, gids, credential = data.get("uid"), data.get("gids"), data.get("credential")
    if uid is not None and type(uid) is not int:
        return None
    if not isinstance(gids, list) or not all(type(g) is int for g in gids):
        return None
    if credential is not None and not isinstance(credential, str):
        return None
    if uid is None and credential is None:
        return None
    return Caller(uid=uid, gids=frozenset(gids), credential=credential)


@dataclass(frozen=True)
class Session:
    """A logged-in admin: who, since when, until when, and the session's CSRF token."""

    key: str  # the store key (of the cookie's hash); never the cookie itself
    caller: Caller
    csrf: str
    created_at: float
    expires_at: float
    base: str  # "/console/s/<secret>": the session's pages (and its cookie's path) under it

    @property
    def admin(self) -> str:
        """The admin as the policy names it: ``uid:N`` or ``credential:NAME``."""
        return principal(self.caller) or "unknown"


def new_link(store: Store, caller: Caller, *, now: float | None = None) -> tuple[str, float]:
    """A one-time login value for ``caller`` and when it expires; only its hash is kept.

    :raises StoreUnavailableError: the store cannot be written.
    """
    moment = time.time() if now is None else now
    value = secrets.token_urlsafe(_TOKEN_BYTES)
    expires = moment + LINK_TTL
    record = {"caller": _caller_json(caller), "expires_at": expires}
    store.put(LINK + _digest(value), json.dumps(record), expires_at=expires)
    return value, expires


def redeem_link(store: Store, value: object) -> tuple[Session, str]:
    """Use a login link once: a new session and its cookie value.

    :raises LoginRefused: not a link we made, already used, or expired.
    :raises StoreUnavailableError: the store cannot be reached.
    """
    if not _plausible(value):
        raise LoginRefused("this login link is not one the broker made")
    raw = store.take(LINK + _digest(value))  # once: a second use finds nothing
    now = time.time()
    try:
        record = json.loads(raw) if raw is not None else None
    except ValueError:
        record = None
    caller = _caller_of(record.get("caller")) if isinstance(record, dict) else None
    expires = record.get("expires_at") if isinstance(record, dict) else None
    if caller is None or not isinstance(expires, int | float) or expires <= now:
        raise LoginRefused(
            "this login link is unknown, used or expired: ask for a new one with "
            "`agentsudo console`"
        )
    cookie = secrets.token_urlsafe(_TOKEN_BYTES)
    secret = secrets.token_urlsafe(_PATH_BYTES)
    session = Session(
        key=SESSION + _digest(cookie),
        caller=caller,
        csrf=secrets.token_urlsafe(_TOKEN_BYTES),
        created_at=now,
        expires_at=now + SESSION_TTL,
        base=SESSION_PATH + secret,
    )
    data = {
        "caller": _caller_json(caller),
        "path": _digest(secret),
        "csrf": session.csrf,
        "created_at": session.created_at,
        "expires_at": session.expires_at,
    }
    store.put(session.key, json.dumps(data), expires_at=session.expires_at)
    return session, cookie


def session_of(store: Store, cookie: object, secret: object) -> Session | None:
    """The live session of a cookie value at its secret path, or ``None`` (absent,
    forged, stale, ended, or the cookie of another path).

    :raises StoreUnavailableError: the store cannot be reached.
    """
    if not _plausible(cookie) or not _plausible(secret):
        return None
    key = SESSION + _digest(cookie)
    raw = store.get(key)
    try:
        data = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    caller = _caller_of(data.get("caller"))
    csrf, created, expires = data.get("csrf"), data.get("created_at"), data.get("expires_at")
    path = data.get("path")
    if (
        caller is None
        or not isinstance(path, str)
        or not hmac.compare_digest(path.encode(), _digest(secret).encode())
        or not _plausible(csrf)
        or not isinstance(created, int | float)
        or not isinstance(expires, int | float)
        or expires <= time.time()
        or expires - created > SESSION_TTL
    ):
        return None
    return Session(key, caller, csrf, float(created), float(expires), SESSION_PATH + secret)


def end_session(store: Store, session: Session) -> None:
    """Log out: the session is gone from the store.

    :raises StoreUnavailableError: the store cannot be reached.
    """
    store.take(session.key)


def csrf_ok(session: Session, given: object) -> bool:
    """Whether a form's CSRF token is the session's (compared in constant time)."""
    if not isinstance(given, str) or not given.isascii():
        return False
    return hmac.compare_digest(given.encode(), session.csrf.encode())
