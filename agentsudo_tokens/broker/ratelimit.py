"""How fast one caller can make the broker write: a token bucket per caller, quiet refusals.

    limits = RateLimiter(rate=50, burst=500)
    wait = limits.take(("issue", "uid:1000"))  # 0.0: go on; else seconds until it may again
    quiet = QuietRefusals(audit)                 # over a RefusalLog(window=60)
    quiet.refuse("unauthenticated", "ip:10.0.0.9", action="POST /v1/tokens",
                 reason="no credential", address="ip:10.0.0.9")   # the first in 60 s: audited
    quiet.summarise()       # once a second: "N more refusals of ip:10.0.0.9 ... in the last 60 s"

A caller's bucket holds ``burst`` requests and refills at ``rate`` a second;
a request takes one, or is refused until one is there. Both classes remember a
bounded number of keys: the limiter forgets the caller unseen the longest (who
starts again with a full bucket), and the refusal log counts refusals
beyond its ``max_keys`` open windows together, under ``OTHERS``, so neither
memory nor the audit grows with the number of callers or addresses. Each call
takes a lock and never waits: safe from the event loop and from threads.

``QuietRefusals`` writes them to the broker's audit as ``broker_refused``
events: a key's first refusal in a window whole (with ``address`` for a TCP
caller without a valid credential), and, once the window ends, one line with
``refusals`` (how many more) and ``seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import AgentSudoError, ConfigError

if TYPE_CHECKING:
    from .audit import BrokerAudit

__all__ = [
    "ISSUE_BURST",
    "ISSUE_RATE",
    "MAX_CALLERS",
    "OTHERS",
    "REFUSAL_WINDOW",
    "QuietRefusals",
    "RateLimiter",
    "RefusalLog",
    "Summary",
]

ISSUE_RATE = 50.0  # requests a second, per caller, sustained
ISSUE_BURST = 500  # requests at once, per caller
MIN_RATE = 0.001  # a request in about 17 minutes: Retry-After stays a sane number
MAX_RATE = 1_000_000.0
MAX_BURST = 1_000_000_000
MAX_CALLERS = 4096  # buckets kept; the caller unseen the longest is forgotten first
REFUSAL_WINDOW = 60.0  # seconds: the first refusal of a key in full, then one count
MAX_REFUSAL_KEYS = 1024  # windows open at once; refusals of any other key are counted together
OTHERS = "others"  # the key of refusals counted together
SUMMARY_EVERY = 1.0  # seconds between looks for ended windows to summarise
_MAX_ACTION = 200

Clock = Callable[[], float]


class RateLimiter:
    """A token bucket per key: ``burst`` at once, ``rate`` a second after that.

    :raises ConfigError: ``rate`` not a finite number above 0, ``burst`` not a whole
        number of at least 1 (a limit is never off), ``max_callers`` below 1.
    """

    def __init__(
        self,
        rate: float = ISSUE_RATE,
        burst: int = ISSUE_BURST,
        *,
        max_callers: int = MAX_CALLERS,
        clock: Clock = time.monotonic,
    ) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int | float):
            raise ConfigError(f"rate: expected a number, found {rate!r}")
        if not (math.isfinite(rate) and MIN_RATE <= rate <= MAX_RATE):
            raise ConfigError(
                f"rate: expected {MIN_RATE:g} to {MAX_RATE:g} requests a second, found {rate:g}"
            )
        if isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= MAX_BURST:
            raise ConfigError(
                f"burst: expected a whole number from 1 to {MAX_BURST}, found {burst!r}"
            )
        if max_callers < 1:
            raise ConfigError(f"max_callers: expected at least 1, found {max_callers}")
        self.rate = float(rate)
        self.burst = burst
        self.max_callers = max_callers
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()  # tokens, at

    def __repr__(self) -> str:
        return f"RateLimiter(rate={self.rate:g}, burst={self.burst})"

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: Hashable) -> float:
        """One request of ``key``: 0.0 if it may go on, else the seconds until it may."""
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + max(0.0, now - at) * self.rate)
            wait = 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate
            if wait == 0.0:
                tokens -= 1.0
            self._buckets[key] = (tokens, now)  # the most recently seen, at the end
            while len(self._buckets) > self.max_callers:
                self._buckets.popitem(last=False)
            return wait


@dataclass(frozen=True)
class Summary:
    """Refusals of ``key`` counted, not audited one by one, over ``seconds``.

    ``note`` is what the first refusal's caller gave (``None`` for ``OTHERS``, whose
    refusals were none of them audited in full).
    """

    key: Hashable
    refusals: int
    seconds: float
    note: Any = None


class _Window:
    __slots__ = ("count", "note", "started")

    def __init__(self, started: float, note: Any) -> None:
        self.started = started
        self.count = 0
        self.note = note


class RefusalLog:
    """Which refusals to audit in full: a key's first in each ``window``; the rest counted.

    :raises ConfigError: ``window`` not above 0, or ``max_keys`` below 1.
    """

    def __init__(
        self,
        window: float = REFUSAL_WINDOW,
        *,
        max_keys: int = MAX_REFUSAL_KEYS,
        clock: Clock = time.monotonic,
    ) -> None:
        if not (math.isfinite(window) and window > 0):
            raise ConfigError(f"window: expected seconds above 0, found {window}")
        if max_keys < 1:
            raise ConfigError(f"max_keys: expected at least 1, found {max_keys}")
        self.window = window
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._open: OrderedDict[Hashable, _Window] = OrderedDict()  # by when each began
        self._others: _Window | None = None
        self._ended: list[Summary] = []

    def __len__(self) -> int:
        return len(self._open)

    def first(self, key: Hashable, note: Any = None) -> bool:
        """A refusal of ``key``: True if it is to be audited in full (``note`` kept for its
        summary), False if it is only counted."""
        with self._lock:
            now = self._clock()
            self._close(now, everything=False)
            window = self._open.get(key)
            if window is not None:
                window.count += 1
                return False
            if len(self._open) < self.max_keys:
                self._open[key] = _Window(now, note)
                return True
            if self._others is None:
                self._others = _Window(now, None)
            self._others.count += 1
            return False

    def due(self, *, everything: bool = False) -> list[Summary]:
        """The windows ended (``everything``: all, as the broker stops) with refusals counted."""
        with self._lock:
            self._close(self._clock(), everything=everything)
            ended, self._ended = self._ended, []
            return ended

    def _close(self, now: float, *, everything: bool) -> None:
        while self._open:
            key, window = next(iter(self._open.items()))
            if not everything and now - window.started < self.window:
                break  # the windows after it began later
            del self._open[key]
            if window.count:
                seconds = min(now - window.started, self.window)
                self._ended.append(Summary(key, window.count, seconds, window.note))
        others = self._others
        if others is not None and (everything or now - others.started >= self.window):
            seconds = min(now - others.started, self.window)
            self._ended.append(Summary(OTHERS, others.count, seconds))
            self._others = None


@dataclass(frozen=True)
class _Refusal:
    """The first refusal of a window, as its audit event names it."""

    action: str
    reason: str
    caller: str | None = None  # uid:N or credential:NAME
    agent: str | None = None
    address: str | None = None  # over TCP, without a valid credential

    def event(self, **more: Any) -> dict[str, Any]:
        named = {"agent": self.agent, "caller": self.caller, "address": self.address}
        return {"action": self.action[:_MAX_ACTION], "reason": self.reason, **named, **more}


class QuietRefusals:
    """Refusals that may come at line rate, in the broker's audit: few lines, none lost."""

    def __init__(self, audit: BrokerAudit, log: RefusalLog | None = None) -> None:
        self.audit = audit
        self.log = log if log is not None else RefusalLog()

    def refuse(
        self,
        kind: str,
        who: str,
        *,
        action: str,
        reason: str,
        caller: str | None = None,
        agent: str | None = None,
        address: str | None = None,
    ) -> bool:
        """A refusal of ``who`` (``kind``: what they are refused for): audited whole if it
        is the first in its window, else counted. Whether it was audited.

        :raises StoreUnavailableError: the audit cannot be written.
        """
        first = _Refusal(action, reason, caller=caller, agent=agent, address=address)
        if not self.log.first((kind, who), first):
            return False
        self.audit.record("broker_refused", **first.event())
        return True

    def summarise(self, *, everything: bool = False) -> None:
        """One audit line for each ended window with refusals counted (``everything``: all)."""
        for summary in self.log.due(everything=everything):
            seconds, key, first = round(summary.seconds, 1), summary.key, summary.note
            if isinstance(key, tuple) and isinstance(first, _Refusal):  # (kind, who)
                reason = f"{summary.refusals} more refusals of {key[1]} ({key[0]})"
                line = _Refusal(str(key[0]), reason, first.caller, first.agent, first.address)
            else:  # OTHERS: beyond the windows kept open, none audited whole
                line = _Refusal("refusals", f"{summary.refusals} refusals of other callers")
            event = line.event(refusals=summary.refusals, seconds=seconds)
            event["reason"] += f" in the last {seconds:g} s"
            with contextlib.suppress(AgentSudoError):  # logged by the audit itself
                self.audit.record("broker_refused", **event)

    async def keep_summarising(self, every: float = SUMMARY_EVERY) -> None:
        """Every ``every`` seconds, the summaries of ended windows (until cancelled)."""
        while True:
            await asyncio.sleep(every)
            self.summarise()
