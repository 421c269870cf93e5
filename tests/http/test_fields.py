"""The HTTP field parsers behind every response cache (RFC 9110 / RFC 9111 syntax).

Strict where leniency could share a private page: a Cache-Control or Vary field that does
not parse whole is None (the policy then stores nothing), never read in part.
"""

from __future__ import annotations

import pytest

from chorde.http import fields
from tests.http.hostile import HOSTILE_CACHE_CONTROL


@pytest.mark.parametrize("value", HOSTILE_CACHE_CONTROL)
def test_malformed_cache_control_is_unparsable(value: str) -> None:
    assert fields.parse_cache_control([value]) is None


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # RFC 9111 section 5.2: directive names are case-insensitive, arguments may be
        # tokens or quoted strings.
        (["max-age=60"], {"max-age": "60"}),
        (["Public, MAX-AGE=5"], {"public": None, "max-age": "5"}),
        (["PRIVATE"], {"private": None}),
        (["no-cache", "s-maxage=7"], {"no-cache": None, "s-maxage": "7"}),
        (['max-age="60"'], {"max-age": "60"}),
        (
            ['no-cache="Set-Cookie, X-Foo", private'],
            {"no-cache": "Set-Cookie, X-Foo", "private": None},
        ),
        (['ext="a \\"q\\" b"'], {"ext": 'a "q" b'}),
        # RFC 9110 section 5.6.1: empty list elements are skipped, OWS around commas.
        ([" , ,max-age=3 ,\t, public"], {"max-age": "3", "public": None}),
        ([""], {}),
        (["max-age=60, no-cache"], {"max-age": "60", "no-cache": None}),
        (['community="UCI"'], {"community": "UCI"}),  # RFC 9111 section 5.2.3's example
    ],
)
def test_parse_cache_control(values: list[str], expected: dict) -> None:
    parsed = fields.parse_cache_control(values)
    assert parsed is not None
    assert dict(parsed) == expected


def test_conflicting_freshness_reads_as_stale() -> None:
    parsed = fields.parse_cache_control(["max-age=60", "max-age=0"])
    assert parsed is not None and parsed.seconds("max-age") == 0
    same = fields.parse_cache_control(["max-age=60, max-age=60"])
    assert same is not None and same.seconds("max-age") == 60
    invalid = fields.parse_cache_control(["max-age=soon"])
    assert invalid is not None and invalid.seconds("max-age") == 0
    assert invalid.seconds("s-maxage") is None


def test_an_oversized_field_is_unparsable() -> None:
    assert fields.parse_cache_control(["max-age=1, " + "x, " * 5000]) is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0), ("60", 60), ("-1", None), ("1.5", None), ("", None), (None, None), ("٣", None)],
)
def test_delta_seconds(text: str | None, seconds: int | None) -> None:
    assert fields.delta_seconds(text) == seconds


def test_delta_seconds_is_capped() -> None:
    assert fields.delta_seconds("9" * 40) == fields.MAX_DELTA_SECONDS


def test_http_date_formats() -> None:
    assert fields.http_date("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777.0
    assert fields.http_date("Sunday, 06-Nov-94 08:49:37 GMT") == 784111777.0
    assert fields.http_date("Sun Nov  6 08:49:37 1994") == 784111777.0
    assert fields.http_date("yesterday") is None
    assert fields.http_date(None) is None


def test_parse_vary() -> None:
    assert fields.parse_vary(["Accept-Language, accept-encoding", "Cookie"], 32) == (
        "accept-encoding",
        "accept-language",
        "cookie",
    )
    assert fields.parse_vary(["Accept, *"], 32) is None
    assert fields.parse_vary(["Accept Language"], 32) is None
    assert fields.parse_vary(["Accept;Language"], 32) is None
    assert fields.parse_vary([", accept ,"], 32) == ("accept",)
    many = ", ".join(f"x-{i}" for i in range(33))
    assert fields.parse_vary([many], 32) is None
    assert fields.parse_vary([many], 33) is not None
    hostile = ", ".join(f"x-field-{i}" for i in range(2000))
    assert fields.parse_vary([hostile], 32) is None


@pytest.mark.parametrize(
    ("values", "host"),
    [
        (["Example.COM"], "example.com"),
        (["example.com:8080"], "example.com:8080"),
        (["127.0.0.1:80"], "127.0.0.1:80"),
        (["[::1]:8000"], "[::1]:8000"),
        (["localhost"], "localhost"),
        (["a.example", "b.example"], None),  # two Host lines
        (["a.example,b.example"], None),  # two lines joined by the server
        (["a.example, b.example"], None),
        ([], None),
        ([""], None),
        (["evil.example/path"], None),
        (["user@evil.example"], None),
        (["exa mple.com"], None),
        (["example.com:port"], None),
    ],
)
def test_normalise_host(values: list[str], host: str | None) -> None:
    assert fields.normalise_host(values) == host


def test_host_name_drops_the_port() -> None:
    assert fields.host_name("example.com:80") == "example.com"
    assert fields.host_name("[::1]:80") == "[::1]"
    assert fields.host_name("[::1]") == "[::1]"


def test_normalise_query_sorts_by_name_and_keeps_bytes() -> None:
    assert fields.normalise_query("b=2&a=1&&a=0&c") == "a=1&a=0&b=2&c"
    assert fields.normalise_query("q=%3Cx%3E") != fields.normalise_query("q=<x>")
    assert fields.normalise_query("") == ""


@pytest.mark.parametrize(
    ("condition", "etag", "matches"),
    [
        ('"a"', '"a"', True),
        ('W/"a"', '"a"', True),
        ('"a"', 'W/"a"', True),
        ('"x", "y" ,W/"a"', '"a"', True),
        ("*", '"anything"', True),
        ('"b"', '"a"', False),
        ("a", '"a"', False),
        ('"a', '"a"', False),
        (None, '"a"', False),
        ('"a"', None, False),
    ],
)
def test_if_none_match(condition: str | None, etag: str | None, matches: bool) -> None:
    assert fields.if_none_match_matches(condition, etag) is matches


def test_strong_etag_depends_on_the_body_only() -> None:
    assert fields.strong_etag(b"x") == fields.strong_etag(b"x")
    assert fields.strong_etag(b"x") != fields.strong_etag(b"y")
    assert fields.strong_etag(b"").startswith('"')
