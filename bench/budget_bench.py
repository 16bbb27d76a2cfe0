"""What a budget debit costs: ``Store.spend`` per second against a plain ``put``, same run.

    python bench/budget_bench.py                 # full run, about 20 s
    python bench/budget_bench.py --quick         # CI: a few seconds
    python bench/budget_bench.py --redis redis://127.0.0.1:6379/15   # an existing server (FLUSHED)

Without ``--redis`` a throwaway ``redis-server`` is started on a free loopback
port (store_bench's helper; the Redis rows say "skipped" if none is installed).
SQLite lives in a temporary directory. Each row is operations per second in one
process, then in 8 processes at once (spawned, started together at one
wall-clock instant; the rate is every operation over the time from that instant
to the end of the last process, so one starved process drags it down). A debit
is one ``spend`` of 1 call and a random amount on ONE budget that every process
shares (the worst case: each debit waits for the others); a write is one ``put``
of a key of its own. The ratio is debits / writes in the same run; p99 and max
are the slowest debits with 8 processes. Each budget's total is checked after
the run: every debit counted once. Targets (issue 11): with 8 processes, at
least 2,000 debits/s on SQLite and 5,000/s on Redis; informational, a MISS
never changes the exit status.
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.pool
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from store_bench import flush, given, redis_server

from agentsudo_tokens.state import open_store

PROCESSES = 8
TARGETS = {"sqlite": 2000.0, "redis": 5000.0}  # debits per second with 8 processes
LIMITS = {"amount": 2**62, "calls": 2**62}  # never reached: every debit succeeds
Job = tuple[str, str, int, str, float, str]  # url, kind, count, tag, start, budget key


@dataclass
class Run:
    """One row's measurement: operations done, the time they took, each call's seconds."""

    done: int
    seconds: float
    calls: list[float]


def _run(job: Job) -> tuple[int, float, float, list[float]]:
    """In one process: ``count`` operations from wall-clock ``start`` (0: now).

    Returns (done, start, end, seconds per call); ``done`` is -1 when the process
    was not ready by ``start`` (the caller measures again).
    """
    url, kind, count, tag, start, budget = job
    store = open_store(url)
    expires_at = time.time() + 3600
    store.put(f"warm:{tag}", "v", expires_at=expires_at)  # connected before the start
    rng = random.Random(tag)
    amounts = [{"amount": rng.randrange(1, 10_000), "calls": 1} for _ in range(count)]
    if start and time.time() > start:
        return -1, 0.0, 0.0, []
    time.sleep(max(0.0, start - time.time()))
    start = start or time.time()
    done, calls, clock = 0, [], time.perf_counter
    if kind == "spend":
        for amount in amounts:
            began = clock()
            done += store.spend(budget, amount, LIMITS, expires_at=expires_at) is not None
            calls.append(clock() - began)
    else:
        for index in range(count):
            began = clock()
            store.put(f"put:{tag}:{index}", "1", expires_at=expires_at)
            calls.append(clock() - began)
            done += 1
    end = time.time()
    store.close()
    return done, start, end, calls


def measure(pool: multiprocessing.pool.Pool | None, url: str, kind: str, count: int) -> Run:
    """``count`` operations in this process (no pool), or shared among the pool's processes.

    Debits go to a new budget each time, whose total is checked afterwards.
    """
    flush(url)
    budget = f"budget:bench-{time.monotonic_ns()}:0"
    if pool is None:
        done, start, end, calls = _run((url, kind, count, "solo", 0.0, budget))
    else:
        for margin in (0.3, 0.6, 1.2, 2.4):  # every worker ready and waiting by then
            start = time.time() + margin
            share = count // PROCESSES
            jobs = [(url, kind, share, f"w{i}", start, budget) for i in range(PROCESSES)]
            results = pool.map(_run, jobs, chunksize=1)
            if all(result[0] >= 0 for result in results):
                break
        done, end = sum(r[0] for r in results), max(r[2] for r in results)
        calls = [seconds for result in results for seconds in result[3]]
    assert done == len(calls) > 0, f"{done} of {count} done"
    if kind == "spend":
        with open_store(url) as store:
            found = store.spent(budget)
        assert found is not None and found[1]["calls"] == done, f"{found} after {done} debits"
    return Run(done, end - start, calls)


def rate(run: Run) -> float:
    return run.done / run.seconds


def best(pool: multiprocessing.pool.Pool | None, url: str, count: int, rounds: int) -> list[Run]:
    """The fastest put run and the fastest debit run of ``rounds``, interleaved."""
    fastest: dict[str, Run] = {}
    for _ in range(rounds):
        for kind in ("put", "spend"):
            run = measure(pool, url, kind, count)
            if (
                kind not in fastest
                or run.done / run.seconds > fastest[kind].done / fastest[kind].seconds
            ):
                fastest[kind] = run
    return [fastest["put"], fastest["spend"]]


def row(name: str, label: str, put: Run, debit: Run, goal: float | None) -> str:
    writes, debits = rate(put), rate(debit)
    text = f"  {name:7} {label:3} {writes:9,.0f} {debits:9,.0f} {debits / writes:6.2f}x"
    if goal is None:
        return text
    calls = sorted(debit.calls)
    p99, worst = calls[int(len(calls) * 0.99)] * 1000, calls[-1] * 1000
    verdict = "ok" if debits >= goal else "MISS"
    return f"{text} {p99:8.1f} {worst:8.1f}   >= {goal:,.0f}/s {verdict}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a short run, for CI")
    parser.add_argument("--redis", default=None, help="an existing Redis URL (it is FLUSHED)")
    options = parser.parse_args()
    count, rounds = (1600, 1) if options.quick else (4000, 3)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sqlite_url = f"sqlite:///{root / 'state.db'}"
        with redis_server(root) if options.redis is None else given(options.redis) as redis_url:
            print(f"python {sys.version.split()[0]}, {multiprocessing.cpu_count()} CPUs")
            print(f"sqlite {sqlite_url}; redis {redis_url or 'skipped: no redis-server'}")
            print(f"{count} operations a row, best of {rounds}; the debits on one shared budget\n")
            print(
                f"per second; {PROCESSES}p: {PROCESSES} processes at once; p99, max: ms per debit"
            )
            print(
                f"  {'':11} {'put/s':>9} {'debit/s':>9} {'ratio':>7} {'p99':>8} {'max':>8}   target"
            )
            with multiprocessing.get_context("spawn").Pool(PROCESSES) as pool:
                for name, url in (("sqlite", sqlite_url), ("redis", redis_url)):
                    if url is None:
                        print(f"  {name:7} skipped")
                        continue
                    boot = [(url, "put", 1, f"boot{i}", 0.0, "") for i in range(PROCESSES)]
                    pool.map(_run, boot, chunksize=1)  # every worker has imported the client
                    print(row(name, "1p", *best(None, url, count, rounds), None))
                    label = f"{PROCESSES}p"
                    print(row(name, label, *best(pool, url, count, rounds), TARGETS[name]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
