"""ChordeCache by URL: LOCATION is a client URL or a list of them (a tiered client)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

import tests.toy
from chorde.clients.capped import CappedTtlClient
from chorde.clients.memcached import MemcachedClient
from chorde.clients.tiered import TieredInclusiveClient
from chorde_django import ChordeCache


def test_a_scheme_from_outside_chorde() -> None:
    name = f"django-{uuid.uuid4().hex[:8]}"
    cache = ChordeCache(f"toy://{name}?size=100", {})
    cache.set("k", {"v": 1})
    assert cache.get("k") == {"v": 1}
    assert cache.add("n", 1)
    assert cache.incr("n") == 2
    assert len(tests.toy.stores[name]) == 2


def test_memcached_and_tiered_by_url(memcached: Any) -> None:
    url = f"memcached://{memcached.address}?timeout=1"
    one = ChordeCache(url, {"OPTIONS": {"NAMESPACE": "urls"}})
    assert isinstance(one.client, MemcachedClient)
    one.set("k", "v")
    tiered = ChordeCache(["inproc://?size=100&max_ttl=5", url], {"OPTIONS": {"NAMESPACE": "urls"}})
    assert isinstance(tiered.client, TieredInclusiveClient)
    assert isinstance(tiered.client.clients[0], CappedTtlClient)
    assert tiered.get("k") == "v"  # the checksum key is derived from SECRET_KEY in both


@pytest.mark.parametrize(
    ("location", "options", "message"),
    [
        ("mongodb://cache:27017", {}, "unknown scheme 'mongodb'"),
        (["inproc://", "memcachd://x:1"], {}, "did you mean 'memcached'"),
        ("inproc://", {"CLIENT": "memcached"}, "does not go with a URL LOCATION"),
        ("inproc://?sise=5", {}, "no option 'sise'"),
    ],
)
def test_a_wrong_url_is_improperly_configured(
    location: Any, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        ChordeCache(location, {"OPTIONS": options})
