"""The HTTP field parsers behind the cache middleware (RFC 9110 / RFC 9111 syntax)."""

from __future__ import annotations

import email.utils

import pytest

from chorde_starlette import _http


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([b"max-age=60"], {"max-age": "60"}),
        ([b"Public, MAX-AGE=5"], {"public": None, "max-age": "5"}),
        ([b"no-cache", b"s-maxage=7"], {"no-cache": None, "s-maxage": "7"}),
        (
            [b'no-cache="Set-Cookie, X-Foo", private'],
            {"no-cache": "Set-Cookie, X-Foo", "private": None},
        ),
        ([b'ext="a \\"q\\" b"'], {"ext": 'a "q" b'}),
        ([b"max-age=1, max-age=100"], {"max-age": "1"}),
        ([b" , ,max-age = 3 ,"], {"max-age": "3"}),
        ([b"@@@, no-store"], {"no-store": None}),
        ([b""], {}),
    ],
)
def test_parse_cache_control(values: list[bytes], expected: dict) -> None:
    assert _http.parse_cache_control(values) == expected


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0), ("60", 60), ("-1", None), ("1.5", None), ("", None), (None, None), ("٣", None)],
)
def test_delta_seconds(text: str | None, seconds: int | None) -> None:
    assert _http.delta_seconds(text) == seconds


def test_delta_seconds_is_capped() -> None:
    assert _http.delta_seconds("9" * 40) == _http.MAX_DELTA_SECONDS


def _date(ts: float) -> bytes:
    return email.utils.formatdate(ts, usegmt=True).encode()


@pytest.mark.parametrize(
    ("cc", "headers", "lifetime"),
    [
        ({"s-maxage": "5", "max-age": "50"}, [], 5.0),
        ({"max-age": "50"}, [(b"expires", _date(2_000_000_000))], 50.0),
        ({"max-age": "x"}, [], 0.0),
        ({}, [(b"expires", _date(1_000_000_100)), (b"date", _date(1_000_000_000))], 100.0),
        ({}, [(b"expires", _date(1_000_000_100))], 100.0),  # no Date: from now
        ({}, [(b"expires", b"0")], 0.0),
        ({}, [(b"expires", _date(1)), (b"expires", _date(2))], 0.0),
        ({}, [(b"expires", _date(900_000_000))], 0.0),
        ({}, [], None),
        ({"public": None}, [], None),
    ],
)
def test_freshness_lifetime(cc: dict, headers: list, lifetime: float | None) -> None:
    assert _http.freshness_lifetime(cc, headers, 1_000_000_000.0) == lifetime


def test_http_date_formats() -> None:
    assert _http.http_date(b"Sun, 06 Nov 1994 08:49:37 GMT") == 784111777.0
    assert _http.http_date(b"Sunday, 06-Nov-94 08:49:37 GMT") == 784111777.0
    assert _http.http_date(b"Sun Nov  6 08:49:37 1994") == 784111777.0
    assert _http.http_date(b"yesterday") is None
    assert _http.http_date(None) is None


def test_vary_names_and_values() -> None:
    headers = [(b"vary", b"Accept-Language, accept-encoding"), (b"vary", b"Cookie")]
    assert _http.vary_names(headers) == ("accept-encoding", "accept-language", "cookie")
    assert _http.vary_names([(b"vary", b"Accept, *")]) is None
    assert _http.vary_names([]) == ()
    request = [(b"accept-language", b"en,  fr"), (b"accept-language", b"de"), (b"cookie", b"")]
    values = _http.vary_values(request, ("accept-encoding", "accept-language", "cookie"))
    assert values == (None, "en,fr,de", "")


@pytest.mark.parametrize(
    ("condition", "etag", "matches"),
    [
        (b'"a"', b'"a"', True),
        (b'W/"a"', b'"a"', True),
        (b'"a"', b'W/"a"', True),
        (b'"x", "y" ,W/"a"', b'"a"', True),
        (b"*", b'"anything"', True),
        (b'"b"', b'"a"', False),
        (b"a", b'"a"', False),
        (b'"a', b'"a"', False),
        (None, b'"a"', False),
        (b'"a"', None, False),
    ],
)
def test_if_none_match(condition: bytes | None, etag: bytes | None, matches: bool) -> None:
    assert _http.if_none_match_matches(condition, etag) is matches


def test_strong_etag_depends_on_the_body_only() -> None:
    assert _http.strong_etag(b"x") == _http.strong_etag(b"x")
    assert _http.strong_etag(b"x") != _http.strong_etag(b"y")
    assert _http.strong_etag(b"").startswith(b'"') and not _http.strong_etag(b"").startswith(b"W/")
