"""DNS-driven server lists, against a DNS server on loopback that the tests control."""

from __future__ import annotations

import threading

import pytest

from chorde.clients.memcached import MemcachedClient
from chorde.dns import DnsServerList, lookup, make_resolver
from chorde.errors import ConfigurationError
from tests.dnsserver import DnsServer
from tests.servers import wait_until

SECRET = "dns-test"
SRV = "_memcache._tcp.cluster.test"


@pytest.fixture
def dns_server():
    with DnsServer() as server:
        yield server


def _srv(dns_server, *servers):
    """Point SRV at ``servers`` (memcached fixtures), each via its own target name."""
    records = []
    for i, s in enumerate(servers):
        dns_server.set(f"node{i}.cluster.test", "A", [s.host])
        records.append(f"0 10 {s.port} node{i}.cluster.test.")
    dns_server.set(SRV, "SRV", records)


def test_lookup_a_and_aaaa_records(dns_server):
    dns_server.set("cache.test", "A", ["10.0.0.1", "10.0.0.2"], ttl=30)
    dns_server.set("cache.test", "AAAA", ["fd00::1"], ttl=10)
    resolver = make_resolver([dns_server.address])
    addresses, ttl = lookup("cache.test", 11211, resolver)
    assert sorted(addresses) == [("10.0.0.1", 11211), ("10.0.0.2", 11211), ("fd00::1", 11211)]
    assert ttl == 10


def test_lookup_srv_records(dns_server):
    dns_server.set("a.test", "A", ["10.0.0.1"])
    dns_server.set("b.test", "A", ["10.0.0.2"])
    dns_server.set("_mc._tcp.test", "SRV", ["0 1 5000 a.test.", "0 1 5001 b.test."], ttl=7)
    addresses, ttl = lookup("_mc._tcp.test", 11211, make_resolver([dns_server.address]))
    assert sorted(addresses) == [("10.0.0.1", 5000), ("10.0.0.2", 5001)]
    assert ttl == 0  # the A records' ttl (0) is the smallest


def test_refresh_interval_follows_ttl_within_bounds(dns_server):
    dns_server.set("cache.test", "A", ["10.0.0.1"], ttl=30)
    names = DnsServerList(
        [("cache.test", 1)], nameservers=[dns_server.address], min_interval=1, max_interval=20
    )
    assert names.resolve() == ([("10.0.0.1", 1)], 20)
    dns_server.set("cache.test", "A", ["10.0.0.1"], ttl=0)
    assert names.resolve()[1] == 1


def test_failed_lookups_keep_the_last_answer_or_the_name(dns_server):
    names = DnsServerList([("cache.test", 1)], nameservers=[dns_server.address], timeout=0.2)
    assert names.resolve()[0] == [("cache.test", 1)]  # NXDOMAIN: the name itself
    dns_server.set("cache.test", "A", ["10.0.0.1"])
    assert names.resolve()[0] == [("10.0.0.1", 1)]
    dns_server.stop()  # timeouts now
    assert names.resolve()[0] == [("10.0.0.1", 1)]


@pytest.mark.parametrize("bad", [[], "127.0.0.1", ["not an ip"]])
def test_bad_nameservers(bad):
    with pytest.raises(ConfigurationError, match="nameservers"):
        make_resolver(bad)


def test_a_records_become_ring_members(dns_server):
    dns_server.set("cache.test", "A", ["127.0.0.1", "127.0.0.2"])
    c = MemcachedClient(
        ["cache.test:11299"],
        checksum_key=SECRET,
        nameservers=[dns_server.address],
        dns_min_interval=0.05,
    )
    assert sorted(c.servers) == ["127.0.0.1:11299", "127.0.0.2:11299"]
    dns_server.set("cache.test", "A", ["127.0.0.2"])
    assert wait_until(lambda: c.servers == ["127.0.0.2:11299"])
    dns_server.set("cache.test", "A", ["127.0.0.2", "127.0.0.3"])
    assert wait_until(lambda: sorted(c.servers) == ["127.0.0.2:11299", "127.0.0.3:11299"])
    c.close()


def test_srv_records_add_and_remove_real_servers(dns_server, memcached_factory):
    a, b = memcached_factory(2)
    _srv(dns_server, a, b)
    c = MemcachedClient(
        [SRV], checksum_key=SECRET, nameservers=[dns_server.address], dns_min_interval=0.05
    )
    assert sorted(c.servers) == sorted([a.address, b.address])
    c.putMulti({i: i for i in range(100)}, 300)
    assert int(a.stats()["curr_items"]) > 10 and int(b.stats()["curr_items"]) > 10

    # Remove b: every key now goes to a.
    _srv(dns_server, a)
    assert wait_until(lambda: c.servers == [a.address])
    before = int(b.stats()["cmd_set"])
    c.putMulti({("after", i): i for i in range(100)}, 300)
    assert int(b.stats()["cmd_set"]) == before
    assert dict(c.getMulti([("after", i) for i in range(100)])) == {
        ("after", i): i for i in range(100)
    }

    # Add it back: it gets traffic again.
    _srv(dns_server, a, b)
    assert wait_until(lambda: len(c.servers) == 2)
    c.putMulti({("back", i): i for i in range(100)}, 300)
    assert int(b.stats()["cmd_set"]) > before
    c.close()


def test_server_list_changes_do_not_disturb_in_flight_calls(dns_server, memcached_factory):
    a, b, c3 = memcached_factory(3)
    _srv(dns_server, a, b)
    c = MemcachedClient(
        [SRV], checksum_key=SECRET, nameservers=[dns_server.address], dns_min_interval=0.01
    )
    stop = threading.Event()
    failures: list[BaseException] = []

    def hammer(tid):
        i = 0
        try:
            while not stop.is_set() and i < 100_000:
                key = (tid, i % 50)
                c.put(key, (key, i), 300)
                got = c.get(key, None)
                assert got is None or got[0] == key
                i += 1
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=hammer, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for layout in [(a,), (a, b, c3), (b, c3), (a, b)] * 3:
        _srv(dns_server, *layout)
        assert wait_until(lambda layout=layout: len(c.servers) == len(layout))
    stop.set()
    for t in threads:
        t.join(30)
    assert not failures
    assert c.stats.errors == 0
    c.close()


def test_unresolvable_name_is_kept_and_degrades_to_misses(dns_server):
    # NXDOMAIN in our DNS: the name is kept as is, for the system resolver to try when
    # connecting; here it fails there too, which is a miss, not an exception.
    c = MemcachedClient(
        ["nowhere.invalid:11211"], checksum_key=SECRET, nameservers=[dns_server.address]
    )
    assert c.servers == ["nowhere.invalid:11211"]
    c.put("k", 1, 300)
    assert c.get("k", None) is None
    assert c.stats.errors >= 1
    # Once the name appears in DNS, the refresh picks it up.
    dns_server.set("nowhere.invalid", "A", ["127.0.0.1"])
    c.refresh()
    assert c.servers == ["127.0.0.1:11211"]
    c.close()


def test_dns_can_be_turned_off(memcached):
    c = MemcachedClient([f"ip6-nonexistent.test:{memcached.port}"], checksum_key=SECRET, dns=False)
    assert c.servers == [f"ip6-nonexistent.test:{memcached.port}"]
    c.close()
