"""The broker's web console at ``/console``, for admins (DESIGN §15).

    $ agentsudo console            # an admin: prints http://HOST:PORT/console/login?t=...
    # the broker: create_app adds console_routes(); POST /v1/console/links makes the link

Server-rendered HTML with a little plain JavaScript, no build step. Login by a
one-time link (``auth``); a server-side session in an HttpOnly, SameSite=Strict
cookie; every form POST checked for its Origin and the session's CSRF token
(``guard``). Pages (``pages``, built by ``html.fill``, which escapes every value):
pending approvals shown whole with Approve and Deny, agents with their policy,
live tokens (``minted``) and kill switch, the live decision feed (``feed``: the
broker's audit file followed, and events services forward), the audit chain's
state (``chain``).
"""

from __future__ import annotations

from .auth import LINK_TTL, SESSION_TTL, LoginRefused, new_link
from .feed import ForwardedBatch
from .minted import record_minted
from .routes import console_routes
from .state import ConsoleState

__all__ = [
    "LINK_TTL",
    "SESSION_TTL",
    "ConsoleState",
    "ForwardedBatch",
    "LoginRefused",
    "console_routes",
    "new_link",
    "record_minted",
]
