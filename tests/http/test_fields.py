"""The HTTP field parsers behind every response cache (RFC 9110 / RFC 9111 syntax).

Strict where leniency could share a private page: a Cache-Control or Vary field that does
not parse whole is None (the policy then stores nothing), never read in part.
"""

from __future__ import annotations

from typing import Any

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


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 8:49:37 GMT",  # one-digit hour
        "Sun, 06 Nov 94 08:49:37 GMT",  # two-digit year in the IMF form
        "Sun, 06 Nov 1994 08:49:37 AEST",
        "Sun, 06-Nov-1994 08:49:37 GMT",
        "Sun, 31 Feb 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 25:49:37 GMT",
        "06 Nov 1994 08:49:37 GMT",
        "0",
        "-1",
    ],
)
def test_http_date_refuses_other_forms(value: str) -> None:
    assert fields.http_date(value) is None


def test_two_digit_years_are_at_most_50_years_ahead() -> None:
    now = fields.http_date("Fri, 04 Dec 2026 12:00:00 GMT")
    assert fields.http_date("Sunday, 06-Nov-94 08:49:37 GMT", now) == 784111777.0
    assert fields.http_date("Sunday, 06-Nov-70 08:49:37 GMT", now) == fields.http_date(
        "Sun, 06 Nov 2070 08:49:37 GMT"
    )


@pytest.mark.parametrize(
    ("value", "span"),
    [
        ("bytes=0-4", (0, 4)),
        ("bytes=5-", (5, 9)),
        ("bytes=-3", (7, 9)),
        ("bytes=-30", (0, 9)),
        ("bytes=2-100", (2, 9)),
        ("bytes = 1-2", None),  # not the syntax
        ("bytes=3-1", None),  # invalid: the whole body
        ("bytes=0-1,3-4", None),  # several ranges: the whole body
        ("items=0-4", None),
        ("bytes=10-20", False),  # unsatisfiable: 416
        ("bytes=99-", False),
        ("bytes=-0", False),
    ],
)
def test_byte_range(value: str, span: Any) -> None:
    assert fields.byte_range(value, 10) == span
