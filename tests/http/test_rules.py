"""chorde.http's decisions, pure: what is stored, for how long, and what may be served."""

from __future__ import annotations

import email.utils
from typing import Any

import pytest

from chorde.http import CacheRequest, Route, Rules
from chorde.http.answers import reply
from chorde.http.entry import StoredResponse

NOW = 1_800_000_000.0


def _date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


def request(
    rules: Rules | None = None,
    fields: list[tuple[str, str]] | None = None,
    route: Route | None = None,
    method: str = "GET",
    hosts: list[str] | None = None,
    query: str = "",
) -> CacheRequest:
    return (rules or Rules()).request(
        method=method,
        scheme="https",
        hosts=["site.example"] if hosts is None else hosts,
        path="/p",
        query=query,
        headers=fields or [],
        route=route or Route(),
    )


def decide(response: list[tuple[str, str]], *, status: int = 200, ttl: float = 60, **kw: Any):
    rules = kw.pop("rules", None) or Rules()
    req = request(rules, **kw)
    return rules.decide(req, status, response, now=NOW, ttl=ttl)


def lifetime(response: list[tuple[str, str]], **kw: Any) -> float | None:
    decision = decide(response, **kw)
    return decision.lifetime if decision.storable else None


# ---- freshness (RFC 9111 section 4.2.1) ---------------------------------------------------


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ([], 60.0),  # no freshness information: the route's ttl
        ([("Cache-Control", "max-age=10")], 10.0),
        ([("Cache-Control", "max-age=3600")], 60.0),  # the route's ttl is the ceiling
        ([("Cache-Control", "s-maxage=5, max-age=50")], 5.0),  # a shared cache takes s-maxage
        ([("Cache-Control", "max-age=0")], None),
        ([("Cache-Control", "max-age=soon")], None),  # invalid: stale
        ([("Cache-Control", "max-age=10"), ("Cache-Control", "max-age=20")], None),
        ([("Expires", _date(NOW + 30)), ("Date", _date(NOW))], 30.0),
        ([("Expires", _date(NOW + 30))], 30.0),  # no Date: from now
        ([("Expires", _date(NOW + 30)), ("Date", _date(NOW - 20))], 50.0),
        ([("Expires", "0")], None),  # invalid Expires: already expired (section 5.3)
        ([("Expires", "Thu, 1 Jan 2099 00:00:00 AEST")], None),
        ([("Expires", _date(NOW + 30)), ("Expires", _date(NOW + 40))], None),
        ([("Expires", _date(NOW + 30)), ("Cache-Control", "max-age=20")], 20.0),
        ([("Age", "50"), ("Cache-Control", "max-age=60")], 60.0),  # ... dated 50 s ago
        ([("Age", "61"), ("Cache-Control", "max-age=3600")], None),  # older than the ttl
        ([("Age", "7200, 0")], None),  # unparsable Age: not stored (section 5.1)
        ([("Age", "5"), ("Age", "6")], 60.0),  # the first Age line counts
    ],
)
def test_lifetime(response: list[tuple[str, str]], expected: float | None) -> None:
    assert lifetime(response) == expected


def test_initial_age_dates_the_entry_back() -> None:
    decision = decide([("Age", "50"), ("Cache-Control", "max-age=60")])
    assert decision.stored_at == NOW - 50


def test_corrected_initial_age_rfc_9111_4_2_3() -> None:
    rules = Rules()
    req = request(rules)
    fields = [("Cache-Control", "max-age=60"), ("Age", "10")]
    # The request took 3 s: Age plus the delay.
    d = rules.decide(req, 200, fields, now=NOW, ttl=600, requested_at=NOW - 3)
    assert d.stored_at == NOW - 13
    # Date says the response is 20 s old: the apparent age wins when larger.
    dated = [*fields, ("Date", _date(NOW - 20))]
    d = rules.decide(req, 200, dated, now=NOW, ttl=600, requested_at=NOW - 3)
    assert d.stored_at == NOW - 20
    # A Date in the future makes no negative age.
    ahead = [("Cache-Control", "max-age=60"), ("Date", _date(NOW + 100))]
    assert rules.decide(req, 200, ahead, now=NOW, ttl=600).stored_at == NOW


def test_strict_mode_stores_only_the_freshness_granted() -> None:
    strict = Rules(strict=True)
    assert lifetime([], rules=strict) is None  # nothing granted: not stored
    assert lifetime([("Cache-Control", "max-age=7200")], rules=strict, ttl=60) == 7200.0
    assert lifetime([("Cache-Control", "s-maxage=5, max-age=50")], rules=strict) == 5.0
    # Heuristic freshness (section 4.2.2): 10% of the time since Last-Modified, capped.
    modified = [("Last-Modified", _date(NOW - 1000)), ("Date", _date(NOW))]
    assert lifetime(modified, rules=strict) == 100.0
    old = [("Last-Modified", _date(NOW - 10**8))]
    assert lifetime(old, rules=strict) == 86400.0
    assert lifetime([("Last-Modified", "yesterday")], rules=strict) is None
    # Any final status with explicit freshness; heuristics only for the default ones.
    assert lifetime([("Cache-Control", "max-age=60")], rules=strict, status=201) == 60.0
    assert lifetime(modified, rules=strict, status=201) is None
    assert lifetime([("Cache-Control", "max-age=60")], rules=strict, status=206) is None


def test_targeted_fields_replace_cache_control_rfc_9213() -> None:
    strict = Rules(strict=True)
    both = [("Cache-Control", "max-age=600"), ("CDN-Cache-Control", "max-age=30")]
    assert lifetime(both, rules=strict) == 30.0
    assert lifetime(both) == 60.0  # application mode targets no field by default
    for cdn in ("no-store", "private", "no-cache", "max-age=0", "max-age=60;private"):
        fields = [("Cache-Control", "public, max-age=600"), ("CDN-Cache-Control", cdn)]
        assert lifetime(fields, rules=strict) is None, cdn
    mine = Rules(targeted=["Acme-Cache-Control", "CDN-Cache-Control"])
    fields = [*both, ("Acme-Cache-Control", "max-age=10")]
    assert lifetime(fields, rules=mine) == 10.0


def test_stale_extensions_rfc_5861() -> None:
    d = decide([("Cache-Control", "max-age=10, stale-while-revalidate=30, stale-if-error=600")])
    assert (d.stale_while_revalidate, d.stale_if_error) == (30.0, 600.0)
    d = decide([("Cache-Control", "max-age=10, stale-while-revalidate=30, must-revalidate")])
    assert (d.stale_while_revalidate, d.stale_if_error) == (0.0, 0.0)
    defaults = Rules(stale_while_revalidate=5, stale_if_error=60)
    d = decide([("Cache-Control", "max-age=10")], rules=defaults)
    assert (d.stale_while_revalidate, d.stale_if_error) == (5.0, 60.0)


def test_per_user_routes_read_freshness_as_a_private_cache() -> None:
    route = Route(per_user=True)
    assert lifetime([("Cache-Control", "s-maxage=5, max-age=50")], route=route) == 50.0
    assert lifetime([("Cache-Control", "private, max-age=50")], route=route) == 50.0
    assert lifetime([("Cache-Control", "private, max-age=50")]) is None


# ---- what is not stored ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "status", "reason"),
    [
        ([("Set-Cookie", "a=1")], 200, "cookie"),
        ([("Cache-Control", "no-store")], 200, "no-store"),
        ([("Cache-Control", "No-Cache")], 200, "no-cache"),
        ([("Cache-Control", "private")], 200, "private"),
        ([("Cache-Control", "private;max-age=60")], 200, "cannot be parsed"),
        ([("Vary", "*")], 200, "Vary"),
        ([("Vary", "a b")], 200, "Vary"),
        ([], 206, "status"),
        ([], 500, "status"),
        ([], 201, "status"),
    ],
)
def test_not_stored(response: list[tuple[str, str]], status: int, reason: str) -> None:
    decision = decide(response, status=status)
    assert not decision.storable
    assert reason in str(decision.reason)


@pytest.mark.parametrize("status", [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501])
def test_default_statuses_follow_rfc_9110(status: int) -> None:
    assert decide([], status=status).storable


def test_authorization_rules() -> None:
    auth = [("Authorization", "Basic dTpw")]
    assert not decide([], fields=auth).storable
    for cc in ("public", "s-maxage=60", "must-revalidate"):
        decision = decide([("Cache-Control", cc)], fields=auth)
        assert decision.storable and decision.for_authorized, cc
    assert decide([], fields=auth, route=Route(public=True)).for_authorized
    assert not decide([], fields=[]).for_authorized


def test_cookie_rules() -> None:
    cookies = [("Cookie", "session=abc")]
    assert not decide([], fields=cookies).storable
    assert decide([("Cache-Control", "public")], fields=cookies).for_cookies
    varied = decide([("Vary", "Cookie")], fields=cookies)
    assert varied.storable and varied.vary == ("cookie",)
    declared = decide([], fields=cookies, route=Route(cookies=("lang",)))
    assert declared.storable and declared.vary == ("cookie:lang",)
    per_user = decide([], fields=cookies, route=Route(per_user=True))
    assert per_user.storable and per_user.vary == ("authorization", "cookie")


# ---- requests -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"method": "POST"}, "method"),
        ({"hosts": []}, "Host"),
        ({"hosts": ["a.example", "b.example"]}, "Host"),
        ({"hosts": ["a.example,b.example"]}, "Host"),
        ({"fields": [("Cache-Control", "no-store")]}, "no-store"),
        ({"fields": [("Cache-Control", "max-age=0 no-cache")]}, "cannot be parsed"),
    ],
)
def test_requests_that_pass_through(kw: dict[str, Any], reason: str) -> None:
    req = request(**kw)
    assert req.bypass is not None and reason in req.bypass


def test_hosts_read_from_the_fields_when_not_given() -> None:
    rules = Rules()
    req = rules.request(
        method="GET",
        scheme="http",
        hosts=None,
        path="/",
        query="",
        headers=[(b"host", b"a.example"), (b"host", b"b.example")],
    )
    assert req.bypass is not None and "Host" in req.bypass


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("example.com", True),
        ("EXAMPLE.com:8000", True),
        ("www.example.org", True),
        ("example.org", True),
        ("evil.example.com", False),
        ("notexample.org", False),
        ("evil.com", False),
    ],
)
def test_allowed_hosts(host: str, allowed: bool) -> None:
    rules = Rules(allowed_hosts=["example.com", ".example.org"])
    assert (request(rules, hosts=[host]).bypass is None) is allowed
    assert request(Rules(allowed_hosts=["*"]), hosts=[host]).bypass is None


def test_the_key_has_host_scheme_path_and_sorted_query() -> None:
    a = request(query="b=2&a=1", hosts=["Site.example"])
    b = request(query="a=1&b=2")
    assert a.key == b.key
    assert a.key != request(query="a=1&b=3").key
    assert a.key != request(query="a=1&b=2", hosts=["other.example"]).key
    assert request(method="HEAD").key == request().key  # HEAD is answered from GET
    assert request(route=Route(query=False), query="a=1").key == request().key


def _entry(decision: Any, req: CacheRequest, body: bytes = b"hello") -> StoredResponse:
    return Rules().entry(req, decision, 200, [("Content-Type", "text/plain")], body)


def test_accepts_honours_request_directives() -> None:
    rules = Rules()
    req = request(rules)
    decision = rules.decide(req, 200, [], now=NOW, ttl=60)
    entry = _entry(decision, req)
    assert req.accepts(entry, NOW + 59)
    assert not req.accepts(entry, NOW + 61)
    old = request(rules, [("Cache-Control", "max-age=10")])
    assert old.accepts(entry, NOW + 5) and not old.accepts(entry, NOW + 11)
    fresh = request(rules, [("Cache-Control", "min-fresh=30")])
    assert fresh.accepts(entry, NOW + 20) and not fresh.accepts(entry, NOW + 31)
    assert request(rules, [("Cache-Control", "no-cache")]).revalidates
    assert request(rules, [("Cache-Control", "max-age=0")]).revalidates
    assert request(rules, [("Cache-Control", "only-if-cached")]).only_if_cached


def test_accepts_checks_credentials_and_variant() -> None:
    rules = Rules()
    req = request(rules, [("Accept-Language", "de")])
    decision = rules.decide(req, 200, [("Vary", "accept-language")], now=NOW, ttl=60)
    entry = _entry(decision, req)
    assert req.accepts(entry, NOW)
    assert not request(rules, [("Accept-Language", "en")]).accepts(entry, NOW)
    assert request(rules, [("Accept-Language", "de ,  fr")]).variant(entry.vary) != entry.variant
    assert not request(rules, [("Accept-Language", "de"), ("Cookie", "a=1")]).accepts(entry, NOW)
    assert not request(rules, [("Accept-Language", "de"), ("Authorization", "x")]).accepts(
        entry, NOW
    )
    # A route that now declares what it depends on refuses entries stored before it did.
    declared = request(rules, [("Accept-Language", "de")], route=Route(vary=("x-tenant",)))
    assert not declared.accepts(entry, NOW)


def test_variant_values_are_normalised_and_absent_differs_from_empty() -> None:
    names = ("accept-language",)
    assert request(fields=[("Accept-Language", "en,  fr"), ("Accept-Language", "de")]).variant(
        names
    ) == request(fields=[("Accept-Language", "en,fr,de")]).variant(names)
    assert request().variant(names) != request(fields=[("Accept-Language", "")]).variant(names)


# ---- answers --------------------------------------------------------------------------


def test_reply_adds_age_and_answers_304() -> None:
    rules = Rules()
    req = request(rules)
    entry = _entry(rules.decide(req, 200, [], now=NOW, ttl=60), req)
    assert entry.etag is not None
    status, fields, body = reply(req, entry, NOW + 7, hit=True)
    assert (status, body) == (200, b"hello")
    assert (b"age", b"7") in fields and (b"content-length", b"5") in fields
    conditional = request(rules, [("If-None-Match", entry.etag.decode())])
    status, fields, body = reply(conditional, entry, NOW, hit=True)
    assert status == 304 and body == b""
    assert {k for k, _ in fields} <= {b"etag", b"age", b"cache-control", b"date"}
    head = request(rules, method="HEAD")
    assert reply(head, entry, NOW, hit=True)[2] == b""


def test_stored_fields_drop_hop_by_hop_and_age() -> None:
    rules = Rules()
    req = request(rules)
    fields = [("Connection", "close"), ("Age", "3"), ("X-Kept", "1"), ("Keep-Alive", "5")]
    entry = rules.entry(req, rules.decide(req, 200, [], now=NOW, ttl=60), 200, fields, b"")
    assert [k for k, _ in entry.headers] == [b"x-kept", b"etag", b"content-length"]


# ---- options --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "named"),
    [
        ({"statuses": {304}}, ValueError, "statuses"),
        ({"statuses": {99}}, ValueError, "statuses"),
        ({"statuses": 200}, TypeError, "statuses"),
        ({"allowed_hosts": "example.com"}, TypeError, "allowed_hosts"),
        ({"allowed_hosts": [""]}, ValueError, "allowed_hosts"),
        ({"max_vary_fields": 0}, ValueError, "max_vary_fields"),
        ({"max_vary_bytes": True}, ValueError, "max_vary_bytes"),
        ({"add_etag": "yes"}, TypeError, "add_etag"),
        ({"strict": 1}, TypeError, "strict"),
        ({"targeted": "CDN-Cache-Control"}, TypeError, "targeted"),
        ({"targeted": ["bad name"]}, ValueError, "targeted"),
        ({"heuristic_fraction": 2}, ValueError, "heuristic_fraction"),
        ({"max_heuristic": -1}, ValueError, "max_heuristic"),
        ({"stale_if_error": float("inf")}, ValueError, "stale_if_error"),
    ],
)
def test_bad_rules_name_the_option(options: dict[str, Any], error: type, named: str) -> None:
    with pytest.raises(error, match=named):
        Rules(**options)


@pytest.mark.parametrize(
    ("options", "error", "named"),
    [
        ({"ttl": 0}, ValueError, "ttl"),
        ({"ttl": "60"}, TypeError, "ttl"),
        ({"public": 1}, TypeError, "public"),
        ({"vary": "Accept"}, TypeError, "vary"),
        ({"vary": ["Accept Language"]}, ValueError, "vary"),
        ({"cookies": ["a;b"]}, ValueError, "cookies"),
        ({"public": True, "per_user": True}, ValueError, "public"),
        ({"per_user": True, "cookies": ["a"]}, ValueError, "cookies"),
    ],
)
def test_bad_routes_name_the_option(options: dict[str, Any], error: type, named: str) -> None:
    with pytest.raises(error, match=named):
        Route(**options)


def test_a_miss_is_not_a_failure(caplog: Any) -> None:
    """A lookup that finds nothing is quiet: only a failing client is logged."""
    from chorde.clients.inproc import InprocCacheClient
    from chorde.http import ResponseCache

    cache = ResponseCache(InprocCacheClient(8))
    req = cache.request(
        method="GET", scheme="http", hosts=["a.example"], path="/", query="", headers=[]
    )
    with caplog.at_level("DEBUG", logger="chorde.http"):
        assert cache.lookup(req) is None
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
