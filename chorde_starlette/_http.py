"""HTTP field parsing the cache middleware needs (RFC 9110, RFC 9111), on raw ASGI headers.

Everything here works on ``bytes`` header values as ASGI delivers them and never raises on
malformed input: a field the cache cannot understand makes it behave conservatively
(not store, not serve), as RFC 9111 asks of a cache facing invalid values.
"""

from __future__ import annotations

import datetime
import email.utils
import hashlib
import re
from collections.abc import Iterable, Sequence

__all__: list[str] = []  # internal module

Headers = Sequence[tuple[bytes, bytes]]

#: RFC 9111 section 1.2.2: delta-seconds too big to represent are taken as 2**31.
MAX_DELTA_SECONDS = 2**31

# One Cache-Control directive: a token, optionally "=" and a token or a quoted-string.
_DIRECTIVE = re.compile(
    r"""\s*([!#$%&'*+\-.^_`|~0-9A-Za-z]+)      # name
        (?:\s*=\s*(?:"((?:[^"\\]|\\.)*)"        # quoted value
                   |([^\s,;"]*)))?              # token value
        \s*(?:,|$)""",
    re.VERBOSE,
)
_QUOTED_PAIR = re.compile(r"\\(.)")
# One entity-tag of an If-None-Match list (RFC 9110 section 8.8.3), weak or strong.
_ENTITY_TAG = re.compile(rb'\s*(W/)?("[^"]*")\s*(?:,|$)')


def header_values(headers: Headers, name: bytes) -> list[bytes]:
    """Every value of the (lower-case) field ``name``, in order."""
    return [v for k, v in headers if k.lower() == name]


def joined(headers: Headers, name: bytes) -> bytes | None:
    """The field's values joined with ``", "`` (RFC 9110 section 5.3), None when absent."""
    values = header_values(headers, name)
    return b", ".join(v.strip() for v in values) if values else None


def parse_cache_control(values: Iterable[bytes]) -> dict[str, str | None]:
    """Parse Cache-Control field values into ``{directive (lower-case): argument or None}``.

    Directive names are case-insensitive (RFC 9111 section 5.2). A directive repeated with
    different arguments is kept with its first argument; the consumers treat conflicting
    freshness directives conservatively themselves. Unparsable text is skipped.
    """
    result: dict[str, str | None] = {}
    for raw in values:
        text = raw.decode("latin-1")
        pos = 0
        while pos < len(text):
            m = _DIRECTIVE.match(text, pos)
            if m is None or m.end() == pos:
                # Skip to the next comma: one bad directive must not hide the others.
                comma = text.find(",", pos)
                if comma < 0:
                    break
                pos = comma + 1
                continue
            pos = m.end()
            name = m.group(1).lower()
            if m.group(2) is not None:
                value: str | None = _QUOTED_PAIR.sub(r"\1", m.group(2))
            else:
                value = m.group(3) or None
            result.setdefault(name, value)
    return result


def delta_seconds(value: str | None) -> int | None:
    """A delta-seconds argument (RFC 9111 section 1.2.2), None when missing or invalid."""
    if value is None or not value.isascii() or not value.isdigit():
        return None
    return min(int(value), MAX_DELTA_SECONDS)


def http_date(value: bytes | None) -> float | None:
    """A timestamp from an HTTP-date (RFC 9110 section 5.6.7), None when invalid."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value.decode("latin-1"))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:  # an asctime-style date: RFC 9110 says it is UTC anyway
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


def freshness_lifetime(cc: dict[str, str | None], headers: Headers, now: float) -> float | None:
    """The explicit freshness lifetime for a shared cache (RFC 9111 section 4.2.1).

    ``s-maxage`` wins over ``max-age``, which wins over ``Expires`` minus ``Date``. None
    when the response gives none (the cache then uses its own, heuristic, ttl); 0 when the
    response is already stale (an invalid Expires counts as "in the past", section 5.3).
    """
    for directive in ("s-maxage", "max-age"):
        if directive in cc:
            seconds = delta_seconds(cc[directive])
            # An invalid argument makes the response stale (section 1.2.2 / 4.2.1).
            return 0.0 if seconds is None else float(seconds)
    expires_values = header_values(headers, b"expires")
    if not expires_values:
        return None
    if len(expires_values) > 1:
        return 0.0
    expires = http_date(expires_values[0])
    if expires is None:
        return 0.0
    date = http_date(joined(headers, b"date"))
    return max(0.0, expires - (date if date is not None else now))


def vary_names(headers: Headers) -> tuple[str, ...] | None:
    """The request fields a response varies on, sorted and lower-case; None for ``Vary: *``."""
    names: set[str] = set()
    for value in header_values(headers, b"vary"):
        for part in value.decode("latin-1").split(","):
            name = part.strip().lower()
            if name == "*":
                return None
            if name:
                names.add(name)
    return tuple(sorted(names))


def vary_values(request_headers: Headers, names: Sequence[str]) -> tuple[str | None, ...]:
    """The request's values of the ``names`` fields, normalised (RFC 9111 section 4.1).

    Multiple field lines are combined, whitespace around list members is dropped, and an
    absent field (None) differs from an empty one ("").
    """
    out: list[str | None] = []
    for name in names:
        value = joined(request_headers, name.encode("latin-1"))
        if value is None:
            out.append(None)
        else:
            members = (p.strip() for p in value.decode("latin-1").split(","))
            out.append(",".join(members))
    return tuple(out)


def strong_etag(body: bytes) -> bytes:
    """A strong entity-tag derived from the body bytes (RFC 9110 section 8.8.3)."""
    return b'"' + hashlib.blake2b(body, digest_size=16).hexdigest().encode() + b'"'


def if_none_match_matches(condition: bytes | None, etag: bytes | None) -> bool:
    """True when an If-None-Match condition matches ``etag`` (RFC 9110 section 13.1.2).

    If-None-Match uses the weak comparison: ``W/`` prefixes are ignored on both sides.
    """
    if condition is None or etag is None:
        return False
    if condition.strip() == b"*":
        return True
    opaque = etag[2:] if etag.startswith(b"W/") else etag
    pos = 0
    while pos < len(condition):
        m = _ENTITY_TAG.match(condition, pos)
        if m is None or m.end() == pos:
            return False
        if m.group(2) == opaque:
            return True
        pos = m.end()
    return False
