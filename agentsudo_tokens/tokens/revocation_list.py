"""The signed revocation list: revocations published by the broker, checked by every verifier.

    text = build_revocation_list(store, signing_key, issuer="agentsudo")    # the broker
    listed = parse_revocation_list(text, keys, issuer="agentsudo")          # strict
    source = RevocationListSource("unix:///run/agentsudo/broker.sock", keys)
    Verifier(keys, revocations=source).verify(token)      # RevokedTokenError when listed

The list is a compact JWS signed with the broker's token key, header
``{"alg", "typ": "revocation-list+jwt", "kid"}``, claims::

    {"iss": "agentsudo", "iat": 1767225600, "exp": 1767225660,
     "revoked": {"<jti>": <the latest exp of a token naming it>, ...},
     "agents": {"<agent>": <tokens issued at or before this time are refused>, ...}}

It is built from the store entries ``tokens.revocation`` writes and
holds at most ``MAX_ENTRIES`` entries in ``MAX_LIST_BYTES``; a bigger list is
refused when built and when read (fail closed: verifiers then refuse every
token once their last good list is ``max_stale``).

``RevocationListSource`` fetches the list from ``https://`` (``http://`` only
for loopback), from a broker's Unix socket (``unix:///path``: ``GET
/v1/revocations`` on it) or from a file, every ``refresh`` seconds (on the
first check after that: no thread of its own). A list that fails to verify
(unknown key, bad signature, expired, malformed, older than the one held) is
refused and the last good one kept, for ``max_stale`` seconds after it was
fetched; after that, and while no list has been fetched yet, every check
raises ``RevocationsUnavailableError`` (a 503 in a service) until a fetch
succeeds. Between fetches a check is a clock read and two dict look-ups.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from ..config import DEFAULT_ISSUER, DEFAULT_LEEWAY, DEFAULT_MAX_TTL, MAX_LEEWAY, REVOCATIONS_PATH
from ..errors import (
    AgentSudoError,
    ConfigError,
    ExpiredTokenError,
    MalformedTokenError,
    NotYetValidTokenError,
    RevocationsUnavailableError,
    RevokedTokenError,
    WrongIssuerError,
)
from .claims import MAX_NAME
from .jwks_remote import _check_url, _FetchFailed, _Get, is_loopback_host
from .jws import CompactParts, decode_json_part, encode
from .revocation import AGENT, REVOKED, iso_time
from .signed import KidRefusal, verify_by_kid

if TYPE_CHECKING:
    import ssl

    from ..state import Store
    from .claims import VerifiedClaims
    from .jwks import KeySource
    from .keys import SigningKey

__all__ = [
    "LIST_TYPE",
    "MEDIA_TYPE",
    "RevocationList",
    "RevocationListSource",
    "RevocationSource",
    "build_revocation_list",
    "parse_revocation_list",
]

LIST_TYPE = "revocation-list+jwt"
MEDIA_TYPE = "application/revocation-list+jwt"
DEFAULT_LIST_TTL = 60  # seconds a list is valid for: a few refreshes
MAX_LIST_TTL = 3600
MAX_ENTRIES = 100_000
MAX_LIST_BYTES = 8 << 20  # 100,000 entries of 22-character jtis take about 5 MiB
DEFAULT_REFRESH = 10.0
DEFAULT_MAX_STALE = 60.0
DEFAULT_TIMEOUT = 5.0
RETRY_INTERVAL = 1.0  # least seconds between attempts after a failed one

_CLAIMS = frozenset({"iss", "iat", "exp", "revoked", "agents"})
_HEADER = frozenset({"alg", "typ", "kid"})
_TYPES = frozenset({LIST_TYPE, "application/" + LIST_TYPE})
_MAX_TIME = 2**53 - 1
_log = logging.getLogger("agentsudo.revocations")


class RevocationSource(Protocol):
    """A check the ``Verifier`` runs on every verification, after signature and claims."""

    def check(self, claims: VerifiedClaims) -> None:
        """Refuse a revoked token.

        :raises RevokedTokenError: revoked by ``jti`` or by agent.
        :raises RevocationsUnavailableError: no usable list now (fail closed).
        """
        ...

    def needs_fetch(self) -> bool:
        """True when ``check`` would fetch now (so it may block)."""
        ...


def _revoked(message: str, found: str) -> RevokedTokenError:
    return RevokedTokenError(message, expected="a token not revoked", found=found)


@dataclass(frozen=True)
class RevocationList:
    """A verified revocation list: revoked ``jti``s and per-agent cut-offs."""

    issuer: str
    issued_at: int
    expires_at: int
    kid: str
    revoked: Mapping[str, int]  # jti -> the latest exp of a token naming it
    agents: Mapping[str, int]  # agent -> tokens issued at or before this are refused

    def __repr__(self) -> str:
        return (
            f"RevocationList(iss={self.issuer!r}, iat={self.issued_at}, "
            f"revoked={len(self.revoked)}, agents={len(self.agents)})"
        )

    def check(self, claims: VerifiedClaims) -> None:
        """Refuse a token this list revokes.

        :raises RevokedTokenError: its ``jti`` is listed, or its agent's cut-off is at or
            after its ``iat``.
        """
        if claims.jti in self.revoked:
            raise _revoked(f"token {claims.jti!r} was revoked", "revoked jti")
        before = self.agents.get(claims.subject)
        if before is not None and claims.issued_at <= before:
            raise _revoked(
                f"every token of agent {claims.subject!r} issued until {iso_time(before)} was "
                f"revoked; this one was issued at {iso_time(claims.issued_at)}",
                "revoked agent",
            )
        chain = claims.delegation
        if chain is None:
            return
        for jti in chain.ancestors:  # a delegated token dies with any token it came from
            if jti in self.revoked:
                raise _revoked(
                    f"token {jti!r}, an ancestor of token {claims.jti!r} in its delegation "
                    "chain, was revoked",
                    "revoked ancestor",
                )
        for name in chain.actors:  # and with any agent of its chain
            before = self.agents.get(name)
            if before is not None and claims.issued_at <= before:
                raise _revoked(
                    f"every token of agent {name!r} (in this token's delegation chain) issued "
                    f"until {iso_time(before)} was revoked",
                    "revoked agent in chain",
                )


# -- building (the broker) -------------------------------------------------------------


def _stored_int(value: str, member: str) -> int | None:
    try:
        found = json.loads(value)[member]
    except (ValueError, TypeError, KeyError):
        return None
    return found if type(found) is int and 0 <= found <= _MAX_TIME else None


def _check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not name or len(name) > MAX_NAME or not name.isprintable():
        raise MalformedTokenError(
            f"revocation list: expected {what} as a printable string of 1 to {MAX_NAME} characters",
            expected=what,
            found=type(name).__name__,
        )
    return name


def build_revocation_list(
    store: Store,
    signing_key: SigningKey,
    *,
    issuer: str,
    ttl: int = DEFAULT_LIST_TTL,
    max_ttl: int = DEFAULT_MAX_TTL,
    now: float | None = None,
) -> str:
    """Every live revocation in ``store``, as a list signed by ``signing_key``.

    A ``jti`` is listed until the latest ``exp`` a token naming it can have
    (revoked at + ``max_ttl`` + the largest leeway); an agent with its cut-off.
    An entry whose value cannot be read still revokes: an agent's then covers
    every token issued while this list can be used.

    :param ttl: seconds the list is valid (1 to ``MAX_LIST_TTL``); short, since a
        verifier holding it sees no revocation made after ``iat``.
    :raises ConfigError: a bad ``ttl``, more than ``MAX_ENTRIES`` entries or
        ``MAX_LIST_BYTES``, or a store key that is no ``jti`` or agent name.
    :raises StoreUnavailableError: the store cannot be reached.
    """
    if type(ttl) is not int or not 0 < ttl <= MAX_LIST_TTL:
        raise ConfigError(
            f"revocation list ttl: expected 1 to {MAX_LIST_TTL} seconds, found {ttl!r}",
            expected=f"1..{MAX_LIST_TTL}",
            found=ttl,
        )
    issued = int(time.time() if now is None else now)
    latest = issued + max_ttl + MAX_LEEWAY
    revoked: dict[str, int] = {}
    agents: dict[str, int] = {}
    try:
        for key, value in store.items(REVOKED).items():
            at = _stored_int(value, "at")
            jti = _check_name(key[len(REVOKED) :], "jti")
            revoked[jti] = latest if at is None else at + max_ttl + MAX_LEEWAY
        for key, value in store.items(AGENT).items():
            before = _stored_int(value, "before")
            agent = _check_name(key[len(AGENT) :], "agent")
            agents[agent] = issued + ttl + 2 * MAX_LEEWAY if before is None else before
    except MalformedTokenError as exc:
        raise ConfigError(f"cannot build the {exc}", expected=exc.expected) from exc
    count = len(revoked) + len(agents)
    if count > MAX_ENTRIES:
        raise ConfigError(
            f"revocation list: expected at most {MAX_ENTRIES} entries, found {count}",
            expected=MAX_ENTRIES,
            found=count,
        )
    header = {"alg": signing_key.alg, "typ": LIST_TYPE, "kid": signing_key.kid}
    claims: dict[str, Any] = {
        "iss": issuer,
        "iat": issued,
        "exp": issued + ttl,
        "revoked": revoked,
        "agents": agents,
    }
    text = encode(header, claims, signing_key)
    if len(text) > MAX_LIST_BYTES:
        raise ConfigError(
            f"revocation list: expected at most {MAX_LIST_BYTES} bytes, found {len(text)}",
            expected=MAX_LIST_BYTES,
            found=len(text),
        )
    return text


# -- parsing (every verifier) ----------------------------------------------------------


def _oversize(size: int) -> MalformedTokenError:
    return MalformedTokenError(
        f"revocation list: expected at most {MAX_LIST_BYTES} bytes, found {size}",
        expected=MAX_LIST_BYTES,
        found=size,
    )


def _split(text: str | bytes) -> CompactParts:
    if not isinstance(text, str | bytes):
        raise MalformedTokenError(
            f"revocation list: expected text, found {type(text).__name__}",
            found=type(text).__name__,
        )
    if len(text) > MAX_LIST_BYTES + 2:  # a final CRLF aside
        raise _oversize(len(text))
    if isinstance(text, bytes):
        if not text.isascii():
            raise MalformedTokenError(
                "revocation list: expected ASCII", expected="ASCII", found="other bytes"
            )
        text = text.decode("ascii")
    text = text.strip(" \t\r\n")  # a file's final newline; outside the signed bytes
    if len(text) > MAX_LIST_BYTES:
        raise _oversize(len(text))
    parts = text.split(".")
    if not text.isascii() or len(parts) != 3 or not all(parts):
        raise MalformedTokenError(
            "revocation list: expected a JWS in compact form (3 non-empty ASCII parts)",
            expected=3,
            found=len(parts),
        )
    return CompactParts(parts[0], parts[1], parts[2])


def _time(claims: dict[str, Any], name: str) -> int:
    value = claims[name]
    if type(value) is not int or not 0 <= value <= _MAX_TIME:
        raise MalformedTokenError(
            f"revocation list: expected {name} as whole seconds, found {type(value).__name__}",
            expected="int",
            found=type(value).__name__,
        )
    return value


def _entries(claims: dict[str, Any], name: str, what: str) -> Mapping[str, int]:
    value = claims[name]
    if not isinstance(value, dict):
        raise MalformedTokenError(
            f"revocation list: expected {name} as an object, found {type(value).__name__}",
            expected="object",
            found=type(value).__name__,
        )
    for key, seconds in value.items():
        _check_name(key, what)
        if type(seconds) is not int or not 0 <= seconds <= _MAX_TIME:
            raise MalformedTokenError(
                f"revocation list: expected {name} values as whole seconds, "
                f"found {type(seconds).__name__}",
                expected="int",
                found=type(seconds).__name__,
            )
    return MappingProxyType(value)


def parse_revocation_list(
    text: str | bytes,
    keys: KeySource,
    *,
    issuer: str,
    now: float | None = None,
    leeway: int = DEFAULT_LEEWAY,
) -> RevocationList:
    """Verify a revocation list strictly and return what it revokes.

    :raises MalformedTokenError: oversized, not a compact JWS, a header other than
        ``alg``/``typ``/``kid``, a ``typ`` other than ``revocation-list+jwt``, an ``alg``
        not the key's, duplicate JSON keys, claims other than ``iss iat exp revoked
        agents``, malformed entries, more than ``MAX_ENTRIES``.
    :raises UnknownKeyError: ``kid`` names no key in ``keys``.
    :raises BadSignatureError: the signature does not verify.
    :raises WrongIssuerError: ``iss`` is not ``issuer``.
    :raises NotYetValidTokenError: ``iat`` more than ``leeway`` in the future.
    :raises ExpiredTokenError: ``exp`` more than ``leeway`` in the past.
    :raises KeysUnavailableError: ``keys`` cannot be had now (a JWKS URL past ``max_stale``).
    """
    parts = _split(text)
    header = decode_json_part(parts.header, "revocation list header")
    if set(header) != _HEADER:
        raise MalformedTokenError(
            "revocation list header: expected exactly alg, typ and kid",
            expected=sorted(_HEADER),
            found=sorted(header),
        )
    typ, kid, alg = header["typ"], header["kid"], header["alg"]
    if not isinstance(typ, str) or typ.lower() not in _TYPES:
        raise MalformedTokenError(
            f"revocation list header: expected typ {LIST_TYPE!r}, found {typ!r}"[:200],
            expected=LIST_TYPE,
            found=typ if isinstance(typ, str) else type(typ).__name__,
        )
    if not isinstance(kid, str) or not 0 < len(kid) <= 128:
        raise MalformedTokenError("revocation list header: expected kid as a short string")
    try:
        verify_by_kid(parts, kid, alg, keys)
    except KidRefusal as refusal:
        raise refusal.error("revocation list") from None
    claims = decode_json_part(parts.payload, "revocation list payload")
    if set(claims) != _CLAIMS:
        raise MalformedTokenError(
            "revocation list: expected exactly the claims iss, iat, exp, revoked, agents",
            expected=sorted(_CLAIMS),
            found=sorted(claims)[:10],
        )
    if claims["iss"] != issuer:
        found = claims["iss"] if isinstance(claims["iss"], str) else type(claims["iss"]).__name__
        raise WrongIssuerError(
            f"revocation list: expected issuer {issuer!r}, found {found!r}"[:200],
            expected=issuer,
            found=found,
        )
    iat, exp = _time(claims, "iat"), _time(claims, "exp")
    if not 0 < exp - iat <= MAX_LIST_TTL:
        raise MalformedTokenError(
            f"revocation list: expected a lifetime of 1 to {MAX_LIST_TTL}s, found {exp - iat}s",
            expected=f"1..{MAX_LIST_TTL}",
            found=exp - iat,
        )
    moment = time.time() if now is None else now
    if iat > moment + leeway:
        raise NotYetValidTokenError(
            f"revocation list: expected iat in the past, found it {int(iat - moment)}s ahead",
            expected=f"iat <= {int(moment)}",
            found=iat,
        )
    if moment >= exp + leeway:
        raise ExpiredTokenError(
            f"revocation list: expected a list valid now, found it expired "
            f"{int(moment - exp)}s ago",
            expected=f"exp > {int(moment)}",
            found=exp,
        )
    revoked = _entries(claims, "revoked", "jti")
    agents = _entries(claims, "agents", "agent")
    if len(revoked) + len(agents) > MAX_ENTRIES:
        raise MalformedTokenError(
            f"revocation list: expected at most {MAX_ENTRIES} entries, "
            f"found {len(revoked) + len(agents)}",
            expected=MAX_ENTRIES,
            found=len(revoked) + len(agents),
        )
    return RevocationList(issuer, iat, exp, kid, revoked, agents)


# -- fetching and caching (every verifier) ------------------------------------------------


class _FileReader:
    def __init__(self, path: Path) -> None:
        self.path = path

    def download(self) -> bytes:
        from ..fileperms import open_trusted

        try:
            with open_trusted(self.path, what="revocation list") as handle:
                return handle.read(MAX_LIST_BYTES + 3)
        except OSError as exc:
            raise _FetchFailed(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        except ConfigError as exc:
            raise _FetchFailed(str(exc)) from exc


def _accepts(media_type: str) -> bool:
    return media_type in (MEDIA_TYPE, "application/jwt")


class _Reader(Protocol):
    def download(self) -> bytes: ...


def _reader(location: str, timeout: float, ssl_context: ssl.SSLContext | None) -> _Reader:
    """Something whose ``download()`` returns the list's bytes or raises ``_FetchFailed``."""
    what = "revocation list URL"
    common: dict[str, Any] = {
        "timeout": timeout,
        "accept": MEDIA_TYPE,
        "kind": MEDIA_TYPE,
        "accepts": _accepts,
        "max_bytes": MAX_LIST_BYTES + 2,
    }
    scheme = location.partition(":")[0].lower()
    if location.startswith("unix://"):
        path = location[len("unix://") :]
        if not path.startswith("/") or not path.isprintable():
            raise ConfigError(
                f"{what}: expected unix:///absolute/path/to/broker.sock, found {location!r}",
                expected="unix:///path",
                found=location,
            )
        return _Get(location, unix=path, path=REVOCATIONS_PATH, **common)
    if scheme in ("http", "https"):
        parts = _check_url(location, what)
        if scheme == "https" and ssl_context is None:
            import ssl as ssl_module

            ssl_context = ssl_module.create_default_context()
        loopback = is_loopback_host(parts.hostname or "")
        return _Get(
            location,
            loopback=loopback,
            ssl_context=ssl_context if scheme == "https" else None,
            **common,
        )
    if "://" in location:
        raise ConfigError(
            f"{what}: expected https://, http:// for loopback, unix:///path or a file, "
            f"found {location!r}",
            found=location,
        )
    return _FileReader(Path(location))


class RevocationListSource:
    """A revocation list fetched and cached: the check a ``Verifier`` is given.

    :param location: ``https://...`` (``http://`` only for loopback), a broker's
        socket ``unix:///path`` (``GET /v1/revocations`` on it), or a file path.
    :param keys: the keys the list must be signed with (the token keys).
    :param issuer: the ``iss`` the list must carry.
    :param leeway: seconds of clock skew allowed on the list's ``iat`` and ``exp``.
    :param refresh: seconds a fetched list is used before the next check fetches again.
    :param max_stale: seconds after the last good fetch past which every check is
        refused (``RevocationsUnavailableError``) until a fetch succeeds; at least
        ``refresh``.
    :param timeout: seconds for one whole fetch.
    :param clock: a monotonic clock; for tests.
    :raises ConfigError: a location or limits it cannot use. A failed first fetch
        is not an error here: checks fail closed until a fetch succeeds.
    """

    def __init__(
        self,
        location: str,
        keys: KeySource,
        *,
        issuer: str = DEFAULT_ISSUER,
        leeway: int = DEFAULT_LEEWAY,
        refresh: float = DEFAULT_REFRESH,
        max_stale: float = DEFAULT_MAX_STALE,
        timeout: float = DEFAULT_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, value in (("refresh", refresh), ("timeout", timeout)):
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"revocation list {name}: expected seconds > 0, found {value!r}")
        if not (math.isfinite(max_stale) and max_stale >= refresh):
            raise ConfigError(
                f"revocation list max_stale: expected seconds >= refresh ({refresh:g}), "
                f"found {max_stale!r}",
                expected=f">= {refresh:g}",
                found=max_stale,
            )
        self.location = location
        self.keys = keys
        self.issuer = issuer
        self.leeway = leeway
        self.refresh = refresh
        self.max_stale = max_stale
        self.timeout = timeout
        self._clock = clock
        self._reader = _reader(location, timeout, ssl_context)
        self._lock = threading.Lock()
        self._generation = 0
        self._list: RevocationList | None = None
        self._fetched = -math.inf
        self._next_check = -math.inf
        self._last_error = ""
        with self._lock:
            self._attempt()

    def __repr__(self) -> str:
        return f"RevocationListSource({self.location!r})"

    @property
    def current(self) -> RevocationList | None:
        """The list in use (``None`` before the first good fetch); never fetches."""
        return self._list

    def needs_fetch(self) -> bool:
        """True when ``check`` would fetch now (so it may block); never fetches itself."""
        return self._clock() >= self._next_check

    def check(self, claims: VerifiedClaims) -> None:
        """Refuse a token the current list revokes; fetch first when a refresh is due.

        :raises RevokedTokenError: revoked by ``jti`` or by agent.
        :raises RevocationsUnavailableError: no list fetched yet, or the last good one is
            older than ``max_stale`` (or expired) and no fetch since has succeeded.
        """
        if self._clock() >= self._next_check:
            self._update()
        self._usable_list().check(claims)

    def refresh_now(self) -> None:
        """Fetch now, whatever the cache says. On failure the last good list stays.

        :raises ConfigError: the fetch failed.
        """
        with self._lock:
            reason = self._attempt()
        if reason is not None:
            raise ConfigError(f"cannot fetch the revocation list from {self.location}: {reason}")

    # -- internals -------------------------------------------------------------------

    def _fresh(self, listed: RevocationList | None) -> bool:
        return (
            listed is not None
            and self._clock() - self._fetched <= self.max_stale
            and time.time() < listed.expires_at + self.leeway
        )

    def _usable_list(self) -> RevocationList:
        listed = self._list
        if listed is None or not self._fresh(listed):
            self._refuse()
        assert listed is not None
        return listed

    def _refuse(self) -> None:
        why = self._last_error or "no answer yet"
        if self._list is None:
            message = f"revocation list from {self.location} unavailable: none fetched yet ({why})"
            found = "none"
        else:
            age = self._clock() - self._fetched
            message = (
                f"revocation list from {self.location} unavailable: the last good list is "
                f"{age:.0f}s old (max_stale {self.max_stale:g}s) or expired, and refetching "
                f"failed: {why}"
            )
            found = f"{age:.0f}s"
        raise RevocationsUnavailableError(
            message, expected=f"a list at most {self.max_stale:g}s old", found=found
        )

    def _update(self) -> None:
        """Fetch if still due, sharing a fetch in flight.

        A caller holding a usable list never queues behind a fetch; one without
        waits (at most ``timeout``) for the fetch in flight, then looks again.
        """
        generation = self._generation
        if self._fresh(self._list):
            acquired = self._lock.acquire(blocking=False)
        else:
            acquired = self._lock.acquire(timeout=self.timeout)
        if not acquired:
            return
        try:
            if self._generation == generation and self._clock() >= self._next_check:
                self._attempt()
        finally:
            self._lock.release()

    def _attempt(self) -> str | None:
        """Fetch and verify once (the lock held); return why it failed, or None."""
        try:
            listed = parse_revocation_list(
                self._reader.download(), self.keys, issuer=self.issuer, leeway=self.leeway
            )
            held = self._list
            if held is not None and listed.issued_at < held.issued_at:  # a replay
                raise MalformedTokenError(
                    f"revocation list: expected iat at or after {held.issued_at} (the list "
                    f"held), found {listed.issued_at}"
                )
        except Exception as exc:  # whatever went wrong, the last good list stays
            known = isinstance(exc, _FetchFailed | AgentSudoError)
            reason = str(exc) if known else f"unexpected {type(exc).__name__}"
            now = self._clock()
            self._last_error = reason
            self._next_check = now + min(self.refresh, RETRY_INTERVAL)
            self._generation += 1
            _log.warning(
                "revocation list from %s refused or unavailable (%s); %s",
                self.location,
                reason,
                "keeping the last good list"
                if self._fresh(self._list)
                else "refusing every token until a fetch succeeds",
            )
            return reason
        now = self._clock()
        self._list = listed
        self._fetched = now
        self._next_check = now + self.refresh
        self._last_error = ""
        self._generation += 1
        return None
