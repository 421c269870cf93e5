"""The typing protocols describe the objects the decorators really return.

mypy checks code against ``chorde.decorators.CachedFunction`` and its kin (see
check_types.py, checked by ``make typecheck``); these tests check that every member those
protocols declare exists on the runtime objects, for chorde's ``cached`` and Flask's
``memoize``, and that the typing test imports without running anything.
"""

from __future__ import annotations

import importlib
import typing
from typing import Any

import pytest

from chorde import decorators
from chorde.clients.inproc import InprocCacheClient


def _members(protocol: type) -> set[str]:
    """The names a protocol declares (its methods, properties and annotated attributes)."""
    names: set[str] = set()
    for klass in protocol.__mro__:
        if klass in (object, typing.Protocol, typing.Generic):
            continue
        names.update(getattr(klass, "__annotations__", {}))
        names.update(
            n for n in vars(klass) if not n.startswith("_") or n in ("__call__", "__get__")
        )
    return names - {"__annotations__"}


def _missing(obj: Any, protocol: type) -> list[str]:
    return sorted(name for name in _members(protocol) if not hasattr(obj, name))


def test_members_are_found():
    members = _members(decorators.CachedFunction)
    assert {"__call__", "peek", "future", "bg", "put", "client", "namespace"} <= members
    assert "cache_key" in members


def _sync_and_async(cached: Any) -> tuple[Any, Any]:
    def plain(x: int) -> int:
        return x

    async def coro(x: int) -> int:
        return x

    return cached(plain), cached(coro)


@pytest.fixture
def chorde_cached() -> Any:
    return decorators.cached(InprocCacheClient(100), ttl=60)


def test_cached_functions_have_every_declared_member(chorde_cached: Any):
    fn, afn = _sync_and_async(chorde_cached)
    assert _missing(fn, decorators.CachedFunction) == []
    assert _missing(fn.bg(), decorators.BackgroundCachedFunction) == []
    assert _missing(fn.future(), decorators.FutureCachedFunction) == []
    assert _missing(afn, decorators.AsyncCachedFunction) == []
    assert _missing(afn.bg(), decorators.BackgroundAsyncCachedFunction) == []
    assert _missing(afn.future(), decorators.FutureAsyncCachedFunction) == []


def test_bound_cached_methods_have_every_declared_member(chorde_cached: Any):
    class Repo:
        @chorde_cached
        def load(self, x: int) -> int:
            return x

        @chorde_cached
        async def aload(self, x: int) -> int:
            return x

    repo = Repo()
    assert _missing(repo.load, decorators.BoundCachedFunction) == []
    assert _missing(repo.aload, decorators.BoundAsyncCachedFunction) == []
    assert _missing(Repo.load, decorators.CachedFunction) == []


def test_the_protocols_see_a_missing_member(chorde_cached: Any):
    fn, _ = _sync_and_async(chorde_cached)
    del fn.peek
    assert _missing(fn, decorators.CachedFunction) == ["peek"]


def test_flask_memoized_functions_have_every_declared_member():
    flask = pytest.importorskip("flask")
    from chorde_flask import Chorde

    app = flask.Flask(__name__)
    ext = Chorde(app)
    fn, afn = _sync_and_async(ext.memoize(ttl=60))
    with app.app_context():
        assert _missing(fn, decorators.CachedFunction) == []
        assert _missing(fn.bg(), decorators.BackgroundCachedFunction) == []
        assert _missing(fn.future(), decorators.FutureCachedFunction) == []
        assert _missing(fn.future().bg(), decorators.BackgroundCachedFunction) == []
        assert _missing(afn, decorators.AsyncCachedFunction) == []
        assert _missing(afn.future(), decorators.FutureAsyncCachedFunction) == []
        assert fn(3) == 3
        assert fn.peek(3) == 3
        assert fn.cache_key(3) == fn.for_app().cache_key(3)
        assert fn.namespace == fn.for_app().namespace
        assert fn.future().bg()(3) == 3
        assert fn.bg().client is ext.client


def test_the_typing_test_imports_without_running_anything():
    module = importlib.import_module("tests.typing.check_types")
    assert callable(module.check_cached_function)
