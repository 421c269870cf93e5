"""The tiered client's L1 hit, blocking and awaited: what composing costs over one tier.

``TieredInclusiveClient(InprocCacheClient, InprocCacheClient)`` holding 10,000 keys, read in
a shuffled order, all L1 hits. Measured in one run, interleaved:

* ``get-hit``: ``c.get(k)`` on the tiered client and on its L1 alone;
* ``aget-hit``: ``await c.aget(k)``, run by one coroutine over the keys (the loop's
  scheduling is not in the figure): the tiered client awaits its L1's own awaitable; the
  ``executor hop`` row is what every awaited L1 hit cost before composition kept native
  async, ``run_in_executor(None, c.get, k)`` on the same tiered client.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

from benchmarks.harness import Case, Result, TimingConfig, measure_interleaved

__all__ = ["run"]

N_KEYS = 10_000
_BENCH = "tiered"
_SEED = 20261204


def _clients() -> tuple[Any, Any]:
    from chorde.clients import from_url

    tiered = from_url([f"inproc://?size={2 * N_KEYS}", f"inproc://?size={2 * N_KEYS}"])
    for k in range(N_KEYS):
        tiered.put(k, k, 3600)
    return tiered, tiered.clients[0]  # type: ignore[attr-defined]


def _time_async(
    make: Callable[[Any], Coroutine[Any, Any, Any]], target: Any, keys: list[int], repeats: int
) -> float:
    """Best ns per awaited call of ``make(target)(k)`` over ``keys``."""
    loop = asyncio.new_event_loop()
    try:
        call = make(target)

        async def sweep() -> int:
            start = time.perf_counter_ns()
            for k in keys:
                await call(k)  # type: ignore[operator]
            return time.perf_counter_ns() - start

        return min(loop.run_until_complete(sweep()) for _ in range(repeats)) / len(keys)
    finally:
        loop.close()


def run(quick: bool) -> list[Result]:
    config = TimingConfig.for_run(quick)
    tiered, l1 = _clients()
    keys = list(range(N_KEYS))
    random.Random(_SEED).shuffle(keys)
    results = []
    timings = measure_interleaved(
        [Case("c.get(k)", tiered, keys), Case("c.get(k)", l1, keys)], config
    )
    for name, timing in zip(
        ("chorde tiered", "InprocCacheClient (L1 alone)"), timings, strict=True
    ):
        results.append(Result.from_timing(_BENCH, "get-hit", name, timing, api="c.get(k)"))
    repeats = 3 if quick else 7
    hop_keys = keys[: N_KEYS // 10]  # a thread hop per call: fewer of them

    def hop(c: Any) -> Any:
        loop_get = asyncio.get_running_loop

        async def call(k: int) -> Any:
            return await loop_get().run_in_executor(None, c.get, k)

        return call

    cases: list[tuple[str, Callable[[Any], Any], Any, list[int]]] = [
        ("chorde tiered", lambda c: c.aget, tiered, keys),
        ("InprocCacheClient (L1 alone)", lambda c: c.aget, l1, keys),
        ("executor hop (before)", hop, tiered, hop_keys),
    ]
    for name, make, target, ks in cases:
        ns = _time_async(make, target, ks, repeats)
        results.append(Result(_BENCH, "aget-hit", name, ns, api="await c.aget(k)"))
    return results


if __name__ == "__main__":
    for r in run(quick=True):
        print(f"{r.operation:10} {r.implementation:32} {r.ns_per_op:10.0f} ns")
