"""The shortcuts that make a DPoP check cheap hold every check: replay keys, memos, one pass.

The proof check splits the proof itself, remembers ``htu`` per URL and ``ath``
per token, keys the memory replay cache by ``jkt + jti`` (a digest for a long
``jti``, and always for a store), and the service finds the ``DPoP`` and
``Host`` headers in one pass. Each test here would fail if a shortcut let a
proof through that the plain path refuses. Real keys, caches, stores
(SQLite, redis-server) and forked processes.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from agentsudo_tokens import Issuer, KeyDirectory, Verifier
from agentsudo_tokens.errors import (
    InvalidDPoPProofError,
    ReplayedDPoPProofError,
    StoreUnavailableError,
    TokenBindingError,
)
from agentsudo_tokens.integrations.dpop import check_possession, request_url
from agentsudo_tokens.state import Store
from agentsudo_tokens.state.replay import MemoryReplayCache, StoreReplayCache
from agentsudo_tokens.tokens.dpop import DPoPKey, access_token_hash
from agentsudo_tokens.tokens.dpop_proof import ProofVerifier
from agentsudo_tokens.tokens.jws import encode
from agentsudo_tokens.tokens.keys import SigningKey

NOW = 1_800_000_000
URL = "https://billing.example/refunds"


@pytest.fixture
def dpop_key() -> DPoPKey:
    return DPoPKey.generate()


@pytest.fixture
def bound(issuer: Issuer, dpop_key: DPoPKey) -> str:
    return issuer.issue("SupportBot", ["write:refunds"], jkt=dpop_key.jkt, now=NOW).token


def signed(key: DPoPKey, jti: str, **claims: Any) -> str:
    """A proof with a chosen ``jti`` (``DPoPKey.proof`` draws a random one)."""
    header = {"typ": "dpop+jwt", "alg": key.alg, "jwk": key.public_jwk}
    body = {"jti": jti, "htm": "POST", "htu": URL, "iat": NOW, **claims}
    signing: SigningKey = key._signing
    return encode(header, body, signing)


def checker(replay: Any = None) -> ProofVerifier:
    return ProofVerifier(replay=replay, clock=lambda: NOW)


# -- the replay cache's keys ---------------------------------------------------------------------


@pytest.mark.parametrize("jti", ["j", "x" * 64, "x" * 65, "é" * 256, "dpop:" + "0" * 59])
def test_a_replay_is_refused_whatever_the_jtis_length(dpop_key: DPoPKey, jti: str) -> None:
    """Up to 64 characters a ``jti`` is a memory key as it is; longer, it is hashed."""
    cache = MemoryReplayCache()
    proof = signed(dpop_key, jti)
    assert checker(cache).verify(proof, method="POST", url=URL).jti == jti
    for again in (checker(cache), checker(cache)):  # another verifier sharing the cache, too
        with pytest.raises(ReplayedDPoPProofError):
            again.verify(proof, method="POST", url=URL)
    assert len(cache) == 1


def test_one_jti_from_two_keys_is_two_proofs() -> None:
    cache = MemoryReplayCache()
    first, second = DPoPKey.generate(), DPoPKey.generate("EdDSA")
    for key in (first, second):
        assert checker(cache).verify(signed(key, "same-jti"), method="POST", url=URL)
    with pytest.raises(ReplayedDPoPProofError):
        checker(cache).verify(signed(second, "same-jti"), method="POST", url=URL)


def test_a_short_and_a_long_jti_never_meet_in_memory(dpop_key: DPoPKey) -> None:
    """A long jti's key is ``dpop:<digest>``; a short one's begins with the 43-character
    thumbprint: no short jti can be taken for a long one's record."""
    cache = MemoryReplayCache()
    long = "y" * 100
    assert checker(cache).verify(signed(dpop_key, long), method="POST", url=URL)
    (key,) = cache._seen
    assert key.startswith("dpop:") and len(key) == 69
    short = signed(dpop_key, "z" * 20)
    assert checker(cache).verify(short, method="POST", url=URL)
    assert {len(k) for k in cache._seen} == {69, 43 + 20}


def test_a_store_keeps_digests_only(store: Store, dpop_key: DPoPKey) -> None:
    """Keys in a store are the same in every process: a digest, never the client's jti."""
    proof = signed(dpop_key, "short")
    assert checker(StoreReplayCache(store)).verify(proof, method="POST", url=URL)
    with pytest.raises(ReplayedDPoPProofError):
        checker(StoreReplayCache(store)).verify(proof, method="POST", url=URL)
    with pytest.raises(ReplayedDPoPProofError):  # a process of the previous release: the same key
        ProofVerifier(replay=StoreReplayCache(store), clock=lambda: NOW + 1).verify(
            proof, method="POST", url=URL
        )


def test_the_memory_cache_forgets_the_oldest_records_and_never_a_live_one() -> None:
    """A purge drops expired records from the oldest on, stopping at a live one; a full
    cache drops every expired record, wherever it is, before it refuses."""
    clock = [0.0]
    cache = MemoryReplayCache(4, clock=lambda: clock[0])
    for key, until in (("a", 10.0), ("long", 100.0), ("b", 10.0)):
        assert cache.first_use(key, expires_at=until)
    clock[0] = 20.0  # a and b expired; long is live, between them
    assert cache.first_use("c", expires_at=30.0)  # a periodic purge: a goes, b waits behind long
    assert list(cache._seen) == ["long", "b", "c"]
    assert cache.first_use("d", expires_at=30.0)
    assert cache.first_use("e", expires_at=30.0)  # full: b, expired, makes room
    assert list(cache._seen) == ["long", "c", "d", "e"]
    with pytest.raises(StoreUnavailableError, match="refusing rather than forgetting"):
        cache.first_use("f", expires_at=30.0)  # four live records: none is forgotten
    assert not any(cache.first_use(key, expires_at=30.0) for key in ("long", "c", "d", "e"))
    clock[0] = 31.0  # c, d and e expired: used again, each is a new record, at the end
    assert cache.first_use("c", expires_at=60.0) and cache.first_use("d", expires_at=60.0)
    assert list(cache._seen)[-2:] == ["c", "d"] and not cache.first_use("c", expires_at=60.0)


# -- a cache made in a forked child is its own ---------------------------------------------------


def _in_forked_child(parents: MemoryReplayCache) -> tuple[str, str]:
    """What the parent's cache and a cache made anew answer in a child of ``os.fork``."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave at once
        answers = []
        for cache in (parents, MemoryReplayCache()):
            try:
                answers.append(str(cache.first_use("dpop:x", expires_at=4e9)))
            except StoreUnavailableError as exc:
                answers.append(type(exc).__name__)
        os.write(write, " ".join(answers).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        answer = pipe.read().split()
    os.waitpid(pid, 0)
    return answer[0], answer[1]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_after_a_fork_the_parents_cache_refuses_and_a_new_one_serves() -> None:
    """Forks are seen without a getpid() per proof (os.register_at_fork): the parent's
    cache refuses in the child; a cache the child makes is its own; the parent's is as before."""
    parents = MemoryReplayCache()
    assert _in_forked_child(parents) == ("ReplayCacheNotSharedError", "True")
    assert parents.first_use("dpop:x", expires_at=4e9)


# -- the proof's shape, split without the JWS layer's object --------------------------------------


@pytest.mark.parametrize(
    "shape", ["{h}..{s}", "{h}.{p}.{s}.{s}", ".{p}.{s}", "{h}.{p}.", "{h}.{p}", "{h}.{p}.{s}\u00e9"]
)
def test_a_proof_of_the_wrong_shape_is_refused(dpop_key: DPoPKey, shape: str) -> None:
    head, payload, signature = dpop_key.proof("POST", URL, now=NOW).split(".")
    proof = shape.format(h=head, p=payload, s=signature)
    with pytest.raises(InvalidDPoPProofError, match="3 non-empty parts|ASCII") as caught:
        checker().verify(proof, method="POST", url=URL)
    assert "\n" not in str(caught.value)


def test_a_checked_proof_cannot_be_changed(dpop_key: DPoPKey) -> None:
    checked = checker().verify(dpop_key.proof("POST", URL, now=NOW), method="POST", url=URL)
    with pytest.raises(AttributeError):
        checked.jkt = "another"  # type: ignore[misc]
    assert checked.jkt == dpop_key.jkt and checked.nonce is None


# -- memos: a URL's htu, a token's ath -----------------------------------------------------------


def test_a_remembered_ath_is_never_another_tokens(
    issuer: Issuer, dpop_key: DPoPKey, bound: str
) -> None:
    proofs = checker()
    other = issuer.issue("SupportBot", ["write:refunds"], jkt=dpop_key.jkt, now=NOW).token
    assert proofs.verify(dpop_key.proof("POST", URL, token=bound, now=NOW), method="POST",
                         url=URL, token=bound)  # fmt: skip
    made_for_bound = dpop_key.proof("POST", URL, token=bound, now=NOW)
    with pytest.raises(InvalidDPoPProofError, match="ath is not the hash"):
        proofs.verify(made_for_bound, method="POST", url=URL, token=other)
    assert access_token_hash(other) != access_token_hash(bound)


def test_a_remembered_htu_is_never_another_urls(dpop_key: DPoPKey) -> None:
    proofs = checker()
    assert proofs.verify(dpop_key.proof("POST", URL, now=NOW), method="POST", url=URL)
    with pytest.raises(InvalidDPoPProofError, match="made for URL"):
        proofs.verify(dpop_key.proof("POST", URL, now=NOW), method="POST", url=URL + "x")
    assert proofs.verify(dpop_key.proof("POST", URL + "x", now=NOW), method="POST", url=URL + "x")


def test_the_memos_stay_bounded(dpop_key: DPoPKey) -> None:
    proofs = checker()
    for index in range(1500):
        url = f"{URL}/{index}"
        assert proofs.verify(dpop_key.proof("POST", url, now=NOW), method="POST", url=url)
    assert 0 < len(proofs._htus) <= 1024


# -- the request's headers, read in one pass -----------------------------------------------------


def scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "scheme": "https",
        "path": "/refunds",
        "raw_path": b"/refunds",
        "headers": headers,
        "server": ("10.0.0.1", 8443),
    }


@pytest.fixture
def claims(key_dir: KeyDirectory, bound: str) -> Any:
    return Verifier(key_dir.public_keys(), clock=lambda: NOW + 1).verify(bound)


def test_the_first_host_header_names_the_url(dpop_key: DPoPKey, bound: str, claims: Any) -> None:
    proof = dpop_key.proof("POST", URL, token=bound, now=NOW).encode()
    headers = [(b"host", b"billing.example"), (b"dpop", proof), (b"host", b"evil.example")]
    assert request_url(scope(headers)) == "https://billing.example/refunds"
    check_possession(checker(), scope(headers), "dpop", bound, claims)
    swapped = [(b"host", b"evil.example"), (b"dpop", proof), (b"host", b"billing.example")]
    with pytest.raises(InvalidDPoPProofError, match="made for URL"):
        check_possession(checker(), scope(swapped), "dpop", bound, claims)


def test_a_dpop_header_in_any_case_counts(dpop_key: DPoPKey, bound: str, claims: Any) -> None:
    """ASGI servers send lower-case names; should one not, two proofs are still two."""
    proof = dpop_key.proof("POST", URL, token=bound, now=NOW).encode()
    headers = [(b"host", b"billing.example"), (b"DPoP", proof)]
    check_possession(checker(), scope(headers), "dpop", bound, claims)
    twice = [*headers, (b"dpop", dpop_key.proof("POST", URL, token=bound, now=NOW).encode())]
    with pytest.raises(InvalidDPoPProofError, match="exactly one DPoP header, found 2"):
        check_possession(checker(), scope(twice), "dpop", bound, claims)


def test_without_a_host_header_the_server_names_the_url(
    dpop_key: DPoPKey, bound: str, claims: Any
) -> None:
    proof = dpop_key.proof("POST", "https://10.0.0.1:8443/refunds", token=bound, now=NOW)
    check_possession(checker(), scope([(b"dpop", proof.encode())]), "dpop", bound, claims)


def test_a_bound_token_as_bearer_is_refused_before_any_proof_is_read(
    dpop_key: DPoPKey, bound: str, claims: Any
) -> None:
    proof = dpop_key.proof("POST", URL, token=bound, now=NOW).encode()
    with pytest.raises(TokenBindingError):
        check_possession(checker(), scope([(b"dpop", proof)]), "bearer", bound, claims)
