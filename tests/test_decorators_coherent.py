"""@cached on a coherent client, sync and async: the compute-once of the cluster
(``compute_once`` / ``acompute_once``) runs the function, the policy decides what is kept,
and an invalidation between two computations is seen by both drivers alike."""

from __future__ import annotations

import asyncio

import pytest

from chorde.clients.coherent import CoherentWrapperClient
from chorde.clients.inproc import InprocCacheClient
from chorde.decorators import cached
from chorde.mq import LocalBus


@pytest.fixture
def client():
    c = CoherentWrapperClient(InprocCacheClient(100), LocalBus())
    yield c
    c.close()


def _policy(client, calls, fn):
    return cached(
        client,
        ttl=lambda v: 0 if v == "no" else 60,
        condition=lambda v: v != "skip",
        namespace="coherent.policy",
        tags=["t"],
    )(fn)


def test_policy_through_compute_once(client):
    calls = []

    def f(x):
        calls.append(x)
        return x

    f = _policy(client, calls, f)
    assert [f("skip"), f("skip"), f("no"), f("no"), f("yes"), f("yes")] == [
        "skip", "skip", "no", "no", "yes", "yes",
    ]  # fmt: skip
    assert calls == ["skip", "skip", "no", "no", "yes"]
    assert client.getTtl(f.cache_key("yes"))[1] > 50
    f.invalidate_all()
    assert f("yes") == "yes" and calls[-1] == "yes" and len(calls) == 6


def test_policy_through_acompute_once(client):
    calls = []

    async def f(x):
        calls.append(x)
        await asyncio.sleep(0)
        return x

    f = _policy(client, calls, f)

    async def main():
        got = [await f(x) for x in ("skip", "skip", "no", "no", "yes", "yes")]
        assert got == ["skip", "skip", "no", "no", "yes", "yes"]
        assert calls == ["skip", "skip", "no", "no", "yes"]
        assert client.getTtl(f.cache_key("yes"))[1] > 50
        await f.invalidate_all()
        assert await f("yes") == "yes" and len(calls) == 6
        # Concurrent callers of one key: one computation.
        results = await asyncio.gather(*(f("many") for _ in range(20)))
        assert results == ["many"] * 20 and calls.count("many") == 1
        # A forced refresh recomputes through the same path.
        assert await f.refresh("many") == "many" and calls.count("many") == 2

    asyncio.run(main())


def test_async_errors_reach_the_caller_and_are_not_cached(client):
    calls = []

    @cached(client, ttl=60, namespace="coherent.err")
    async def f(x):
        calls.append(x)
        if len(calls) == 1:
            raise ValueError("first")
        return x

    async def main():
        with pytest.raises(ValueError, match="first"):
            await f(1)
        assert await f(1) == 1 and await f(1) == 1
        assert calls == [1, 1]

    asyncio.run(main())
