"""Errors as RFC 9457 problem details: one table from our error classes to HTTP answers.

    raise Problem(404, "unknown-approval", "no pending request apr_x")
    # -> 404 application/problem+json
    #    {"type": "urn:agentsudo:problem:unknown-approval", "title": "Unknown approval",
    #     "status": 404, "detail": "no pending request apr_x"}

Every error the broker answers with goes through ``problem_response``; the
detail is the error's one-line message, never a stack trace, a token or a key.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from ..errors import (
    AgentSudoError,
    ConfigError,
    InvalidDPoPProofError,
    InvalidScopeError,
    InvalidTokenError,
    PermissionDeniedError,
    StoreUnavailableError,
    UnknownApprovalError,
)

__all__ = ["MEDIA_TYPE", "Problem", "TooMany", "problem_for", "problem_response"]

MEDIA_TYPE = "application/problem+json"
_PREFIX = "urn:agentsudo:problem:"


class Problem(Exception):
    """An HTTP error with a problem type: raised by the broker's handlers."""

    def __init__(self, status: int, kind: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.extra = extra


class TooMany(Problem):
    """429: a caller over its rate limit, and the whole seconds before it may ask again."""

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(429, "too-many-requests", detail)
        self.retry_after = retry_after


# Looked up along the error's class hierarchy, most specific first.
_TABLE: tuple[tuple[type[BaseException], int, str], ...] = (
    (StoreUnavailableError, 503, "state-unavailable"),
    (UnknownApprovalError, 404, "unknown-approval"),
    (InvalidDPoPProofError, 400, "invalid-dpop-proof"),  # RFC 9449 §5, at the token endpoint
    (InvalidTokenError, 401, "invalid-token"),
    (PermissionDeniedError, 403, "forbidden"),
    (InvalidScopeError, 400, "invalid-request"),
    (ConfigError, 400, "invalid-request"),
)


def problem_for(exc: BaseException) -> Problem:
    """The problem an error is answered with; anything unexpected is a 500 that says nothing."""
    if isinstance(exc, Problem):
        return exc
    for cls, status, kind in _TABLE:
        if isinstance(exc, cls):
            return Problem(status, kind, str(exc))
    if isinstance(exc, AgentSudoError):
        return Problem(400, "invalid-request", str(exc))
    return Problem(500, "internal", "the broker failed on this request; see its log")


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    """The ``application/problem+json`` response for ``problem``."""
    title = problem.kind.replace("-", " ").capitalize()
    body = {
        "type": _PREFIX + problem.kind,
        "title": title,
        "status": problem.status,
        "detail": problem.detail,
        **problem.extra,
    }
    return JSONResponse(body, status_code=problem.status, media_type=MEDIA_TYPE, headers=headers)
