"""The JWS parts' base64url decoding: canonical, unpadded, strict, like a careful reference.

The decoder maps the text to the standard alphabet and lets ``binascii``'s strict
mode refuse anything else; the reference here spells the rule out (a regular
expression, the length, the unused bits of the last character) and decodes with
the standard library. Both must agree on every text: the same bytes, or both refuse.
"""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentsudo_tokens.errors import MalformedTokenError
from agentsudo_tokens.tokens.jws import _b64url_decode, split

PROPERTY = settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_LAST = {2: "AQgw", 3: "AEIMQUYcgkosw048"}  # the unused low bits are zero


def reference(text: str) -> bytes | None:
    """RFC 7515 §2 base64url, canonical and unpadded; ``None`` when it is not."""
    rest = len(text) % 4
    if not re.fullmatch("[A-Za-z0-9_-]+", text) or rest == 1:
        return None
    if rest and text[-1] not in _LAST[rest]:
        return None
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def decoded(text: str) -> bytes | None:
    try:
        return _b64url_decode(text, "part")
    except MalformedTokenError as exc:
        assert str(exc) == "part: expected canonical base64url without padding"
        return None


@PROPERTY
@given(st.binary(max_size=80))
def test_every_encoding_decodes_to_its_bytes(raw: bytes) -> None:
    text = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    assert decoded(text) == (raw or None)  # an empty part is never a part


@PROPERTY
@given(st.text(alphabet=ALPHABET + "+/= \n\t.\x00é\u2028", max_size=14))
def test_any_text_is_decoded_as_the_reference_decodes_it(text: str) -> None:
    assert decoded(text) == reference(text)


@pytest.mark.parametrize(
    "text",
    ["", "A", "AB==", "AB=", "AB+/", "AB/A", "QUJD\n", " QUJD", "QU JD", "QUJ\u00e9", "QR", "QUK"],
)
def test_what_is_not_canonical_unpadded_base64url_is_refused(text: str) -> None:
    assert decoded(text) is None and reference(text) is None


def test_a_signature_with_a_stray_character_is_refused() -> None:
    parts = split("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.QUJD+A")
    with pytest.raises(MalformedTokenError, match="signature: expected canonical base64url"):
        parts.signature_bytes()
