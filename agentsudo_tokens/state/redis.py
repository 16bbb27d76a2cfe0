"""The shared store: a Redis server, for many processes on many machines.

    store = RedisStore("redis://10.0.0.5:6379/0")        # or AGENTSUDO_STORE=redis://...

Needs the ``redis`` package (``pip install '.[redis]' in a checkout``). Keys
live under ``agentsudo:``; every one is written with ``PXAT``, so Redis
expires it with the token it concerns. ``add`` is ``SET NX PXAT``; ``take`` is
``GET`` and ``DEL`` in one ``MULTI``. The connection is opened at first use;
a server that cannot be reached is a ``StoreUnavailableError`` (one quick
retry, no long back-off: the checks that need it fail closed, fast).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import StoreUnavailableError
from .base import Store

__all__ = ["RedisStore", "redact"]

PREFIX = "agentsudo:"


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = f"{parts.username}:***@" if parts.username else ":***@"
        return urlunsplit(parts._replace(netloc=user + netloc))
    except ValueError:
        return "<unparsable URL>"


def _escape_glob(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisStore(Store):
    """A store on a Redis server (``redis://``, ``rediss://`` or ``unix://`` URL).

    :param url: the server, as redis-py's ``Redis.from_url`` reads it.
    :param timeout: seconds to connect and to wait for each reply.
    :raises StoreUnavailableError: the ``redis`` package is not installed, or a bad URL.
    """

    def __init__(self, url: str, *, timeout: float = 2.0) -> None:
        self.url = redact(url)
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError as exc:
            raise StoreUnavailableError(
                f"state store {self.url} needs the redis package: "
                "pip install '.[redis]' in a checkout",
                expected="redis installed",
                found="missing",
            ) from exc
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        try:
            self._client: Any = redis.Redis.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 1),
                decode_responses=True,
            )
        except (ValueError, redis.RedisError) as exc:
            raise StoreUnavailableError(
                f"state store {self.url}: not a usable Redis URL ({exc})", found=self.url
            ) from exc

    def _unavailable(self, exc: BaseException) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"state store {self.url} is unavailable: {type(exc).__name__}: {exc}",
            expected="a reachable Redis server",
            found=type(exc).__name__,
        )

    def get_many(self, keys: Sequence[str]) -> list[str | None]:
        if not keys:
            return []
        try:
            return list(self._client.mget([PREFIX + key for key in keys]))
        except self._errors as exc:
            raise self._unavailable(exc) from exc

    def get(self, key: str) -> str | None:
        try:
            value = self._client.get(PREFIX + key)
        except self._errors as exc:
            raise self._unavailable(exc) from exc
        return None if value is None else str(value)

    def put(self, key: str, value: str, *, expires_at: float) -> None:
        self._local_changes += 1
        try:
            self._client.set(PREFIX + key, value, pxat=int(expires_at * 1000))
        except self._errors as exc:
            raise self._unavailable(exc) from exc

    def add(self, key: str, value: str, *, expires_at: float) -> bool:
        self._local_changes += 1
        try:
            return bool(self._client.set(PREFIX + key, value, nx=True, pxat=int(expires_at * 1000)))
        except self._errors as exc:
            raise self._unavailable(exc) from exc

    def take(self, key: str) -> str | None:
        self._local_changes += 1
        try:
            pipe = self._client.pipeline(transaction=True)
            value, _ = pipe.get(PREFIX + key).delete(PREFIX + key).execute()
        except self._errors as exc:
            raise self._unavailable(exc) from exc
        return None if value is None else str(value)

    def items(self, prefix: str) -> dict[str, str]:
        try:
            keys = list(
                self._client.scan_iter(match=_escape_glob(PREFIX + prefix) + "*", count=500)
            )
            values = self._client.mget(keys) if keys else []
        except self._errors as exc:
            raise self._unavailable(exc) from exc
        cut = len(PREFIX)
        found = {k[cut:]: v for k, v in zip(keys, values, strict=True) if v is not None}
        return dict(sorted(found.items()))

    def close(self) -> None:
        try:
            self._client.close()
        except self._errors:
            pass
