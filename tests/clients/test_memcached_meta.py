"""memcached's meta commands: the protocol layer, the detection per server, and the leases
the client builds on them (win tokens), or on lease keys where a server has no meta commands.

Leases are tested against a real memcached (meta commands) and against the same server
behind :class:`tests.leases.textonly.TextOnlyMemcached` (text protocol only, as memcached
before 1.6), plus the client told not to use them (``meta=False``).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time

import pytest

from chorde.clients.memcached import MemcachedClient, protocol
from chorde.clients.memcached.protocol import (
    META,
    BadReply,
    ClientError,
    Meta,
    Replies,
    UnknownCommand,
)
from chorde.leases import BUSY, HIT, UNAVAILABLE, WON, live
from chorde.sentinel import NONE
from tests.leases.textonly import TextOnlyMemcached
from tests.servers import wait_until

SECRET = "meta-secret"
LEASE = 1.0


def never(value, ttl):
    return False


# ---- the protocol layer --------------------------------------------------------------


def test_meta_requests():
    assert protocol.meta_get(b"k", b"v c t") == b"mg k v c t\r\n"
    assert protocol.meta_set(b"k", [b"ab", b"c"], b"C7 T30 F0") == b"ms k 3 C7 T30 F0\r\nabc\r\n"
    assert protocol.meta_delete(b"k") == b"md k\r\n"
    assert protocol.meta_delete(b"k", b"I C7 T3") == b"md k I C7 T3\r\n"
    assert protocol.META_NOOP == b"mn\r\n"


def test_meta_flags():
    assert protocol.meta_flags(b"c12 t-1 f0 W") == {b"c": b"12", b"t": b"-1", b"f": b"0", b"W": b""}
    assert protocol.meta_flags(b"") == {}


META_STREAM = b"VA 3 c12 t30 W\r\nabc\r\nHD c4 Z X\r\nEN\r\nVA 0\r\n\r\nNS\r\nMN\r\n"
META_RESULT = [
    (b"VA", b"abc", b"c12 t30 W"),
    (b"HD", None, b"c4 Z X"),
    (b"EN", None, b""),
    (b"VA", b"", b""),
    (b"NS", None, b""),
    (b"MN", None, b""),
]


@pytest.mark.parametrize("cut", range(1, len(META_STREAM)))
def test_meta_replies_parse_in_any_pieces(cut):
    reply = Replies(*[META] * len(META_RESULT))
    done = reply.feed(META_STREAM[:cut]) or reply.feed(META_STREAM[cut:])
    assert done and reply.result == META_RESULT and reply.rest == b""


def test_a_value_block_containing_crlf_is_read_by_its_size():
    reply = Meta()
    assert reply.feed(b"VA 6 c1\r\nab\r\ncd\r\n")
    assert reply.result == (b"VA", b"ab\r\ncd", b"c1")


@pytest.mark.parametrize(
    "line, error",
    [
        (b"ERROR", UnknownCommand),  # a server without meta commands
        (b"CLIENT_ERROR bad command line format", ClientError),
        (b"VA x\r\n", BadReply),
        (b"HDX", BadReply),
        (b"OK", BadReply),
    ],
)
def test_meta_error_lines_raise(line, error):
    with pytest.raises(error):
        Meta().feed(line if line.endswith(b"\r\n") else line + b"\r\n")


# ---- servers with and without meta commands --------------------------------------------


@pytest.fixture(params=["meta", "text-only server", "meta=False"])
def kind(request):
    return request.param


@pytest.fixture
def address(kind, memcached):
    if kind == "text-only server":
        with TextOnlyMemcached(memcached.port) as front:
            yield front.address
    else:
        yield memcached.address


_namespaces = itertools.count()


@pytest.fixture
def make(kind, address):
    """Clients of one namespace on the server under test (``make()`` another one)."""
    made = []
    namespace = f"meta{next(_namespaces)}"

    def make(**options):
        options.setdefault("lease_ttl", LEASE)
        if kind == "meta=False":
            options.setdefault("meta", False)
        c = MemcachedClient([address], checksum_key=SECRET, namespace=namespace, **options)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def _server(c):
    return c._servers.ring.nodes[0]


def test_detection_once_per_server(kind, make, memcached):
    a = make()
    assert _server(a).meta is None  # not asked before a lease read needs it
    a.lease_read("k", live)
    expected = {"meta": True, "text-only server": False, "meta=False": None}
    assert _server(a).meta is expected[kind]
    if kind == "meta":
        before = int(memcached.stats()["cmd_get"])  # (mn is not a get: the lease reads are)
        a.lease_read("k2", live)
        assert _server(a).meta is True and int(memcached.stats()["cmd_get"]) > before


def test_a_miss_is_won_once(make):
    a, b = make(), make()
    won = a.lease_read("k", live)
    assert won.state == WON and won.value is NONE
    busy = b.lease_read("k", live)
    assert busy.state == BUSY and busy.value is NONE
    assert a.lease_read("k", live).state == BUSY  # even for its winner: one token per entry
    assert b.get("k", None) is None  # the placeholder is no value for plain reads
    a.lease_put("k", "value", 30, won.token)
    hit = b.lease_read("k", live)
    assert (hit.state, hit.value) == (HIT, "value") and 29 < hit.ttl <= 30
    assert b.get("k") == "value"


def test_a_stale_entry_is_won_once_and_served_meanwhile(make):
    a, b = make(), make()
    a.put("k", "old", 30)
    a.expire("k")
    won = a.lease_read("k", live)
    assert (won.state, won.value) == (WON, "old") and won.ttl <= 0
    busy = b.lease_read("k", live)
    assert (busy.state, busy.value) == (BUSY, "old")  # the stale value, for serve-stale
    assert b.getTtl("k")[0] == "old"  # plain reads still see it, stale
    a.lease_put("k", "new", 30, won.token)
    assert b.lease_read("k", live).state == HIT and b.get("k") == "new"


def test_an_entry_refused_by_accept_is_taken(make):
    """A live entry the caller does not accept (another revision, a refresh window): the
    lease is taken on it, and plain readers keep it meanwhile."""
    a, b = make(), make()
    a.put("k", "v1", 30)
    won = a.lease_read("k", never)
    assert (won.state, won.value) == (WON, "v1") and won.ttl > 0
    assert b.lease_read("k", never).state == BUSY
    assert b.get("k") == "v1"
    a.lease_put("k", "v2", 30, won.token)
    assert b.lease_read("k", live).value == "v2"


def test_an_entry_without_expiry_can_be_taken_too(make):
    a, b = make(), make()
    a.put("k", "v1", math.inf)
    won = a.lease_read("k", never)
    assert won.state == WON
    assert b.lease_read("k", never).state == BUSY
    a.lease_release("k", won.token)
    assert b.get("k") == "v1"  # released: kept as it was
    again = b.lease_read("k", never)
    assert again.state == WON
    b.lease_release("k", again.token)
    assert a.getTtl("k") == ("v1", math.inf)


def test_release_lets_the_next_reader_win_at_once(make):
    a, b = make(), make()
    won = a.lease_read("k", live)
    a.lease_release("k", won.token)
    assert b.lease_read("k", live).state == WON
    a.put("s", "stale", 30)
    a.expire("s")
    won = a.lease_read("s", live)
    a.lease_release("s", won.token)  # a failed computation: the stale entry stays
    again = b.lease_read("s", live)
    assert (again.state, again.value) == (WON, "stale")


def test_a_lease_whose_winner_vanished_lapses(make):
    """The winner stores nothing and releases nothing (it died): after the lease ttl the
    next reader wins, on a miss and on a stale entry alike."""
    a, b = make(), make()
    assert a.lease_read("k", live).state == WON
    b.put("s", "stale", 30)
    b.expire("s")
    assert a.lease_read("s", live).state == WON
    started = time.monotonic()
    for key in ("k", "s"):
        assert wait_until(lambda key=key: b.lease_read(key, live).state == WON, LEASE + 3)
    assert time.monotonic() - started <= LEASE + 3


def test_a_value_stored_meanwhile_is_a_hit_and_holds_no_lease(make):
    """The lease reader finds an acceptable value (stored since its own miss): it takes no
    lease, or gives back one it won on it, so the next staleness is won as usual."""
    a, b = make(), make()
    a.put("k", "fresh", 30)
    hit = b.lease_read("k", live)
    assert (hit.state, hit.value) == (HIT, "fresh")
    # Won on an entry another reader then finds acceptable: the token goes back.
    won = a.lease_read("k", never)
    assert won.state == WON
    a.lease_release("k", won.token)
    assert b.lease_read("k", live).state == HIT
    assert a.lease_read("k", never).state == WON  # no token left out


def test_a_token_won_on_an_acceptable_entry_goes_back(kind, make, memcached):
    """An entry marked stale on the server (its first reader wins) that the reader accepts
    after all: the token goes back with the entry rewritten as it was (expiry, flags)."""
    if kind != "meta":
        pytest.skip("stale marks are meta commands")
    a, b = make(), make()
    a.put("k", "v", 30)
    raw = a._map_key("k")[0]
    assert memcached.command_line(b"md " + raw + b" I") == b"HD"
    hit = b.lease_read("k", live)
    assert (hit.state, hit.value) == (HIT, "v")
    flags = memcached.command_line(b"mg " + raw + b" t").split()
    assert b"X" not in flags and b"Z" not in flags and 25 < int(flags[1][1:]) <= 91
    assert a.lease_read("k", never).state == WON  # the token was back


def test_leases_of_big_paged_values(make):
    a, b = make(max_item_size=64 * 1024), make(max_item_size=64 * 1024)
    big = "x" * 300_000
    won = a.lease_read("big", live)
    a.lease_put("big", big, 30, won.token)
    hit = b.lease_read("big", live)
    assert hit.state == HIT and hit.value == big
    b.expire("big")
    stale = b.lease_read("big", live)
    assert stale.state == WON and stale.value == big
    b.lease_put("big", "small now", 30, stale.token)
    assert a.get("big") == "small now"


def test_a_clear_meanwhile_makes_the_entry_a_miss(make):
    a, b = make(), make()
    a.put("k", "before", 30)
    b.clear()
    read = a.lease_read("k", live)
    assert read.value is NONE and read.state in (WON, BUSY)


def test_a_down_server_hands_out_no_lease(unused_port):
    c = MemcachedClient(
        [f"127.0.0.1:{unused_port}"], checksum_key=SECRET, lease_ttl=LEASE, timeout=0.5
    )
    try:
        assert c.lease_read("k", live).state == UNAVAILABLE
        assert c.stats.errors >= 1
        c.lease_release("k", None)  # nothing to release: no error either
    finally:
        c.close()


async def test_awaitable_leases(make):
    a, b = make(), make()
    won = await a.alease_read("k", live)
    assert won.state == WON
    assert (await b.alease_read("k", live)).state == BUSY
    await a.alease_put("k", 7, 30, won.token)
    assert (await b.alease_read("k", live)).value == 7
    other = await a.alease_read("j", live)
    await a.alease_release("j", other.token)
    assert (await b.alease_read("j", live)).state == WON
    results = await asyncio.gather(*(b.alease_read("m", live) for _ in range(5)))
    assert sorted(r.state for r in results) == [BUSY] * 4 + [WON]


def test_lease_options_are_checked(memcached):
    from chorde.errors import ConfigurationError

    with pytest.raises(ValueError, match="lease_ttl"):  # (as every ttl option)
        MemcachedClient([memcached.address], checksum_key=SECRET, lease_ttl=-1)
    with pytest.raises(ConfigurationError, match="lease_ttl"):
        MemcachedClient([memcached.address], checksum_key=SECRET, lease_ttl=math.inf)
    with pytest.raises(ConfigurationError, match="meta"):
        MemcachedClient([memcached.address], checksum_key=SECRET, meta="yes")
    c = MemcachedClient([memcached.address], checksum_key=SECRET, lease_ttl=0)
    try:
        from chorde.leases import offered

        assert not offered(c) and c.lease_ttl == 0
    finally:
        c.close()


def test_the_text_only_front_refuses_meta_commands_and_relays_the_rest(memcached):
    """The fallback tests' server: an old memcached's answers, a real server's data."""
    import socket

    with TextOnlyMemcached(memcached.port) as front:
        with socket.create_connection(("127.0.0.1", front.port), timeout=5) as sock:
            f = sock.makefile("rb")
            sock.sendall(b"mn\r\nset a 0 0 2\r\nhi\r\nget a\r\nmg a v\r\n")
            assert f.readline() == b"ERROR\r\n"
            assert f.readline() == b"STORED\r\n"
            assert [f.readline() for _ in range(3)] == [b"VALUE a 0 2\r\n", b"hi\r\n", b"END\r\n"]
            assert f.readline() == b"ERROR\r\n"
        assert front.refused == 2
    assert memcached.command_line(b"get a").startswith(b"VALUE a 0 2\r\nhi")
