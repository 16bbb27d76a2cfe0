"""The offline verifier: signature, time window, issuer, audience, scopes.

    verifier = Verifier(JwksFile("keys/jwks.json"))
    claims = verifier.verify(token)             # VerifiedClaims, or an InvalidTokenError
    claims.scopes.allows("write:refunds")

    verifier = Verifier(keys, store=open_store("redis://10.0.0.5:6379/0"))
    verifier.verify(token)      # also: not revoked, and a one-time token not used before

The algorithm comes from the key found by ``kid``, never from the token. Checks
run cheapest first: length, shape, header, key, signature, claims. Any
unexpected exception while verifying is a rejection. A verified token is
cached (bounded) until it expires, so a repeat costs a dict look-up and a
clock read. With a store, verification also asks the store (revocation; a
one-time token's single use), and a store that cannot be reached refuses
(``StoreUnavailableError``). ``revocation_recheck`` lets a "not revoked"
answer about a token be reused for that many seconds (the default verifier:
one second), unless this process writes to the store meanwhile; a one-time
token always asks. Without a store, a token that needs one (``once``) is
refused (``StateRequiredError``). A ``revocations`` check (the broker's signed
list, ``agentsudo_tokens.revocation_list``) runs on every verification, cached
or not, after the signature and claims and before the store.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import threading
import time
import weakref
from collections.abc import Callable
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from ..config import BROKER as BROKER_VARIABLE
from ..config import DEFAULT_AUDIENCE, DEFAULT_ISSUER, DEFAULT_LEEWAY, DEFAULT_MAX_TTL, Settings
from ..config import JWKS as JWKS_VARIABLE
from ..config import REVOCATIONS as REVOCATIONS_VARIABLE
from ..errors import (
    AgentSudoError,
    ConfigError,
    InvalidTokenError,
    KeysUnavailableError,
    MalformedTokenError,
    RevocationsUnavailableError,
    StateRequiredError,
    StoreUnavailableError,
)
from .claims import UnverifiedClaims, VerifiedClaims, check_claims, check_header
from .jwks import KeySet, KeySource, load_key_source
from .jws import decode_json_part, split
from .keys import PublicKey
from .revocation import check_revoked, check_token
from .signed import KidRefusal, verify_by_kid

if TYPE_CHECKING:
    from ..state import Store
    from .revocation_list import RevocationSource

__all__ = ["Verifier", "decode_unverified"]

DEFAULT_CACHE_SIZE = 4096
DEFAULT_REVOCATION_RECHECK = 1.0  # seconds; the default verifier's bound on a revocation's delay


_HEADER_LIMIT = 256
_HEADERS: dict[str, tuple[str, str]] = {}  # encoded header -> (kid, alg); one per signing key


def _header(encoded: str) -> tuple[str, str]:
    """Decode and check the protected header, remembering headers already accepted."""
    known = _HEADERS.get(encoded)
    if known is not None:
        return known
    kid_alg = check_header(decode_json_part(encoded, "header"))
    if len(_HEADERS) < _HEADER_LIMIT:
        _HEADERS[encoded] = kid_alg
    return kid_alg


_VERIFIERS: weakref.WeakSet[Verifier] = weakref.WeakSet()


def _renew_cache_locks() -> None:  # a thread of the parent may have held one at the fork
    for verifier in list(_VERIFIERS):
        verifier._cache_lock = threading.Lock()


os.register_at_fork(after_in_child=_renew_cache_locks)


class _Entry:
    """A verified token in the cache, and when the store last said it was not revoked."""

    __slots__ = ("claims", "key", "checked_at", "changes")

    def __init__(self, claims: VerifiedClaims, key: PublicKey) -> None:
        self.claims = claims
        self.key = key
        self.checked_at = -math.inf
        self.changes = -1


class Verifier:
    """Verifies agentsudo tokens with public keys alone.

    :param keys: where public keys come from (a ``KeySet``, a ``JwksFile``, ...).
    :param issuer: the ``iss`` to expect.
    :param audience: the ``aud`` to expect (the token's ``aud`` must contain it).
    :param leeway: seconds of clock skew allowed on ``exp``, ``nbf`` and ``iat``.
    :param max_ttl: the longest lifetime ``exp - iat`` accepted.
    :param cache_size: how many verified tokens to remember; 0 turns the cache off.
    :param store: state to check after the signature and claims: revocation and
        one-time tokens (see ``agentsudo_tokens.state``). ``None``: offline only,
        and one-time tokens are refused.
    :param revocation_recheck: seconds for which the store's "not revoked" answer
        about a cached token is reused; 0 asks on every verification.
    :param revocations: a check run on every verification after the signature and
        claims, before the store: the broker's signed revocation list
        (``RevocationListSource``). Needs no store and writes nothing.
    :param clock: seconds since the epoch; for tests.
    """

    def __init__(
        self,
        keys: KeySource,
        *,
        issuer: str = DEFAULT_ISSUER,
        audience: str = DEFAULT_AUDIENCE,
        leeway: int = DEFAULT_LEEWAY,
        max_ttl: int = DEFAULT_MAX_TTL,
        cache_size: int = DEFAULT_CACHE_SIZE,
        store: Store | None = None,
        revocation_recheck: float = 0.0,
        revocations: RevocationSource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.max_ttl = max_ttl
        self.cache_size = cache_size
        self.store = store
        self.revocation_recheck = revocation_recheck
        self.revocations = revocations
        self._clock = clock
        self._cache: dict[str, _Entry] = {}
        self._cache_lock = threading.Lock()
        _VERIFIERS.add(self)

    def __repr__(self) -> str:
        stored = f", store={self.store!r}" if self.store is not None else ""
        if self.revocations is not None:
            stored += f", revocations={self.revocations!r}"
        return (
            f"Verifier(keys={self.keys!r}, issuer={self.issuer!r}, "
            f"audience={self.audience!r}{stored})"
        )

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, *, store: Store | None | Literal["auto"] = "auto"
    ) -> Verifier:
        """A verifier for ``AGENTSUDO_JWKS`` (or the key directory), issuer and audience.

        With ``AGENTSUDO_REVOCATIONS`` (or ``AGENTSUDO_BROKER``) set, revocations come
        from that signed list instead of a state file: the service writes nothing.

        :param store: ``"auto"``: ``AGENTSUDO_STORE`` if set, else (without a revocation
            list) the key directory's state file, read whenever it exists (``agentsudo
            revoke`` and ``issue --once`` make it, also after this verifier started). Or a
            ``Store``, or ``None``: no store, and one-time tokens are refused.
        :raises ConfigError: the public keys cannot be read, or ``AGENTSUDO_STORE``,
            ``AGENTSUDO_REVOCATIONS`` or ``AGENTSUDO_BROKER`` is bad.
        """
        settings = settings or Settings.from_env()
        listed = settings.revocations_source
        if isinstance(store, str):  # "auto"
            from ..state import open_settings_store, open_store

            if listed is None:
                store = open_settings_store(settings, reader=True)
            else:  # a one-time token still needs a store, given explicitly
                store = open_store(settings.store, create=False) if settings.store else None
        try:
            keys = load_key_source(
                settings.jwks_source,
                max_age=settings.jwks_cache_ttl,
                max_stale=settings.jwks_max_stale,
            )
        except ConfigError as exc:
            if not settings.jwks or str(exc).startswith(JWKS_VARIABLE):
                raise
            raise type(exc)(  # name the variable the bad value came from
                f"{JWKS_VARIABLE}: {exc}", expected=exc.expected, found=exc.found
            ) from exc
        revocations = None
        if listed is not None:
            from .revocation_list import RevocationListSource

            variable = REVOCATIONS_VARIABLE if settings.revocations else BROKER_VARIABLE
            try:
                revocations = RevocationListSource(
                    listed,
                    keys,
                    issuer=settings.issuer,
                    leeway=settings.leeway,
                    refresh=settings.revocations_refresh,
                    max_stale=settings.revocations_max_stale,
                )
            except ConfigError as exc:
                raise type(exc)(
                    f"{variable}: {exc}", expected=exc.expected, found=exc.found
                ) from exc
        return cls(
            keys,
            issuer=settings.issuer,
            audience=settings.audience,
            leeway=settings.leeway,
            max_ttl=settings.max_ttl,
            store=store,
            revocation_recheck=DEFAULT_REVOCATION_RECHECK,
            revocations=revocations,
        )

    @classmethod
    def from_jwks(cls, jwks: dict[str, object], **options: object) -> Verifier:
        """A verifier for a JWK Set given as a dict. Options as for ``Verifier``."""
        return cls(KeySet.from_dict(jwks), **options)  # type: ignore[arg-type]

    def verify(self, token: str, *, audience: str | None = None) -> VerifiedClaims:
        """Verify ``token`` completely; return its claims.

        :param audience: expect this audience instead of the verifier's.
        :raises InvalidTokenError: the subclass naming why the token was refused
            (``RevokedTokenError``: revoked, or a one-time token used before).
        :raises StoreUnavailableError: a store is configured and cannot be reached.
        """
        expected_audience = self.audience if audience is None else audience
        try:  # the cache look-up asks the key source too: its surprises are rejections as well
            entry = self._cached(token, expected_audience)
            if entry is None:
                claims, key = self._verify(token, expected_audience)
                entry = _Entry(claims, key)
                if self.cache_size > 0:
                    self._remember(token, entry)
        except (InvalidTokenError, StoreUnavailableError, KeysUnavailableError):
            raise  # KeysUnavailableError: a JWKS URL failing past max_stale (a 503, not a 401)
        except AgentSudoError as exc:
            raise InvalidTokenError(f"token refused: {exc}") from exc
        except Exception as exc:  # any surprise is a rejection, never an allow
            raise MalformedTokenError(
                f"token refused: unexpected {type(exc).__name__} while verifying"
            ) from exc
        if self.revocations is not None:
            self._check_list(entry.claims)
        if self.store is not None:
            self._check_state(entry)
        elif entry.claims.single_use:
            raise StateRequiredError(
                "this token is single-use and this verifier has no state store to record its use",
                expected="a verifier with a state store",
                found="no store",
            )
        return entry.claims

    def needs_store(self, token: str) -> bool:
        """True when verifying ``token`` now would ask the store or fetch the revocation list
        (I/O), not the cache alone."""
        if self.revocations is not None and self.revocations.needs_fetch():
            return True
        store = self.store
        if store is None:
            return False
        entry = self._cache.get(token) if isinstance(token, str) else None
        if entry is None or entry.claims.single_use or self.revocation_recheck <= 0:
            return True
        fresh = self._clock() - entry.checked_at < self.revocation_recheck
        return not fresh or entry.changes != store.changes

    def check_revocation(self, claims: VerifiedClaims) -> None:
        """Ask the store again whether a token this verifier accepted was revoked since.

        Consumes nothing (a one-time token stays used once). Without a store, nothing to ask.

        :raises RevokedTokenError: revoked by ``jti`` or by agent.
        :raises StoreUnavailableError: the store cannot be reached (fail closed).
        :raises RevocationsUnavailableError: no usable revocation list (fail closed).
        """
        if self.revocations is not None:
            self._check_list(claims)
        if self.store is not None:
            self._ask_store(check_revoked, claims)

    def _check_list(self, claims: VerifiedClaims) -> None:
        revocations = self.revocations
        assert revocations is not None
        try:
            revocations.check(claims)
        except (InvalidTokenError, ConfigError):
            raise
        except Exception as exc:  # a check that misbehaves never lets a token through
            raise RevocationsUnavailableError(
                f"revocation list: unexpected {type(exc).__name__} while checking",
                found=type(exc).__name__,
            ) from exc

    def _ask_store(
        self, check: Callable[[Store, VerifiedClaims], None], claims: VerifiedClaims
    ) -> None:
        store = self.store
        assert store is not None
        try:
            check(store, claims)
        except (InvalidTokenError, StoreUnavailableError):
            raise
        except Exception as exc:  # a store that misbehaves never lets a token through
            raise StoreUnavailableError(
                f"state store {store.url}: unexpected {type(exc).__name__} while checking "
                "revocation",
                found=type(exc).__name__,
            ) from exc

    def _check_state(self, entry: _Entry) -> None:
        """Revocation and one-time use, from the store; any surprise refuses."""
        store = self.store
        assert store is not None
        claims = entry.claims
        if not claims.single_use and self.revocation_recheck > 0:
            now, changes = self._clock(), store.changes
            if entry.changes == changes and now - entry.checked_at < self.revocation_recheck:
                return
        self._ask_store(check_token, claims)
        if not claims.single_use and self.revocation_recheck > 0:
            entry.checked_at, entry.changes = now, changes

    def _cached(self, token: str, audience: str) -> _Entry | None:
        """The cached result while unexpired, for this audience, its key still trusted."""
        entry = self._cache.get(token) if isinstance(token, str) else None
        if entry is None:
            return None
        claims, key = entry.claims, entry.key
        if self._clock() < claims.expires_at + self.leeway and audience in claims.audience:
            trusted = self.keys.get(claims.kid)  # None once retired; another key if replaced
            if trusted is key or trusted == key:
                return entry
        with self._cache_lock:  # never while _remember walks the cache
            self._cache.pop(token, None)
        return None

    def _verify(self, token: str, audience: str) -> tuple[VerifiedClaims, PublicKey]:
        parts = split(token)
        kid, alg = _header(parts.header)
        try:
            key = verify_by_kid(parts, kid, alg, self.keys)
        except KidRefusal as refusal:
            raise refusal.error() from None
        payload = decode_json_part(parts.payload, "payload")
        claims = check_claims(
            payload,
            kid=kid,
            alg=alg,
            now=self._clock(),
            issuer=self.issuer,
            audience=audience,
            leeway=self.leeway,
            max_ttl=self.max_ttl,
        )
        return claims, key

    def _remember(self, token: str, entry: _Entry) -> None:
        with self._cache_lock:
            cache = self._cache
            if len(cache) >= self.cache_size:
                # Evict in a batch so the scan is paid once per quarter of the cache, not per
                # insert: expired entries first, then the oldest down to three quarters.
                now = self._clock()
                expired = [t for t, e in cache.items() if e.claims.expires_at + self.leeway <= now]
                for stale in expired:
                    del cache[stale]
                excess = len(cache) - self.cache_size * 3 // 4
                if excess > 0:
                    for oldest in list(itertools.islice(cache, excess)):
                        del cache[oldest]
            cache[token] = entry

    def forget(self, token: str | None = None) -> None:
        """Drop one token (or every token) from the cache of verified tokens."""
        with self._cache_lock:
            if token is None:
                self._cache.clear()
            else:
                self._cache.pop(token, None)


def decode_unverified(token: str) -> UnverifiedClaims:
    """Decode a token's header and claims WITHOUT verifying anything.

    For display (``agentsudo inspect``) only; no guard accepts the result.

    :raises MalformedTokenError: the token cannot even be decoded.
    """
    parts = split(token)
    header = decode_json_part(parts.header, "header")
    claims = decode_json_part(parts.payload, "payload")
    parts.signature_bytes()
    return UnverifiedClaims(MappingProxyType(header), MappingProxyType(claims))


_UNTIMED = Verifier.verify
_timing: Callable[[float, BaseException | None], None] | None = None


def measure_verify(timing: Callable[[float, BaseException | None], None] | None) -> None:
    """Tell ``timing`` each ``Verifier.verify``'s duration in seconds and its error (``None``:
    measure nothing, at no cost). Telemetry (``audit.otel``) sets it; the core never imports it.
    """
    global _timing
    _timing = timing
    if timing is None:
        setattr(Verifier, "verify", _UNTIMED)  # noqa: B010 (mypy: no assigning to a method)
        return
    perf_counter = time.perf_counter

    @functools.wraps(_UNTIMED)
    def verify(self: Verifier, token: str, *, audience: str | None = None) -> VerifiedClaims:
        start = perf_counter()
        try:
            claims = _UNTIMED(self, token, audience=audience)
        except BaseException as exc:
            timing(perf_counter() - start, exc)
            raise
        timing(perf_counter() - start, None)
        return claims

    setattr(Verifier, "verify", verify)  # noqa: B010


def verify_timing() -> Callable[[float, BaseException | None], None] | None:
    """What ``measure_verify`` set, if anything."""
    return _timing
