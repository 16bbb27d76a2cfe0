"""What state costs: verification with no store, with SQLite and with Redis; one-time throughput.

    python bench/store_bench.py                  # full run, about 20 s
    python bench/store_bench.py --quick          # CI: a few seconds
    python bench/store_bench.py --redis redis://127.0.0.1:6379/15   # an existing server (FLUSHED)

Without ``--redis`` a throwaway ``redis-server`` is started on a free loopback
port (its rows say "skipped" if none is installed). SQLite lives in a
temporary directory. Verification rows are the minimum per-call time over
interleaved repeats with the garbage collector off; the ratio is against
verification with no store in the same run. One-time rows are consumptions per
second: each token verified (and so consumed) once, in one process, then in 8
processes at once, each with its own share of the tokens.
"""

from __future__ import annotations

import argparse
import gc
import math
import multiprocessing
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from agentsudo_tokens import Issuer, KeyDirectory, Verifier
from agentsudo_tokens.state import Store, open_store
from agentsudo_tokens.tokens.issuer import issue_once

perf_counter_ns = time.perf_counter_ns


@contextmanager
def redis_server(workdir: Path) -> Iterator[str | None]:
    executable = shutil.which("redis-server")
    if executable is None:
        yield None
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(
        [executable, *args, "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        store = open_store(url)
        for _ in range(500):
            try:
                store.get("ping")
                break
            except Exception:
                time.sleep(0.01)
        store.close()
        yield url
    finally:
        process.terminate()
        process.wait(5)


@contextmanager
def given(url: str) -> Iterator[str | None]:
    yield url


def flush(url: str) -> None:
    if url.startswith("redis"):
        import redis

        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()


@contextmanager
def gc_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def per_call(series: dict[str, Callable[[int], int]], repeats: int, n: int) -> dict[str, float]:
    """Minimum nanoseconds per call of each series, interleaved over ``repeats``."""
    best = dict.fromkeys(series, math.inf)
    for run in series.values():
        run(min(n, 200))  # warm up
    with gc_off():
        for index in range(repeats):
            order = list(series.items())
            for name, run in order if index % 2 == 0 else reversed(order):
                best[name] = min(best[name], run(n) / n)
    return best


def verifying(verifier: Verifier, tokens: list[str]) -> Callable[[int], int]:
    def run(n: int) -> int:
        sequence = (tokens * (n // len(tokens) + 1))[:n]
        verify = verifier.verify
        start = perf_counter_ns()
        for token in sequence:
            verify(token)
        return perf_counter_ns() - start

    return run


def _consume(args: tuple[str, str, list[str]]) -> int:
    """In a worker process: verify (consume) each token once; return the successes."""
    jwks, url, tokens = args
    from agentsudo_tokens import JwksFile

    verifier = Verifier(JwksFile(jwks), store=open_store(url), cache_size=0)
    return sum(1 for token in tokens if verifier.verify(token))


def consumption(
    issuer: Issuer, jwks: str, url: str, count: int, processes: int
) -> tuple[float, float]:
    """One-time consumptions per second: in one process, then in ``processes`` at once."""
    from agentsudo_tokens import JwksFile

    store = open_store(url)
    single = [issue_once(issuer, store, "Bot", "deploy:prod").token for _ in range(count)]
    verifier = Verifier(JwksFile(jwks), store=store, cache_size=0)
    start = time.perf_counter()
    for token in single:
        verifier.verify(token)
    one = count / (time.perf_counter() - start)
    many = [issue_once(issuer, store, "Bot", "deploy:prod").token for _ in range(count)]
    shares = [(jwks, url, many[i::processes]) for i in range(processes)]
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        pool.map(_consume, [(jwks, url, [])] * processes)  # start the workers first
        start = time.perf_counter()
        used = sum(pool.map(_consume, shares))
        elapsed = time.perf_counter() - start
    store.close()
    assert used == count
    return one, count / elapsed


def fmt_ns(ns: float) -> str:
    return f"{ns / 1000:8.2f} us"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a short run, for CI")
    parser.add_argument("--redis", default=None, help="an existing Redis URL (it is FLUSHED)")
    options = parser.parse_args()
    repeats, n, count = (5, 300, 300) if options.quick else (21, 2000, 2000)
    processes = 8

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        keys = KeyDirectory.init(root / "keys")
        issuer = Issuer(keys.signing_key())
        jwks = str(keys.jwks_path)
        sqlite_url = f"sqlite:///{root / 'state.db'}"
        with redis_server(root) if options.redis is None else given(options.redis) as redis_url:
            stores: dict[str, Store | None] = {"no store": None, "sqlite": open_store(sqlite_url)}
            if redis_url is not None:
                flush(redis_url)
                stores["redis"] = open_store(redis_url)
            print(f"python {sys.version.split()[0]}, {multiprocessing.cpu_count()} CPUs")
            print(f"sqlite {sqlite_url}; redis {redis_url or 'skipped: no redis-server'}\n")

            cached_token = [issuer.issue("Bot", "read:orders").token]
            pool = [issuer.issue("Bot", "read:orders").token for _ in range(64)]
            cached = per_call(
                {
                    name: verifying(Verifier(keys.public_keys(), store=store), cached_token)
                    for name, store in stores.items()
                },
                repeats,
                n,
            )
            fresh = per_call(
                {
                    name: verifying(Verifier(keys.public_keys(), store=store, cache_size=0), pool)
                    for name, store in stores.items()
                },
                repeats,
                max(64, n // 10),
            )
            print("verification, per call (ratio: against no store, same run)")
            print(f"  {'':10} {'cached token':>14} {'ratio':>7}   {'fresh token':>14} {'ratio':>7}")
            for name in stores:
                hit, miss = cached[name] / cached["no store"], fresh[name] / fresh["no store"]
                print(
                    f"  {name:10} {fmt_ns(cached[name]):>14} {hit:6.1f}x"
                    f"   {fmt_ns(fresh[name]):>14} {miss:6.2f}x"
                )

            print(f"\none-time tokens consumed per second ({count} tokens)")
            print(f"  {'':10} {'1 process':>12} {f'{processes} processes':>14}")
            for name, url in (("sqlite", sqlite_url), ("redis", redis_url)):
                if url is None:
                    print(f"  {name:10} {'skipped':>12}")
                    continue
                one, many = consumption(issuer, jwks, url, count, processes)
                print(f"  {name:10} {one:10.0f}/s {many:12.0f}/s")
            for store in stores.values():
                if store is not None:
                    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
