"""MemcachedClient under faults, for what holds whatever the timing: the writes that could not
reach a server are undone there before it is read again, a socket left from before a restart
or one lost connect does not mark a server down, calls share connections as documented.

The bounds on time (how long a call may block, how soon a server is used again) are the
chaos suite's (tests/chaos/test_memcached_chaos.py). Servers are made unreachable with the
chaos proxy, so that they keep their data, as a network fault would leave them.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import threading
import time

import pytest

from chorde.clients.memcached import MemcachedClient
from chorde.clients.memcached.blocking import drain, exchange
from chorde.clients.memcached.protocol import Line, Values
from chorde.errors import ConfigurationError
from tests.chaos.proxy import ChaosProxy
from tests.clients.conftest import SECRET

TTL = 300
OLD = "old"


@pytest.fixture
def proxy(memcached):
    """A chaos proxy in front of the ``memcached`` fixture's server."""
    with ChaosProxy(memcached.port) as p:
        yield p


def _client(address: str, **options) -> MemcachedClient:
    options = {"timeout": 0.5, "connect_timeout": 0.3, "retry_interval": 0.05, **options}
    return MemcachedClient([address], checksum_key=SECRET, **options)


def _server(client: MemcachedClient):
    [server] = client._servers.ring.nodes
    return server


def _until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def _cut(proxy: ChaosProxy) -> None:
    """The server becomes unreachable: new connections refused, open ones reset."""
    proxy.refuse()
    proxy.reset()


def _back_and_never_old(client: MemcachedClient, keys, old=OLD) -> dict:
    """Wait (bounded) until the client uses its server again, reading ``keys`` all along:
    none may ever read ``old``. Returns what they read at the end."""
    server = _server(client)

    def read_all():
        got = {k: client.get(k, None) for k in keys}
        assert old not in got.values(), got
        return got

    assert _until(lambda: (read_all(), not server.down)[1]), "the server was not used again"
    return read_all()


def test_writes_that_could_not_reach_a_server_are_undone_before_it_is_read(proxy):
    c = _client(proxy.address)
    keys = ["del", "adel", "put", "aput", "multi1", "multi2", "expire", "renew", "kept"]
    c.putMulti(dict.fromkeys(keys, OLD), TTL)
    _cut(proxy)
    c.delete("del")  # fails: the server is marked down
    c.put("put", "new", TTL)  # not even sent: remembered
    c.putMulti({"multi1": "new", "multi2": "new"}, TTL)
    c.expire("expire")
    c.renew("renew", 10)
    asyncio.run(c.adelete("adel"))
    asyncio.run(c.aput("aput", "new", TTL))
    assert _server(c).down
    assert all(c.get(k, None) is None for k in keys)  # a down server's keys are misses
    proxy.heal()
    got = _back_and_never_old(c, [k for k in keys if k != "kept"])
    # Deleted there, not written again: no value older than the lost writes, and the
    # value another client may have written since is not overwritten.
    assert set(got.values()) == {None}
    assert c.get("kept") == OLD  # only what could not be written is undone
    c.put("put", "newer", TTL)
    assert c.get("put") == "newer"
    c.close()


def test_a_failed_write_is_undone_even_for_other_clients(proxy, memcached):
    writer = _client(proxy.address)
    reader = _client(memcached.address)  # never cut off
    writer.put("k", OLD, TTL)
    _cut(proxy)
    writer.delete("k")
    assert reader.get("k") == OLD  # (the server never got the delete)
    proxy.heal()
    _back_and_never_old(writer, ["k"])
    assert reader.get("k", None) is None  # undone on the server itself
    writer.close()
    reader.close()


def test_past_write_log_size_the_namespace_generation_is_renewed(proxy, memcached):
    c = _client(proxy.address, write_log_size=2, namespace="app:")
    other = _client(memcached.address, namespace="other:")
    c.putMulti({"a": OLD, "b": OLD, "c": OLD, "untouched": OLD}, TTL)
    other.put("a", OLD, TTL)
    _cut(proxy)
    for key in ("a", "b", "c"):  # three lost writes: more than the log keeps
        c.delete(key)
    proxy.heal()
    got = _back_and_never_old(c, ["a", "b", "c", "untouched"])
    assert got == dict.fromkeys(["a", "b", "c", "untouched"])  # everything older is gone
    assert other.get("a") == OLD  # other namespaces are left alone
    c.put("a", "new", TTL)
    assert c.get("a") == "new"
    c.close()
    other.close()


def test_clear_and_purge_that_could_not_reach_a_server_are_made_when_it_is_back(proxy):
    c = _client(proxy.address)
    c.put("cleared", OLD, TTL)
    c.put("stale", "stale", 0.05)
    time.sleep(0.1)
    assert c.getTtl("stale")[0] == "stale"  # stale, still held
    _cut(proxy)
    c.clear()
    c.purge()
    proxy.heal()
    _back_and_never_old(c, ["cleared"])
    assert c.getTtl("stale", None)[0] is None
    c.close()


def test_a_socket_from_before_a_restart_does_not_mark_the_server_down(memcached):
    c = _client(memcached.address)
    c.put("k", 1, TTL)

    async def fill_pool():
        await asyncio.gather(*(c.aget("k") for _ in range(20)))

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(fill_pool())  # several idle pooled connections
        memcached.restart()  # same port, empty: every open socket is stale
        c.put("k", 2, TTL)
        assert c.get("k") == 2

        async def again():
            await c.aput("a", 3, TTL)
            return await asyncio.gather(*(c.aget("a") for _ in range(20)))

        assert loop.run_until_complete(again()) == [3] * 20
    finally:
        loop.close()
    assert not _server(c).down
    assert c.stats.errors == 0
    c.close()


@pytest.mark.parametrize("retries", [1, 0])
def test_one_lost_connect_is_retried_before_the_server_is_marked_down(proxy, retries):
    c = _client(proxy.address, connect_retries=retries)
    proxy.drop(1)  # the next connection is reset as soon as it is accepted
    c.put("k", 1, TTL)
    if retries:
        assert c.get("k") == 1
        assert not _server(c).down and c.stats.errors == 0
    else:
        assert _server(c).down and c.stats.errors == 1
    c.close()


def test_async_calls_share_at_most_pool_size_connections(memcached):
    c = _client(memcached.address, pool_size=3)
    c.putMulti({i: i for i in range(50)}, TTL)

    async def scenario():
        got = await asyncio.gather(*(c.aget(i) for i in range(50)))
        pool = _server(c).aconn(asyncio.get_running_loop())
        return got, pool.connections

    got, connections = asyncio.run(scenario())
    assert got == list(range(50))
    assert 1 <= connections <= 3
    c.close()


def test_an_exchange_with_several_servers_returns_each_ones_answer(memcached_factory):
    a, b = memcached_factory(2)
    c = MemcachedClient([a.address, b.address], checksum_key=SECRET)
    sa, sb = (c._servers[(s.host, s.port)] for s in (a, b))
    set_x = b"set x 0 0 1\r\n1\r\n"
    got = exchange([(sa, set_x, Line()), (sb, set_x, Line())], time.monotonic() + 5)
    assert got == [b"STORED", b"STORED"]
    set_y = b"set y 0 0 1\r\n2\r\n"
    ios = [(sa, set_y, Line()), (sb, b"get x\r\n", Values()), (sa, b"get x y\r\n", Values())]
    got = exchange(ios, time.monotonic() + 5)  # a server's second request after its first
    assert got == [b"STORED", {b"x": b"1"}, {b"x": b"1", b"y": b"2"}]
    b.stop()
    got = exchange(
        [(sa, b"get x\r\n", Values()), (sb, b"get x\r\n", Values())], time.monotonic() + 5
    )
    assert got[0] == {b"x": b"1"}
    assert isinstance(got[1], OSError)  # refused (after one retry), as a value
    c.close()


def test_a_multi_server_batch_with_one_hung_server_still_answers_for_the_others(
    memcached_factory,
):
    servers = memcached_factory(2)
    c = MemcachedClient(
        [s.address for s in servers], checksum_key=SECRET, timeout=0.5, retry_interval=0.05
    )
    keys = list(range(60))
    c.putMulti({k: k for k in keys}, TTL)
    hung = servers[0]
    on_hung = {k for k in keys if c._locate(k)[2].name == hung.address}
    assert 0 < len(on_hung) < len(keys)
    hung.suspend()
    try:
        got = dict(c.getMulti(keys, None))
        c.putMulti({k: -k for k in keys}, TTL)
        c.clear()
    finally:
        hung.resume()
    assert got == {k: None if k in on_hung else k for k in keys}
    # The healthy server took its share of the multi-set and of the clear.
    assert all(c.get(k, None) is None for k in keys if k not in on_hung)
    c.close()


@pytest.mark.parametrize(
    "option, value",
    [
        ("connect_retries", -1),
        ("connect_retries", 1.5),
        ("write_log_size", "10"),
        ("pool_size", 0),
        ("retry_interval", -1),
    ],
)
def test_fault_options_are_checked_and_named(memcached, option, value):
    with pytest.raises((TypeError, ValueError, ConfigurationError), match=option):
        _client(memcached.address, **{option: value})


def test_a_down_server_is_reported_once_and_its_return_logged(proxy, caplog):
    caplog.set_level(logging.INFO, "chorde.clients.memcached")
    c = _client(proxy.address)
    _cut(proxy)
    for _ in range(5):
        c.put("k", 1, TTL)
        c.get("k", None)
    proxy.heal()
    assert _until(lambda: not _server(c).down)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("treating it as down" in m for m in messages) == 1
    assert any("is back" in m for m in messages)
    c.close()


# ---- orphaned writes ------------------------------------------------------------------------


def test_drain_waits_for_the_replies_of_orphaned_writes():
    answered, server_side = socket.socketpair()
    silent, silent_peer = socket.socketpair()
    closed, closed_peer = socket.socketpair()
    late = threading.Timer(0.2, lambda: server_side.sendall(b"STORED\r\n"))
    late.start()
    closed_peer.close()  # the process that had it is gone: nothing more can come of it
    try:
        assert drain([(answered, Line()), (closed, Line())], time.monotonic() + 10)
        assert answered.fileno() == -1 and closed.fileno() == -1  # done with: closed
        # One that is never answered: not settled by the deadline (closed all the same).
        assert not drain([(silent, Line())], time.monotonic() + 0.1)
        assert silent.fileno() == -1
    finally:
        late.join()
        for s in (server_side, silent_peer):
            s.close()


def test_too_many_orphans_renew_the_generation_instead(memcached):
    c = _client(memcached.address)
    server = _server(c)
    pairs = [socket.socketpair() for _ in range(300)]
    for mine, _ in pairs:
        server.orphan(mine, Line())
    assert len(server._orphans) == 256  # the oldest closed...
    assert server._lost.clear  # ...and the generation will be renewed: no late write counts
    assert pairs[0][0].fileno() == -1
    c.close()
    for mine, theirs in pairs:
        mine.close()
        theirs.close()


def test_a_client_dropped_without_close_leaves_no_thread_behind(unused_port):
    c = _client(f"127.0.0.1:{unused_port}")
    c.put("k", 1, TTL)  # refused: down, and a thread probes it
    prober = _server(c)._prober
    assert prober is not None and prober.is_alive()
    del c
    gc.collect()
    prober.join(10)
    assert not prober.is_alive()
