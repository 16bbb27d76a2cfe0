"""What OpenTelemetry costs an allowed ``@sudo`` call and ``Verifier.verify``: off, and on.

    python bench/otel_bench.py            # full run
    python bench/otel_bench.py --quick    # CI: a few seconds

Rows, each the minimum per call over interleaved repeats (the garbage collector
off, no audit file, no logging handler):

- ``before``: the library as it was before telemetry came (the commit before
  ``audit/otel.py`` was added, exported with ``git archive`` into a temporary
  directory; skipped outside a git checkout);
- ``off``: this checkout, telemetry not configured (target: within noise of
  ``before``, and ``opentelemetry`` never imported);
- ``on``: this checkout with ``enable_otel`` on SDK providers (a batch span
  processor with an exporter that drops spans, an in-memory metric reader): what
  a span and a count per decision cost.

Each configuration runs in a process of its own, so that one cannot warm or
import for another. Figures are informational: a MISS never fails the run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_MEASURE = textwrap.dedent(
    """
    import gc, json, sys, tempfile, time
    from pathlib import Path
    from agentsudo_tokens import Agent, Issuer, JwksFile, KeyDirectory, Verifier, sudo

    mode, repeats, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if mode == "on":
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
        from opentelemetry.sdk.trace.export import SpanExportResult
        from agentsudo_tokens.audit.otel import enable_otel

        class Drop(SpanExporter):
            def export(self, spans):
                return SpanExportResult.SUCCESS

        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(BatchSpanProcessor(Drop()))
        meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        enable_otel(tracer_provider=tracer_provider, meter_provider=meter_provider)

    @sudo(scope="write:refunds")
    def guarded(order_id):
        return order_id

    def plain(order_id):
        return order_id

    keys = KeyDirectory.init(Path(tempfile.mkdtemp()) / "keys")
    issuer = Issuer(keys.signing_key())
    verifier = Verifier(JwksFile(keys.jwks_path))
    token = issuer.issue("Bot", ["write:refunds"]).token
    agent = Agent.from_token(token, verifier=verifier)
    perf = time.perf_counter_ns

    def loop(call):
        start = perf()
        for _ in range(n):
            call("o1")
        return perf() - start

    def verifying():
        verify = verifier.verify
        start = perf()
        for _ in range(n):
            verify(token)
        return perf() - start

    best = {"plain": float("inf"), "sudo": float("inf"), "verify": float("inf")}
    gc.disable()
    with agent.start_session():
        for _ in range(repeats):
            best["plain"] = min(best["plain"], loop(plain) / n)
            best["sudo"] = min(best["sudo"], loop(guarded) / n)
            best["verify"] = min(best["verify"], verifying() / n)
    gc.enable()
    leaked = any(m.split(".")[0] == "opentelemetry" for m in sys.modules)
    print(json.dumps({"net": best["sudo"] - best["plain"], "verify": best["verify"],
                      "opentelemetry_imported": leaked}))
    """
)


def _before_tree(workdir: Path) -> Path | None:
    """The package as of the commit before ``audit/otel.py`` came, or None (no git history)."""
    try:
        added = subprocess.run(
            [
                "git",
                "log",
                "--diff-filter=A",
                "--format=%H",
                "-1",
                "--",
                "agentsudo_tokens/audit/otel.py",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
        if not added:
            return None
        archive = workdir / "before.tar"
        subprocess.run(
            ["git", "archive", "-o", str(archive), f"{added}^", "agentsudo_tokens"],
            cwd=ROOT,
            check=True,
            timeout=60,
            capture_output=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    tree = workdir / "before"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def _run(mode: str, path: Path, repeats: int, n: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTSUDO_", "OTEL_"))}
    env["PYTHONPATH"] = str(path)
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, mode, str(repeats), str(n)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=path,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{mode}: {done.stderr.strip().splitlines()[-1:]}")
    result: dict[str, float] = json.loads(done.stdout)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds, for CI")
    options = parser.parse_args()
    rounds, repeats, n = (2, 5, 20_000) if options.quick else (5, 15, 50_000)
    with tempfile.TemporaryDirectory() as workdir:
        before = _before_tree(Path(workdir))
        modes: list[tuple[str, Path]] = [("off", ROOT), ("on", ROOT)]
        if before is not None:
            modes.insert(0, ("before", before))
        best: dict[str, dict[str, float]] = {}
        leaked: dict[str, bool] = {}
        for _ in range(rounds):  # interleaved: the machine's load moves between rounds
            for mode, path in modes:
                figures = _run("on" if mode == "on" else "off", path, repeats, n)
                leaked[mode] = bool(figures["opentelemetry_imported"])
                mine = best.setdefault(mode, {"net": float("inf"), "verify": float("inf")})
                mine["net"] = min(mine["net"], figures["net"])
                mine["verify"] = min(mine["verify"], figures["verify"])
    print("OpenTelemetry: an allowed @sudo call (net of an undecorated one) and Verifier.verify")
    print("(a cached token), per call, minimum over interleaved repeats, one process per row")
    print(f"  {'':28} {'@sudo net':>10} {'verify':>10}  opentelemetry imported")
    labels = {
        "before": "before telemetry (git)",
        "off": "telemetry off",
        "on": "telemetry on (SDK)",
    }
    for mode, _ in modes:
        row = best[mode]
        print(
            f"  {labels[mode]:28} {row['net'] / 1000:8.3f} us {row['verify'] / 1000:8.3f} us"
            f"  {'yes' if leaked[mode] else 'no'}"
        )
    if before is None:
        print("  before: skipped (no git history here)")
    else:
        extra = (best["off"]["net"] - best["before"]["net"]) / 1000
        verify = (best["off"]["verify"] - best["before"]["verify"]) / 1000
        verdict = "PASS" if max(extra, verify) <= 0.05 and not leaked["off"] else "MISS"
        print(
            f"  off - before: {extra:+.3f} us per @sudo call, {verify:+.3f} us per verify "
            f"(target: <= +0.05 us, noise: {verdict})"
        )
    on = (best["on"]["net"] - best["off"]["net"]) / 1000
    print(f"  on - off: {on:+.3f} us per @sudo call (a span and a count per decision)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
