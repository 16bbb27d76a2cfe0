"""Request bodies of the broker's JSON endpoints: bounded in size and time, strictly typed.

    asked = model_of(_SpendRequest, await json_body(request, broker))

Anything else is a 4xx problem (``broker.problems``), never a 500.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request

from .problems import Problem

__all__ = ["json_body", "model_of"]


async def json_body(request: Request, broker: Any) -> Any:
    """The request's JSON, bounded in size and in time; anything else is a 4xx."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != "application/json":
        raise Problem(415, "unsupported-media-type", "send the body as application/json")
    limit = broker.config.max_body
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise Problem(413, "body-too-large", f"a request body is at most {limit} bytes")

    async def read() -> bytes:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise Problem(413, "body-too-large", f"a request body is at most {limit} bytes")
        return bytes(body)

    try:
        raw = await asyncio.wait_for(read(), broker.config.body_timeout)
    except TimeoutError:
        raise Problem(408, "request-timeout", "the request body came too slowly") from None
    except ClientDisconnect:  # gone mid-body: nobody to answer, nothing to log as an error
        raise Problem(400, "client-disconnected", "the client left before its body") from None
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise Problem(400, "invalid-json", "the body is not valid JSON") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def model_of(model: type[BaseModel], body: Any) -> Any:
    if not isinstance(body, dict):
        raise Problem(400, "invalid-request", "the body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "body"
        raise Problem(400, "invalid-request", f"{where}: {first.get('msg', 'invalid')}") from None
