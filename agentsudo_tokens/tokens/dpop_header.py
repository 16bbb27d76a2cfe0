"""A DPoP proof's header and a service's origin: the checks that need no request.

    key, jkt = proof_key({"typ": "dpop+jwt", "alg": "ES256", "jwk": {...}})
    normalize_origin("HTTPS://Billing.Example:443/")    # "https://billing.example"

``proof_key`` takes a header of exactly ``typ`` (``dpop+jwt``), ``alg`` (EdDSA or
ES256 only: never ``none`` or a MAC) and ``jwk`` (a public key, never private
material) and returns the key and its RFC 7638 thumbprint, or refuses with
``InvalidDPoPProofError`` and a one-line reason.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError, InvalidDPoPProofError
from .dpop import PROOF_TYPE, normalize_htu, thumbprint
from .keys import ALGORITHMS, PublicKey

__all__ = ["normalize_origin", "proof_key", "refusal", "shown"]

_HEADER = frozenset({"typ", "alg", "jwk"})
_PRIVATE = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
_PUBLIC_MEMBERS = {"OKP": ("kty", "crv", "x"), "EC": ("kty", "crv", "x", "y")}
_OPTIONAL_MEMBERS = frozenset({"kid", "alg", "use", "key_ops", "ext"})  # tolerated, unused
_PROOF_TYPES = frozenset({PROOF_TYPE, "application/" + PROOF_TYPE})


def refusal(reason: str, *, expected: Any = None, found: Any = None) -> InvalidDPoPProofError:
    """The error refusing a proof, ``reason`` in one line."""
    return InvalidDPoPProofError(f"DPoP proof: {reason}", expected=expected, found=found)


def shown(value: object) -> str:
    """A claim or member as a message shows it: short, ASCII, or only its type."""
    if not isinstance(value, str):
        return type(value).__name__
    return ascii(value[:60]) + ("..." if len(value) > 60 else "")


def proof_key(header: dict[str, Any]) -> tuple[PublicKey, str]:
    """The public key a proof's header carries, and its thumbprint; or a refusal."""
    extra = sorted(set(header) - _HEADER)
    if extra:
        raise refusal(
            f"expected a header of typ, alg and jwk only, found {', '.join(map(shown, extra))}",
            expected=sorted(_HEADER),
            found=extra,
        )
    missing = sorted(_HEADER - set(header))
    if missing:
        raise refusal(f"expected typ, alg and jwk in the header, missing {', '.join(missing)}")
    typ, alg, jwk = header["typ"], header["alg"], header["jwk"]
    if not isinstance(typ, str) or typ.lower() not in _PROOF_TYPES:
        raise refusal(f"expected typ {PROOF_TYPE!r}, found {shown(typ)}", found=typ)
    if alg not in ALGORITHMS:
        raise refusal(
            f"expected alg {' or '.join(ALGORITHMS)} (asymmetric), found {shown(alg)}",
            expected=ALGORITHMS,
            found=shown(alg),
        )
    if not isinstance(jwk, dict):
        raise refusal(f"expected jwk as a JSON object, found {type(jwk).__name__}")
    private = [name for name in _PRIVATE if name in jwk]
    if private:
        raise refusal(
            "the jwk holds private key material; a proof carries the public key only",
            expected="a public JWK",
            found=private,
        )
    members = _PUBLIC_MEMBERS.get(jwk.get("kty"))  # type: ignore[arg-type]
    if members is None:
        raise refusal(f"expected a jwk of kty OKP or EC, found {shown(jwk.get('kty'))}")
    unknown = sorted(set(jwk) - set(members) - _OPTIONAL_MEMBERS - {"crv"})
    if unknown:
        raise refusal(f"unexpected jwk members {', '.join(map(shown, unknown))}", found=unknown)
    if "alg" in jwk and jwk["alg"] != alg:
        raise refusal(f"the jwk's alg {shown(jwk['alg'])} is not the header's {alg!r}")
    try:
        key = PublicKey.from_jwk({**{m: jwk.get(m) for m in members}, "kid": "dpop", "alg": alg})
    except ConfigError as exc:
        raise refusal(f"the jwk is not a valid {alg} public key", found=str(exc)) from None
    return key, thumbprint(key)


def normalize_origin(origin: str) -> str:
    """``origin`` (``https://host[:port]``) normalized: scheme and host in lower case, no
    default port, no trailing slash.

    :raises ConfigError: not an http(s) origin, or one with a path, query, fragment or user.
    """
    bad = ConfigError(
        f"DPoP proofs: expected an origin like https://billing.example, found {shown(origin)}",
        expected="http(s)://host[:port]",
        found=shown(origin),
    )
    try:
        normal = normalize_htu(origin)  # first: it refuses what is not an ASCII string
    except ValueError:
        raise bad from None
    if urlsplit(origin).path not in ("", "/") or "?" in origin or "#" in origin:
        raise bad
    return normal[:-1]  # normalize_htu ends an empty path with "/"
