"""Parsing the HTTP fields a response cache decides with (RFC 9110, RFC 9111).

Every parser here is strict where leniency could share a private response: a field it
cannot parse whole is reported as unparsable (None), never half-read, and the policy then
declines to store. Field values are ``str`` as frameworks hand them over (latin-1 decoded
bytes, RFC 9110 section 5.5). Nothing here raises on malformed input.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Literal

__all__ = [
    "EMPTY_CACHE_CONTROL",
    "MAX_DELTA_SECONDS",
    "CacheControl",
    "byte_range",
    "delta_seconds",
    "host_name",
    "http_date",
    "if_none_match_matches",
    "normalise_host",
    "normalise_query",
    "parse_cache_control",
    "parse_vary",
    "strong_etag",
]

#: RFC 9111 section 1.2.2: a delta-seconds too big to represent is taken as 2**31.
MAX_DELTA_SECONDS = 2**31
#: A Cache-Control or Vary field longer than this (all lines together) is not parsed.
MAX_FIELD_CHARS = 8192

# RFC 9110 section 5.6.2 (token) and 5.6.4 (quoted-string, with obs-text).
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
# One cache-directive (RFC 9111 section 5.2): token [ "=" ( token / quoted-string ) ].
_DIRECTIVE = re.compile(rf"({_TOKEN})(?:=({_TOKEN}|{_QUOTED}))?")
_FIELD_NAME = re.compile(rf"{_TOKEN}|\*")
# What may follow an element: OWS, then a comma or the end (RFC 9110 section 5.6.1).
_AFTER_ELEMENT = re.compile(r"[ \t]*(,|$)")
_LIST_GAP = re.compile(r"[ \t,]*")  # OWS and empty list elements, which recipients skip
_QUOTED_PAIR = re.compile(r"\\(.)")
# Host (RFC 9110 section 7.2), restricted to what a DNS name or an IP address can be: a
# comma (two Host lines joined), a space or anything stranger means "do not cache".
_HOST = re.compile(r"(?:[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?\.?|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?")
# One entity-tag of an If-None-Match list (RFC 9110 section 8.8.3), weak or strong.
_ENTITY_TAG = re.compile(r'[ \t]*(W/)?("[^"]*")[ \t]*(?:,|$)')


def _list_elements(text: str, element: re.Pattern[str]) -> list[re.Match[str]] | None:
    """The elements of a comma-separated list (RFC 9110 section 5.6.1), None if malformed."""
    found: list[re.Match[str]] = []
    pos = _skip_gap(text, 0)
    end = len(text)
    while pos < end:
        m = element.match(text, pos)
        if m is None:
            return None
        found.append(m)
        after = _AFTER_ELEMENT.match(text, m.end())
        if after is None:
            return None
        pos = _skip_gap(text, after.end())
    return found


def _skip_gap(text: str, pos: int) -> int:
    gap = _LIST_GAP.match(text, pos)
    return pos if gap is None else gap.end()


def _joined(values: Iterable[str]) -> str | None:
    """Field lines combined (RFC 9110 section 5.3), None when too long to parse."""
    text = ", ".join(values)
    return text if len(text) <= MAX_FIELD_CHARS else None


class CacheControl(Mapping[str, str | None]):
    """Parsed Cache-Control directives: lower-case name -> first argument (or None).

    A directive given twice with different arguments is *conflicting*:
    :meth:`seconds` then answers 0, the conservative reading RFC 9111 section 4.2.1 allows.
    """

    __slots__ = ("_args", "_conflicts")

    def __init__(self, args: dict[str, str | None], conflicts: frozenset[str]) -> None:
        self._args = args
        self._conflicts = conflicts

    def __getitem__(self, name: str) -> str | None:
        return self._args[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._args)

    def __len__(self) -> int:
        return len(self._args)

    def __contains__(self, name: object) -> bool:
        return name in self._args

    def seconds(self, name: str) -> int | None:
        """A delta-seconds argument: None when absent, 0 when invalid or conflicting."""
        if name not in self._args:
            return None
        if name in self._conflicts:
            return 0
        seconds = delta_seconds(self._args[name])
        return 0 if seconds is None else seconds

    def __repr__(self) -> str:
        return f"CacheControl({self._args!r})"


#: The value of an absent Cache-Control field.
EMPTY_CACHE_CONTROL = CacheControl({}, frozenset())


def parse_cache_control(values: Iterable[str]) -> CacheControl | None:
    """Parse the lines of a Cache-Control field; None when any part cannot be parsed.

    Directive names are case-insensitive (RFC 9111 section 5.2); arguments may be tokens or
    quoted strings (both forms are accepted for every directive, section 5.2). Forms such
    as ``private;max-age=60``, ``"private"``, ``max-age=60 private`` or an unclosed quote
    make the whole field unparsable: a cache cannot tell what they forbid, so it stores
    nothing (section 4.2.1 and 5.2). Unknown directives that parse are ignored.
    """
    text = _joined(values)
    if text is None:
        return None
    elements = _list_elements(text, _DIRECTIVE)
    if elements is None:
        return None
    args: dict[str, str | None] = {}
    conflicts: set[str] = set()
    for m in elements:
        name = m.group(1).lower()
        raw = m.group(2)
        value = _QUOTED_PAIR.sub(r"\1", raw[1:-1]) if raw and raw[0] == '"' else raw
        if name in args:
            if args[name] != value:
                conflicts.add(name)
        else:
            args[name] = value
    return CacheControl(args, frozenset(conflicts))


def parse_vary(values: Iterable[str], limit: int) -> tuple[str, ...] | None:
    """The sorted, lower-case field names of a Vary field (RFC 9110 section 12.5.5).

    None means "do not store": ``Vary: *``, an unparsable field, or more than ``limit``
    distinct names (each one costs work on every request for the resource).
    """
    text = _joined(values)
    if text is None:
        return None
    elements = _list_elements(text, _FIELD_NAME)
    if elements is None:
        return None
    names: set[str] = set()
    for m in elements:
        name = m.group(0).lower()
        if name == "*":
            return None
        names.add(name)
        if len(names) > limit:
            return None
    return tuple(sorted(names))


def delta_seconds(value: str | None) -> int | None:
    """A delta-seconds argument (RFC 9111 section 1.2.2), None when missing or invalid."""
    if value is None or not value.isascii() or not value.isdigit():
        return None
    return min(int(value), MAX_DELTA_SECONDS)


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH = "(" + "|".join(_MONTHS) + ")"
_TIME = r"(\d\d):(\d\d):(\d\d)"
# RFC 9110 section 5.6.7: IMF-fixdate, and the two obsolete forms recipients must accept.
_IMF_FIXDATE = re.compile(
    rf"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d\d) {_MONTH} (\d{{4}}) {_TIME} GMT"
)
_RFC850_DATE = re.compile(
    rf"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), (\d\d)-{_MONTH}-(\d\d) "
    rf"{_TIME} GMT"
)
_ASCTIME_DATE = re.compile(
    rf"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) {_MONTH} ( \d|\d\d) {_TIME} (\d{{4}})"
)


def http_date(value: str | None, now: float | None = None) -> float | None:
    """A timestamp from an HTTP-date (RFC 9110 section 5.6.7), None when invalid.

    Only the three forms RFC 9110 defines are dates: ``Sun, 06 Nov 1994 08:49:37 GMT``,
    ``Sunday, 06-Nov-94 08:49:37 GMT`` and ``Sun Nov  6 08:49:37 1994``. A two-digit year
    more than 50 years ahead of ``now`` is in the past century (as the RFC says).
    """
    if not value:
        return None
    text = value.strip()
    if m := _IMF_FIXDATE.fullmatch(text):
        day, month, year, hh, mm, ss = m.groups()
    elif m := _RFC850_DATE.fullmatch(text):
        day, month, short_year, hh, mm, ss = m.groups()
        this_year = datetime.datetime.fromtimestamp(
            time.time() if now is None else now, datetime.UTC
        ).year
        year = str(this_year - this_year % 100 + int(short_year))
        if int(year) > this_year + 50:
            year = str(int(year) - 100)
    elif m := _ASCTIME_DATE.fullmatch(text):
        month, day, hh, mm, ss, year = m.groups()
    else:
        return None
    try:
        when = datetime.datetime(
            int(year),
            _MONTHS.index(month) + 1,
            int(day),
            int(hh),
            int(mm),
            min(int(ss), 59),  # a leap second
            tzinfo=datetime.UTC,
        )
    except ValueError:
        return None
    return when.timestamp()


def normalise_host(values: Sequence[str]) -> str | None:
    """The request's one Host, lower-case, or None when it is absent, repeated or odd.

    Two Host lines (which some servers pass through, others join with a comma) are
    rejected: the application may render from one while a cache keys on the other.
    """
    return _host(values[0]) if len(values) == 1 else None


@functools.lru_cache(maxsize=256)  # a site has few: each is checked once, not per request
def _host(value: str) -> str | None:
    host = value.strip().lower()
    return host if _HOST.fullmatch(host) else None


def host_name(host: str) -> str:
    """``host`` without its port (``[::1]:80`` -> ``[::1]``)."""
    if host.endswith("]"):
        return host
    return host.rpartition(":")[0] if ":" in host else host


def normalise_query(query: str) -> str:
    """A raw query string with its parameters in a stable order, byte for byte otherwise.

    Parameters are sorted by name (repeated names keep their order, which applications
    read), empty parameters are dropped, and nothing is decoded: two spellings of one
    value stay two keys, so a page rendered from the raw query is never served for
    another.
    """
    if not query:
        return ""
    params = [p for p in query.split("&") if p]
    if len(params) > 1:
        params.sort(key=lambda p: p.partition("=")[0])
    return "&".join(params)


_BYTE_RANGE = re.compile(r"bytes=[ \t]*(\d*)[ \t]*-[ \t]*(\d*)[ \t]*")


def byte_range(value: str, length: int) -> tuple[int, int] | Literal[False] | None:
    """The single byte range a ``Range`` field asks of a ``length``-byte body (RFC 9110
    section 14.1.2): ``(first, last)`` inclusive; False when it cannot be satisfied (416);
    None when the field is not one byte range (the whole body is then sent)."""
    m = _BYTE_RANGE.fullmatch(value.strip())
    if m is None:
        return None
    first_text, last_text = m.groups()
    if not first_text:
        if not last_text:
            return None
        suffix = int(last_text)  # the last N bytes
        if suffix == 0:
            return False
        return max(0, length - suffix), length - 1
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None  # invalid: ignored
    if first >= length:
        return False
    last = int(last_text) if last_text else length - 1
    return first, min(last, length - 1)


def strong_etag(body: bytes) -> str:
    """A strong entity-tag derived from the body bytes (RFC 9110 section 8.8.3)."""
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def if_none_match_matches(condition: str | None, etag: str | None) -> bool:
    """True when an If-None-Match condition matches ``etag`` (RFC 9110 section 13.1.2).

    If-None-Match uses the weak comparison: ``W/`` prefixes are ignored on both sides.
    """
    if condition is None or etag is None:
        return False
    if condition.strip() == "*":
        return True
    opaque = etag[2:] if etag.startswith("W/") else etag
    pos = 0
    while pos < len(condition):
        m = _ENTITY_TAG.match(condition, pos)
        if m is None or m.end() == pos:
            return False
        if m.group(2) == opaque:
            return True
        pos = m.end()
    return False
