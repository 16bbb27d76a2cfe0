"""Checking DPoP proofs (RFC 9449 §4.3) and the binding of a token to its key (§7).

    proofs = ProofVerifier()                # replay cache in memory; or replay=StoreReplayCache
    claims = verifier.verify(token)         # the token itself, as for a bearer token
    proofs.check_request(claims, scheme="DPoP", token=token, proofs=[dpop_header],
                         method="POST", url="https://billing.example/refunds")

``check_request`` is the whole rule for a service: a token bound to a key
(``cnf.jkt``) is accepted only with the DPoP scheme and one valid proof signed
by that key; a bound token sent as a Bearer token, or an unbound one sent with
the DPoP scheme, is refused (``TokenBindingError``); a plain bearer token is
left alone. ``verify`` checks one proof, strictly: size first, a header of
exactly ``typ`` (``dpop+jwt``), ``alg`` (EdDSA or ES256 only: never ``none``
or a MAC) and ``jwk`` (a public key, never private material), then ``htm``,
``htu`` (normalized, without query), ``iat`` within ``window`` seconds either
way, ``ath`` against the token, the signature, the nonce when the service
demands one, and last the ``jti``'s first use in the replay cache. Every
refusal is an ``InvalidDPoPProofError`` (or a subclass) with a one-line reason.

``htu`` is compared with the URL of the request as the service knows it (RFC
9449 §4.3). A service given its public ``origin`` (``https://billing.example``)
takes only the path from the request, so a proof made for another service is
refused whatever ``Host`` header comes with it; without one, the caller's URL
(built from ``Host``) is trusted.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

from ..errors import (
    AgentSudoError,
    ConfigError,
    DPoPNonceError,
    InvalidDPoPProofError,
    MalformedTokenError,
    ReplayedDPoPProofError,
    TokenBindingError,
)
from ..state.replay import MemoryReplayCache, ReplayCache
from .dpop import MAX_PROOF_BYTES, access_token_hash, normalize_htu
from .dpop_header import normalize_origin, proof_key, refusal, shown
from .jws import _b64url_decode, decode_json_part, split
from .keys import PublicKey

if TYPE_CHECKING:
    from .claims import VerifiedClaims
    from .dpop_nonce import DPoPNonces

__all__ = ["DEFAULT_WINDOW", "ProofVerifier", "VerifiedProof"]

DEFAULT_WINDOW = 60  # seconds a proof's iat may lie from the server's clock, either way
_MAX_JTI = 256
_MEMORY_JTI = 64  # a jti up to this long is a memory replay key as it is; a longer one, hashed
_KEYS_LIMIT = 1024
_MAX_IAT = 2**53  # an iat at or past this is no time (and no float can hold it exactly)


class VerifiedProof(NamedTuple):
    """A proof that checked out: whose key (``jkt``), its ``jti`` and ``iat``.

    A named tuple, immutable: one is made per request, at half a frozen dataclass's cost.
    """

    jkt: str
    jti: str
    issued_at: int
    nonce: str | None = None


class ProofVerifier:
    """Checks DPoP proofs for a service: one key-binding rule, one replay cache.

    :param replay: records each proof's ``jti`` for its window; default a cache in
        this process's memory. Several processes serving one service share a
        ``StoreReplayCache`` (``agentsudo_tokens.state.replay``): a memory cache in
        a worker of a multi-process server refuses every proof (a 503) rather than
        let each worker accept it once.
    :param window: seconds a proof's ``iat`` may differ from this clock, either way.
    :param nonces: when given, every proof must carry a current nonce of these
        (``DPoPNonceError`` otherwise: the service answers with a fresh one).
    :param origin: the service's public origin (``https://billing.example``): a
        proof's ``htu`` must be this origin and the request's path, whatever
        scheme and host the request's URL names. Default: the URL as given.
    :param clock: seconds since the epoch; for tests.
    :raises ConfigError: a window out of range, or ``origin`` is not an origin.
    """

    def __init__(
        self,
        *,
        replay: ReplayCache | None = None,
        window: int = DEFAULT_WINDOW,
        nonces: DPoPNonces | None = None,
        origin: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if type(window) is not int or not 1 <= window <= 600:
            raise ConfigError(f"DPoP proofs: expected a window of 1 to 600 s, found {window}")
        self.replay: ReplayCache = replay if replay is not None else MemoryReplayCache()
        self.window = window
        self.nonces = nonces
        self.origin = None if origin is None else normalize_origin(origin)
        self._clock = clock
        self._keys: dict[str, tuple[PublicKey, str]] = {}  # encoded header -> (key, jkt)
        self._htus: dict[str, str] = {}  # a request's URL -> the htu it demands
        self._aths: dict[str, str] = {}  # an access token -> its ath

    def __repr__(self) -> str:
        origin = "" if self.origin is None else f", origin={self.origin!r}"
        return f"ProofVerifier(replay={self.replay!r}, window={self.window}{origin})"

    def check_request(
        self,
        claims: VerifiedClaims,
        *,
        scheme: str,
        token: str,
        proofs: Sequence[str],
        method: str,
        url: str,
        record: bool = True,
    ) -> VerifiedProof | None:
        """Apply the binding rule to a request whose token verified as ``claims``.

        :param scheme: the Authorization scheme, ``Bearer`` or ``DPoP`` (any case).
        :param proofs: the values of the request's ``DPoP`` headers.
        :param record: as for ``verify``.
        :returns: the checked proof; ``None`` for a plain bearer token.
        :raises TokenBindingError: a bound token as Bearer, an unbound one as DPoP,
            or a proof signed by another key than the token's.
        :raises InvalidDPoPProofError: no proof, several, or a refused one.
        :raises StoreUnavailableError: the replay cache cannot answer (fail closed).
        """
        jkt = claims.jkt
        if scheme.lower() != "dpop":
            if jkt is not None:
                raise TokenBindingError(
                    "the token is bound to a key (cnf.jkt): present it with the DPoP scheme "
                    "and a proof, not as a Bearer token",
                    expected="DPoP",
                    found=scheme,
                )
            return None
        if jkt is None:
            raise TokenBindingError(
                "the token is not bound to a key: present it as a Bearer token",
                expected="Bearer",
                found=scheme,
            )
        if len(proofs) != 1:
            raise refusal(
                f"expected exactly one DPoP header, found {len(proofs)}",
                expected=1,
                found=len(proofs),
            )
        return self.verify(proofs[0], method=method, url=url, token=token, jkt=jkt, record=record)

    def verify(
        self,
        proof: object,
        *,
        method: str,
        url: str,
        token: str | None = None,
        jkt: str | None = None,
        record: bool = True,
    ) -> VerifiedProof:
        """Check one proof for the request ``method url``.

        :param url: the request's URL; with an ``origin``, only its path counts.
        :param token: the access token sent with it: the proof's ``ath`` must be its hash.
        :param jkt: the thumbprint the token is bound to: the proof's key must have it.
        :param record: ``False`` only for a second check of one request whose proof
            another check already recorded as used (the middleware's, then a
            dependency's with other options): every check but the replay cache.
        :raises InvalidDPoPProofError: the subclass and one-line reason of the first failed check.
        :raises TokenBindingError: the proof is signed by another key than ``jkt``.
        :raises StoreUnavailableError: the replay cache cannot answer (fail closed).
        """
        try:
            return self._verify(proof, method, url, token, jkt, record)
        except (InvalidDPoPProofError, TokenBindingError):
            raise
        except MalformedTokenError as exc:  # the JWS layer's wording, about the proof
            raise refusal(str(exc), expected=exc.expected, found=exc.found) from None
        except AgentSudoError:
            raise  # StoreUnavailableError from the replay cache: a 503, never an allow
        except Exception as exc:  # any surprise is a refusal, never an allow
            raise refusal(f"unexpected {type(exc).__name__} while checking") from exc

    def _verify(
        self,
        proof: object,
        method: str,
        url: str,
        token: str | None,
        jkt: str | None,
        record: bool,
    ) -> VerifiedProof:
        if not isinstance(proof, str):
            raise refusal(f"expected a string, found {type(proof).__name__}")
        if len(proof) > MAX_PROOF_BYTES:
            raise refusal(
                f"expected at most {MAX_PROOF_BYTES} bytes, found {len(proof)}",
                expected=MAX_PROOF_BYTES,
                found=len(proof),
            )
        # split's checks, inline (no CompactParts per request); split words the refusal
        parts = proof.split(".")
        if len(parts) != 3 or not (parts[0] and parts[1] and parts[2]) or not proof.isascii():
            split(proof)
            raise refusal("expected a JWS in compact form")  # not reached: split refuses it
        header, payload, signature = parts
        known = self._keys.get(header)
        if known is None:
            known = self._key_of(header)
        key, proof_jkt = known
        claims = decode_json_part(payload, "payload")
        now = self._clock()
        jti, issued_at = self._claims(claims, method, url, token, now)
        if jkt is not None and proof_jkt != jkt:
            raise TokenBindingError(
                "the proof is signed by another key than the one the token is bound to",
                expected=jkt,
                found=proof_jkt,
            )
        signing_input = f"{header}.{payload}".encode("ascii")
        if not key.verify(signing_input, _b64url_decode(signature, "signature")):
            raise refusal("the signature does not verify with the proof's jwk")
        nonce = claims.get("nonce")
        if self.nonces is not None:
            if nonce is None:
                raise DPoPNonceError("DPoP proof: this service requires a nonce (DPoP-Nonce)")
            if not self.nonces.accepts(nonce):
                raise DPoPNonceError("DPoP proof: the nonce is not current; use the new one")
        if record and not self._first_use(proof_jkt, jti, issued_at, now):
            raise ReplayedDPoPProofError(
                "DPoP proof: this proof was used before (its jti); sign a fresh one per request",
                found=jti,
            )
        return VerifiedProof(proof_jkt, jti, issued_at, nonce if isinstance(nonce, str) else None)

    def _key_of(self, header: str) -> tuple[PublicKey, str]:
        """The key and thumbprint of an encoded header, checked, then remembered."""
        known = proof_key(decode_json_part(header, "header"))
        if len(self._keys) >= _KEYS_LIMIT:
            self._keys.clear()  # rare: rebuilt from the next proofs
        self._keys[header] = known
        return known

    def _first_use(self, jkt: str, jti: str, issued_at: int, now: float) -> bool:
        """Record the proof as used, until no clock could still accept it.

        This clock accepts it until ``iat + window``; the record lasts from the
        later of ``iat`` and now, another window on top: a replay cache shared
        by machines (Redis) expires records by its own clock, and the other
        machines' clocks may lag or lead this one by up to that much.

        A store's key is a digest (short, one alphabet, the same in every process);
        this process's memory needs none: a thumbprint is 43 characters without
        a ``:``, so ``jkt + jti`` names one proof (a long ``jti`` is hashed to keep
        the cache's entries small).
        """
        until = (issued_at if issued_at > now else now) + 2 * self.window + 1
        if type(self.replay) is MemoryReplayCache and len(jti) <= _MEMORY_JTI:
            return self.replay.first_use(jkt + jti, expires_at=until)
        digest = hashlib.sha256(f"{jkt}:{jti}".encode()).hexdigest()
        return self.replay.first_use("dpop:" + digest, expires_at=until)

    def _htu(self, url: str) -> str:
        """The ``htu`` a proof for ``url`` must have: with an origin, the origin and its path.

        :raises ValueError: ``url`` is no absolute http(s) URL.
        """
        htu = self._htus.get(url)
        if htu is None:
            origin = self.origin
            htu = normalize_htu(url if origin is None else origin + (urlsplit(url).path or "/"))
            if len(self._htus) >= _KEYS_LIMIT:
                self._htus.clear()  # rare: rebuilt from the next requests
            self._htus[url] = htu
        return htu

    def _ath(self, token: str) -> str:
        """The ``ath`` a proof sent with ``token`` must have."""
        ath = self._aths.get(token)
        if ath is None:
            ath = access_token_hash(token)
            if len(self._aths) >= _KEYS_LIMIT:
                self._aths.clear()  # rare: rebuilt from the next requests
            self._aths[token] = ath
        return ath

    def _claims(
        self, claims: dict[str, Any], method: str, url: str, token: str | None, now: float
    ) -> tuple[str, int]:
        try:
            jti, htm, htu, iat = claims["jti"], claims["htm"], claims["htu"], claims["iat"]
            ath = None if token is None else claims["ath"]
        except KeyError:
            missing = [name for name in ("jti", "htm", "htu", "iat") if name not in claims]
            if token is not None and "ath" not in claims:
                missing.append("ath")
            raise refusal(f"missing claim(s) {', '.join(missing)}", found=sorted(claims)) from None
        if not isinstance(jti, str) or not 0 < len(jti) <= _MAX_JTI:
            raise refusal(f"expected jti as a string of 1 to {_MAX_JTI} characters")
        if htm != method:
            raise refusal(f"made for method {shown(htm)}, used for {method!r}", found=htm)
        try:
            expected = self._htu(url)
            matches = isinstance(htu, str) and (htu == expected or normalize_htu(htu) == expected)
        except ValueError:
            expected, matches = url, False
        if not matches:
            raise refusal(
                f"made for URL {shown(htu)}, used for {shown(expected)}", found=shown(htu)
            )
        if type(iat) is not int or not 0 <= iat < _MAX_IAT:
            found = type(iat).__name__ if type(iat) is not int else "out of range"
            raise refusal(f"expected iat in integer seconds from 0 to 2**53, found {found}")
        if abs(now - iat) > self.window:
            when = "old" if iat < now else "in the future"
            raise refusal(
                f"iat is {abs(int(now - iat))}s {when}; accepted within {self.window}s",
                expected=self.window,
                found=iat,
            )
        if token is not None and ath != self._ath(token):
            raise refusal("ath is not the hash of the access token sent with it")
        return jti, iat
