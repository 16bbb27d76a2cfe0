"""The DPoP replay cache in a state store: one first use, across processes, on both backends.

Several real processes, each with its own connection to the store (a SQLite
file, a real redis-server), check the same proof at the same instant: exactly
one accepts it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from agentsudo_tokens.errors import ReplayedDPoPProofError
from agentsudo_tokens.state import Store
from agentsudo_tokens.state.replay import StoreReplayCache
from agentsudo_tokens.tokens.dpop import DPoPKey
from agentsudo_tokens.tokens.dpop_proof import ProofVerifier

URL = "https://billing.example/refunds"
PROCESSES = 6

RACER = textwrap.dedent(
    """
    import sys, time
    from agentsudo_tokens.errors import AgentSudoError
    from agentsudo_tokens.state import open_store
    from agentsudo_tokens.state.replay import StoreReplayCache
    from agentsudo_tokens.tokens.dpop_proof import ProofVerifier

    url, proof, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
    checker = ProofVerifier(replay=StoreReplayCache(open_store(url)))
    checker.replay.store.get("warm-up")  # connect before the start
    time.sleep(max(0.0, start - time.time()))
    try:
        checker.verify(proof, method="GET", url="https://billing.example/refunds")
        print("ok")
    except AgentSudoError as exc:
        print(type(exc).__name__)
    """
)


def test_a_store_records_a_first_use_until_it_expires(store: Store) -> None:
    cache = StoreReplayCache(store)
    assert cache.first_use("dpop:a", expires_at=time.time() + 60)
    assert not cache.first_use("dpop:a", expires_at=time.time() + 60)
    assert cache.first_use("dpop:b", expires_at=time.time() - 1)  # already expired: not kept
    assert cache.first_use("dpop:b", expires_at=time.time() + 60)


def test_a_proof_is_accepted_once_by_every_verifier_sharing_the_store(store: Store) -> None:
    key = DPoPKey.generate()
    proof = key.proof("GET", URL)
    first = ProofVerifier(replay=StoreReplayCache(store))
    assert first.verify(proof, method="GET", url=URL).jkt == key.jkt
    second = ProofVerifier(replay=StoreReplayCache(store))  # another service process's
    try:
        second.verify(proof, method="GET", url=URL)
    except ReplayedDPoPProofError:
        pass
    else:
        raise AssertionError("a replayed proof was accepted by a second verifier")


def test_racing_processes_accept_a_proof_exactly_once(store_url: str) -> None:
    for _ in range(2):
        proof = DPoPKey.generate().proof("GET", URL)
        start = time.time() + 1.5
        racers = [
            subprocess.Popen(
                [sys.executable, "-c", RACER, store_url, proof, str(start)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(PROCESSES)
        ]
        answers = []
        for racer in racers:
            out, err = racer.communicate(timeout=60)
            assert racer.returncode == 0, err
            answers.append(out.strip())
        assert sorted(answers) == ["ReplayedDPoPProofError"] * (PROCESSES - 1) + ["ok"]
