"""The ZeroMQ buses and the broker, in one process (threads) and as a command."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from chorde.errors import ConfigurationError
from chorde.mq import Broker, BrokerBus, LocalBus, LocalHub, MessageType, PeerBus
from tests.mq._cluster import ROOT, BrokerProcess
from tests.servers import free_port

FAST = {"heartbeat_interval": 0.05}


class Inbox:
    """Collects messages; waits for them."""

    def __init__(self) -> None:
        self.messages = []
        self.cond = threading.Condition()

    def __call__(self, msg) -> None:
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()

    def wait(self, n: int, timeout: float = 5.0) -> list:
        with self.cond:
            self.cond.wait_for(lambda: len(self.messages) >= n, timeout)
            return list(self.messages)


def _wait(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def broker():
    with Broker("tcp://127.0.0.1:*", peer_timeout=2.0) as b:
        b.start()
        yield b


@pytest.fixture
def buses(broker):
    made = []

    def make(secret="s", **kw):
        bus = BrokerBus(broker.endpoints[0], secret, **{**FAST, **kw})
        made.append(bus)
        assert bus.wait_connected(5)
        return bus

    yield make
    for bus in made:
        bus.close()


def test_messages_reach_every_subscriber_once(buses):
    a, b, c = buses(), buses(), buses()
    inbox_a, inbox_b, inbox_c = Inbox(), Inbox(), Inbox()
    a.subscribe("ch", inbox_a)
    b.subscribe("ch", inbox_b)
    c.subscribe("other", inbox_c)
    a.publish(MessageType.INVALIDATE, "ch", [b"k1", b"k2"])
    [msg] = inbox_b.wait(1)
    assert (msg.type, msg.channel, msg.items, msg.sender) == (
        MessageType.INVALIDATE,
        "ch",
        (b"k1", b"k2"),
        a.peer_id,
    )
    b.publish(MessageType.WAKE, "ch", [b"x"])
    # a's subscriber got a's message at once (local dispatch), then b's through the broker.
    assert [m.items for m in inbox_a.wait(2)] == [(b"k1", b"k2"), (b"x",)]
    time.sleep(0.1)
    # Echoes of one's own messages only prove the path works: never dispatched twice.
    assert len(inbox_a.messages) == 2
    assert len(inbox_b.messages) == 2
    assert inbox_c.messages == []


def test_local_subscribers_are_called_except_the_source(buses):
    a = buses()
    seen = []
    sub1 = a.subscribe("ch", lambda m: seen.append(("one", m.items)))
    a.subscribe("ch", lambda m: seen.append(("two", m.items)))
    a.publish(MessageType.INVALIDATE, "ch", [b"k"], source=sub1)
    assert seen == [("two", (b"k",))]


def test_wrong_secret_is_dropped_and_counted(buses):
    a, b = buses("right"), buses("wrong")
    inbox = Inbox()
    a.subscribe("ch", inbox)
    b.publish(MessageType.INVALIDATE, "ch", [b"k"])
    assert _wait(lambda: a.rejected > 0)
    assert inbox.messages == []


def test_liveness_and_goodbye(buses):
    a, b = buses(), buses()
    events = []
    a.add_listener(lambda event, peer: events.append((event, peer)))
    assert _wait(lambda: a.peer_alive(b.peer_id) is True)
    assert a.peer_alive(b"\x00" * 8) is None
    assert a.peer_alive(a.peer_id) is True
    b.close()
    assert _wait(lambda: a.peer_alive(b.peer_id) is False)
    assert ("peer-left", b.peer_id) in events


def test_broker_stop_and_restart(broker):
    endpoint = broker.endpoints[0]
    bus = BrokerBus(endpoint, "s", **FAST)
    events = []
    bus.add_listener(lambda event, peer: events.append(event))
    try:
        assert bus.wait_connected(5)
        broker.close()
        assert _wait(lambda: not bus.connected and not bus.synced)
        assert bus.publish(MessageType.INVALIDATE, "ch", [b"k"]) is False
        with Broker(endpoint) as again:
            again.start()
            assert bus.wait_synced(5)
            assert _wait(lambda: events[-1:] == ["synced"])
            assert events[-4:] == ["unsynced", "disconnected", "connected", "synced"]
    finally:
        bus.close()


def test_peer_bus():
    a = PeerBus("tcp://127.0.0.1:*", [], "s", **FAST)
    b = PeerBus("tcp://127.0.0.1:*", [a.endpoint], "s", **FAST)
    a_peers = PeerBus("tcp://127.0.0.1:*", [b.endpoint], "s", **FAST)
    try:
        inbox = Inbox()
        b.subscribe("ch", inbox)
        assert a.wait_connected(5) and b.wait_connected(5)
        assert _wait(lambda: b.peer_alive(a.peer_id) is True)
        a.publish(MessageType.INVALIDATE, "ch", [b"k"])
        assert inbox.wait(1)[0].sender == a.peer_id
        assert a_peers.wait_connected(5)
    finally:
        for bus in (a, b, a_peers):
            bus.close()


def test_ipc_endpoint(tmp_path):
    path = f"ipc://{tmp_path}/broker.sock"
    with Broker(path) as broker:
        broker.start()
        a, b = BrokerBus(path, "s", **FAST), BrokerBus(path, "s", **FAST)
        try:
            inbox = Inbox()
            b.subscribe("ch", inbox)
            assert a.wait_connected(5) and b.wait_connected(5)
            a.publish(MessageType.CLEAR, "ch")
            assert inbox.wait(1)[0].type is MessageType.CLEAR
        finally:
            a.close()
            b.close()


@pytest.mark.parametrize("endpoint", ["127.0.0.1:5555", "http://x", "", None, 5555])
def test_bad_endpoints(endpoint):
    with pytest.raises(ConfigurationError, match="endpoint"):
        BrokerBus(endpoint, "s")
    with pytest.raises(ConfigurationError):
        Broker(endpoint)


def test_bad_options():
    with pytest.raises(ConfigurationError, match="secret"):
        BrokerBus("tcp://127.0.0.1:1", "")
    with pytest.raises(ConfigurationError, match="heartbeat_interval"):
        BrokerBus("tcp://127.0.0.1:1", "s", heartbeat_interval=0)
    with pytest.raises(ConfigurationError, match="heartbeat_timeout"):
        BrokerBus("tcp://127.0.0.1:1", "s", heartbeat_interval=1, heartbeat_timeout=0.5)
    with pytest.raises(ConfigurationError, match="hwm"):
        BrokerBus("tcp://127.0.0.1:1", "s", hwm=0)
    with pytest.raises(ConfigurationError, match="peer_timeout"):
        Broker("tcp://127.0.0.1:*", peer_timeout=0)


def test_port_in_use_is_a_configuration_error(broker):
    with pytest.raises(ConfigurationError, match="cannot bind"):
        Broker(broker.endpoints[0])


def test_local_bus_down_and_up():
    hub = LocalHub()
    a, b = LocalBus(hub), LocalBus(hub)
    inbox = Inbox()
    b.subscribe("ch", inbox)
    a.set_down(True)
    assert not a.connected
    assert a.publish(MessageType.INVALIDATE, "ch", [b"k"]) is False
    assert b.peer_alive(a.peer_id) is False
    a.set_down(False)
    assert a.publish(MessageType.INVALIDATE, "ch", [b"k"]) is True
    assert len(inbox.messages) == 1


def test_broker_command_line():
    broker = BrokerProcess(free_port()).start()
    try:
        bus = BrokerBus(broker.endpoint, "s", **FAST)
        try:
            assert bus.wait_connected(5)
        finally:
            bus.close()
        broker.proc.terminate()  # SIGTERM: a clean exit
        assert broker.proc.wait(timeout=10) == 0
    finally:
        broker.stop()


def test_broker_command_line_bad_bind():
    proc = subprocess.run(
        [sys.executable, "-m", "chorde.mq.broker", "--bind", "nonsense"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "nonsense" in proc.stderr


def test_missing_pyzmq_names_the_extra():
    code = (
        "import sys; sys.modules['zmq'] = None\n"
        "import chorde.mq\n"
        "try:\n"
        "    chorde.mq.BrokerBus\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, cwd=ROOT
    )
    assert "chorde[mq]" in proc.stdout, proc.stderr
