"""The revision view (chorde.tags): a guarded @cached hit on a shared client reads the entry
alone while the view of the records is trusted, sees this process's invalidations at once
and another process's within ``revision_check`` seconds."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest

from chorde import tags
from chorde.clients.inproc import InprocCacheClient
from chorde.decorators import cached
from chorde.tags import (
    DEFAULT_REVISION_CHECK,
    function_key,
    invalidate_tags,
    new_revision,
    revision_check,
    set_revision_check,
    tag_key,
)
from tests.servers import REPO

SUBPROCESS_TIMEOUT = 60


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = _Clock()
    monkeypatch.setattr(tags, "_clock", fake)
    return fake


@pytest.fixture
def shared(memcached):
    from chorde.clients.memcached import MemcachedClient

    made = []

    def make():
        client = MemcachedClient([memcached.address], checksum_key="view")
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def _count_reads(client):
    """Count the client's read calls by name (the wrapper reads through the instance)."""
    counts = {"getTtl": 0, "getTtlMulti": 0}
    for name in counts:
        method = getattr(client, name)

        def counted(*args, _name=name, _method=method):
            counts[_name] += 1
            return _method(*args)

        setattr(client, name, counted)
    return counts


def test_a_hit_the_view_vouches_for_is_one_single_key_read(shared, clock):
    client = shared()
    calls = []

    @cached(client, ttl=300, namespace="view.one", tags=lambda x: [f"x:{x}"])
    def f(x):
        calls.append(x)
        return [x, len(calls)]

    first = f(1)  # a miss: the entry and its records read together, then stored
    counts = _count_reads(client)
    assert [f(1) for _ in range(5)] == [first] * 5
    assert counts == {"getTtl": 5, "getTtlMulti": 0}
    clock.now += DEFAULT_REVISION_CHECK + 0.5  # the view is too old to vouch: read again
    assert f(1) == first
    assert counts == {"getTtl": 5, "getTtlMulti": 1}
    assert f(1) == first
    assert counts == {"getTtl": 6, "getTtlMulti": 1}


def test_another_process_invalidation_is_seen_within_the_bound(shared, clock):
    here, there = shared(), shared()
    calls = []

    @cached(here, ttl=300, namespace="view.bound")
    def f(x):
        calls.append(x)
        return len(calls)

    assert f(1) == f(1) == 1
    # Another process writes a new revision: this process learns of it only by reading.
    there.put(function_key("view.bound"), new_revision(), math.inf)
    clock.now += DEFAULT_REVISION_CHECK / 2
    assert f(1) == 1  # within the bound: the view still vouches for the old record
    clock.now += DEFAULT_REVISION_CHECK / 2 + 0.01
    assert f(1) == 2  # past it: the records are read again and the entry is stale
    assert f(1) == 2


def test_revision_check_zero_reads_the_records_with_every_hit(shared, clock):
    here, there = shared(), shared()
    set_revision_check(here, 0)
    assert revision_check(here) == 0
    calls = []

    @cached(here, ttl=300, namespace="view.zero", tags=["t"])
    def f(x):
        calls.append(x)
        return len(calls)

    assert f(1) == f(1) == 1
    there.put(tag_key("t"), new_revision(), math.inf)
    assert f(1) == 2


def test_this_process_invalidations_are_seen_at_once_through_any_client(shared, clock):
    one, two = shared(), shared()
    calls = []

    def make(client):
        @cached(client, ttl=300, namespace="view.local", tags=["t"])
        def f(x):
            calls.append(x)
            return len(calls)

        return f

    f1, f2 = make(one), make(two)
    assert f1(1) == f2(1) == 1
    invalidate_tags(one, "t")  # through the other client object
    assert f2(1) == 2
    f1.invalidate_all()
    assert f2(1) == 3 and f1(1) == 3


def test_a_read_that_began_before_a_write_is_not_remembered(clock):
    client = InprocCacheClient(100)
    set_revision_check(client, 10)
    view = tags.view(client)
    began = tags.generation()
    invalidate_tags(client, "t")  # written while the read was under way
    view.note([tag_key("t")], [12345], began)
    assert view.current([tag_key("t")]) is None
    began = tags.generation()
    view.note([tag_key("t")], [12345], began)
    assert view.current([tag_key("t")]) == (12345,)
    clock.now += 10
    assert view.current([tag_key("t")]) is None


def test_default_bounds_and_bad_settings(memcached):
    from chorde.clients.memcached import MemcachedClient

    private = InprocCacheClient(10)
    assert revision_check(private) == 0
    remote = MemcachedClient([memcached.address], checksum_key="view")
    try:
        assert revision_check(remote) == DEFAULT_REVISION_CHECK
    finally:
        remote.close()
    for bad in (-1, "1", None, True, math.nan):
        with pytest.raises(ValueError, match="revision_check must be a number"):
            set_revision_check(private, bad)


def test_coherent_clients_read_their_records_with_every_hit(memcached):
    from chorde.clients.coherent import CoherentWrapperClient
    from chorde.clients.memcached import MemcachedClient
    from chorde.clients.tiered import TieredInclusiveClient
    from chorde.mq import LocalBus

    client = CoherentWrapperClient(
        TieredInclusiveClient(
            InprocCacheClient(100), MemcachedClient([memcached.address], checksum_key="view")
        ),
        LocalBus(),
    )
    try:
        assert revision_check(client) == 0
    finally:
        client.close()


def test_a_real_other_process_invalidation_is_seen_within_the_bound(shared, monkeypatch):
    """Another interpreter drops the function's results; with a view trusted for 0 s here,
    the next call recomputes (the bound is what decides, not who wrote)."""
    client = shared()
    set_revision_check(client, 0)
    calls = []

    @cached(client, ttl=300, namespace="view.process")
    def f(x):
        calls.append(x)
        return len(calls)

    assert f(1) == f(1) == 1
    address = client.servers[0]
    script = textwrap.dedent(
        f"""
        from chorde.clients.memcached import MemcachedClient
        from chorde.decorators import cached

        client = MemcachedClient([{address!r}], checksum_key="view")
        cached(client, ttl=300, namespace="view.process")(lambda x: x).invalidate_all()
        client.close()
        """
    )
    subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True, timeout=SUBPROCESS_TIMEOUT)
    assert f(1) == 2
