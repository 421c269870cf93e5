"""ElastiCacheClient: discovery from a loopback configuration endpoint, real memcached nodes."""

from __future__ import annotations

import time

import pytest

from chorde.clients.elasticache import (
    DiscoveryError,
    ElastiCacheClient,
    fetch_cluster_config,
    parse_cluster_config,
)
from tests.servers import ConfigEndpoint, wait_until

SECRET = "elasticache-test"


@pytest.fixture
def endpoint():
    e = ConfigEndpoint()
    yield e
    e.close()


def test_parse_cluster_config():
    body = b"12\nmy.0001.cache|10.0.0.1|11211 my.0002.cache||11212\n"
    assert parse_cluster_config(body) == (12, [("10.0.0.1", 11211), ("my.0002.cache", 11212)])


@pytest.mark.parametrize(
    "body", [b"", b"x\nh|1.2.3.4|1\n", b"1\nh|1.2.3.4\n", b"1\n\n", b"1\nh|1.2.3.4|port\n"]
)
def test_bad_cluster_config(body):
    with pytest.raises(DiscoveryError):
        parse_cluster_config(body)


@pytest.mark.parametrize("legacy", [False, True], ids=["config-get", "legacy-get"])
def test_fetch_cluster_config(memcached_factory, legacy):
    a, b = memcached_factory(2)
    e = ConfigEndpoint(legacy=legacy)
    try:
        e.publish([a, b], version=7)
        host, port = e.address.split(":")
        assert fetch_cluster_config((host, int(port)), 2) == (
            7,
            [(a.host, a.port), (b.host, b.port)],
        )
    finally:
        e.close()


def test_a_real_memcached_is_not_an_endpoint(memcached):
    with pytest.raises(DiscoveryError):
        fetch_cluster_config((memcached.host, memcached.port), 2)


def test_discovery_follows_the_config_version(endpoint, memcached_factory):
    a, b, c3 = memcached_factory(3)
    endpoint.publish([a, b])
    c = ElastiCacheClient(endpoint.address, checksum_key=SECRET, poll_interval=0.05)
    assert sorted(c.servers) == sorted([a.address, b.address])
    c.putMulti({i: i for i in range(200)}, 300)
    assert int(a.stats()["curr_items"]) > 20 and int(b.stats()["curr_items"]) > 20
    assert int(c3.stats()["curr_items"]) == 0

    # A new node: about a third of the keys move to it, the rest still hit.
    endpoint.publish([a, b, c3])
    assert wait_until(lambda: len(c.servers) == 3)
    hits = sum(v is not None for _, v in c.getMulti(range(200), None))
    assert 200 * 0.4 < hits < 200 * 0.9, hits
    c.putMulti({("new", i): i for i in range(200)}, 300)
    assert int(c3.stats()["curr_items"]) > 20

    # Same version, different nodes: ignored (the version says what changed).
    endpoint.publish([a], version=endpoint.version)
    time.sleep(0.3)
    assert len(c.servers) == 3

    endpoint.publish([c3])
    assert wait_until(lambda: c.servers == [c3.address])
    assert c.config_version == endpoint.version
    c.close()


def test_endpoint_down_at_start_then_up(memcached_factory, unused_port):
    [a] = memcached_factory(1)
    address = f"127.0.0.1:{unused_port}"
    c = ElastiCacheClient(
        address,
        checksum_key=SECRET,
        poll_interval=0.05,
        connect_timeout=0.2,
        timeout=0.2,
        retry_interval=0.05,
    )
    assert c.servers == [address]  # the endpoint itself, until discovery works
    assert c.config_version is None
    c.put("k", 1, 300)  # dropped: nothing listens there
    assert c.get("k", None) is None
    e = ConfigEndpoint(port=unused_port)
    try:
        e.publish([a])
        assert wait_until(lambda: c.servers == [a.address])
        c.put("k", 1, 300)
        assert c.get("k") == 1
    finally:
        e.close()
        c.close()


def test_failed_polls_keep_the_known_nodes(endpoint, memcached_factory):
    a, b = memcached_factory(2)
    endpoint.publish([a, b])
    c = ElastiCacheClient(endpoint.address, checksum_key=SECRET, poll_interval=0.05)
    endpoint.close()
    time.sleep(0.3)  # several failed polls
    assert sorted(c.servers) == sorted([a.address, b.address])
    c.put("k", 1, 300)
    assert c.get("k") == 1
    c.close()


@pytest.mark.parametrize("bad", [0, -1, "60"])
def test_bad_poll_interval(endpoint, bad):
    with pytest.raises((TypeError, ValueError), match="poll_interval"):
        ElastiCacheClient(endpoint.address, checksum_key=SECRET, poll_interval=bad)


def test_checksum_key_required(endpoint):
    with pytest.raises(ValueError, match="checksum_key"):
        ElastiCacheClient(endpoint.address)
