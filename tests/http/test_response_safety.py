"""Same answers everywhere: one table of requests through Flask, Tornado and Starlette.

Each case is a sequence of requests for one URL (by different users, hosts, languages ...);
for each request the table says which render must answer it: ``1`` means the first
request's render (so it was stored and served), a higher number a new render. The same
table runs against each framework's site over real HTTP, on an in-process client and on a
real memcached, and must hold everywhere. See tests/http/sites.py for the site.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest

from chorde.clients.inproc import InprocCacheClient
from tests.http import sites
from tests.http.hostile import HOSTILE_CACHE_CONTROL
from tests.servers import MemcachedServer

SITE_HOST = [("Host", "site.example")]
ALICE = [*SITE_HOST, ("X-User", "alice")]
BOB = [*SITE_HOST, ("X-User", "bob")]


@dataclass
class Step:
    fields: list[tuple[str, str]]
    render: int  # which render must answer (1: the first request's)
    method: str = "GET"


@dataclass
class Case:
    id: str
    steps: list[Step]
    response: dict[str, str] = field(default_factory=dict)  # the page's response fields
    path: str = "/page"
    #: Frameworks that refuse to send the response field at all (not a cache decision).
    unsendable: tuple[str, ...] = ()
    #: A server may refuse a step's request itself (400: tornado checks Host): the step is
    #: then left out, and the renders it would have made do not happen.
    refusable: bool = False


def _auth(user: str) -> list[tuple[str, str]]:
    return [*SITE_HOST, ("Authorization", f"Bearer token-of-{user}")]


def _cookie(value: str) -> list[tuple[str, str]]:
    return [*SITE_HOST, ("Cookie", value)]


def _lang(lang: str) -> list[tuple[str, str]]:
    return [*SITE_HOST, ("Accept-Language", lang)]


PRIVATE_FORMS = ["private", "PRIVATE", "no-store", "no-cache", "max-age=60, no-cache"]
PRIVATE_FORMS += ["max-age=60, Private", 'private="Set-Cookie"', "max-age=60, max-age=0"]

CASES = [
    # The baseline: a page for everyone is stored and served to the next user.
    Case("plain", [Step(ALICE, 1), Step(BOB, 1)]),
    Case("max-age", [Step(ALICE, 1), Step(BOB, 1)], {"cc": "max-age=60"}),
    Case("public", [Step(ALICE, 1), Step(BOB, 1)], {"cc": "public, max-age=60"}),
    # Cache-Control forbidding storage, canonical or malformed: never shared.
    *(Case(f"cc-{cc}", [Step(ALICE, 1), Step(BOB, 2)], {"cc": cc}) for cc in PRIVATE_FORMS),
    *(
        Case(
            f"hostile-{cc!r}",
            [Step(ALICE, 1), Step(BOB, 2)],
            {"cc": cc},
            unsendable=("tornado",) if any(c < " " for c in cc) else (),
        )
        for cc in HOSTILE_CACHE_CONTROL
        if "\r" not in cc and "\n" not in cc and "\x00" not in cc
    ),
    # RFC 9111 section 3.5: Authorization.
    Case("auth", [Step(_auth("alice"), 1), Step(_auth("bob"), 2), Step(SITE_HOST, 3)]),
    Case("auth-then-anon", [Step(_auth("alice"), 1), Step(SITE_HOST, 2), Step(SITE_HOST, 2)]),
    *(
        Case(f"auth-{cc}", [Step(_auth("alice"), 1), Step(_auth("bob"), 1)], {"cc": cc})
        for cc in ("public", "s-maxage=60", "must-revalidate")
    ),
    Case("auth-public-route", [Step(_auth("a"), 1), Step(_auth("b"), 1)], path="/public"),
    # Cookies: a request with cookies is not shared unless the page says it may be.
    Case(
        "cookie",
        [Step(_cookie("session=a"), 1), Step(SITE_HOST, 2), Step(_cookie("session=b"), 3)],
    ),
    Case(
        "cookie-public",
        [Step(_cookie("session=a"), 1), Step(_cookie("session=b"), 1), Step(SITE_HOST, 1)],
        {"cc": "public"},
    ),
    Case(
        "cookie-vary",
        [
            Step(_cookie("session=a"), 1),
            Step(_cookie("session=b"), 2),
            Step(_cookie("session=a"), 1),
        ],
        {"vary": "Cookie"},
    ),
    Case(
        "cookie-declared",
        [
            Step(_cookie("lang=de; session=a"), 1),
            Step(_cookie("session=b; lang=de"), 1),
            Step(_cookie("lang=en; session=a"), 2),
            Step(SITE_HOST, 3),
        ],
        path="/declared",
    ),
    Case(
        "per-user",
        [
            Step(_auth("alice"), 1),
            Step(_auth("bob"), 2),
            Step(_auth("alice"), 1),
            Step(SITE_HOST, 3),
            Step(_cookie("session=c"), 4),
            Step(_cookie("session=c"), 4),
        ],
        path="/peruser",
    ),
    Case(
        "per-user-private",
        [Step(_auth("alice"), 1), Step(_auth("bob"), 2), Step(_auth("alice"), 1)],
        {"cc": "private"},
        path="/peruser",
    ),
    Case("set-cookie", [Step(ALICE, 1), Step(BOB, 2)], {"set_cookie": "1"}),
    # Host: always in the key; two Host lines or a host not allowed are not cached.
    Case(
        "host",
        [
            Step([("Host", "evil.example")], 1),
            Step([("Host", "site.example")], 2),
            Step([("Host", "SITE.example")], 2),
        ],
    ),
    Case(
        "host-not-allowed",
        [Step([("Host", "attacker.test")], 1), Step([("Host", "attacker.test")], 2)],
    ),
    Case(
        "host-malformed",
        [Step([("Host", "site.example, evil.example")], 1), Step(SITE_HOST, 2)],
        refusable=True,
    ),
    # Vary (RFC 9111 section 4.1).
    Case(
        "vary",
        [Step(_lang("de"), 1), Step(_lang("en"), 2), Step(_lang("de"), 1), Step(SITE_HOST, 3)],
        {"vary": "Accept-Language"},
    ),
    Case("vary-star", [Step(ALICE, 1), Step(ALICE, 2)], {"vary": "*"}),
    Case("vary-unparsable", [Step(ALICE, 1), Step(ALICE, 2)], {"vary": "Accept Language"}),
    Case(
        "vary-too-many",
        [Step(ALICE, 1), Step(ALICE, 2)],
        {"vary": ", ".join(f"X-F{i}" for i in range(33))},
    ),
    # Statuses (RFC 9110 section 15.1's heuristically cacheable ones, less 206).
    *(
        Case(f"status-{status}", [Step(ALICE, 1), Step(BOB, 1 if shared else 2)], extra)
        for status, shared, extra in [
            ("200", True, {}),
            ("404", True, {}),
            ("410", True, {}),
            ("201", False, {}),
            ("500", False, {}),
            ("503", False, {}),
            ("302", False, {"location": "/elsewhere"}),
        ]
        for extra in [{"status": status, **extra}]
    ),
    # HEAD is answered from a stored GET, and never stored itself.
    Case(
        "head",
        [
            Step(ALICE, 1, "HEAD"),
            Step(ALICE, 2),
            Step(BOB, 2, "HEAD"),
            Step(BOB, 2),
        ],
    ),
    # The request's own Cache-Control (RFC 9111 section 5.2.1).
    Case(
        "request-no-store",
        [Step(ALICE, 1), Step([*BOB, ("Cache-Control", "no-store")], 2), Step(BOB, 1)],
    ),
    Case(
        "request-no-cache",
        [Step(ALICE, 1), Step([*BOB, ("Cache-Control", "no-cache")], 2), Step(BOB, 2)],
    ),
    Case(
        "request-unparsable",
        [Step(ALICE, 1), Step([*BOB, ("Cache-Control", "no-cache max-age=0")], 2), Step(BOB, 1)],
    ),
]

_nonce = itertools.count()


@pytest.fixture(scope="module")
def shared_memcached(memcached_bin: str) -> Iterator[MemcachedServer]:
    server = MemcachedServer(executable=memcached_bin).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module", params=["inproc", "memcached"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module", params=list(sites.BUILDS))
def site(request: pytest.FixtureRequest, backend: str) -> Iterator[sites.Site]:
    if backend == "memcached":
        from chorde.clients.memcached import MemcachedClient

        server = request.getfixturevalue("shared_memcached")
        client: Any = MemcachedClient([server.address], checksum_key="tests-only", timeout=5)
    else:
        client = InprocCacheClient(4096)
    serving = sites.site(request.param, client)
    try:
        yield next(serving)
    finally:
        serving.close()
        client.close()


def _target(case: Case) -> str:
    query = {**case.response, "case": f"{case.id}-{next(_nonce)}"}
    return case.path + "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_same_store_and_serve_decisions_everywhere(site: sites.Site, case: Case) -> None:
    if site.name in case.unsendable:
        pytest.skip(f"{site.name} refuses to send {case.response!r}")
    target = _target(case)
    got, expected = [], []
    skipped = 0  # renders that did not happen: their requests were refused
    for i, step in enumerate(case.steps):
        answer = sites.fetch(site.port, step.method, target, step.fields)
        if case.refusable and answer.status == 400:
            skipped += 1
            continue
        assert answer.render is not None, (answer.status, answer.body[:200])
        got.append(answer.render)
        expected.append(step.render - skipped)
        if step.render == 1 and i > 0:
            assert answer.field("age") is not None, "an answer from the cache carries Age"
    assert got == expected


@pytest.mark.parametrize(
    "cc", [c for c in HOSTILE_CACHE_CONTROL + PRIVATE_FORMS if c.isprintable()]
)
def test_replayed_attack_a_private_page_never_reaches_another_user(
    site: sites.Site, cc: str
) -> None:
    """Alice's page, marked private however the field is written, is never Bob's."""
    target = _target(Case("attack", [], {"cc": cc}))
    alice = [*SITE_HOST, ("Cookie", "session=alice"), ("Authorization", "Bearer alice")]
    sites.fetch(site.port, "GET", target, alice)
    for fields in (BOB, SITE_HOST, [*SITE_HOST, ("Cookie", "session=bob")]):
        answer = sites.fetch(site.port, "GET", target, fields)
        if answer.status == 200:
            assert json.loads(answer.body)["authorization"] is None
            assert b"alice" not in answer.body
        assert answer.render != 1


def test_a_page_rendered_for_one_host_links_to_that_host(site: sites.Site) -> None:
    target = _target(Case("links", []))
    sites.fetch(site.port, "GET", target, [("Host", "evil.example")])
    answer = sites.fetch(site.port, "GET", target, SITE_HOST)
    assert json.loads(answer.body)["link"] == "http://site.example/next"


def test_two_host_lines_are_never_cached(site: sites.Site) -> None:
    """A request with two Host lines is refused by the server or rendered uncached.

    The application may render from one Host (links, redirects) while a cache would key on
    the other: such a request must neither be stored nor be answered from the cache.
    """
    target = _target(Case("two-hosts", []))
    assert sites.fetch(site.port, "GET", target, [("Host", "evil.example")]).render == 1
    for hosts in (["site.example", "evil.example"], ["evil.example", "site.example"]):
        for _ in range(2):
            answer = sites.fetch(site.port, "GET", target, [("Host", h) for h in hosts])
            if answer.status == 400:  # tornado refuses such a request itself
                continue
            assert answer.status == 200 and answer.field("age") is None
            assert answer.render is not None and answer.render > 1
    fresh = sites.fetch(site.port, "GET", target, SITE_HOST)
    assert fresh.field("age") is None
    assert json.loads(fresh.body)["link"] == "http://site.example/next"
    again = sites.fetch(site.port, "GET", target, SITE_HOST)
    assert again.render == fresh.render and again.field("age") is not None


@pytest.mark.parametrize("framework", list(sites.BUILDS))
def test_two_workers_sharing_memcached_never_leak(
    framework: str, shared_memcached: MemcachedServer
) -> None:
    """Alice on one worker, Bob on another, one memcached: what is shared, and what is not."""
    from chorde.clients.memcached import MemcachedClient

    clients = [
        MemcachedClient([shared_memcached.address], checksum_key="tests-only", timeout=5)
        for _ in range(2)
    ]
    one, two = (sites.site(framework, client) for client in clients)
    try:
        first, second = next(one), next(two)
        shared = _target(Case("two-workers-plain", []))
        assert sites.fetch(first.port, "GET", shared, ALICE).render == 1
        answer = sites.fetch(second.port, "GET", shared, BOB)
        assert answer.field("age") is not None  # worker two serves worker one's render
        for cc in [c for c in HOSTILE_CACHE_CONTROL + PRIVATE_FORMS if c.isprintable()]:
            target = _target(Case("two-workers", [], {"cc": cc}))
            sites.fetch(first.port, "GET", target, [*SITE_HOST, ("X-User", "alice")])
            bob = sites.fetch(second.port, "GET", target, BOB)
            assert bob.field("age") is None, cc
            if bob.status == 200:
                assert json.loads(bob.body)["user"] == "bob", cc
        for private in (_cookie("session=alice"), _auth("alice")):
            target = _target(Case("two-workers-credentials", []))
            sites.fetch(first.port, "GET", target, private)
            assert sites.fetch(second.port, "GET", target, SITE_HOST).field("age") is None
    finally:
        one.close()
        two.close()
        for client in clients:
            client.close()


def test_cache_status_says_the_same_everywhere(site: sites.Site) -> None:
    """RFC 9211: a stored miss, a hit, a response not stored, a stale answer."""
    target = _target(Case("status", []))
    miss = sites.fetch(site.port, "GET", target, ALICE).field("cache-status") or ""
    assert miss.startswith("chorde; fwd=uri-miss; stored; ttl=")
    hit = sites.fetch(site.port, "GET", target, BOB).field("cache-status") or ""
    assert hit.startswith("chorde; hit; ttl=")
    private = _target(Case("status-private", [], {"cc": "private"}))
    passed = sites.fetch(site.port, "GET", private, ALICE).field("cache-status") or ""
    assert passed == "chorde; fwd=uri-miss; fwd-status=200; stored=?0"


def test_tags_are_never_sent_and_purge_everywhere(site: sites.Site) -> None:
    from chorde.http import ResponseCache

    target = _target(Case("tags", [], {"tags": "product-7 home"}))
    first = sites.fetch(site.port, "GET", target, ALICE)
    assert first.field("surrogate-key") is None
    hit = sites.fetch(site.port, "GET", target, BOB)
    assert hit.render == 1 and hit.field("surrogate-key") is None
    ResponseCache(site.client).purge_tags("home")  # any process sharing the client may
    after = sites.fetch(site.port, "GET", target, BOB)
    assert after.render == 2
    private = _target(Case("tags-private", [], {"tags": "x", "cc": "private"}))
    assert sites.fetch(site.port, "GET", private, ALICE).field("surrogate-key") is None


# ---- staleness through every adapter: revalidation, RFC 5861 (real time: short lifetimes) ----
# Two seconds of freshness, not one: tornado dates its responses to the whole second, and a
# Date up to a second old counts in the age (RFC 9111 4.2.3).

STALE_AFTER = 2.2


def _wait_until(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_revalidation_through_the_application(site: sites.Site) -> None:
    case = Case("reval", [], {"cc": "max-age=2", "etag": '"e1"'})
    target = _target(case)
    nonce = target.rsplit("case=", 1)[1]
    first = sites.fetch(site.port, "GET", target, ALICE)
    assert first.render == 1
    time.sleep(STALE_AFTER)  # stale now
    again = sites.fetch(site.port, "GET", target, BOB)
    # The stored body (render 1), its fields freshened from the 304 (which says render 2).
    assert again.status == 200 and json.loads(again.body)["n"] == 1 and again.render == 2
    assert "fwd=stale; fwd-status=304" in (again.field("cache-status") or "")
    assert site.renders.count(nonce) == 2  # the view ran, and answered 304
    hit = sites.fetch(site.port, "GET", target, BOB)
    assert (hit.field("cache-status") or "").startswith("chorde; hit")


def test_stale_while_revalidate_everywhere(site: sites.Site) -> None:
    target = _target(Case("swr", [], {"cc": "max-age=2, stale-while-revalidate=30"}))
    nonce = target.rsplit("case=", 1)[1]
    assert sites.fetch(site.port, "GET", target, ALICE).render == 1
    time.sleep(STALE_AFTER)
    stale = sites.fetch(site.port, "GET", target, BOB)
    assert stale.render == 1 and int(stale.field("age") or 0) >= 2  # served at once
    assert _wait_until(lambda: site.renders.count(nonce) == 2)  # refreshed in the background
    assert _wait_until(lambda: sites.fetch(site.port, "GET", target, BOB).render == 2)
    assert site.renders.count(nonce) == 2  # refreshed once


def test_stale_if_error_everywhere(site: sites.Site) -> None:
    target = _target(Case("sie", [], {"cc": "max-age=2, stale-if-error=30", "fail": "1"}))
    assert sites.fetch(site.port, "GET", target, ALICE).render == 1
    time.sleep(STALE_AFTER)
    answer = sites.fetch(site.port, "GET", target, BOB)
    assert (answer.status, answer.render) == (200, 1)  # the app answered 503: stale served
    assert "fwd=stale; fwd-status=503" in (answer.field("cache-status") or "")
