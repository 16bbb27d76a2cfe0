"""DPoP proofs against a spoofed host, skewed clocks and a replay cache split across processes.

Real keys and proofs; the worker processes are real (``multiprocessing``), the
clocks injected.
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

import pytest

from agentsudo_tokens import Issuer
from agentsudo_tokens.errors import (
    ConfigError,
    InvalidDPoPProofError,
    ReplayedDPoPProofError,
    StoreUnavailableError,
)
from agentsudo_tokens.state.replay import MemoryReplayCache, ReplayCacheNotSharedError
from agentsudo_tokens.tokens.dpop import DPoPKey
from agentsudo_tokens.tokens.dpop_proof import ProofVerifier

NOW = 1_800_000_000
ORIGIN = "https://billing.example"


@pytest.fixture
def dpop_key() -> DPoPKey:
    return DPoPKey.generate()


@pytest.fixture
def bound(issuer: Issuer, dpop_key: DPoPKey) -> str:
    return issuer.issue("SupportBot", ["write:refunds"], jkt=dpop_key.jkt, now=NOW).token


# -- the service's own origin --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("https://billing.example", "https://billing.example"),
        ("HTTPS://Billing.Example:443/", "https://billing.example"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://[::1]:80", "http://[::1]"),
    ],
)
def test_an_origin_is_normalized(given: str, kept: str) -> None:
    assert ProofVerifier(origin=given).origin == kept


@pytest.mark.parametrize(
    "given",
    ["billing.example", "ftp://billing.example", "https://billing.example/api",
     "https://billing.example?x", "https://billing.example#top", "https://u@billing.example",
     "https://billing.example:99999", "", 7],
)  # fmt: skip
def test_what_is_not_an_origin_is_refused(given: Any) -> None:
    with pytest.raises(ConfigError, match="expected an origin like https://billing.example"):
        ProofVerifier(origin=given)


def test_with_an_origin_the_request_urls_host_does_not_count(dpop_key: DPoPKey, bound: str) -> None:
    """The attack: a proof for billing.example sent, with that Host, to another service."""
    elsewhere = ProofVerifier(origin="https://orders.example", clock=lambda: NOW)
    proof = dpop_key.proof("POST", f"{ORIGIN}/refunds", token=bound, now=NOW)
    for url in (f"{ORIGIN}/refunds", "http://billing.example/refunds"):  # what Host would say
        with pytest.raises(InvalidDPoPProofError, match="used for 'https://orders.example/"):
            elsewhere.verify(proof, method="POST", url=url, token=bound, jkt=dpop_key.jkt)
    billing = ProofVerifier(origin=ORIGIN, clock=lambda: NOW)
    checked = billing.verify(
        proof, method="POST", url="http://10.0.0.7:8000/refunds?x=1", token=bound
    )  # behind a proxy: the server's own address, the public origin's path
    assert checked.jkt == dpop_key.jkt
    with pytest.raises(InvalidDPoPProofError, match="made for URL"):
        billing.verify(
            dpop_key.proof("POST", f"{ORIGIN}/refunds", token=bound, now=NOW),
            method="POST",
            url=f"{ORIGIN}/orders",
            token=bound,
        )


def test_without_an_origin_the_url_given_counts(dpop_key: DPoPKey, bound: str) -> None:
    checker = ProofVerifier(clock=lambda: NOW)
    proof = dpop_key.proof("POST", "http://billing.example/refunds", token=bound, now=NOW)
    assert checker.verify(proof, method="POST", url="http://billing.example/refunds", token=bound)
    assert "origin" not in repr(checker) and "origin='https" in repr(ProofVerifier(origin=ORIGIN))


# -- how long a proof is remembered --------------------------------------------------------------


@pytest.mark.parametrize("iat", [NOW - 59, NOW, NOW + 59])
def test_a_replay_is_refused_though_the_caches_clock_runs_ahead(
    dpop_key: DPoPKey, bound: str, iat: int
) -> None:
    """A cache shared by machines expires records by its own clock (Redis: PXAT): one 30 s
    ahead of this verifier's must still hold the proof while any verifier could accept it."""
    clock = [float(NOW)]
    cache = MemoryReplayCache(clock=lambda: clock[0] + 30)
    checker = ProofVerifier(replay=cache, clock=lambda: clock[0])
    late = ProofVerifier(replay=cache, clock=lambda: clock[0] - 30)  # a machine 30 s behind
    proof = dpop_key.proof("POST", f"{ORIGIN}/refunds", token=bound, now=iat)

    def verify(by: ProofVerifier) -> object:
        return by.verify(proof, method="POST", url=f"{ORIGIN}/refunds", token=bound)

    assert verify(checker)
    for _ in range(8):  # until no clock of the two accepts it any more
        clock[0] += 10
        with pytest.raises(InvalidDPoPProofError) as refused:
            verify(checker if clock[0] - iat <= 60 else late)
        if clock[0] - 30 - iat <= 60:  # some verifier's window still holds it: the cache says no
            assert isinstance(refused.value, ReplayedDPoPProofError), refused.value


def test_a_second_check_of_one_request_skips_the_replay_cache(
    dpop_key: DPoPKey, bound: str
) -> None:
    cache = MemoryReplayCache()
    first, second = (ProofVerifier(replay=cache, clock=lambda: NOW) for _ in range(2))
    proof = dpop_key.proof("POST", f"{ORIGIN}/refunds", token=bound, now=NOW)
    request = {"method": "POST", "url": f"{ORIGIN}/refunds", "token": bound}
    assert first.verify(proof, **request)
    assert second.verify(proof, **request, record=False)  # the same request, checked again
    with pytest.raises(ReplayedDPoPProofError):
        second.verify(proof, **request)


# -- a memory cache in one of several processes ---------------------------------------------------


def _use(cache: MemoryReplayCache | None, answers: Any) -> None:
    cache = cache if cache is not None else MemoryReplayCache()
    try:
        answers.put(("accepted", cache.first_use("dpop:x", expires_at=4e9)))
    except StoreUnavailableError as exc:
        answers.put((type(exc).__name__, str(exc)))


def _in_child(method: str, cache: MemoryReplayCache | None) -> tuple[str, object]:
    context = multiprocessing.get_context(method)
    answers = context.Queue()
    child = context.Process(target=_use, args=(cache, answers))
    child.start()
    answer: tuple[str, object] = answers.get(timeout=60)
    child.join(timeout=60)
    return answer


def test_a_memory_cache_refuses_in_a_worker_process() -> None:
    """``uvicorn --workers N`` starts its workers with multiprocessing (spawn): each would
    hold its own cache, and a proof would pass once per worker."""
    kind, message = _in_child("spawn", None)
    assert kind == ReplayCacheNotSharedError.__name__
    assert isinstance(message, str) and "\n" not in message
    assert "started by multiprocessing" in message and "set AGENTSUDO_STORE" in message
    assert issubclass(ReplayCacheNotSharedError, StoreUnavailableError)  # a 503, fail closed


def test_a_memory_cache_refuses_after_a_fork() -> None:
    """A cache made before the server forked its workers (gunicorn --preload)."""
    cache = MemoryReplayCache()
    kind, message = _in_child("fork", cache)
    assert kind == ReplayCacheNotSharedError.__name__, message
    assert cache.first_use("dpop:x", expires_at=4e9)  # the process that made it: as before
    assert os.getpid() == cache._pid
