"""memcached's text protocol without I/O: requests encoded, replies parsed.

Pure code: nothing here touches a socket, a clock or a server. The transports
(:mod:`.blocking`, :mod:`.aio`) send what the encoders return and feed what they receive to
a :class:`Reply`, the one reply parser, which takes the bytes in whatever pieces they come.
The commands and replies are those of memcached's ``doc/protocol.txt``: the text protocol,
which every server speaks, and the meta commands of memcached 1.6+ (``mg``, ``ms``, ``md``,
``mn``): a flags-only probe (``mg <key> f``, which an old server answers with ``ERROR``), and
the win tokens the client's leases are made of (see "Meta commands" below).

The operations of the client are generators that yield *calls* (see "Calls" below) and get
their results sent back; :func:`chorde.clients.memcached.blocking.run` and
:func:`chorde.clients.memcached.aio.run` drive them, so each operation is written once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from chorde.clients._pages import PageManifest, make_pages, page_keys_from_flags
from chorde.errors import ChordeError

__all__ = [
    "LINE",
    "META",
    "META_NOOP",
    "STATS",
    "STATS_REQUEST",
    "VALUES",
    "VALUES_CAS",
    "VERSION_REQUEST",
    "BadReply",
    "CasValues",
    "ClientError",
    "ConnectionClosed",
    "Line",
    "Meta",
    "Replies",
    "Reply",
    "ReplyError",
    "ServerError",
    "Stats",
    "UnknownCommand",
    "Values",
    "Version",
    "check",
    "delete",
    "delete_noreply",
    "error_of",
    "get",
    "gets",
    "lines",
    "meta_delete",
    "meta_flags",
    "meta_get",
    "meta_set",
    "old_pages",
    "plan_pages",
    "probe",
    "probe_delete_many",
    "probe_set_many",
    "probed_flags",
    "store",
    "store_result",
    "touch",
    "value_block",
]

#: A ``get``/``gets`` reply: ``{key: value}`` / ``{key: (value, cas)}`` of the keys found;
#: an error line there raises.
VALUES = 0
VALUES_CAS = 1
#: A ``stats`` reply: ``{name: value}``, both bytes; an error line there raises.
STATS = 2
#: One reply line without its CRLF, as it is: :func:`check`, :func:`store_result` and
#: :func:`probed_flags` read it (a probe's answer may be ``ERROR`` from an old server).
LINE = 3
#: A meta command's reply: ``(code, value, flags)``, where ``code`` is its two letters
#: (``VA``, ``HD``, ``EN``, ``NF``, ``NS``, ``EX``, ``MN``), ``value`` the data block of a
#: ``VA`` (None otherwise) and ``flags`` the return flags as they came (``b"c12 t30 W"``,
#: see :func:`meta_flags`); an error line there raises.
META = 4

STATS_REQUEST = b"stats\r\n"
#: ``version``: one :data:`LINE` (``VERSION <version>``); what a probe asks, see :class:`Version`.
VERSION_REQUEST = b"version\r\n"
#: ``mn``: a server with meta commands answers ``MN`` (one :data:`LINE`), an older one ``ERROR``.
META_NOOP = b"mn\r\n"
#: The status codes of meta replies without a value (protocol.txt, "Meta Commands").
_META_CODES = frozenset((b"HD", b"EN", b"NF", b"NS", b"EX", b"MN"))

# VALUE <key> <flags> <bytes> [<cas unique>] (protocol.txt, "Retrieval command").
_VALUE = re.compile(rb"VALUE (\S+) \d+ (\d+)(?: (\d+))?\r\n")
# The value sizes of VALUE lines, parsed: int() of the text costs more than a dict lookup, and
# a batch of values tends to repeat a few sizes. Shared, bounded (cleared when full).
_SIZES: dict[bytes, int] = {}
_SIZES_MAX = 4096


# ---- errors ----------------------------------------------------------------------------


class ReplyError(ChordeError):
    """The server answered with an error, or with something that is not memcached's protocol.

    The connection is still usable after an error line; the transports close it after an
    unreadable reply. Either way the server is up: clients do not mark it down for these.
    """


class ServerError(ReplyError):
    """``SERVER_ERROR <message>``: the server could not do it (out of memory, too large...)."""


class ClientError(ReplyError):
    """``CLIENT_ERROR <message>``: the server rejected the request."""


class UnknownCommand(ReplyError):
    """``ERROR``: the server does not know the command."""


class BadReply(ReplyError):
    """A reply that is not what the protocol allows at that point."""


class ConnectionClosed(ConnectionError):
    """The server closed the connection before the reply was complete (an OSError)."""


def error_of(line: bytes) -> ReplyError:
    """The exception a reply line that is not an expected answer stands for."""
    if line.startswith(b"SERVER_ERROR"):
        return ServerError(line[13:].decode("ascii", "replace"))
    if line.startswith(b"CLIENT_ERROR"):
        return ClientError(line[13:].decode("ascii", "replace"))
    if line.startswith(b"ERROR"):
        return UnknownCommand(line.decode("ascii", "replace"))
    return BadReply(f"unexpected reply {line[:64]!r}")


def check(line: bytes) -> bytes:
    """``line``, unless it is an error line (``ERROR``, ``CLIENT_ERROR``, ``SERVER_ERROR``)."""
    if line.startswith((b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR")):
        raise error_of(line)
    return line


# ---- requests --------------------------------------------------------------------------


def get(keys: list[bytes]) -> bytes:
    """``get``: the values of ``keys`` (a reply for :data:`VALUES`)."""
    return b"get " + b" ".join(keys) + b"\r\n"


def gets(keys: list[bytes]) -> bytes:
    """``gets``: the values and cas uniques of ``keys`` (a reply for :data:`VALUES_CAS`)."""
    return b"gets " + b" ".join(keys) + b"\r\n"


def store(
    cmd: bytes,
    key: bytes,
    flags: int,
    exptime: int,
    value: Sequence[bytes | memoryview],
    cas: int | None = None,
) -> bytes:
    """A storage command (``set``/``add``/``cas``) with its data block, the concatenation of
    the ``value`` parts (one copy). Its reply is one :data:`LINE` for :func:`store_result`."""
    size = sum(map(len, value))
    if cas is None:
        head = b"%s %s %d %d %d\r\n" % (cmd, key, flags, exptime, size)
    else:
        head = b"%s %s %d %d %d %d\r\n" % (cmd, key, flags, exptime, size, cas)
    return b"".join((head, *value, b"\r\n"))


def store_result(line: bytes) -> bool | None:
    """A storage reply: True if stored, False if not (or the cas differs), None if a ``cas``
    found no item."""
    if line == b"STORED":
        return True
    if line == b"NOT_FOUND":
        return None
    if line in (b"NOT_STORED", b"EXISTS"):
        return False
    raise error_of(line)


def value_block(key: bytes, value: bytes) -> bytes:
    """How a ``get`` reply ends when ``key`` (asked for last) holds ``value`` with flags 0:
    its ``VALUE`` block, then ``END`` (for :attr:`Reply.expect`)."""
    return b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (key, len(value), value)


def delete(key: bytes) -> bytes:
    """``delete``: replies ``DELETED`` or ``NOT_FOUND``."""
    return b"delete " + key + b"\r\n"


def probe_delete_many(keys: Sequence[bytes]) -> bytes:
    """Pipelined requests: for each key, a :func:`probe` of its flags, then its ``delete``.

    The reply is two :data:`LINE` replies per key: the probe's, then the delete's.
    """
    return b"".join(b"mg %s f\r\ndelete %s\r\n" % (k, k) for k in keys)


def delete_noreply(keys: list[bytes]) -> bytes:
    """Pipelined ``delete``s that the server answers with nothing."""
    return b"".join(b"delete %s noreply\r\n" % k for k in keys)


def touch(key: bytes, exptime: int) -> bytes:
    """``touch``: replies ``TOUCHED`` or ``NOT_FOUND``."""
    return b"touch %s %d\r\n" % (key, exptime)


def probe(key: bytes) -> bytes:
    """A meta get of ``key``'s item flags only (memcached 1.6+; older servers say ERROR).

    Sent in front of a command on the same key, its reply (one :data:`LINE`, for
    :func:`probed_flags`) tells the flags the item had just before the command.
    """
    return b"mg " + key + b" f\r\n"


def probed_flags(line: bytes) -> int:
    """The flags in a :func:`probe` reply (``HD f<flags>``); 0 for a miss or no answer."""
    if line.startswith(b"HD "):
        for token in line.split()[1:]:
            if token.startswith(b"f"):
                return int(token[1:])
    return 0


def probe_set_many(items: dict[bytes, bytes], exptime: int, gen: bytes) -> bytes:
    """Pipelined requests: for each item, a :func:`probe` of its key, then its ``set``.

    Each value is stored behind the generation ``gen``, with flags 0 (not paged). The reply is
    two :data:`LINE` replies per item: the probe's, then the ``set``'s.
    """
    extra = len(gen)
    return b"".join(
        b"mg %s f\r\nset %s 0 %d %d\r\n%s%s\r\n" % (k, k, exptime, extra + len(v), gen, v)
        for k, v in items.items()
    )


# ---- meta commands ---------------------------------------------------------------------
#
# memcached 1.6+ (protocol.txt, "Meta Commands"). What the client uses them for:
#
# * ``mg <key> v c t f N<ttl>``: the value with its cas, remaining ttl and client flags; a
#   miss *vivifies* an empty item for ``ttl`` seconds and hands its reader a win token
#   (``W``), every later reader seeing ``Z`` (a token is out) until the item is replaced
#   (``ms``, ``set``) or expires. The first ``mg`` of an item marked stale (``X``) wins too.
# * ``md <key> I C<cas> T<ttl>``: mark an item stale (``X``) if its cas is still ``cas``,
#   clearing a token sent for it and giving it ``ttl`` more seconds: the next ``mg`` wins.
# * ``ms <key> <size> C<cas> T<ttl> F<flags>``: a store if the cas still matches (``HD``,
#   ``EX`` otherwise, ``NF`` when gone); it clears any token.
#
# Text ``get``/``gets`` neither take tokens nor show them: reads that need no lease stay on
# the text protocol, which every server speaks.


def meta_get(key: bytes, flags: bytes) -> bytes:
    """``mg <key> <flags>``: one :data:`META` reply."""
    return b"mg " + key + b" " + flags + b"\r\n"


def meta_set(key: bytes, value: Sequence[bytes | memoryview], flags: bytes) -> bytes:
    """``ms <key> <size> <flags>`` and its data block (the ``value`` parts joined): one
    :data:`META` reply (``HD`` stored, ``NS`` not stored, ``EX`` cas mismatch, ``NF`` gone)."""
    size = sum(map(len, value))
    return b"".join((b"ms %s %d %s\r\n" % (key, size, flags), *value, b"\r\n"))


def meta_delete(key: bytes, flags: bytes = b"") -> bytes:
    """``md <key> <flags>``: one :data:`META` reply (``HD``, ``NF`` gone, ``EX`` cas mismatch)."""
    return b"md " + key + (b" " + flags if flags else b"") + b"\r\n"


def meta_flags(flags: bytes) -> dict[bytes, bytes]:
    """The return flags of a meta reply: ``b"c12 t30 W"`` -> ``{b"c": b"12", b"t": b"30",
    b"W": b""}``."""
    return {token[:1]: token[1:] for token in flags.split()}


# ---- pages -----------------------------------------------------------------------------


def plan_pages(
    payload: bytes, page_size: int, owner: bytes, prefix: bytes
) -> tuple[PageManifest, list[tuple[bytes, memoryview]]]:
    """The manifest of ``payload`` cut into pages, and ``(page key, page)`` pairs to store.

    See :mod:`chorde.clients._pages`: pages are written before the manifest that names them.
    """
    manifest, pages = make_pages(payload, page_size, owner)
    return manifest, list(zip(manifest.page_keys(prefix), pages, strict=True))


def old_pages(prefix: bytes, owner: bytes, old_flags: int, new_flags: int) -> list[bytes]:
    """Page keys of the paged item (``old_flags``) that an item with ``new_flags`` replaced.

    Flags are those of :attr:`PageManifest.flags` (0 for an item that is not paged); pages
    shared by both (a rewrite under the same token) are kept.
    """
    if not old_flags or (new_flags and new_flags >> 16 == old_flags >> 16):
        return []
    return page_keys_from_flags(prefix, owner, old_flags)


# ---- replies ---------------------------------------------------------------------------


class Reply:
    """The parser of the replies to one request: fed the bytes as they arrive, in any pieces.

    A request gets one of :class:`Values`, :class:`CasValues`, :class:`Line`, :class:`Stats`
    (one reply of that kind) or :class:`Replies` (several, in order). :meth:`feed` returns
    True once all are parsed, and :attr:`result` holds the reply's value, or the list of them
    for :class:`Replies`. Until then :attr:`missing` tells how many more bytes are needed at
    least (a hint for the size of the next read). Bytes after the last reply are left in
    :attr:`rest` (a well-behaved server sends none).
    """

    # A reply object is made for every request: the one-reply kinds need no __init__, and
    # an instance holds only what its parsing changed.
    _kinds: tuple[int, ...] = ()
    #: Whether the request this parses the reply of may change data on the server (a
    #: storage or delete command): a transport that gives up waiting for such a reply keeps
    #: its socket until the server has answered (see :mod:`.transport`).
    writes = True
    _tail: list[bytes] | None = None
    _acc: Any = None
    _results: list[Any] | None = None
    _have = 0
    _need = 0
    missing = 0
    result: Any = None
    rest = b""
    #: ``(block, key, value)``: a :data:`VALUES` reply that ends with ``block`` (the
    #: ``VALUE`` block of ``key`` holding ``value``, then ``END``) is parsed up to there only,
    #: and ``key`` maps to that very ``value``: a value that rarely changes and comes with
    #: every reply (memcached's generation record) costs one ``endswith``. See
    #: :func:`value_block`.
    expect: tuple[bytes, bytes, bytes] | None = None

    def feed(self, data: bytes) -> bool:
        """Parse what ``data`` completes; True when every reply is in.

        An empty ``data`` (the connection closed) raises :class:`ConnectionClosed`; an error
        line where a value was expected, or anything unreadable, a :class:`ReplyError`.
        """
        if not data:
            raise ConnectionClosed("memcached closed the connection before its reply was complete")
        tail = self._tail
        if tail is not None:
            tail.append(data)
            self._have += len(data)
            if self._have < self._need:
                self.missing = self._need - self._have
                return False
            data = b"".join(tail)
            self._tail = None
        results = self._results
        kind = self._kinds[len(results) if results is not None else 0]
        pos = 0
        while True:
            if kind == LINE:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    return self._wait(data, pos, len(data) - pos + 1)
                value = data[pos:eol]
                pos = eol + 2
            elif kind <= VALUES_CAS:
                # VALUE <key> <flags> <bytes> [<cas unique>] blocks up to END
                # (protocol.txt, "Retrieval command"), gathered in self._acc.
                value = self._acc
                if value is None:
                    value = self._acc = {}
                match = _VALUE.match
                sizes = _SIZES
                expect = self.expect
                known = -1  # where the expected block starts, if the reply ends with it
                if expect is not None and not value and data.endswith(expect[0]):
                    known = len(data) - len(expect[0])
                    begin = pos
                while True:
                    if pos == known:
                        value[expect[1]] = expect[2]  # type: ignore[index]
                        pos = len(data)
                        break
                    header = match(data, pos)
                    if header is None:
                        eol = data.find(b"\r\n", pos)
                        if eol == pos + 3 and data.startswith(b"END", pos):
                            pos = eol + 2
                            break
                        if eol >= 0:
                            raise error_of(data[pos:eol])
                        return self._wait(data, pos, len(data) - pos + 1)
                    key, size_text, cas = header.groups()
                    size = sizes.get(size_text)
                    if size is None:
                        if len(sizes) >= _SIZES_MAX:
                            sizes.clear()
                        size = sizes[size_text] = int(size_text)
                    start = header.end()
                    end = start + size
                    if known >= 0 and end + 2 > known:
                        # Not the reply it looked like (a value ending like the block):
                        # parsed again from the start, as any other.
                        value.clear()
                        known = -1
                        pos = begin
                        continue
                    if len(data) < end + 2:
                        return self._wait(data, pos, end + 2 - pos)
                    # (data is bytes: slices are copies)
                    if kind == VALUES:
                        value[key] = data[start:end]
                    elif cas is not None:
                        value[key] = (data[start:end], int(cas))
                    else:
                        raise BadReply(f"no cas unique in {data[pos:start]!r}")
                    pos = end + 2
                self._acc = None
            elif kind == META:
                # VA <size> <flags>*\r\n<data>\r\n, or <code> <flags>*\r\n.
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    return self._wait(data, pos, len(data) - pos + 1)
                if data.startswith(b"VA ", pos):
                    gap = data.find(b" ", pos + 3, eol)
                    size_end = eol if gap < 0 else gap
                    try:
                        size = int(data[pos + 3 : size_end])
                    except ValueError:
                        raise BadReply(f"unexpected reply {data[pos:eol][:64]!r}") from None
                    end = eol + 2 + size
                    if len(data) < end + 2:
                        return self._wait(data, pos, end + 2 - pos)
                    flags = b"" if gap < 0 else data[gap + 1 : eol]
                    value = (b"VA", data[eol + 2 : end], flags)
                    pos = end + 2
                else:
                    code = data[pos : pos + 2]
                    if code not in _META_CODES or (eol - pos != 2 and data[pos + 2] != 32):  # b' '
                        raise error_of(data[pos:eol])
                    value = (code, None, data[pos + 3 : eol])
                    pos = eol + 2
            else:
                pos = self._stats(data, pos)
                if pos < 0:
                    return False
                value = self._acc
                self._acc = None
            if results is None:
                self.result = value
                break
            results.append(value)
            if len(results) == len(self._kinds):
                self.result = results
                break
            kind = self._kinds[len(results)]
        self.rest = data[pos:] if pos < len(data) else b""
        return True

    @property
    def pristine(self) -> bool:
        """True until some of the reply was parsed or kept: the server has sent nothing yet
        (as far as this parser knows)."""
        return self._tail is None and self._acc is None and not self._results

    def _wait(self, buf: bytes, pos: int, need: int) -> bool:
        """Keep ``buf[pos:]`` until it can grow to ``need`` bytes."""
        rest = buf[pos:]
        self._tail = [rest]
        self._have = len(rest)
        self._need = need
        self.missing = need - len(rest)
        return False

    def _stats(self, buf: bytes, pos: int) -> int:
        """Parse STAT lines into ``self._acc`` up to END: the position after it, or -1."""
        stats = self._acc
        if stats is None:
            stats = self._acc = {}
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                self._wait(buf, pos, len(buf) - pos + 1)
                return -1
            line = buf[pos:eol]
            pos = eol + 2
            if line == b"END":
                return pos
            fields = line.split(b" ", 2)
            if len(fields) != 3 or fields[0] != b"STAT":
                raise error_of(line)
            stats[fields[1]] = fields[2]


class Values(Reply):
    """The reply to a ``get``: ``{key: value}`` of the keys found."""

    _kinds = (VALUES,)
    writes = False


class CasValues(Reply):
    """The reply to a ``gets``: ``{key: (value, cas unique)}`` of the keys found."""

    _kinds = (VALUES_CAS,)
    writes = False


class Line(Reply):
    """A one-line reply, without its CRLF."""

    _kinds = (LINE,)


class Version(Line):
    """The reply to ``version``: its line (a request that writes nothing)."""

    writes = False


class Meta(Reply):
    """The reply to one meta command: ``(code, value, flags)`` (see :data:`META`)."""

    _kinds = (META,)


class Stats(Reply):
    """The reply to ``stats``: ``{name: value}``."""

    _kinds = (STATS,)
    writes = False


class Replies(Reply):
    """The replies to pipelined commands, of the given kinds in order: their list."""

    def __init__(self, *kinds: int) -> None:
        if not kinds:
            raise ValueError("Replies needs the kind of at least one reply")
        self._kinds = kinds
        self._results = []


_LINES: dict[int, tuple[int, ...]] = {}


def lines(count: int) -> Replies:
    """``count`` :data:`LINE` replies (pipelined commands with one-line replies)."""
    kinds = _LINES.get(count)
    if kinds is None:
        if count < 1:
            raise ValueError(f"lines needs a count of at least 1, got {count!r}")
        kinds = (LINE,) * count
        if len(_LINES) < 1024:  # the usual batch sizes, not every one
            _LINES[count] = kinds
    reply = Replies.__new__(Replies)
    reply._kinds = kinds
    reply._results = []
    return reply
