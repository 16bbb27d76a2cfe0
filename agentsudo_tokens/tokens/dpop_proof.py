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
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
from .dpop import MAX_PROOF_BYTES, PROOF_TYPE, access_token_hash, normalize_htu, thumbprint
from .jws import decode_json_part, split
from .keys import ALGORITHMS, PublicKey

if TYPE_CHECKING:
    from .claims import VerifiedClaims
    from .dpop_nonce import DPoPNonces

__all__ = ["DEFAULT_WINDOW", "ProofVerifier", "VerifiedProof"]

DEFAULT_WINDOW = 60  # seconds a proof's iat may lie from the server's clock, either way
_HEADER = frozenset({"typ", "alg", "jwk"})
_PRIVATE = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
_PUBLIC_MEMBERS = {"OKP": ("kty", "crv", "x"), "EC": ("kty", "crv", "x", "y")}
_OPTIONAL_MEMBERS = frozenset({"kid", "alg", "use", "key_ops", "ext"})  # tolerated, unused
_MAX_JTI = 256
_KEYS_LIMIT = 1024
_PROOF_TYPES = frozenset({PROOF_TYPE, "application/" + PROOF_TYPE})


@dataclass(frozen=True, slots=True)
class VerifiedProof:
    """A proof that checked out: whose key (``jkt``), its ``jti`` and ``iat``."""

    jkt: str
    jti: str
    issued_at: int
    nonce: str | None = None


def _refuse(reason: str, *, expected: Any = None, found: Any = None) -> InvalidDPoPProofError:
    return InvalidDPoPProofError(f"DPoP proof: {reason}", expected=expected, found=found)


def _shown(value: object) -> str:
    if not isinstance(value, str):
        return type(value).__name__
    return ascii(value[:60]) + ("..." if len(value) > 60 else "")


def _proof_key(header: dict[str, Any]) -> tuple[PublicKey, str]:
    """The public key a proof's header carries, and its thumbprint; or a refusal."""
    extra = sorted(set(header) - _HEADER)
    if extra:
        raise _refuse(
            f"expected a header of typ, alg and jwk only, found {', '.join(map(_shown, extra))}",
            expected=sorted(_HEADER),
            found=extra,
        )
    missing = sorted(_HEADER - set(header))
    if missing:
        raise _refuse(f"expected typ, alg and jwk in the header, missing {', '.join(missing)}")
    typ, alg, jwk = header["typ"], header["alg"], header["jwk"]
    if not isinstance(typ, str) or typ.lower() not in _PROOF_TYPES:
        raise _refuse(f"expected typ {PROOF_TYPE!r}, found {_shown(typ)}", found=typ)
    if alg not in ALGORITHMS:
        raise _refuse(
            f"expected alg {' or '.join(ALGORITHMS)} (asymmetric), found {_shown(alg)}",
            expected=ALGORITHMS,
            found=_shown(alg),
        )
    if not isinstance(jwk, dict):
        raise _refuse(f"expected jwk as a JSON object, found {type(jwk).__name__}")
    private = [name for name in _PRIVATE if name in jwk]
    if private:
        raise _refuse(
            "the jwk holds private key material; a proof carries the public key only",
            expected="a public JWK",
            found=private,
        )
    members = _PUBLIC_MEMBERS.get(jwk.get("kty"))  # type: ignore[arg-type]
    if members is None:
        raise _refuse(f"expected a jwk of kty OKP or EC, found {_shown(jwk.get('kty'))}")
    unknown = sorted(set(jwk) - set(members) - _OPTIONAL_MEMBERS - {"crv"})
    if unknown:
        raise _refuse(f"unexpected jwk members {', '.join(map(_shown, unknown))}", found=unknown)
    if "alg" in jwk and jwk["alg"] != alg:
        raise _refuse(f"the jwk's alg {_shown(jwk['alg'])} is not the header's {alg!r}")
    try:
        key = PublicKey.from_jwk({**{m: jwk.get(m) for m in members}, "kid": "dpop", "alg": alg})
    except ConfigError as exc:
        raise _refuse(f"the jwk is not a valid {alg} public key", found=str(exc)) from None
    return key, thumbprint(key)


class ProofVerifier:
    """Checks DPoP proofs for a service: one key-binding rule, one replay cache.

    :param replay: records each proof's ``jti`` for its window; default a cache in
        this process's memory. Several processes serving one service share a
        ``StoreReplayCache`` (``agentsudo_tokens.state.replay``), or a proof could be
        replayed once against each of them.
    :param window: seconds a proof's ``iat`` may differ from this clock, either way.
    :param nonces: when given, every proof must carry a current nonce of these
        (``DPoPNonceError`` otherwise: the service answers with a fresh one).
    :param clock: seconds since the epoch; for tests.
    """

    def __init__(
        self,
        *,
        replay: ReplayCache | None = None,
        window: int = DEFAULT_WINDOW,
        nonces: DPoPNonces | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if type(window) is not int or not 1 <= window <= 600:
            raise ConfigError(f"DPoP proofs: expected a window of 1 to 600 s, found {window}")
        self.replay: ReplayCache = replay if replay is not None else MemoryReplayCache()
        self.window = window
        self.nonces = nonces
        self._clock = clock
        self._keys: dict[str, tuple[PublicKey, str]] = {}  # encoded header -> (key, jkt)
        self._memo: dict[str, str] = {}  # a request URL -> its htu; a token -> its ath

    def __repr__(self) -> str:
        return f"ProofVerifier(replay={self.replay!r}, window={self.window})"

    def check_request(
        self,
        claims: VerifiedClaims,
        *,
        scheme: str,
        token: str,
        proofs: Sequence[str],
        method: str,
        url: str,
    ) -> VerifiedProof | None:
        """Apply the binding rule to a request whose token verified as ``claims``.

        :param scheme: the Authorization scheme, ``Bearer`` or ``DPoP`` (any case).
        :param proofs: the values of the request's ``DPoP`` headers.
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
            raise _refuse(
                f"expected exactly one DPoP header, found {len(proofs)}",
                expected=1,
                found=len(proofs),
            )
        return self.verify(proofs[0], method=method, url=url, token=token, jkt=jkt)

    def verify(
        self,
        proof: object,
        *,
        method: str,
        url: str,
        token: str | None = None,
        jkt: str | None = None,
    ) -> VerifiedProof:
        """Check one proof for the request ``method url``.

        :param token: the access token sent with it: the proof's ``ath`` must be its hash.
        :param jkt: the thumbprint the token is bound to: the proof's key must have it.
        :raises InvalidDPoPProofError: the subclass and one-line reason of the first failed check.
        :raises TokenBindingError: the proof is signed by another key than ``jkt``.
        :raises StoreUnavailableError: the replay cache cannot answer (fail closed).
        """
        try:
            return self._verify(proof, method, url, token, jkt)
        except (InvalidDPoPProofError, TokenBindingError):
            raise
        except MalformedTokenError as exc:  # the JWS layer's wording, about the proof
            raise _refuse(str(exc), expected=exc.expected, found=exc.found) from None
        except AgentSudoError:
            raise  # StoreUnavailableError from the replay cache: a 503, never an allow
        except Exception as exc:  # any surprise is a refusal, never an allow
            raise _refuse(f"unexpected {type(exc).__name__} while checking") from exc

    def _verify(
        self, proof: object, method: str, url: str, token: str | None, jkt: str | None
    ) -> VerifiedProof:
        if not isinstance(proof, str):
            raise _refuse(f"expected a string, found {type(proof).__name__}")
        if len(proof) > MAX_PROOF_BYTES:
            raise _refuse(
                f"expected at most {MAX_PROOF_BYTES} bytes, found {len(proof)}",
                expected=MAX_PROOF_BYTES,
                found=len(proof),
            )
        parts = split(proof)
        known = self._keys.get(parts.header)
        if known is None:
            known = _proof_key(decode_json_part(parts.header, "header"))
            if len(self._keys) >= _KEYS_LIMIT:
                self._keys.clear()  # rare: rebuilt from the next proofs
            self._keys[parts.header] = known
        key, proof_jkt = known
        claims = decode_json_part(parts.payload, "payload")
        jti, issued_at = self._claims(claims, method, url, token)
        if jkt is not None and proof_jkt != jkt:
            raise TokenBindingError(
                "the proof is signed by another key than the one the token is bound to",
                expected=jkt,
                found=proof_jkt,
            )
        if not key.verify(parts.signing_input, parts.signature_bytes()):
            raise _refuse("the signature does not verify with the proof's jwk")
        nonce = claims.get("nonce")
        if self.nonces is not None:
            if nonce is None:
                raise DPoPNonceError("DPoP proof: this service requires a nonce (DPoP-Nonce)")
            if not self.nonces.accepts(nonce):
                raise DPoPNonceError("DPoP proof: the nonce is not current; use the new one")
        digest = hashlib.sha256(f"{proof_jkt}:{jti}".encode()).hexdigest()
        if not self.replay.first_use("dpop:" + digest, expires_at=issued_at + self.window + 1):
            raise ReplayedDPoPProofError(
                "DPoP proof: this proof was used before (its jti); sign a fresh one per request",
                found=jti,
            )
        return VerifiedProof(proof_jkt, jti, issued_at, nonce if isinstance(nonce, str) else None)

    def _remembered(self, key: str, make: Callable[[str], str]) -> str:
        value = self._memo.get(key)
        if value is None:
            value = make(key)
            if len(self._memo) >= _KEYS_LIMIT:
                self._memo.clear()  # rare: rebuilt from the next requests
            self._memo[key] = value
        return value

    def _htu(self, url: str) -> str:
        return self._remembered(url, normalize_htu)

    def _ath(self, token: str) -> str:
        return self._remembered("ath:" + token, lambda key: access_token_hash(key[4:]))

    def _claims(
        self, claims: dict[str, Any], method: str, url: str, token: str | None
    ) -> tuple[str, int]:
        missing = [name for name in ("jti", "htm", "htu", "iat") if name not in claims]
        if token is not None and "ath" not in claims:
            missing.append("ath")
        if missing:
            raise _refuse(f"missing claim(s) {', '.join(missing)}", found=sorted(claims))
        jti, htm, htu, iat = claims["jti"], claims["htm"], claims["htu"], claims["iat"]
        if not isinstance(jti, str) or not 0 < len(jti) <= _MAX_JTI:
            raise _refuse(f"expected jti as a string of 1 to {_MAX_JTI} characters")
        if htm != method:
            raise _refuse(f"made for method {_shown(htm)}, used for {method!r}", found=htm)
        try:
            matches = isinstance(htu, str) and (htu == url or normalize_htu(htu) == self._htu(url))
        except ValueError:
            matches = False
        if not matches:
            raise _refuse(f"made for URL {_shown(htu)}, used for {_shown(url)}", found=_shown(htu))
        if type(iat) is not int:
            raise _refuse(f"expected iat in integer seconds, found {type(iat).__name__}")
        now = self._clock()
        if abs(now - iat) > self.window:
            when = "old" if iat < now else "in the future"
            raise _refuse(
                f"iat is {abs(int(now - iat))}s {when}; accepted within {self.window}s",
                expected=self.window,
                found=iat,
            )
        if token is not None and claims["ath"] != self._ath(token):
            raise _refuse("ath is not the hash of the access token sent with it")
        return jti, iat
