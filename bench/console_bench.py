"""Benchmarks for the web console: the feed at 1,000 decisions/s, pages with 10,000 events.

    python bench/console_bench.py            # full: 30 s of feed
    python bench/console_bench.py --quick    # CI: 6 s of feed

The broker's app runs in this process (``create_app``), its routes driven through
``httpx.ASGITransport`` with a real session (a login link redeemed in the store), so
the times are server-side: the handler, the store, the rendering, no network.

1. Feed: a thread appends decisions to the broker's own audit (``BrokerAudit.record``,
   the hash chain and a signed head every 100 lines) at 1,000 a second, while a poller
   asks ``/console/feed/events?after=N`` every second, as the page's script does.
   Kept up: every decision written was read into the feed (its numbers; no byte
   skipped) and the poller's last number is the last written. Memory: RSS and
   tracemalloc sampled each second; the growth from the first third to the end.
   Also the feed's ingest capacity: lines/s one refresh loop reads from a backlog.
2. Pages: with 10,000 events in the audit (and 20 waiting requests, 200 live tokens),
   each page's server-side time, median and worst of N (the first audit check, which
   verifies the whole chain once, shown apart). Targets (issue 12): keep up at
   1,000/s without growing memory; pages under 100 ms. Informational: a miss prints
   MISS and never fails the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import httpx

from agentsudo_tokens import KeyDirectory
from agentsudo_tokens.broker.app import BrokerConfig, create_app
from agentsudo_tokens.broker.console.auth import new_link, redeem_link
from agentsudo_tokens.broker.console.minted import record_minted
from agentsudo_tokens.broker.policy import Caller
from agentsudo_tokens.state.approvals import canonical_arguments

POLICY = """
[broker]
admins = ["credential:admin"]

[agents.SupportBot]
scopes = ["read:orders"]
ask = ["delete:customer"]
callers = ["uid:0"]
"""
PAGES = ["/", "/agents", "/feed", "/audit", "/feed/events?after=0"]  # under the session's path


def rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def setup(root: Path) -> tuple[object, httpx.AsyncClient]:
    KeyDirectory.init(root / "keys")
    (root / "agentsudo.toml").write_text(POLICY)
    app = create_app(BrokerConfig(keys_dir=root / "keys", policy_path=root / "agentsudo.toml"))
    broker = app.state.broker
    value, _ = new_link(broker.store, Caller(uid=None, credential="admin"))
    session, cookie = redeem_link(broker.store, value)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=f"http://console.test{session.base}",
        cookies={"agentsudo_console": cookie}, headers={"accept": "application/json"},
    )  # fmt: skip
    return broker, client


def decision(audit: object, n: int) -> None:
    audit.record(  # type: ignore[attr-defined]
        "issued", agent="SupportBot", jti=f"jti-{n:012d}", scopes=["read:orders"], ttl=900,
        audience="agentsudo", caller="uid:1001",
    )  # fmt: skip


async def feed_bench(seconds: float, rate: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        broker, client = setup(Path(tmp))
        audit = broker.audit  # type: ignore[attr-defined]
        feed = broker.console.feed  # type: ignore[attr-defined]
        async with client:
            first = (await client.get("/feed/events?after=0")).json()
            start_seq, after = first["latest"], first["latest"]
            written = 0
            stop = threading.Event()

            def writer() -> None:
                nonlocal written
                begin = time.perf_counter()
                while not stop.is_set():
                    due = int((time.perf_counter() - begin) * rate)
                    while written < due:
                        decision(audit, written)
                        written += 1
                    time.sleep(0.005)

            tracemalloc.start()
            samples: list[tuple[float, int, int]] = []
            thread = threading.Thread(target=writer)
            thread.start()
            polls, worst_poll, received = 0, 0.0, 0
            begin = time.perf_counter()
            while time.perf_counter() - begin < seconds:
                await asyncio.sleep(1.0)
                t0 = time.perf_counter()
                answer = (await client.get(f"/feed/events?after={after}")).json()
                worst_poll = max(worst_poll, time.perf_counter() - t0)
                received += len(answer["events"])
                after, polls = answer["latest"], polls + 1
                samples.append((time.perf_counter() - begin, rss_kib(),
                                tracemalloc.get_traced_memory()[0]))  # fmt: skip
            stop.set()
            thread.join()
            answer = (await client.get(f"/feed/events?after={after}")).json()
            after = answer["latest"]
            tracemalloc.stop()
            ingested = feed.latest - start_seq
            heads = written // 100  # a signed head each 100 lines: not a decision, not shown
            third = samples[len(samples) // 3]
            return {
                "seconds": round(time.perf_counter() - begin, 1),
                "written": written,
                "ingested": ingested,
                "skipped_bytes": feed.skipped_bytes,
                "kept_up": ingested >= written and after == feed.latest and feed.skipped_bytes == 0,
                "heads_left_out": heads,
                "polls": polls,
                "worst_poll_ms": round(worst_poll * 1000, 1),
                "events_per_poll": round(received / max(1, polls)),
                "rss_kib": [third[1], samples[-1][1]],
                "traced_kib": [third[2] // 1024, samples[-1][2] // 1024],
                "rss_growth_kib": samples[-1][1] - third[1],
                "traced_growth_kib": (samples[-1][2] - third[2]) // 1024,
            }


def ingest_capacity(lines: int) -> float:
    """Lines/s one refresh loop reads from a backlog of ``lines`` decisions."""
    from agentsudo_tokens.broker.console.feed import Feed

    with tempfile.TemporaryDirectory() as tmp:
        broker, _ = setup(Path(tmp))
        audit = broker.audit  # type: ignore[attr-defined]
        feed = Feed(audit.path)
        feed.refresh()  # following starts at the end
        for n in range(lines):
            decision(audit, n)
        t0 = time.perf_counter()
        read = 0
        while read < lines:
            got = feed.refresh()
            if got == 0:
                break
            read += got
        return read / (time.perf_counter() - t0)


async def pages_bench(events: int, repeats: int) -> dict[str, object]:
    from agentsudo_tokens.state.approvals import REQUEST

    with tempfile.TemporaryDirectory() as tmp:
        broker, client = setup(Path(tmp))
        audit, store = broker.audit, broker.store  # type: ignore[attr-defined]
        for n in range(events):
            decision(audit, n)
        now = time.time()
        for n in range(200):
            claims = {"jti": f"tok-{n:08d}", "sub": "SupportBot", "scope": "read:orders"}
            record_minted(store, {**claims, "iat": int(now), "exp": int(now) + 900})
        for n in range(20):
            _file(store, n, REQUEST)
        async with client:
            t0 = time.perf_counter()
            cold = await client.get("/audit")
            cold_ms = (time.perf_counter() - t0) * 1000
            assert cold.status_code == 200 and "verified" in cold.text, cold.text[:300]
            shown = (await client.get("/")).text
            assert shown.count('class="card approval"') == 20, "the 20 requests, each whole"
            assert (await client.get("/agents")).text.count("tok-") >= 200
            times: dict[str, list[float]] = {page: [] for page in PAGES}
            for _ in range(repeats):
                for page in PAGES:
                    t0 = time.perf_counter()
                    answer = await client.get(page)
                    times[page].append((time.perf_counter() - t0) * 1000)
                    assert answer.status_code == 200, (page, answer.text[:300])
        return {
            "events": events,
            "cold_audit_check_ms": round(cold_ms, 1),
            "pages_ms": {
                page: {"median": round(statistics.median(t), 1), "worst": round(max(t), 1)}
                for page, t in times.items()
            },  # fmt: skip
        }


def _file(store: object, n: int, prefix: str) -> None:
    """A waiting request as the broker files it (``state.approvals``' record)."""
    from agentsudo_tokens.state.approvals import ApprovalRequest, binding, text_digest

    arguments = canonical_arguments({"customer_id": f"c-{n}", "note": "x" * 500})
    digest = text_digest(arguments)
    request_id = f"apr_bench{n:020d}"
    now = time.time()
    request = ApprovalRequest(
        id=request_id, agent="SupportBot", jti=f"tok-{n:08d}", scope="delete:customer",
        function="delete_customer", arguments_json=arguments, arguments_sha256=digest,
        reason="not granted", created_at=now, expires_at=now + 600,
        binding=binding(request_id, "SupportBot", f"tok-{n:08d}", "delete:customer",
                        "delete_customer", digest),
    )  # fmt: skip
    store.put(prefix + request_id, json.dumps(request.to_dict()), expires_at=now + 660)  # type: ignore[attr-defined]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI: a short run")
    quick = parser.parse_args().quick
    feed = asyncio.run(feed_bench(6.0 if quick else 30.0, 1000))
    capacity = ingest_capacity(20_000 if quick else 100_000)
    pages = asyncio.run(pages_bench(10_000, 5 if quick else 20))
    print("console feed at 1,000 decisions/s:", json.dumps(feed))
    grows = feed["traced_growth_kib"] > 1024  # type: ignore[operator]
    print(f"  kept up: {'ok' if feed['kept_up'] else 'MISS'}; memory "
          f"{'MISS (grows)' if grows else 'ok (flat)'}; ingest capacity "
          f"{capacity:,.0f} lines/s")  # fmt: skip
    print("console pages with 10,000 audit events:", json.dumps(pages))
    worst = max(p["median"] for p in pages["pages_ms"].values())  # type: ignore[attr-defined]
    print(f"  slowest page median {worst} ms: {'ok' if worst < 100 else 'MISS'} (target < 100 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
