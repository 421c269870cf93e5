"""NamespaceWrapper: isolation, O(1) clear, revisions shared through the client."""

from __future__ import annotations

import pytest

from chorde import ConfigurationError
from chorde.clients.base import NamespaceWrapper as FromBase
from chorde.clients.inproc import InprocCacheClient
from chorde.clients.namespace import NamespaceWrapper


class CountingClient(InprocCacheClient):
    """A real in-process client counting the calls made on it."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.calls: list[str] = []

    def put(self, key, value, ttl):
        self.calls.append("put")
        super().put(key, value, ttl)

    def delete(self, key):
        self.calls.append("delete")
        super().delete(key)

    def clear(self):
        self.calls.append("clear")
        super().clear()


def test_importable_from_base():
    assert FromBase is NamespaceWrapper


def test_namespaces_are_isolated():
    shared = InprocCacheClient(100)
    a = NamespaceWrapper("a", shared)
    b = NamespaceWrapper("b", shared)
    a.put("k", 1, 100)
    b.put("k", 2, 100)
    assert (a.get("k"), b.get("k")) == (1, 2)
    a.clear()
    assert a.get("k", None) is None
    assert b.get("k") == 2


def test_clear_is_constant_time():
    shared = CountingClient(10_000)
    ns = NamespaceWrapper("ns", shared)
    for i in range(1000):
        ns.put(i, i, 100)
    shared.calls.clear()
    ns.clear()
    assert shared.calls == ["put"]  # one revision write, no per-key work
    assert all(ns.get(i, None) is None for i in range(1000))


def test_revision_shared_between_wrappers():
    shared = InprocCacheClient(100)
    a = NamespaceWrapper("ns", shared, revision_refresh=0)
    b = NamespaceWrapper("ns", shared, revision_refresh=0)
    a.put("k", 1, 100)
    assert b.get("k") == 1
    b.clear()
    assert a.get("k", None) is None


def test_lost_revision_does_not_resurrect_entries():
    shared = InprocCacheClient(100)
    ns = NamespaceWrapper("ns", shared, revision_refresh=0)
    ns.put("k", 1, 100)
    shared.delete(("ns", "\x00revision"))  # as if the revision entry were evicted
    assert ns.get("k", None) is None


def test_bad_arguments():
    with pytest.raises(ConfigurationError, match="client"):
        NamespaceWrapper("ns", object())
    with pytest.raises(TypeError, match="namespace"):
        NamespaceWrapper(["ns"], InprocCacheClient(10))
    with pytest.raises(ValueError, match="revision_refresh"):
        NamespaceWrapper("ns", InprocCacheClient(10), revision_refresh=-1)
