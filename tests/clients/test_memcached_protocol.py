"""The memcached protocol layer without a socket: requests, the reply parser, page plans."""

from __future__ import annotations

import itertools
import os
import random

import pytest

from chorde.clients._pages import PageManifest, assemble
from chorde.clients.memcached import protocol
from chorde.clients.memcached.protocol import (
    LINE,
    VALUES,
    BadReply,
    CasValues,
    ClientError,
    ConnectionClosed,
    Line,
    Replies,
    Reply,
    ReplyError,
    ServerError,
    Stats,
    UnknownCommand,
    Values,
    lines,
)

# ---- requests ------------------------------------------------------------------------


def test_retrieval_requests():
    assert protocol.get([b"a", b"b"]) == b"get a b\r\n"
    assert protocol.gets([b"a"]) == b"gets a\r\n"


def test_storage_requests_join_their_value_parts():
    assert protocol.store(b"set", b"k", 0, 60, [b"ab", b"c"]) == b"set k 0 60 3\r\nabc\r\n"
    page = memoryview(b"xxpagexx")[2:6]
    assert protocol.store(b"add", b"k", 7, 0, (page,)) == b"add k 7 0 4\r\npage\r\n"
    assert protocol.store(b"cas", b"k", 1, 2, [b"v"], cas=99) == b"cas k 1 2 1 99\r\nv\r\n"
    assert protocol.store(b"set", b"k", 0, 0, [b""]) == b"set k 0 0 0\r\n\r\n"


def test_other_requests():
    assert protocol.delete(b"k") == b"delete k\r\n"
    assert protocol.delete_noreply([b"a", b"b"]) == b"delete a noreply\r\ndelete b noreply\r\n"
    assert protocol.touch(b"k", 30) == b"touch k 30\r\n"
    assert protocol.probe(b"k") == b"mg k f\r\n"
    assert protocol.probe_set_many({b"a": b"1", b"b": b"22"}, 60, b"G") == (
        b"mg a f\r\nset a 0 60 2\r\nG1\r\nmg b f\r\nset b 0 60 3\r\nG22\r\n"
    )


@pytest.mark.parametrize(
    "line, result",
    [(b"STORED", True), (b"NOT_STORED", False), (b"EXISTS", False), (b"NOT_FOUND", None)],
)
def test_store_result(line, result):
    assert protocol.store_result(line) is result


@pytest.mark.parametrize(
    "line, error",
    [
        (b"SERVER_ERROR out of memory storing object", ServerError),
        (b"CLIENT_ERROR bad data chunk", ClientError),
        (b"ERROR", UnknownCommand),
        (b"DELETED", BadReply),
        (b"", BadReply),
    ],
)
def test_unexpected_storage_replies_raise(line, error):
    with pytest.raises(error):
        protocol.store_result(line)


def test_check_lets_answers_through_and_raises_on_error_lines():
    assert protocol.check(b"DELETED") == b"DELETED"
    assert protocol.check(b"NOT_FOUND") == b"NOT_FOUND"
    with pytest.raises(ServerError, match="too large"):
        protocol.check(b"SERVER_ERROR object too large for cache")
    with pytest.raises(UnknownCommand):
        protocol.check(b"ERROR")


@pytest.mark.parametrize(
    "line, flags",
    [
        (b"HD f0", 0),
        (b"HD f123", 123),
        (b"HD t-1 f4294967295", 4294967295),
        (b"EN", 0),  # a miss
        (b"ERROR", 0),  # a server without meta commands
    ],
)
def test_probed_flags(line, flags):
    assert protocol.probed_flags(line) == flags


def test_error_replies_are_not_socket_errors():
    # Clients mark a server down for OSErrors only: an answer, even an error, says it is up.
    for error in (ServerError, ClientError, UnknownCommand, BadReply):
        assert issubclass(error, ReplyError) and not issubclass(error, OSError)
    assert issubclass(ConnectionClosed, OSError)


# ---- the reply parser ----------------------------------------------------------------


def _feed_in_pieces(reply: Reply, data: bytes, cuts: list[int]) -> list[bool]:
    """Feed ``data`` cut at ``cuts``; the answers of :meth:`Reply.feed`."""
    bounds = [0, *cuts, len(data)]
    return [reply.feed(data[a:b]) for a, b in itertools.pairwise(bounds) if b > a]


VALUES_REPLY = (
    b"VALUE a 0 3\r\nabc\r\n"
    b"VALUE tricky 5 14\r\nEND\r\nVALUE x\r\n\r\n"  # a value that looks like protocol
    b"VALUE empty 0 0\r\n\r\n"
    b"END\r\n"
)
VALUES_RESULT = {b"a": b"abc", b"tricky": b"END\r\nVALUE x\r\n", b"empty": b""}


def test_values_in_one_piece():
    reply = Values()
    assert reply.feed(VALUES_REPLY)
    assert reply.result == VALUES_RESULT
    assert reply.rest == b""


def test_values_fed_byte_by_byte():
    reply = Values()
    done = [reply.feed(VALUES_REPLY[i : i + 1]) for i in range(len(VALUES_REPLY))]
    assert done == [False] * (len(VALUES_REPLY) - 1) + [True]
    assert reply.result == VALUES_RESULT


def test_values_fed_in_random_pieces():
    rng = random.Random(7)
    for _ in range(200):  # bounded
        cuts = sorted(rng.sample(range(1, len(VALUES_REPLY)), rng.randint(1, 8)))
        reply = Values()
        assert _feed_in_pieces(reply, VALUES_REPLY, cuts)[-1] is True
        assert reply.result == VALUES_RESULT


def test_no_values():
    reply = Values()
    assert reply.feed(b"END\r\n")
    assert reply.result == {}


def test_values_with_cas():
    reply = CasValues()
    assert reply.feed(b"VALUE k 0 2 17\r\nhi\r\nVALUE g 3 1 18446744073709551615\r\nx\r\nEND\r\n")
    assert reply.result == {b"k": (b"hi", 17), b"g": (b"x", 18446744073709551615)}
    with pytest.raises(BadReply):
        CasValues().feed(b"VALUE k 0 2\r\nhi\r\nEND\r\n")  # a get's reply to a gets


def test_a_big_value_asks_for_exactly_what_it_lacks():
    size = 3 * 1024 * 1024
    value = os.urandom(size)
    head = b"VALUE big 0 %d\r\n" % size
    data = head + value + b"\r\nEND\r\n"
    reply = Values()
    assert reply.missing == 0
    fed = 0
    for piece in (len(head) + 10, 65536, 1_000_000):
        assert not reply.feed(data[fed : fed + piece])
        fed += piece
        assert reply.missing == len(head) + size + 2 - fed  # the value and its CRLF
    assert reply.feed(data[fed:])
    assert reply.result == {b"big": value}


@pytest.mark.parametrize(
    "data, error",
    [
        (b"SERVER_ERROR out of memory writing get response\r\n", ServerError),
        (b"VALUE a 0 1\r\nx\r\nCLIENT_ERROR bad command line format\r\n", ClientError),
        (b"ERROR\r\n", UnknownCommand),
        (b"VALUE a 0 x\r\nabc\r\nEND\r\n", BadReply),
        (b"STORED\r\n", BadReply),
    ],
)
def test_errors_where_values_were_expected_raise(data, error):
    with pytest.raises(error):
        Values().feed(data)


def test_a_closed_connection_raises_an_os_error():
    reply = Values()
    assert not reply.feed(b"VALUE a 0 10\r\nabc")
    with pytest.raises(ConnectionClosed):
        reply.feed(b"")


def test_bytes_after_the_reply_are_left_over():
    reply = Line()
    assert reply.feed(b"STORED\r\nEXTRA")
    assert (reply.result, reply.rest) == (b"STORED", b"EXTRA")


def test_pipelined_lines():
    data = b"HD f0\r\nSTORED\r\nEN\r\nSERVER_ERROR object too large for cache\r\n"
    expected = [b"HD f0", b"STORED", b"EN", b"SERVER_ERROR object too large for cache"]
    for cut in range(1, len(data)):
        reply = lines(4)
        assert _feed_in_pieces(reply, data, [cut])[-1] is True
        assert reply.result == expected  # error lines are answers here, read by the caller


def test_stats():
    data = b"STAT pid 1\r\nSTAT version 1.6.18\r\nSTAT limit_maxbytes 67108864\r\nEND\r\n"
    for cut in range(1, len(data), 7):
        reply = Stats()
        assert _feed_in_pieces(reply, data, [cut])[-1] is True
        assert reply.result == {
            b"pid": b"1",
            b"version": b"1.6.18",
            b"limit_maxbytes": b"67108864",
        }
    with pytest.raises(BadReply):
        Stats().feed(b"VALUE a 0 1\r\nx\r\nEND\r\n")


def test_several_kinds_in_one_reply():
    data = b"HD f5\r\nVALUE a 0 1\r\nx\r\nEND\r\nTOUCHED\r\n"
    for cut in range(1, len(data)):
        reply = Replies(LINE, VALUES, LINE)
        assert _feed_in_pieces(reply, data, [cut])[-1] is True
        assert reply.result == [b"HD f5", {b"a": b"x"}, b"TOUCHED"]


# ---- pages ---------------------------------------------------------------------------


def test_planned_pages_reassemble():
    payload = os.urandom(10_000)
    manifest, pages = protocol.plan_pages(payload, 3000, b"owner", b"ns~")
    assert isinstance(manifest, PageManifest)
    keys = [k for k, _ in pages]
    assert keys == manifest.page_keys(b"ns~")
    assert [len(p) for _, p in pages] == [3000, 3000, 3000, 1000]
    assert all(k.startswith(b"ns~pg.") for k in keys)
    found = {k: bytes(p) for k, p in pages}
    assert assemble(manifest, keys, found) == payload
    found[keys[2]] = found[keys[2]][:-1] + bytes([found[keys[2]][-1] ^ 1])  # one bit off
    assert assemble(manifest, keys, found) is None


def test_old_pages_of_a_replaced_item():
    manifest, _ = protocol.plan_pages(os.urandom(5000), 2000, b"k", b"~")
    pages = manifest.page_keys(b"~")
    assert protocol.old_pages(b"~", b"k", 0, 0) == []  # not paged
    assert protocol.old_pages(b"~", b"k", manifest.flags, 0) == pages  # replaced by a small one
    assert protocol.old_pages(b"~", b"k", manifest.flags, manifest.flags) == []  # same pages
    other, _ = protocol.plan_pages(os.urandom(5000), 2000, b"k", b"~")
    if other.token != manifest.token:  # (one chance in 65536 to draw the same token)
        assert protocol.old_pages(b"~", b"k", manifest.flags, other.flags) == pages


# ---- a reply ending the way the caller expects ---------------------------------------

RECORD = b"signed generation record"
BLOCK = protocol.value_block(b"g", RECORD)


def _expecting() -> Values:
    reply = Values()
    reply.expect = (BLOCK, b"g", RECORD)
    return reply


def test_value_block_is_how_a_get_reply_ends():
    reply = Values()
    assert reply.feed(b"VALUE k 0 1\r\nv\r\n" + BLOCK)
    assert reply.result == {b"k": b"v", b"g": RECORD}


def test_a_reply_ending_with_the_expected_block_maps_its_key_to_the_very_value():
    reply = _expecting()
    assert reply.feed(b"VALUE k 0 1\r\nv\r\n" + BLOCK)
    assert reply.result == {b"k": b"v", b"g": RECORD}
    assert reply.result[b"g"] is RECORD  # not parsed: the object the caller knows
    reply = _expecting()
    assert reply.feed(BLOCK)  # the entry is missing, the record is there
    assert reply.result == {b"g": RECORD} and reply.result[b"g"] is RECORD


@pytest.mark.parametrize(
    "data, result",
    [
        # Another record: parsed as any reply.
        (b"VALUE g 0 5\r\nother\r\nEND\r\n", {b"g": b"other"}),
        (b"END\r\n", {}),
        # A value that itself ends with the block: its size says where it really ends.
        (
            b"VALUE k 0 %d\r\nxx%s\r\nEND\r\n" % (len(BLOCK) + 2, BLOCK),
            {b"k": b"xx" + BLOCK},
        ),
        (
            b"VALUE k 0 %d\r\nxx%s\r\n%s" % (len(BLOCK) + 2, BLOCK, BLOCK),
            {b"k": b"xx" + BLOCK, b"g": RECORD},
        ),
    ],
)
def test_any_other_ending_is_parsed_as_usual(data, result):
    reply = _expecting()
    assert reply.feed(data)
    assert reply.result == result
    for cut in range(1, len(data)):  # in two pieces, wherever cut
        reply = _expecting()
        assert _feed_in_pieces(reply, data, [cut])[-1] is True
        assert reply.result == result
