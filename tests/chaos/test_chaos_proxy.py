"""The chaos proxy itself: each fault does what it says, and healing restores the relay."""

from __future__ import annotations

import socket
import time

import pytest

from tests.chaos.conftest import wait_for
from tests.chaos.proxy import ChaosProxy
from tests.servers import free_port


def _connect(proxy: ChaosProxy, timeout: float = 2.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def _round_trip(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def _reset_at_connect(proxy: ChaosProxy) -> bool:
    """True if a new connection is aborted (during the connect or right after)."""
    try:
        sock = _connect(proxy)
    except ConnectionResetError:
        return True
    with sock:
        return _is_reset(sock)


def _is_reset(sock: socket.socket) -> bool:
    """True if the connection was aborted (RST) or closed under us."""
    try:
        sock.sendall(b"x")
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def test_relays_both_ways(chaos_proxy, echo_server):
    proxy = chaos_proxy(echo_server)
    with _connect(proxy) as sock:
        assert _round_trip(sock, b"hello") == b"hello"
        assert _round_trip(sock, b"x" * 200_000) == b"x" * 200_000
        assert proxy.accepted == 1 and proxy.open == 1
    wait_for(lambda: proxy.open == 0, 5, "the closed connection is forgotten")
    assert proxy.forwarded == 2 * (5 + 200_000)


def test_delay_holds_every_chunk_and_keeps_the_order(chaos_proxy, echo_server):
    proxy = chaos_proxy(echo_server)
    proxy.delay(0.2)
    with _connect(proxy) as sock:
        start = time.monotonic()
        for i in range(5):
            sock.sendall(b"%d," % i)
        got = b""
        while len(got) < 10:
            got += sock.recv(100)
        # A lower bound only: one delay out and one back, whatever the machine's speed.
        assert time.monotonic() - start >= 0.4
        assert got == b"0,1,2,3,4,"
        proxy.delay(0)
        assert _round_trip(sock, b"fast") == b"fast"


def test_blackhole_discards_and_keeps_the_connection(chaos_proxy, echo_server):
    proxy = chaos_proxy(echo_server)
    with _connect(proxy, timeout=0.3) as sock:
        assert _round_trip(sock, b"before") == b"before"
        proxy.blackhole()
        sock.sendall(b"lost")
        with pytest.raises(TimeoutError):
            sock.recv(100)
        assert proxy.discarded == 4 and proxy.open == 1
        proxy.heal()
        assert _round_trip(sock, b"after") == b"after"  # "lost" is gone for good


def test_stall_holds_bytes_back_and_loses_none(chaos_proxy, echo_server):
    proxy = chaos_proxy(echo_server)
    with _connect(proxy, timeout=0.3) as sock:
        assert _round_trip(sock, b"a") == b"a"
        proxy.stall()
        sock.sendall(b"held")
        with pytest.raises(TimeoutError):
            sock.recv(100)
        proxy.heal()
        sock.settimeout(5)
        assert sock.recv(100) == b"held"
        assert proxy.discarded == 0


def test_reset_aborts_every_open_connection(chaos_proxy, echo_server):
    proxy = chaos_proxy(echo_server)
    socks = [_connect(proxy) for _ in range(3)]
    for sock in socks:
        assert _round_trip(sock, b"hi") == b"hi"
    assert proxy.reset() == 3
    for sock in socks:
        with sock, pytest.raises(ConnectionResetError):
            sock.recv(10)
    with _connect(proxy) as sock:  # new connections are relayed again
        assert _round_trip(sock, b"again") == b"again"


def test_drop_resets_the_next_connections(chaos_proxy, echo_server):
    proxy = chaos_proxy(echo_server)
    proxy.drop(1)
    assert _reset_at_connect(proxy)
    with _connect(proxy) as second:
        assert _round_trip(second, b"ok") == b"ok"
    proxy.drop(None)
    for _ in range(3):
        assert _reset_at_connect(proxy)
    proxy.heal()
    with _connect(proxy) as sock:
        assert _round_trip(sock, b"ok") == b"ok"
    assert proxy.resets == 4


def test_refuse_stops_listening_on_the_same_port(chaos_proxy, echo_server):
    proxy = chaos_proxy(echo_server)
    port = proxy.port
    proxy.refuse()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    proxy.refuse(False)
    assert proxy.port == port
    with _connect(proxy) as sock:
        assert _round_trip(sock, b"back") == b"back"


def test_a_dead_target_resets_the_client(chaos_proxy):
    proxy = chaos_proxy(free_port())  # nothing listens there
    assert _reset_at_connect(proxy)
    assert proxy.resets == 1


def test_close_aborts_connections_and_frees_the_port(echo_server):
    proxy = ChaosProxy(echo_server).start()
    sock = _connect(proxy)
    assert _round_trip(sock, b"x") == b"x"
    proxy.close()
    with sock:
        assert _is_reset(sock)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
    proxy.close()  # twice is fine


def test_bad_arguments(chaos_proxy, echo_server):
    proxy = chaos_proxy(echo_server)
    with pytest.raises(ValueError, match="delay"):
        proxy.delay(-1)
    with pytest.raises(ValueError, match="n must"):
        proxy.drop(-1)
    with pytest.raises(RuntimeError, match="no port"):
        _ = ChaosProxy(1).port
