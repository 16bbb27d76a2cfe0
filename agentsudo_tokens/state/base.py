"""The store interface: a few atomic operations on string entries that expire.

    store.put("revoked:abc", "{...}", expires_at=exp)       # set, or overwrite
    store.add("used:abc", "1", expires_at=exp)             # set only if absent: True for the winner
    store.get("revoked:abc")                               # None when absent or expired
    store.take("approval-answer:xyz")                      # read and delete, atomically
    store.spend("budget:abc:0", {"calls": 1}, {"calls": 20}, expires_at=exp)  # debit, or None

Every entry has an expiry (epoch seconds), so the store never grows without
bound. Every failure to reach or use the backend is a ``StoreUnavailableError``:
callers fail closed on it. Backends: ``SqliteStore`` (one file, many
processes) and ``RedisStore`` (many machines).

A budget entry is a JSON string like any other value,
``{"limits":{"calls":20},"spent":{"calls":1}}`` (names sorted, no spaces), so
``get`` and ``items`` read it; only ``spend`` changes it, atomically.
"""

from __future__ import annotations

import abc
import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from ..errors import StoreUnavailableError

__all__ = ["MAX_AMOUNT", "MAX_COUNTERS", "MAX_NAMES", "Store"]

MAX_AMOUNT = 2**62  # amounts, limits and totals: exact integers up to this
MAX_COUNTERS = 16  # limits in one debit
MAX_NAMES = 4 * MAX_COUNTERS  # names in a stored entry (its limits, or every count it kept)
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}\Z")

Counters = tuple[tuple[str, int, int], ...]  # (name, amount, limit), sorted by name


class Store(abc.ABC):
    """Shared state for revocation, one-time tokens and approval requests.

    Keys and values are strings. Implementations are safe to share between
    threads, and many processes may use one store at once.
    """

    url: str  # where the store lives, any password masked
    _local_changes = 0

    @property
    def changes(self) -> int:
        """A number that changes whenever this process writes through the store.

        Verifiers reuse a store's answer about a token for a moment; a write in
        this process (a revocation, say) makes them ask again at once.
        """
        return self._local_changes

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    @abc.abstractmethod
    def get_many(self, keys: Sequence[str]) -> list[str | None]:
        """The values of ``keys``, in order: ``None`` for an absent or expired entry.

        :raises StoreUnavailableError: the store cannot be reached.
        """

    def get(self, key: str) -> str | None:
        """The value of ``key``, or ``None`` when absent or expired.

        :raises StoreUnavailableError: the store cannot be reached.
        """
        return self.get_many((key,))[0]

    @abc.abstractmethod
    def put(self, key: str, value: str, *, expires_at: float) -> None:
        """Set ``key`` (replacing any value) until ``expires_at``, in epoch seconds.

        :raises StoreUnavailableError: the store cannot be reached.
        """

    def put_many(self, entries: Sequence[tuple[str, str, float]]) -> None:
        """``put`` each ``(key, value, expires_at)``; a backend may do it in one write.

        :raises StoreUnavailableError: the store cannot be reached.
        """
        for key, value, expires_at in entries:
            self.put(key, value, expires_at=expires_at)

    @abc.abstractmethod
    def add(self, key: str, value: str, *, expires_at: float) -> bool:
        """Set ``key`` only if it is absent (or expired); True when this call set it.

        Atomic: of any number of concurrent callers, across processes and
        machines, exactly one gets True.

        :raises StoreUnavailableError: the store cannot be reached.
        """

    @abc.abstractmethod
    def take(self, key: str) -> str | None:
        """Delete ``key`` and return its value (``None`` if absent), atomically.

        Of concurrent callers, at most one gets the value.

        :raises StoreUnavailableError: the store cannot be reached.
        """

    @abc.abstractmethod
    def items(self, prefix: str) -> dict[str, str]:
        """Every live entry whose key starts with ``prefix``.

        :raises StoreUnavailableError: the store cannot be reached.
        """

    def spend(
        self,
        key: str,
        amounts: Mapping[str, int],
        limits: Mapping[str, int],
        *,
        expires_at: float,
    ) -> dict[str, int] | None:
        """Add every amount to its counter under ``key``, only if each stays within its limit.

        All or nothing, atomically across threads, processes and machines. Returns
        the totals after (every name in ``limits``; 0 for one never spent), or
        ``None`` when any would exceed its limit, and then nothing changes. The
        entry keeps ``limits`` (the latest successful call's) and lives until
        ``expires_at``, or longer if an earlier call said so: never shorter.

        :raises ValueError: an amount or limit that is not an int from 0 to
            ``MAX_AMOUNT``, an amount with no limit, a bad counter name, or an
            ``expires_at`` that is not a time in the future.
        :raises StoreUnavailableError: the store cannot be reached, or ``key``
            holds something that is not a budget.
        """
        counters = _counters(amounts, limits)
        if isinstance(expires_at, bool) or not isinstance(expires_at, int | float):
            found = type(expires_at).__name__
            raise ValueError(f"expires_at: expected epoch seconds, found {found}")
        if not math.isfinite(expires_at) or expires_at <= self._now():
            raise ValueError(f"expires_at: expected a time in the future, found {expires_at}")
        return self._spend(key, counters, float(expires_at))

    def _spend(self, key: str, counters: Counters, expires_at: float) -> dict[str, int] | None:
        """The backend's atomic debit of checked ``counters``; see ``spend``."""
        raise StoreUnavailableError(
            f"state store {self.url} cannot keep budgets",
            expected="a store with atomic debits (SQLite, Redis)",
            found=type(self).__name__,
        )

    def spent(self, key: str) -> tuple[dict[str, int], dict[str, int]] | None:
        """The budget under ``key``: (limits, spent), or ``None`` when absent or expired.

        :raises StoreUnavailableError: the store cannot be reached, or ``key``
            holds something that is not a budget.
        """
        value = self.get(key)
        return None if value is None else decode_budget(value, self.url, key)

    def _now(self) -> float:
        """The time in epoch seconds, as this store judges expiry."""
        return time.time()

    def purge(self) -> int:
        """Remove expired entries now; return how many. Backends also do it on their own."""
        return 0

    def close(self) -> None:  # noqa: B027 - an optional hook, not an abstract method
        """Release connections. The store reopens them if used again."""

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _counters(amounts: Mapping[str, int], limits: Mapping[str, int]) -> Counters:
    """Checked (name, amount, limit) triples for every name in ``limits``, sorted by name.

    :raises ValueError: see ``Store.spend``.
    """
    if not isinstance(amounts, Mapping) or not isinstance(limits, Mapping):
        raise ValueError(
            "amounts and limits: expected mappings of names to integers, "
            f"found {type(amounts).__name__} and {type(limits).__name__}"
        )
    if not 1 <= len(limits) <= MAX_COUNTERS:
        raise ValueError(f"limits: expected 1 to {MAX_COUNTERS} counters, found {len(limits)}")
    for name, value in limits.items():
        _check_name(name)
        _check_int("limit", name, value)
    for name, value in amounts.items():
        if name not in limits:
            shown = name if isinstance(name, str) else type(name).__name__
            raise ValueError(f"amount {shown!r}: expected one of {sorted(limits)}, found no limit")
        _check_int("amount", name, value)
    return tuple((name, amounts.get(name, 0), limits[name]) for name in sorted(limits))


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        shown = repr(name[:70]) if isinstance(name, str) else type(name).__name__
        raise ValueError(
            "counter name: expected 1 to 64 of A-Z a-z 0-9 _ . - (not starting with . or -), "
            f"found {shown}"
        )


def _check_int(kind: str, name: str, value: object) -> None:
    if type(value) is not int:  # not bool, not float, not a subclass
        raise ValueError(f"{kind} {name!r}: expected an int, found {type(value).__name__}")
    if not 0 <= value <= MAX_AMOUNT:
        shown = value if value.bit_length() <= 100 else f"an int of {value.bit_length()} bits"
        raise ValueError(f"{kind} {name!r}: expected 0 to 2**62, found {shown}")


def debit(before: Mapping[str, int], counters: Counters) -> dict[str, int] | None:
    """Every counter after adding ``counters`` to ``before``, or ``None`` if one would exceed."""
    after = dict(before)
    for name, amount, limit in counters:
        total = after.get(name, 0) + amount
        if total > limit:
            return None
        after[name] = total
    return after


def encode_budget(limits: Mapping[str, int], spent: Mapping[str, int]) -> str:
    """The stored text of a budget entry: canonical JSON, names sorted."""
    return json.dumps(
        {"limits": dict(sorted(limits.items())), "spent": dict(sorted(spent.items()))},
        separators=(",", ":"),
    )


def decode_budget(text: str, url: str, key: str) -> tuple[dict[str, int], dict[str, int]]:
    """(limits, spent) of a stored budget entry.

    :raises StoreUnavailableError: the text is not a budget entry.
    """
    try:
        data: Any = json.loads(text)
    except ValueError:
        data = None
    parts = data if isinstance(data, dict) and sorted(data) == ["limits", "spent"] else None
    if parts is not None and all(_is_counters(parts[part]) for part in ("limits", "spent")):
        return dict(parts["limits"]), dict(parts["spent"])
    raise StoreUnavailableError(
        f"state store {url}: {key[:300]!r} is not a budget entry: refusing it",
        expected='{"limits": {name: int}, "spent": {name: int}}',
        found=text[:100],
    )


def _is_counters(value: object) -> bool:
    return (
        isinstance(value, dict)
        and len(value) <= MAX_NAMES
        and all(
            isinstance(name, str)
            and _NAME.match(name) is not None
            and type(count) is int
            and 0 <= count <= MAX_AMOUNT
            for name, count in value.items()
        )
    )
