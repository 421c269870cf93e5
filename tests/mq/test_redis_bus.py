"""RedisBus in one process against real redis-server processes: delivery, signatures, what a
restart or a freeze does to ``synced`` and gaps, the queue bound, Sentinel and Cluster, and
coherent clients over tiered(inproc, Redis) kept coherent through it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chorde.clients.coherent import CoherentWrapperClient
from chorde.clients.inproc import InprocCacheClient
from chorde.clients.redis import RedisClient
from chorde.clients.tiered import TieredInclusiveClient
from chorde.errors import ConfigurationError
from chorde.mq import Message, MessageType, RedisBus
from chorde.mq.frames import Frames
from tests.redis_servers import RedisServer, SentinelGroup, redis_executable, shared_cluster
from tests.redis_servers import start_redis as _start_redis
from tests.servers import wait_until

INV = MessageType.INVALIDATE
SECRET = "bus-secret"
VALUES = "value-secret"


@pytest.fixture
def server(request: pytest.FixtureRequest) -> RedisServer:
    return _start_redis(request)


@pytest.fixture
def buses() -> Iterator[Callable[..., RedisBus]]:
    """``buses(where, **options)``: a RedisBus (fast heartbeats), closed at teardown."""
    made: list[RedisBus] = []

    def make(where: Any, secret: Any = SECRET, **options: Any) -> RedisBus:
        options = {"heartbeat_interval": 0.1, "heartbeat_timeout": 1.0, **options}
        bus = RedisBus(where, secret, **options)
        made.append(bus)
        return bus

    try:
        yield make
    finally:
        for bus in made:
            bus.close()


class Recorder:
    """What a bus hands a subscriber of channel ``ch``, and its events."""

    def __init__(self, bus: RedisBus, channel: str = "ch") -> None:
        self.got: list[Message] = []
        self.gapped: list[str] = []
        self.events: list[str] = []
        self.sub = bus.subscribe(channel, self.got.append, on_gap=self.gapped.append)
        bus.add_listener(lambda event, peer: self.events.append(event))

    def items(self) -> list[bytes]:
        return [item for msg in self.got for item in msg.items]

    def states(self) -> list[str]:
        """The connection events only (not the peers')."""
        kept = ("connected", "disconnected", "synced", "unsynced")
        return [e for e in self.events if e in kept]


def _client(server: RedisServer, **options: Any) -> RedisClient:
    return RedisClient(server.address, checksum_key=VALUES, **options)


def test_frames_reach_the_other_processes_not_the_senders_own_subscriber(server, buses):
    values = _client(server)
    a = buses(values)  # the shared tier's client: same server, timeouts
    b = buses(server.url)  # or a URL
    ra, rb = Recorder(a), Recorder(b)
    assert a.wait_synced(10) and b.wait_synced(10)
    assert a.publish(INV, "ch", [b"k1", b"k2"], source=ra.sub)
    assert wait_until(lambda: rb.items() == [b"k1", b"k2"], 10)
    [msg] = rb.got
    assert (msg.type, msg.sender, msg.channel) == (INV, a.peer_id, "ch")
    assert ra.got == []  # its own subscriber was the source; the echo is not delivered
    b.publish(INV, "other", [b"x"])
    b.publish(INV, "ch", [b"k3"])
    assert wait_until(lambda: ra.items() == [b"k3"], 10)  # channels kept apart
    assert wait_until(lambda: a.peers() == [b.peer_id] and b.peers() == [a.peer_id], 10)
    assert rb.gapped == [] and ra.gapped == [] and a.gaps == b.gaps == 0
    assert values.get("k", None) is None  # the client is still the cache's, untouched
    values.close()


def test_built_from_a_client_object_or_a_valkey_one(server, buses):
    import redis
    import valkey

    own = redis.Redis(host=server.host, port=server.port, socket_timeout=1.0)
    theirs = valkey.Valkey(host=server.host, port=server.port, socket_timeout=1.0)
    a, b = buses(own), buses(theirs)
    rb = Recorder(b)
    assert a.wait_synced(10) and b.wait_synced(10)
    a.publish(INV, "ch", [b"k"])
    assert wait_until(lambda: rb.items() == [b"k"], 10)
    a.close()
    b.close()
    assert own.ping() and theirs.ping()  # not the bus's to close
    own.close()
    theirs.close()


@pytest.mark.parametrize(
    "where, options, named",
    [
        (object(), {}, "redis must be"),
        ("memcached://127.0.0.1:11211", {}, "redis must be a Redis URL"),
        ("redis://127.0.0.1:1", {"redis_channel": ""}, "redis_channel"),
        ("redis://127.0.0.1:1", {"hwm": 0}, "hwm"),
        ("redis://127.0.0.1:1", {"heartbeat_interval": -1}, "heartbeat_interval"),
    ],
)
def test_bad_configuration_is_named(where, options, named):
    with pytest.raises(ConfigurationError, match=named):
        RedisBus(where, SECRET, **options)


def test_a_client_decoding_replies_is_refused(server):
    import redis

    text = redis.Redis(host=server.host, port=server.port, decode_responses=True)
    with pytest.raises(ConfigurationError, match="decode_responses"):
        RedisBus(text, SECRET)
    text.close()


def test_a_secret_is_required():
    with pytest.raises(ConfigurationError, match="secret"):
        RedisBus("redis://127.0.0.1:1", "")


def test_foreign_frames_are_rejected_unread(server, buses):
    a, b = buses(server.url), buses(server.url, secret="another secret")
    ra = Recorder(a)
    assert a.wait_synced(10) and b.wait_synced(10)
    b.publish(INV, "ch", [b"forged"])
    assert wait_until(lambda: a.rejected >= 1, 10)
    before = a.rejected
    assert server.call("PUBLISH", a.redis_channel, b"not a frame at all") == 2
    # A correctly signed frame of format 1: no process ever sent one over Redis.
    old = Frames(SECRET).encode(INV, b"O" * 8, 1, "ch", [b"old"], version=1)
    server.call("PUBLISH", a.redis_channel, old)
    assert wait_until(lambda: a.rejected >= before + 2, 10)
    a.publish(INV, "ch", [b"marker"], source=ra.sub)
    b.publish(INV, "ch", [b"marker"])  # once it is read, everything before it was
    assert wait_until(lambda: b.rejected >= 1, 10)
    assert ra.got == [] and ra.gapped == []


def test_a_message_too_big_for_a_frame_is_split_and_arrives_whole(server, buses):
    a, b = buses(server.url), buses(server.url)
    rb = Recorder(b)
    assert a.wait_synced(10) and b.wait_synced(10)
    keys = [b"%06d" % i + b"x" * 200 for i in range(3000)]  # ~620 kB: three frames
    a.publish(INV, "ch", keys)
    assert wait_until(lambda: len(rb.items()) == len(keys), 10)
    assert rb.items() == keys and len(rb.got) >= 3
    assert rb.gapped == []


def test_a_restart_unsyncs_at_once_and_the_lost_frames_are_a_gap(server, buses):
    # Heartbeats 30 s apart: only the connection itself can tell the buses, within this test.
    a = buses(server.url, heartbeat_interval=30.0, heartbeat_timeout=60.0)
    b = buses(server.url, heartbeat_interval=30.0, heartbeat_timeout=60.0)
    rb = Recorder(b)
    assert a.wait_synced(10) and b.wait_synced(10)
    a.publish(INV, "ch", [b"before"])
    assert wait_until(lambda: rb.items() == [b"before"], 10)

    server.stop()
    assert wait_until(lambda: not a.synced and not b.synced, 10)
    assert not a.connected and not b.connected
    assert a.publish(INV, "ch", [b"lost"]) is False  # numbered, never delivered
    server.start()  # same port, empty
    assert a.wait_synced(10) and b.wait_synced(10)
    assert wait_until(lambda: rb.states()[-2:] == ["connected", "synced"], 5)
    assert rb.states()[-4:] == ["unsynced", "disconnected", "connected", "synced"]
    a.publish(INV, "ch", [b"after"])  # shows that #2 never came
    assert wait_until(lambda: rb.items()[-1:] == [b"after"], 10)
    assert rb.gapped == ["ch"] and b"lost" not in rb.items()


def test_a_frozen_server_unsyncs_and_its_thaw_resyncs(server, buses):
    values = _client(server, timeout=0.3, connect_timeout=0.3)
    a, b = buses(values), buses(server.url)
    ra, rb = Recorder(a), Recorder(b)
    assert a.wait_synced(10) and b.wait_synced(10)
    server.suspend()
    try:
        # A publish never waits for the server: these return while it is frozen.
        for i in range(5):
            a.publish(INV, "ch", [b"k%d" % i], source=ra.sub)
        assert wait_until(lambda: not a.synced and not b.synced, 10)
    finally:
        server.resume()
    assert a.wait_synced(10) and b.wait_synced(10)
    assert "unsynced" in ra.states() and ra.states()[-1] == "synced"
    assert "unsynced" in rb.states() and rb.states()[-1] == "synced"
    # What a frozen Redis took in before the freeze is relayed on thaw, or noticed lost.
    assert wait_until(lambda: len(rb.items()) == 5 or rb.gapped == ["ch"], 10)
    values.close()


def test_a_full_queue_drops_frames_and_counts_them(server, buses):
    values = _client(server, timeout=0.5)
    a = buses(values, hwm=5)
    b = buses(server.url)
    rb = Recorder(b)
    assert a.wait_synced(10) and b.wait_synced(10)
    server.suspend()
    try:
        kept = [a.publish(INV, "ch", [b"k%d" % i]) for i in range(200)]
    finally:
        server.resume()
    assert kept.count(False) >= 100 and a.dropped >= 100
    # The frozen spell was short: what the queue kept goes out, and the next heartbeat
    # tells the others about the frames dropped.
    assert wait_until(lambda: rb.gapped == ["ch"], 10)
    a.publish(INV, "ch", [b"after"])
    assert wait_until(lambda: rb.items()[-1:] == [b"after"], 10)
    values.close()


def test_closing_while_redis_takes_nothing_leaves_no_thread_behind(server, buses):
    values = _client(server, timeout=1.0)
    a = buses(values)
    assert a.wait_synced(10)
    server.suspend()
    try:
        for i in range(6000):  # a dozen batches, each of which would wait out its timeout
            a.publish(INV, "ch", [b"k%d" % i])
        a.close()
        assert not a._publisher.is_alive() and not a._subscriber.is_alive()
        assert a.dropped >= 5000
    finally:
        server.resume()
    values.close()


def test_a_resubscription_by_the_client_library_counts_as_a_reconnection(server, buses):
    """A client object that reconnects and subscribes again by itself (redis-py's retries)
    hides the outage: the second confirmation says it, and the bus resyncs."""
    a = buses(server.url)
    ra = Recorder(a)
    assert a.wait_synced(10)

    class Replayed:
        def __init__(self) -> None:
            self.replies = [{"type": "subscribe", "channel": a.redis_channel, "data": 1}]

        def get_message(self, timeout: float = 0.0) -> Any:
            return self.replies.pop() if self.replies else None

    before = len(ra.states())
    a._read(Replayed(), 0.0)
    assert ra.states()[before : before + 2] == ["unsynced", "disconnected"]
    assert a.wait_synced(10)
    assert wait_until(lambda: ra.states()[-1:] == ["synced"], 5)


def test_a_subscription_gone_silent_is_made_again(server, buses):
    """A connection dead without a word (nothing refused, nothing reset: a stream that
    stopped) is given up once nothing came back through it for heartbeat_timeout."""
    import redis

    real = redis.Redis(host=server.host, port=server.port, socket_timeout=1.0)
    made: list[Any] = []

    class Silenced:
        """The first subscription swallows everything that arrives after its confirmation."""

        def __init__(self, pubsub: Any, silent: bool) -> None:
            self._pubsub, self._silent = pubsub, silent

        def __getattr__(self, name: str) -> Any:
            return getattr(self._pubsub, name)

        def get_message(self, timeout: float = 0.0) -> Any:
            reply = self._pubsub.get_message(timeout=timeout)
            if self._silent and reply is not None and reply.get("type") == "message":
                return None
            return reply

    class Client:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def pubsub(self) -> Any:
            made.append(Silenced(real.pubsub(), silent=not made))
            return made[-1]

    bus = buses(Client(), heartbeat_interval=0.1, heartbeat_timeout=0.5)
    rec = Recorder(bus)
    assert bus.wait_synced(10)  # on the second subscription, the first having gone silent
    assert len(made) >= 2 and "synced" in rec.states()
    real.close()


def test_close_says_goodbye_and_closes_only_what_it_made(server, buses):
    values = _client(server)
    a, b, c = buses(values), buses(server.url), buses(server.url)
    rc = Recorder(c)
    for bus in (a, b, c):
        assert bus.wait_synced(10)
    assert wait_until(lambda: len(c.peers()) == 2, 10)
    owned = b._owned
    a.close()
    b.close()
    assert wait_until(lambda: rc.events.count("peer-left") == 2, 10)
    assert c.peer_alive(a.peer_id) is False
    assert not a.synced and a.publish(INV, "ch", [b"k"]) is False
    a.close()  # twice is fine
    assert not a._publisher.is_alive() and not a._subscriber.is_alive()
    values.put("still", "open", 60)  # the bus did not close the client it was given
    assert values.get("still") == "open"
    assert owned._topology.closed  # the one it made from a URL, it closed
    values.close()


def _pair(server: RedisServer, buses: Callable[..., RedisBus]):
    l2 = _client(server)
    l1a, l1b = InprocCacheClient(100), InprocCacheClient(100)
    a = CoherentWrapperClient(TieredInclusiveClient(l1a, l2), buses(l2), channel="app")
    b = CoherentWrapperClient(TieredInclusiveClient(l1b, l2), buses(l2), channel="app")
    assert a.bus.wait_synced(10) and b.bus.wait_synced(10)
    return a, b, l1a, l1b, l2


def test_coherent_clients_over_tiered_inproc_redis(server, buses):
    a, b, _, l1b, l2 = _pair(server, buses)
    # Subscribed after b's client: a message seen here has been applied there.
    seen = Recorder(b.bus, "app")

    def settled(n: int) -> bool:
        return len(seen.got) == n

    a.put("user:1", "Ada", 300)
    assert wait_until(lambda: settled(1), 10)
    assert b.get("user:1") == "Ada" and l1b.contains("user:1")
    a.put("user:1", "Ada L.", 300)
    assert wait_until(lambda: settled(2), 10)
    assert not l1b.contains("user:1")
    assert b.get("user:1") == "Ada L." and l1b.contains("user:1")
    a.delete("user:1")
    assert wait_until(lambda: settled(3), 10)
    assert not l1b.contains("user:1")
    assert b.get("user:1", None) is None
    b.put("user:2", 2, 300)
    assert b.get("user:2") == 2 and l1b.usage == 1
    a.clear()
    assert wait_until(lambda: settled(5), 10)  # b's put, a's clear
    assert l1b.usage == 0
    a.close()
    b.close()
    l2.close()


def test_compute_once_across_clients_over_redis(server, buses):
    a, b, _, _, l2 = _pair(server, buses)
    runs: list[str] = []
    lock = threading.Lock()
    release = threading.Event()

    def compute(who: str) -> Callable[[], str]:
        def run() -> str:
            with lock:
                runs.append(who)
            release.wait(10)
            return f"value from {who}"

        return run

    results: list[str] = []
    threads = [
        threading.Thread(
            target=lambda c=c, w=w: results.append(c.compute_once("r", compute(w), 60))
        )
        for c, w in ((a, "a"), (b, "b"), (a, "a2"), (b, "b2"))
    ]
    for t in threads:
        t.start()
    assert wait_until(lambda: len(runs) >= 1, 10)
    release.set()
    for t in threads:
        t.join(20)
    assert len(runs) == 1 and len(set(results)) == 1 and len(results) == 4
    a.close()
    b.close()
    l2.close()


def test_over_sentinel_the_bus_follows_the_failover(request):
    group = SentinelGroup(redis_executable()).start()
    request.addfinalizer(group.stop)
    made: list[RedisBus] = []
    try:
        a, b = (
            RedisBus(group.url + "?timeout=0.5", SECRET, heartbeat_interval=0.2) for _ in range(2)
        )
        made += [a, b]
        rb = Recorder(b)
        assert a.wait_synced(10) and b.wait_synced(10)
        old = group.current_master()
        group.master.stop()
        assert wait_until(lambda: not b.synced, 10)
        assert wait_until(lambda: group.current_master() not in (None, old), 30)
        assert a.wait_synced(30) and b.wait_synced(30)
        a.publish(INV, "ch", [b"after failover"])
        assert wait_until(lambda: rb.items() == [b"after failover"], 10)
    finally:
        for bus in made:
            bus.close()


def test_over_a_redis_cluster(buses):
    redis_executable()
    cluster = shared_cluster()
    a, b = buses(cluster.url), buses(cluster.url)
    ra, rb = Recorder(a), Recorder(b)
    assert a.wait_synced(20) and b.wait_synced(20)
    a.publish(INV, "ch", [b"from a"], source=ra.sub)
    b.publish(INV, "ch", [b"from b"], source=rb.sub)
    assert wait_until(lambda: rb.items() == [b"from a"] and ra.items() == [b"from b"], 10)
    assert ra.gapped == rb.gapped == []
