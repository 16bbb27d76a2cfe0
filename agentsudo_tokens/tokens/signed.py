"""A compact JWS checked by the key its ``kid`` names, in that key's own alg.

    parts = split(token)
    key = verify_by_kid(parts, kid, alg, keys)      # or a KidRefusal

The one way this package checks a signature: the token verifier, the signed
revocation list, the broker's signed audit heads and the guard's elevation
tokens. Each decodes and checks its own header first, then words the
``KidRefusal`` (``UnknownKid``, ``AlgMismatch``, ``SignatureMismatch``) as
its own error; ``refusal.error(subject)`` is the verifier's wording.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import BadSignatureError, InvalidTokenError, MalformedTokenError, UnknownKeyError

if TYPE_CHECKING:
    from .jws import CompactParts
    from .keys import PublicKey
    from .keyset import KeySource

__all__ = ["AlgMismatch", "KidRefusal", "SignatureMismatch", "UnknownKid", "verify_by_kid"]


class KidRefusal(InvalidTokenError):
    """Why ``verify_by_kid`` refused a JWS, for its caller to word as its own error.

    ``kid`` and ``alg`` are the header's, ``key_alg`` the alg of the key found (``None``
    when none was); ``error(subject)`` is the verifier's wording.
    """

    def __init__(self, kid: object, alg: object, key_alg: str | None = None) -> None:
        self.kid, self.alg, self.key_alg = kid, alg, key_alg
        error = self.error()
        super().__init__(error.message, expected=error.expected, found=error.found)

    def error(self, subject: str = "") -> InvalidTokenError:
        """This refusal as the verifier words it; about ``subject`` when one is named."""
        raise NotImplementedError


class UnknownKid(KidRefusal):
    """``kid`` names no key of the key source."""

    def error(self, subject: str = "") -> InvalidTokenError:
        lead = f"{subject}: " if subject else ""
        return UnknownKeyError(
            f"{lead}expected a key id this verifier trusts, found {self.kid!r}",
            expected="a known kid",
            found=self.kid,
        )


class AlgMismatch(KidRefusal):
    """The header's ``alg`` is not the alg of the key ``kid`` names."""

    def error(self, subject: str = "") -> InvalidTokenError:
        head = f"{subject} header" if subject else "header"
        message = f"{head}: expected alg {self.key_alg!r} for key {self.kid!r}, found {self.alg!r}"
        return MalformedTokenError(
            message[:200] if subject else message,  # a token's alg is a string, never cut
            expected=self.key_alg,
            found=self.alg if isinstance(self.alg, str) else type(self.alg).__name__,
        )


class SignatureMismatch(KidRefusal):
    """The signature does not verify with the key ``kid`` names."""

    def error(self, subject: str = "") -> InvalidTokenError:
        lead = f"{subject}: " if subject else ""
        return BadSignatureError(
            f"{lead}expected a valid {self.key_alg} signature by key {self.kid!r}, "
            "found a mismatch",
            expected=self.kid,
            found="invalid signature",
        )


def verify_by_kid(parts: CompactParts, kid: object, alg: object, keys: KeySource) -> PublicKey:
    """Check ``parts``' signature with the key ``kid`` names, in that key's own alg; return it.

    :raises UnknownKid: ``kid`` names no key in ``keys`` (or is not a string).
    :raises AlgMismatch: the header's ``alg`` is not the key's.
    :raises SignatureMismatch: the signature does not verify.
    :raises MalformedTokenError: the signature is not canonical base64url.
    :raises KeysUnavailableError: ``keys`` cannot be had now.
    """
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise UnknownKid(kid, alg)
    if alg != key.alg:
        raise AlgMismatch(kid, alg, key.alg)
    if not key.verify(parts.signing_input, parts.signature_bytes()):
        raise SignatureMismatch(kid, alg, key.alg)
    return key
