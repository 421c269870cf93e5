"""ClientWrapper: what every wrapper client forwards to the client it wraps."""

from __future__ import annotations

import pytest

from chorde import ConfigurationError
from chorde.clients.asyncache import AsyncWriteCacheClient
from chorde.clients.base import ClientWrapper
from chorde.clients.capped import CappedTtlClient
from chorde.clients.inproc import InprocCacheClient
from chorde.clients.namespace import NamespaceWrapper


class _Blocking(InprocCacheClient):
    """A real in-process client that says its methods block."""

    blocking = True


class _Recording(InprocCacheClient):
    """A real in-process client recording the wait/close calls it gets."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.calls: list[tuple] = []

    def wait(self, key, timeout=None):
        self.calls.append(("wait", key, timeout))

    def close(self):
        self.calls.append(("close",))


def test_forwards_bookkeeping_to_the_wrapped_client():
    inner = InprocCacheClient(10)
    capped = CappedTtlClient(inner, 5)
    capped.put("k", 1, 100)
    assert (capped.capacity, capped.usage) == (10, 1)
    assert capped.stats == inner.stats
    assert 0 < inner.getTtl("k")[1] <= 5
    capped.expire("k")
    capped.purge(0)
    assert inner.usage == 0


def test_copies_blocking_and_is_async():
    assert CappedTtlClient(_Blocking(10), 5).blocking is True
    assert CappedTtlClient(InprocCacheClient(10), 5).blocking is False
    writer = AsyncWriteCacheClient(InprocCacheClient(10))
    try:
        # A write-behind wrapper stays async whatever it wraps; its wrappers inherit that.
        assert writer.is_async is True
        assert NamespaceWrapper("n", writer).is_async is True
        assert CappedTtlClient(InprocCacheClient(10), 5).is_async is False
    finally:
        writer.close()


def test_wait_and_close_reach_the_wrapped_client():
    inner = _Recording(10)
    capped = CappedTtlClient(inner, 50)
    capped.wait("k", 3.0)
    capped.close()
    assert inner.calls == [("wait", "k", 3.0), ("close",)]


def test_rejects_a_non_client():
    with pytest.raises(ConfigurationError, match="client must be a cache client"):
        CappedTtlClient(object(), 5)  # type: ignore[arg-type]


def test_reads_and_writes_stay_abstract():
    with pytest.raises(TypeError, match="abstract"):
        ClientWrapper(InprocCacheClient(10))  # type: ignore[abstract]
