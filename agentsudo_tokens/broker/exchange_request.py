"""The token-exchange request (RFC 8693 §2.1) and its error answer (RFC 6749 §5.2).

    asked = parse_exchange_form(b"grant_type=...&subject_token=...&subject_token_type=...")
    raise ExchangeError("invalid_scope", "scope: ...")      # .response(): the JSON answer

``parse_exchange_form`` checks the form strictly (see ``broker.exchange`` for
what is accepted); ``ExchangeError.response`` is the one answer both an OAuth
library and ``BrokerClient`` read: RFC 6749's ``error`` and
``error_description`` with the broker's problem members in the same object.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.responses import JSONResponse

from ..errors import InvalidLimitError, InvalidScopeError
from ..tokens.claims import MAX_AUDIENCES, MAX_NAME, is_agent_name
from ..tokens.delegation import ACCESS_TOKEN_TYPE, GRANT_TYPE, JWT_TOKEN_TYPE
from ..tokens.limits import LIMITS_CLAIM, Limits
from ..tokens.scopes import ScopeSet

__all__ = ["ExchangeError", "ExchangeRequest", "parse_exchange_form"]

_TOKEN_TYPES = frozenset({ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE})
_MAX_FIELDS = 64
_MAX_VALUE = 8192
_MAX_DETAILS = 32768  # authorization_details: the JSON of at most 32 entries
_REPEATABLE = frozenset({"audience"})
_UNSUPPORTED = {
    "resource": ("invalid_target", "resource is not supported: name services with audience"),
    "actor_token": (
        "invalid_request",
        "actor_token is not supported: name the sub-agent with actor",
    ),
    "actor_token_type": (
        "invalid_request",
        "actor_token_type is not supported: name the sub-agent with actor",
    ),
}
_PREFIX = "urn:agentsudo:problem:"
_AUDIT_ITEMS = 8  # of each list asked, kept in a refusal's audit event
_AUDIT_TEXT = 100  # characters of each item kept there


class ExchangeError(Exception):
    """A refused exchange, as an RFC 6749 error code plus the broker's problem members."""

    def __init__(
        self,
        error: str,
        description: str,
        *,
        status: int = 400,
        kind: str = "invalid-request",
        cls: str | None = None,
        reason: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.kind = kind
        self.cls = cls
        self.reason = reason
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {
            "error": self.error,
            "error_description": _ascii(self.description),
            "type": _PREFIX + self.kind,
            "title": self.kind.replace("-", " ").capitalize(),
            "status": self.status,
            "detail": self.description,
        }
        if self.cls is not None:
            body["agentsudo_error"] = self.cls
        if self.reason is not None:
            body["reason"] = self.reason
        headers = {"cache-control": "no-store", "pragma": "no-cache", **self.headers}
        return JSONResponse(body, status_code=self.status, headers=headers)


def _ascii(text: str) -> str:
    """``error_description`` is ASCII without ``"`` or ``\\`` (RFC 6749 §5.2)."""
    return "".join(c if 0x20 <= ord(c) <= 0x7E and c not in '"\\' else "?" for c in text)


def _invalid(description: str, error: str = "invalid_request") -> ExchangeError:
    return ExchangeError(error, description)


# -- the request --------------------------------------------------------------------------


@dataclass(frozen=True)
class ExchangeRequest:
    """A well-formed token-exchange request (not yet judged)."""

    subject_token: str
    scopes: ScopeSet | None
    audience: tuple[str, ...] | None
    actor: str | None
    ttl: int | None
    issued_token_type: str
    limits: Limits | None = None  # authorization_details (RFC 9396 §6): narrower, budgets

    def asked(self) -> dict[str, Any]:
        """What was asked, for the audit: never the token, and little of a long request
        (a refusal is audited, and the audit must not be a way to write much)."""
        asked: dict[str, Any] = {}
        if self.scopes is not None:
            asked["scopes"] = _few(self.scopes.scopes)
        if self.audience is not None:
            asked["audience"] = _few(self.audience)
        if self.actor is not None:
            asked["actor"] = self.actor
        if self.ttl is not None:
            asked["ttl"] = self.ttl
        if self.limits is not None:
            asked["limits"] = _few(tuple(entry.text() for entry in self.limits))
            budgets = tuple(f"{e.scope} {e.budget.text()}" for e in self.limits if e.budget)
            if budgets:
                asked["budgets"] = _few(budgets)
        return asked


def _few(items: tuple[str, ...]) -> list[str]:
    """At most ``_AUDIT_ITEMS`` items of at most ``_AUDIT_TEXT`` characters, saying so."""
    kept = [
        item if len(item) <= _AUDIT_TEXT else f"{item[:_AUDIT_TEXT]}... ({len(item)} characters)"
        for item in items[:_AUDIT_ITEMS]
    ]
    if len(items) > _AUDIT_ITEMS:
        kept.append(f"... ({len(items)} in all)")
    return kept


def _fields(raw: bytes) -> dict[str, list[str]]:
    try:
        text = raw.decode("utf-8")
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=bool(text),
            errors="strict",
            max_num_fields=_MAX_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise _invalid(
            f"the body is not a form (application/x-www-form-urlencoded UTF-8, at most "
            f"{_MAX_FIELDS} fields)"
        ) from None
    fields: dict[str, list[str]] = {}
    for name, value in pairs:
        if value == "":  # sent without a value: as if omitted (RFC 6749 §3.1)
            continue
        longest = _MAX_DETAILS if name == LIMITS_CLAIM else _MAX_VALUE
        if len(value) > longest or not value.isprintable():
            raise _invalid(f"{_shown(name)}: expected printable text of at most {longest}")
        fields.setdefault(name, []).append(value)
    for name, values in fields.items():
        if len(values) > 1 and name not in _REPEATABLE:
            raise _invalid(f"{_shown(name)} is given {len(values)} times: at most once")
    return fields


def _shown(text: str) -> str:
    return ascii(text[:40])


def parse_exchange_form(raw: bytes) -> ExchangeRequest:
    """A token-exchange request from a form body, checked strictly.

    :raises ExchangeError: not a well-formed token-exchange request.
    """
    fields = _fields(raw)

    def one(name: str) -> str | None:
        values = fields.get(name)
        return values[0] if values else None

    grant = one("grant_type")
    if grant is None:
        raise _invalid("grant_type is missing")
    if grant != GRANT_TYPE:
        raise _invalid(
            f"grant_type: only {GRANT_TYPE} is served here, found {_shown(grant)}",
            "unsupported_grant_type",
        )
    for name, (error, why) in _UNSUPPORTED.items():
        if name in fields:
            raise _invalid(why, error)
    token, kind = one("subject_token"), one("subject_token_type")
    if token is None or kind is None:
        raise _invalid("subject_token and subject_token_type are required")
    if kind not in _TOKEN_TYPES:
        raise _invalid(f"subject_token_type: expected {ACCESS_TOKEN_TYPE} or {JWT_TOKEN_TYPE}")
    wanted = one("requested_token_type") or ACCESS_TOKEN_TYPE
    if wanted not in _TOKEN_TYPES:
        raise _invalid(
            f"requested_token_type: this broker issues {ACCESS_TOKEN_TYPE} (a JWT), found "
            f"{_shown(wanted)}"
        )
    scope = one("scope")
    scopes = None
    if scope is not None:
        try:
            scopes = ScopeSet(scope.split(" "))
        except InvalidScopeError as exc:
            raise _invalid(f"scope: {exc}", "invalid_scope") from None
    actor = one("actor")
    if actor is not None and not is_agent_name(actor):
        raise _invalid(f"actor: expected an agent name, found {_shown(actor)}")
    ttl_text = one("expires_in")
    ttl = None
    if ttl_text is not None:
        if not (ttl_text.isascii() and ttl_text.isdigit() and len(ttl_text) <= 9):
            raise _invalid(f"expires_in: expected whole seconds, found {_shown(ttl_text)}")
        ttl = int(ttl_text)
    audience = fields.get("audience")
    if audience is not None and (
        len(audience) > MAX_AUDIENCES or any(len(item) > MAX_NAME for item in audience)
    ):
        raise _invalid(
            f"audience: expected at most {MAX_AUDIENCES} names of at most {MAX_NAME} characters",
            "invalid_target",
        )
    return ExchangeRequest(
        token,
        scopes,
        tuple(audience) if audience else None,
        actor,
        ttl,
        wanted,
        _limits(one(LIMITS_CLAIM)),
    )


def _limits(text: str | None) -> Limits | None:
    """``authorization_details``: a JSON array of ``agentsudo_limits`` entries, as in a token.

    :raises ExchangeError: ``invalid_authorization_details`` (RFC 9396 §5) for anything else.
    """
    if text is None:
        return None
    try:
        return Limits.from_claim(json.loads(text, parse_constant=_no_constant))
    except (ValueError, RecursionError) as exc:
        why = exc.message if isinstance(exc, InvalidLimitError) else "not valid JSON"
        raise ExchangeError(
            "invalid_authorization_details",
            f"authorization_details: {why}",
            kind="invalid-limits",
            cls="InvalidLimitError",
        ) from None


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")
