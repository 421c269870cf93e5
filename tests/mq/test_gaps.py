"""Lost messages are noticed: numbering, heartbeat summaries, silent peers, sync state, and
peers speaking another frame format (a rolling upgrade)."""

from __future__ import annotations

import hmac
import time

import pytest
import zmq

from chorde.mq import Broker, BrokerBus, Message, MessageType
from chorde.mq.bus import Bus
from chorde.mq.frames import Frames, encode_summary
from tests.mq import _frames_v1
from tests.servers import wait_until

HB = MessageType.HEARTBEAT
INV = MessageType.INVALIDATE
S, T, U = b"S" * 8, b"T" * 8, b"U" * 8


class Probe(Bus):
    """A bus without transport: the tests hand it frames as if they had arrived."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.gapped: list[str] = []
        self.got: list[Message] = []
        self.events: list[str] = []
        self.add_listener(lambda event, peer: self.events.append(event))
        for channel in ("ch", "ch2"):
            self.subscribe(channel, self.got.append, on_gap=self.gapped.append)

    def _send(self, mtype, channel, items) -> bool:
        return True

    def frame(self, sender, seq, channel="ch", mtype=INV, items=(b"k",), version=2) -> None:
        self._deliver(Message(mtype, sender, seq, time.time(), channel, tuple(items), version))

    def beat(self, sender, seq, summary, mtype=HB) -> None:
        self.frame(sender, seq, "", mtype, encode_summary(summary))

    def echo(self) -> None:
        self.frame(self.peer_id, 1, "", HB, ())


def test_numbers_in_order_are_no_gap():
    bus = Probe()
    for seq in (1, 2, 3):
        bus.frame(S, seq)
    bus.beat(S, 1, {"ch": 3})
    assert bus.gapped == [] and bus.gaps == 0
    assert len(bus.got) == 3


def test_a_missing_number_is_a_gap_on_its_channel_only():
    bus = Probe()
    bus.frame(S, 1)
    bus.frame(S, 3)
    assert bus.gapped == ["ch"]
    bus.frame(S, 2)  # late, not lost: applied, and no second gap
    assert bus.gapped == ["ch"] and len(bus.got) == 3
    bus.frame(S, 1, "ch2")
    assert bus.gapped == ["ch"]


def test_a_heartbeat_reveals_a_frame_lost_before_a_quiet_spell():
    bus = Probe()
    bus.frame(S, 1)
    bus.beat(S, 1, {"ch": 1, "ch2": 0})
    assert bus.gapped == []
    bus.beat(S, 2, {"ch": 2})  # #2 on ch never came
    assert bus.gapped == ["ch"]
    bus.beat(S, 3, {"ch": 2, "unsubscribed": 5})
    assert bus.gapped == ["ch"]  # known already; nobody here listens to the other channel
    assert bus.gaps == 1


def test_first_contact_counts_what_the_peer_sent_before():
    bus = Probe()
    bus.frame(S, 1)  # its first frame there: nothing missed
    bus.beat(T, 7, {"ch2": 0})  # heartbeats missed don't matter, nothing sent on ch2
    assert bus.gapped == []
    bus.frame(U, 5)  # frames #1-#4 went by before we heard of U
    assert bus.gapped == ["ch"]
    bus.beat(b"V" * 8, 1, {"ch2": 3})
    assert bus.gapped == ["ch", "ch2"]


def test_goodbye_carries_a_last_summary():
    bus = Probe()
    bus.frame(S, 1)
    bus.beat(S, 1, {"ch": 2}, mtype=MessageType.BYE)
    assert bus.gapped == ["ch"]
    assert bus.peer_alive(S) in (False, None)
    bus.frame(S, 9, "", MessageType.BYE, (), version=1)  # its copy for format-1 peers
    assert bus.gapped == ["ch"] and bus.events.count("peer-left") == 1


def test_a_peer_gone_silent_is_a_gap_on_the_channels_it_used():
    bus = Probe(heartbeat_interval=0.02, heartbeat_timeout=0.1)
    bus.echo()
    bus.frame(S, 1, "ch2")

    def lost() -> bool:
        bus.echo()  # we keep hearing ourselves: S's silence is S's
        bus._tick()
        return "peer-lost" in bus.events

    assert wait_until(lost, 5)
    assert bus.gapped == ["ch2"]


def test_synced_follows_the_echo_and_the_transport():
    bus = Probe(heartbeat_interval=0.02, heartbeat_timeout=0.5)
    assert not bus.synced
    bus.echo()
    assert bus.synced and bus.connected
    # A missed heartbeat: unsynced long before the peers' timeout makes it disconnected.
    assert wait_until(lambda: bus._tick() or not bus.synced, 5)
    if not bus.connected:  # a very slow machine ticked past both at once: unsynced first
        assert bus.events.index("unsynced") < bus.events.index("disconnected")
    bus.echo()
    assert bus.synced
    bus._transport(False)
    assert not bus.synced and not bus.connected
    bus.echo()  # an echo still in flight is not enough while the connection is down
    assert not bus.synced
    bus._transport(True)
    bus.echo()
    assert bus.synced
    assert bus.events.count("synced") == 3


def test_a_newer_peers_copies_are_ignored_and_an_older_peers_frames_are_numbered_together():
    bus = Probe()
    bus.frame(S, 1)
    bus.frame(S, 1, version=1)  # S's copy for format-1 peers
    assert len(bus.got) == 1
    bus.frame(T, 1, "", HB, (), version=1)
    bus.frame(T, 2, version=1)
    bus.frame(T, 3, "ch2", version=1)
    assert bus.gapped == [] and len(bus.got) == 3
    bus.frame(T, 5, version=1)  # #4 could have been on any channel
    assert sorted(bus.gapped) == ["ch", "ch2"]


# ---- over a broker: transport, and processes of both formats ----------------------------------


@pytest.fixture
def broker():
    with Broker("tcp://127.0.0.1:*") as b:
        b.start()
        yield b


class OldPeer:
    """A process running the format-1 code: a DEALER to the broker and the old frames."""

    def __init__(self, endpoint: str, secret: str = "s") -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.frames = _frames_v1.Frames(secret)
        self.peer_id = b"old-peer"
        self.seq = 0
        self.readable: list = []
        self.unreadable = 0

    def send(self, mtype, channel="", items=(), skip=0) -> None:
        self.seq += 1 + skip
        self.sock.send(self.frames.encode(mtype, self.peer_id, self.seq, channel, items))

    def receive(self) -> None:
        while self.sock.poll(0):
            try:
                self.readable.append(self.frames.decode(self.sock.recv()))
            except _frames_v1.InvalidFrame:
                self.unreadable += 1

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


def test_transport_loss_unsyncs_at_once_and_a_reconnection_resyncs(broker):
    endpoint = broker.endpoints[0]
    # Heartbeats 30 s apart: only the connection itself can tell the bus, within this test.
    bus = BrokerBus(endpoint, "s", heartbeat_interval=30.0)
    events = []
    bus.add_listener(lambda event, peer: events.append(event))
    try:
        assert bus.wait_synced(10)  # a heartbeat at once when the connection is made
        broker.close()
        assert wait_until(lambda: not bus.synced and not bus.connected, 10)
        with Broker(endpoint) as again:
            again.start()
            assert bus.wait_synced(10)
            assert wait_until(lambda: events[-1:] == ["synced"], 5)
            assert events[-4:] == ["unsynced", "disconnected", "connected", "synced"]
    finally:
        bus.close()


def test_old_and_new_processes_keep_each_other_coherent(broker):
    new = BrokerBus(broker.endpoints[0], "s", heartbeat_interval=0.05)
    old = OldPeer(broker.endpoints[0])
    got, gapped = [], []
    new.subscribe("ch", got.append, on_gap=gapped.append)
    try:
        assert new.wait_synced(10)
        old.send(HB)
        old.send(INV, "ch", [b"k1"])
        assert wait_until(lambda: [m.items for m in got] == [(b"k1",)], 10)
        assert gapped == []
        # The new process heard an old one: it now sends format-1 copies the old one reads.
        new.publish(INV, "ch", [b"k2"])

        def old_got_k2() -> bool:
            old.receive()
            return any(m.items == (b"k2",) for m in old.readable)

        assert wait_until(old_got_k2, 10)
        assert old.unreadable > 0  # the format-2 originals, which it drops
        # A frame the old process numbered but that never arrived: a gap everywhere.
        old.send(INV, "ch", [b"k3"], skip=1)
        assert wait_until(lambda: gapped == ["ch"], 10)
    finally:
        old.close()
        new.close()


def test_a_newer_peer_we_cannot_read_makes_us_drop_everything(broker):
    new = BrokerBus(broker.endpoints[0], "s", heartbeat_interval=0.05)
    gapped = []
    new.subscribe("ch", lambda m: None, on_gap=gapped.append)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(broker.endpoints[0])
    try:
        assert new.wait_synced(10)
        body = bytearray(Frames("s").encode(INV, b"future!!", 1, "ch", [b"k"])[:-32])
        body[2] = 3  # format 3, correctly signed: a trusted peer we cannot read
        sock.send(bytes(body) + hmac.digest(b"s", bytes(body), "sha256"))
        assert wait_until(lambda: gapped == ["ch"], 10)
        assert new.rejected == 1
    finally:
        sock.close()
        ctx.term()
        new.close()
