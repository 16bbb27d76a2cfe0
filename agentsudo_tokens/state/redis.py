"""The shared store: a Redis server, for many processes on many machines.

    store = RedisStore("redis://10.0.0.5:6379/0")        # or AGENTSUDO_STORE=redis://...

Needs the ``redis`` package (``pip install '.[redis]' in a checkout``). Keys
live under ``agentsudo:``; every one is written with ``PXAT``, so Redis
expires it with the token it concerns. ``add`` is ``SET NX PXAT``; ``take`` is
``GET`` and ``DEL`` in one ``MULTI``; ``spend`` is one Lua script (``EVALSHA``,
loaded again when the server has forgotten it) that reads the budget's JSON
string, adds in decimal strings (exact to any size: Lua's numbers are doubles),
and writes it back or leaves it. The connection is opened at first use;
a server that cannot be reached is a ``StoreUnavailableError`` (one quick
retry, no long back-off: the checks that need it fail closed, fast).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import StoreUnavailableError
from .base import MAX_AMOUNT, MAX_NAMES, Counters, Store

__all__ = ["RedisStore", "redact"]

PREFIX = "agentsudo:"
_NOT_BUDGET = re.compile(r"not a budget entry|^WRONGTYPE")

# KEYS[1]: the entry; ARGV: the largest count, the most names in an entry, the expiry in
# epoch ms, then (name, amount, limit) triples, names sorted, numbers canonical decimal.
# Checks a stored entry as strictly as base.decode_budget. Returns the totals, or false
# (nil) to refuse.
_SPEND = """
local MAX, MAX_NAMES = ARGV[1], tonumber(ARGV[2])
local function canonical(n)
  n = string.gsub(n, '^0+', '')
  if n == '' then return '0' end
  return n
end
local function within(a, b)
  if #a ~= #b then return #a < #b end
  return a <= b
end
local function add(a, b)
  local digits, carry, i, j = {}, 0, #a, #b
  while i > 0 or j > 0 or carry > 0 do
    local d = carry
    if i > 0 then d = d + string.byte(a, i) - 48 end
    if j > 0 then d = d + string.byte(b, j) - 48 end
    digits[#digits + 1] = d % 10
    carry = (d - d % 10) / 10
    i, j = i - 1, j - 1
  end
  return canonical(string.reverse(table.concat(digits)))
end
local function counters(part, into, names)
  local seen, count = {}, 0
  for item in string.gmatch(part, '[^,]+') do
    local name, n = string.match(item, '^"([%w_][%w_%.%-:]*)":(%d+)$')
    count = count + 1
    if not name or #name > 64 or seen[name] or count > MAX_NAMES then return false end
    if string.match(n, '^0.') or not within(n, MAX) then return false end
    seen[name] = true
    if into then into[name] = n; names[#names + 1] = name end
  end
  local _, commas = string.gsub(part, ',', ',')
  return count == 0 and #part == 0 or count == commas + 1
end
local key, at = KEYS[1], tonumber(ARGV[3])
local spent, names, limits = {}, {}, {}
local old = redis.call('GET', key)
if old then
  local had, part = string.match(old, '^{"limits":{([^{}]*)},"spent":{([^{}]*)}}$')
  if not had or not counters(had) or not counters(part, spent, names) then
    return redis.error_reply('ERR agentsudo: not a budget entry')
  end
  local left = redis.call('PTTL', key)
  if left > 0 then
    local now = redis.call('TIME')
    local until_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + left
    if until_ms > at then at = until_ms end
  end
end
local totals = {}
for i = 4, #ARGV, 3 do
  local name, limit = ARGV[i], ARGV[i + 2]
  local total = add(spent[name] or '0', ARGV[i + 1])
  if not within(total, limit) then return false end
  totals[#totals + 1] = total
  limits[#limits + 1] = '"' .. name .. '":' .. limit
end
for i = 4, #ARGV, 3 do
  local name = ARGV[i]
  if not spent[name] then names[#names + 1] = name end
  spent[name] = totals[(i - 1) / 3]
end
if #names > MAX_NAMES then
  return redis.error_reply('ERR agentsudo: not a budget entry: too many counts')
end
table.sort(names)
local shown = {}
for i, name in ipairs(names) do shown[i] = '"' .. name .. '":' .. spent[name] end
local text = '{"limits":{' .. table.concat(limits, ',') .. '},"spent":{'
  .. table.concat(shown, ',') .. '}}'
redis.call('SET', key, text, 'PXAT', string.format('%d', at))
return totals
"""


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
        self._response_error: type[BaseException] = redis.ResponseError
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

        self._spend_script: Any = self._client.register_script(_SPEND)

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

    def _spend(self, key: str, counters: Counters, expires_at: float) -> dict[str, int] | None:
        arguments = [str(MAX_AMOUNT), str(MAX_NAMES), str(int(expires_at * 1000))]
        for name, amount, limit in counters:
            arguments += (name, str(amount), str(limit))
        try:
            totals = self._spend_script(keys=[PREFIX + key], args=arguments)
        except self._errors as exc:
            if not isinstance(exc, self._response_error) or not _NOT_BUDGET.search(str(exc)):
                raise self._unavailable(exc) from exc
            raise StoreUnavailableError(
                f"state store {self.url}: {key[:300]!r} is not a budget entry: refusing it",
                expected="a budget entry (a JSON string)",
                found=str(exc)[:100],
            ) from exc
        if totals is None:
            return None
        return {name: int(total) for (name, _, _), total in zip(counters, totals, strict=True)}

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
