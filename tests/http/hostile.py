"""Hostile HTTP field values the response-cache tests replay."""

from __future__ import annotations

# Cache-Control values that plainly say private/no-store/no-cache but do not follow the
# list syntax of RFC 9110 section 5.6.1: a lenient parser shares most of them.
HOSTILE_CACHE_CONTROL = [
    "private;max-age=60",
    '"private"',
    "max-age=60 private",
    "private max-age=60",
    "max-age=60\tprivate",
    "max-age=60;private",
    "no-store;max-age=60",
    "s-maxage=60 no-store",
    "max-age=60 no-cache",
    "no-cache max-age=60",
    'foo="bar, private',
    'max-age=60, foo="unclosed, private',
    "max-age = 60, private",
    "max-age=60,private=",
    "private\x00",
    "max-age=60, pri vate",
    "public, max-age=60, (private)",
    "max-age=60\r\n private",
    "=private",
    "max-age=60,, , ;",
]
