"""A short tour of chorde on the embedded in-process client: ``python -m chorde.demo``.

No server is needed. It memoizes a slow function with ``@cached`` (cold against warm call),
shows stale-while-revalidate serving an old value while a background refresh runs, reads
through a two-tier client, and prints the counters. About two seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from chorde import speedups_enabled
from chorde.clients.inproc import InprocCacheClient
from chorde.clients.tiered import TieredInclusiveClient
from chorde.decorators import cached

__all__ = ["main"]

SLOW = 0.2  # seconds each "expensive" computation takes


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def _fmt(seconds: float) -> str:
    if seconds >= 0.1:
        return f"{seconds * 1000:8.0f} ms"
    if seconds >= 1e-3:
        return f"{seconds * 1000:8.2f} ms"
    return f"{seconds * 1e6:8.1f} µs"


def main() -> None:
    """Run the tour and print one table row per step."""
    rows: list[tuple[str, str, str]] = []
    client = InprocCacheClient(1000)

    # 1. Memoization: the first call computes, the second is a cache hit.
    calls = {"n": 0}

    @cached(client, ttl=60)
    def slow_square(x: int) -> int:
        calls["n"] += 1
        time.sleep(SLOW)
        return x * x

    value, cold = _timed(lambda: slow_square(12))
    rows.append(("@cached cold call (computes)", repr(value), _fmt(cold)))
    value, warm = _timed(lambda: slow_square(12))
    rows.append(("@cached warm call (cache hit)", repr(value), _fmt(warm)))
    rows.append(("  speed-up", f"{cold / warm:,.0f}x", ""))

    # 2. Stale-while-revalidate: ttl 1 s, refresh once less than 0.6 s is left.
    version = {"n": 0}

    @cached(client, ttl=1.0, async_ttl=-0.4, ttl_spread=False)
    def config() -> str:
        version["n"] += 1
        time.sleep(SLOW)
        return f"config v{version['n']}"

    config()
    time.sleep(0.5)  # into the refresh window
    value, waited = _timed(config)
    rows.append(("in refresh window: served at once", value, _fmt(waited)))
    deadline = time.monotonic() + 5
    while config.peek() == "config v1" and time.monotonic() < deadline:
        time.sleep(0.02)
    value, waited = _timed(config)
    rows.append(("after the background refresh", value, _fmt(waited)))

    # 3. Tiered: a small L1 in front of a bigger L2 (memcached in production).
    l1, l2 = InprocCacheClient(10), InprocCacheClient(10_000)
    tiered = TieredInclusiveClient(l1, l2)
    l2.put("page:/", "<html>home</html>", 300)
    rows.append(("tiered: in L1 before read", repr(l1.contains("page:/")), ""))
    value, took = _timed(lambda: tiered.get("page:/"))
    rows.append(("tiered: read through L2", value, _fmt(took)))
    rows.append(("tiered: promoted into L1", repr(l1.contains("page:/")), ""))

    # 4. Counters.
    s = client.stats
    rows.append(("stats of the @cached client", f"hits={s.hits} misses={s.misses}", ""))
    rows.append(("  sets / usage / capacity", f"{s.sets} / {client.usage} / {client.capacity}", ""))
    rows.append(("slow_square computations", str(calls["n"]), ""))

    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    print(f"{'step':<{width}}  {'result':<{vwidth}}  time")
    print(f"{'-' * width}  {'-' * vwidth}  -----------")
    for step, result, took_s in rows:
        print(f"{step:<{width}}  {result:<{vwidth}}  {took_s}")
    build = "compiled speedups" if speedups_enabled() else "pure Python, not compiled"
    print()
    print("Shown: @cached memoizing a slow function, a stale value served at once while one")
    print(f"background refresh ran, and a two-tier read promoted into L1 (in-process, {build}).")
    print(
        "Read on: docs/getting-started.md, docs/decorators.md, docs/concepts/tiers.md (make docs)."
    )


if __name__ == "__main__":
    main()
