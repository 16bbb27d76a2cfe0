"""The token itself: JWS, claims, scopes, keys, key directory, JWKS, issuer, verifier.

    from agentsudo_tokens.tokens.verifier import Verifier

This layer uses only ``errors``, ``config`` and the store in ``state`` (for
revocations and one-time marks); nothing here knows sessions, the guard, the
audit file or the broker.
"""
