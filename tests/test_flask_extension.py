"""chorde_flask: configuration, app factories, several apps, view caching, memoization."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import hmac
import threading
import time

import pytest
from flask import Flask, Response, abort, current_app, jsonify, make_response, request, session

from chorde._compute import Flights
from chorde.clients.inproc import InprocCacheClient
from chorde.clients.memcached import MemcachedClient
from chorde.clients.tiered import TieredInclusiveClient
from chorde.errors import CacheMissError, ConfigurationError
from chorde.futures import Future
from chorde_flask import Chorde


def make_app(name: str = "app", **config: object) -> Flask:
    app = Flask(name)
    app.config.update(TESTING=True, **config)
    return app


def mc_config(server, **extra: object) -> dict:
    return {
        "CHORDE_CLIENT": "memcached",
        "CHORDE_SERVERS": [server.address],
        "SECRET_KEY": "s3cret",
        **extra,
    }


# ---- configuration -------------------------------------------------------------------


def test_default_is_inproc_and_registered():
    app = make_app()
    ext = Chorde(app)
    state = app.extensions["chorde"]
    assert state.ext is ext
    with app.app_context():
        assert isinstance(ext.client, InprocCacheClient)
        assert ext.client.capacity == 10000
        assert ext.client is ext.get_client(app)


def test_factory_form_and_string_settings():
    ext = Chorde()
    app = make_app(CHORDE_SIZE="50", CHORDE_DEFAULT_TTL="7.5", CHORDE_STORE="cuckoo")
    ext.init_app(app)
    assert ext.get_client(app).capacity == 50
    assert app.extensions["chorde"].default_ttl == 7.5


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"CHORDE_CLIENT": "redis"}, "CHORDE_CLIENT"),
        ({"CHORDE_CLIENT": 3}, "CHORDE_CLIENT"),
        ({"CHORDE_CLIENT": lambda app: object()}, "CHORDE_CLIENT"),
        ({"CHORDE_DEFAULT_TTL": -1}, "CHORDE_DEFAULT_TTL"),
        ({"CHORDE_DEFAULT_TTL": "soon"}, "CHORDE_DEFAULT_TTL"),
        ({"CHORDE_DEFAULT_TTL": True}, "CHORDE_DEFAULT_TTL"),
        ({"CHORDE_SIZE": 0}, "CHORDE_SIZE"),
        ({"CHORDE_SIZE": 2.5}, "CHORDE_SIZE"),
        (
            {"CHORDE_CLIENT": "memcached", "CHORDE_SERVERS": "127.0.0.1:1", "CHORDE_SIZE": "x"},
            "CHORDE_SIZE",
        ),
        ({"CHORDE_STORE": "fifo"}, "CHORDE_STORE"),
        ({"CHORDE_TTL": 5}, "CHORDE_DEFAULT_TTL"),  # a typo, with the suggestion
        ({"CHORDE_SERVERS": ["127.0.0.1:1"]}, "CHORDE_SERVERS"),  # but client is inproc
        ({"CHORDE_CLIENT": "memcached", "SECRET_KEY": "x"}, "CHORDE_SERVERS"),
        (
            {"CHORDE_CLIENT": "memcached", "SECRET_KEY": "x", "CHORDE_SERVERS": "h:notaport"},
            "CHORDE_SERVERS",
        ),
        ({"CHORDE_CLIENT": "memcached", "CHORDE_SERVERS": "127.0.0.1:1"}, "CHORDE_CHECKSUM_KEY"),
        (
            {"CHORDE_CLIENT": "memcached", "CHORDE_SERVERS": "127.0.0.1:1", "SECRET_KEY": 5},
            "SECRET_KEY",
        ),
        (
            {
                "CHORDE_CLIENT": "memcached",
                "CHORDE_SERVERS": "127.0.0.1:1",
                "CHORDE_CHECKSUM_KEY": [],
            },
            "CHORDE_CHECKSUM_KEY",
        ),
        (
            {
                "CHORDE_CLIENT": "tiered",
                "CHORDE_SERVERS": "127.0.0.1:1",
                "SECRET_KEY": "x",
                "CHORDE_OPTIONS": {"no_such_option": 1},
            },
            "CHORDE_OPTIONS",
        ),
        (
            {
                "CHORDE_CLIENT": "memcached",
                "CHORDE_SERVERS": "127.0.0.1:1",
                "SECRET_KEY": "x",
                "CHORDE_OPTIONS": {"timeout": -1},
            },
            "CHORDE_OPTIONS",
        ),
        (
            {
                "CHORDE_CLIENT": "memcached",
                "CHORDE_SERVERS": "127.0.0.1:1",
                "SECRET_KEY": "x",
                "CHORDE_OPTIONS": {"namespace": "n"},
            },
            "CHORDE_KEY_PREFIX",
        ),
        (
            {
                "CHORDE_CLIENT": "memcached",
                "CHORDE_SERVERS": "127.0.0.1:1",
                "SECRET_KEY": "x",
                "CHORDE_KEY_PREFIX": "has space",
            },
            "CHORDE_KEY_PREFIX",
        ),
    ],
)
def test_bad_config_raises_at_init_app_naming_the_key(config, named):
    ext = Chorde()
    app = make_app(**config)
    with pytest.raises(ConfigurationError, match=named):
        ext.init_app(app)
    assert "chorde" not in app.extensions


def test_init_app_twice_raises():
    ext = Chorde()
    app = make_app()
    ext.init_app(app)
    with pytest.raises(RuntimeError, match="already initialized"):
        ext.init_app(app)


def test_uninitialized_app_and_missing_context_are_clear_errors():
    ext = Chorde()
    with pytest.raises(RuntimeError, match="application context"):
        ext.client  # noqa: B018
    app = make_app("other")
    with app.app_context(), pytest.raises(RuntimeError, match="init_app"):
        ext.client  # noqa: B018


def test_client_instance_and_factory():
    mine = InprocCacheClient(5)
    ext = Chorde()
    app1 = make_app("a", CHORDE_CLIENT=mine)
    app2 = make_app("b", CHORDE_CLIENT=lambda app: InprocCacheClient(7))
    ext.init_app(app1)
    ext.init_app(app2)
    assert ext.get_client(app1) is mine
    assert ext.get_client(app2).capacity == 7


def test_memcached_client_from_config(memcached):
    ext = Chorde()
    app = make_app(**mc_config(memcached, CHORDE_SERVERS=f" {memcached.address} ,"))
    ext.init_app(app)
    client = ext.get_client(app)
    assert isinstance(client, MemcachedClient)
    assert client.namespace == "app"  # default prefix: app.import_name
    client.put("k", [1, 2], 60)
    assert client.get("k") == [1, 2]


def test_tiered_client_from_config(memcached):
    ext = Chorde()
    app = make_app(**mc_config(memcached, CHORDE_CLIENT="tiered", CHORDE_SIZE=10))
    ext.init_app(app)
    client = ext.get_client(app)
    assert isinstance(client, TieredInclusiveClient)
    l1, l2 = client.clients
    assert isinstance(l1, InprocCacheClient) and l1.capacity == 10
    assert isinstance(l2, MemcachedClient)


def test_checksum_key_is_derived_from_secret_key_not_the_secret_itself(memcached):
    ext = Chorde()
    writer = make_app("w", **mc_config(memcached, CHORDE_KEY_PREFIX="p"))
    same_secret = make_app("r1", **mc_config(memcached, CHORDE_KEY_PREFIX="p"))
    raw_secret = make_app(
        "r2", **mc_config(memcached, CHORDE_KEY_PREFIX="p", CHORDE_CHECKSUM_KEY="s3cret")
    )
    derived = hmac.new(b"s3cret", b"chorde checksum key v1", hashlib.sha256).digest()
    explicit = make_app(
        "r3", **mc_config(memcached, CHORDE_KEY_PREFIX="p", CHORDE_CHECKSUM_KEY=derived)
    )
    other_secret = make_app("r4", **mc_config(memcached, CHORDE_KEY_PREFIX="p", SECRET_KEY="x"))
    for app in (writer, same_secret, raw_secret, explicit, other_secret):
        ext.init_app(app)
    ext.get_client(writer).put("k", "v", 60)
    assert ext.get_client(same_secret).get("k", None) == "v"
    assert ext.get_client(explicit).get("k", None) == "v"
    # Values signed with the derived key do not verify under the raw secret (nor another).
    assert ext.get_client(raw_secret).get("k", None) is None
    assert ext.get_client(other_secret).get("k", None) is None


def test_key_prefix_separates_apps_on_shared_servers(memcached):
    ext = Chorde()
    a = make_app("a", **mc_config(memcached, CHORDE_KEY_PREFIX="one"))
    b = make_app("b", **mc_config(memcached, CHORDE_KEY_PREFIX="two"))
    ext.init_app(a)
    ext.init_app(b)
    ext.get_client(a).put("k", "from a", 60)
    assert ext.get_client(b).get("k", None) is None
    ext.get_client(b).put("k", "from b", 60)
    ext.get_client(a).clear()
    assert ext.get_client(b).get("k") == "from b"


def _connections(server) -> int:
    return int(server.stats()["curr_connections"])


def _wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_close_releases_memcached_connections(memcached):
    ext = Chorde()
    app = make_app(**mc_config(memcached))
    ext.init_app(app)
    before = _connections(memcached)
    ext.get_client(app).put("k", 1, 60)
    assert _connections(memcached) > before
    ext.close(app)
    assert _wait_for(lambda: _connections(memcached) == before)


def test_app_garbage_collected_closes_its_client(memcached):
    ext = Chorde()
    app = make_app(**mc_config(memcached))
    ext.init_app(app)
    before = _connections(memcached)
    ext.get_client(app).put("k", 1, 60)
    assert _connections(memcached) > before
    del app
    gc.collect()
    assert _wait_for(lambda: _connections(memcached) == before)


def test_user_supplied_client_is_not_closed(memcached):
    client = MemcachedClient([memcached.address], "key")
    ext = Chorde()
    app = make_app(CHORDE_CLIENT=client)
    ext.init_app(app)
    ext.close(app)
    client.put("k", 1, 60)
    assert client.get("k") == 1
    client.close()


# ---- several apps, one extension -------------------------------------------------------


def test_several_apps_share_one_extension_with_separate_clients_and_caches():
    ext = Chorde()
    calls: list[str] = []

    @ext.memoize(ttl=60)
    def whoami(x):
        calls.append(current_app.name)
        return f"{current_app.name}:{x}"

    def factory(name):
        app = make_app(name)
        ext.init_app(app)

        @app.get("/page")
        @ext.cached(ttl=60)
        def page():
            calls.append(f"view {name}")
            return whoami(1)

        return app

    a, b = factory("a"), factory("b")
    assert ext.get_client(a) is not ext.get_client(b)
    for _ in range(2):
        assert a.test_client().get("/page").text == "a:1"
        assert b.test_client().get("/page").text == "b:1"
    assert sorted(calls) == ["a", "b", "view a", "view b"]


# ---- view caching ----------------------------------------------------------------------


@pytest.fixture
def app_ext():
    ext = Chorde()
    app = make_app(SECRET_KEY="k")
    ext.init_app(app)
    return app, ext


def test_view_cached_by_path_and_query(app_ext):
    app, ext = app_ext
    renders = []

    @app.get("/items/<int:n>")
    @ext.cached(ttl=60)
    def items(n):
        renders.append((n, request.query_string))
        return jsonify(n=n, q=request.args.get("q"), render=len(renders))

    client = app.test_client()
    first = client.get("/items/1?q=a&z=1")
    assert first.json == {"n": 1, "q": "a", "render": 1}
    again = client.get("/items/1?z=1&q=a")  # same arguments, other order
    assert again.json == first.json
    assert again.headers["Content-Type"] == "application/json"
    assert client.get("/items/1?q=b").json["render"] == 2
    assert client.get("/items/2?q=a").json["render"] == 3
    assert len(renders) == 3


def test_head_served_from_cache_and_post_not_cached(app_ext):
    app, ext = app_ext
    renders = []

    @app.route("/thing", methods=["GET", "POST"])
    @ext.cached(ttl=60)
    def thing():
        renders.append(request.method)
        return f"render {len(renders)}"

    client = app.test_client()
    assert client.get("/thing").text == "render 1"
    head = client.head("/thing")
    assert head.status_code == 200 and head.data == b""
    assert client.post("/thing").text == "render 2"
    assert client.post("/thing").text == "render 3"
    assert client.get("/thing").text == "render 1"
    assert renders == ["GET", "POST", "POST"]


@pytest.mark.parametrize(
    ("respond", "renders_of_two"),
    [
        (lambda: ("missing", 404), 1),  # cacheable by default (RFC 9110 section 15.1)
        (lambda: ("created", 201), 2),
        (lambda: ("oops", 500), 2),
        (lambda: ("partial", 206), 2),
        (lambda: ("", 302, {"Location": "/elsewhere"}), 2),
    ],
    ids=["404", "201", "500", "206", "302"],
)
def test_only_cacheable_statuses_are_stored(app_ext, respond, renders_of_two):
    app, ext = app_ext
    renders = []

    @app.get("/r")
    @ext.cached(ttl=60)
    def r():
        renders.append(1)
        return respond()

    client = app.test_client()
    client.get("/r")
    client.get("/r")
    assert len(renders) == renders_of_two


def test_set_cookie_and_session_and_no_store_responses_not_cached(app_ext):
    app, ext = app_ext
    renders: list[str] = []

    @app.get("/cookie")
    @ext.cached(ttl=60)
    def cookie():
        renders.append("cookie")
        response = make_response("hello")
        response.set_cookie("track", str(renders.count("cookie")))
        return response

    @app.get("/session")
    @ext.cached(ttl=60)
    def session_view():
        renders.append("session")
        return f"user {session.get('user')}"

    @app.get("/nostore")
    @ext.cached(ttl=60)
    def nostore():
        renders.append("nostore")
        return "x", 200, {"Cache-Control": "no-store"}

    client = app.test_client()
    for path in ("/cookie", "/session", "/nostore"):
        client.get(path)
        response = client.get(path)
        assert response.status_code == 200
    assert client.get("/cookie").headers["Set-Cookie"].startswith("track=3")
    assert renders.count("cookie") == 3
    assert renders.count("session") == 2
    assert renders.count("nostore") == 2


def test_query_string_ignored_and_custom_key(app_ext):
    app, ext = app_ext
    renders: list[str] = []

    @app.get("/noq")
    @ext.cached(ttl=60, query_string=False)
    def noq():
        renders.append("noq")
        return request.args.get("a", "-")

    @app.get("/lang")
    @ext.cached(ttl=60, key=lambda: request.headers.get("Accept-Language", ""))
    def lang():
        renders.append("lang")
        return request.headers.get("Accept-Language", "")

    client = app.test_client()
    assert client.get("/noq?a=1").text == "1"
    assert client.get("/noq?a=2").text == "1"
    assert client.get("/lang", headers={"Accept-Language": "fr"}).text == "fr"
    assert client.get("/lang?x=1", headers={"Accept-Language": "fr"}).text == "fr"
    assert client.get("/lang", headers={"Accept-Language": "de"}).text == "de"
    assert renders == ["noq", "lang", "lang"]


def test_invalidate_view_and_default_ttl(app_ext):
    app, ext = app_ext
    renders = []

    @app.get("/v")
    @ext.cached()
    def v():
        renders.append(1)
        return str(len(renders))

    client = app.test_client()
    assert client.get("/v?b=2&a=1").text == "1"
    with app.app_context():
        # The host is part of the key: the test client's requests are for localhost.
        _, ttl_left = ext.client.getTtl(ext.view_key("http://localhost/v?a=1&b=2"))
        assert 290 < ttl_left <= 300  # CHORDE_DEFAULT_TTL
        ext.invalidate_view("http://localhost/v?a=1&b=2")
    assert client.get("/v?b=2&a=1").text == "2"


def test_view_ttl_is_honoured():
    ext = Chorde()
    app = make_app(CHORDE_CLIENT=lambda app: InprocCacheClient(10, clock=clock))
    now = [1000.0]

    def clock():
        return now[0]

    ext.init_app(app)
    renders = []

    @app.get("/t")
    @ext.cached(ttl=10)
    def t():
        renders.append(1)
        return str(len(renders))

    client = app.test_client()
    assert client.get("/t").text == "1"
    now[0] += 9.9
    assert client.get("/t").text == "1"
    now[0] += 0.2
    assert client.get("/t").text == "2"


def test_bad_view_decorator_arguments():
    ext = Chorde()
    with pytest.raises(ValueError, match="ttl"):
        ext.cached(ttl=0)
    with pytest.raises(TypeError, match="ttl"):
        ext.cached(ttl="long")
    with pytest.raises(TypeError, match="key"):
        ext.cached(key="path")
    for bad in (-1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="wait_timeout"):
            ext.cached(wait_timeout=bad)
    with pytest.raises(TypeError, match="wait_timeout"):
        ext.cached(wait_timeout="5")


def test_async_view_cached(app_ext):
    app, ext = app_ext
    renders = []

    @app.get("/async/<name>")
    @ext.cached(ttl=60)
    async def hello(name):
        await asyncio.sleep(0)
        renders.append(name)
        return f"hello {name} #{len(renders)}"

    @app.post("/async/<name>")
    @ext.cached(ttl=60)
    async def post_hello(name):
        renders.append("post")
        return "posted"

    client = app.test_client()
    assert client.get("/async/ann").text == "hello ann #1"
    assert client.get("/async/ann").text == "hello ann #1"
    assert client.get("/async/bob").text == "hello bob #2"
    assert client.post("/async/bob").text == "posted"
    assert client.post("/async/bob").text == "posted"
    assert renders == ["ann", "bob", "post", "post"]


def test_head_is_answered_from_a_stored_get_but_never_stored(app_ext):
    # A view may answer HEAD differently (Flask runs it with request.method == "HEAD"):
    # only a GET's response is stored, and HEADs are answered from it.
    app, ext = app_ext
    renders = []

    @app.get("/doc")
    @ext.cached(ttl=60)
    def doc():
        renders.append(request.method)
        return "full body", 200, {"X-Kind": "doc"}

    @app.get("/adoc")
    @ext.cached(ttl=60)
    async def adoc():
        renders.append("async " + request.method)
        return "async body"

    client = app.test_client()
    for path, body in (("/doc", b"full body"), ("/adoc", b"async body")):
        head = client.head(path)
        assert head.status_code == 200 and head.data == b""
        assert client.get(path).data == body
        again = client.head(path)
        assert again.data == b"" and again.headers["Content-Length"] == str(len(body))
        assert "Age" in again.headers
    assert client.get("/doc").headers["X-Kind"] == "doc"
    assert renders == ["HEAD", "GET", "async HEAD", "async GET"]


# ---- compute once: concurrent misses of one page -------------------------------------


class _CountingFlights(Flights):
    """The app's view-flight registry, counting the requests that waited on another's render."""

    def __init__(self) -> None:
        super().__init__()
        self.counter_lock = threading.Lock()
        self.waiters = 0

    def claim(self, key):
        flight, owner = super().claim(key)
        if not owner:
            with self.counter_lock:
                self.waiters += 1
        return flight, owner

    def get(self, key):  # how a HEAD joins a GET's render
        flight = super().get(key)
        if flight is not None:
            with self.counter_lock:
                self.waiters += 1
        return flight


def _counting_flights(app: Flask) -> _CountingFlights:
    flights = _CountingFlights()
    app.extensions["chorde"].views.flights = flights
    return flights


class _InThreads:
    """Requests sent at once from one thread each, each with its own test client."""

    def __init__(self, app: Flask, requests: list[tuple[str, str, dict]]) -> None:
        self.results: dict[int, object] = {}
        self.errors: list[BaseException] = []
        start = threading.Barrier(len(requests), timeout=5)

        def send(i: int, method: str, path: str, headers: dict) -> None:
            try:
                start.wait()
                self.results[i] = app.test_client().open(path, method=method, headers=headers)
            except BaseException as exc:
                self.errors.append(exc)

        self.threads = [
            threading.Thread(target=send, args=(i, *req), daemon=True)
            for i, req in enumerate(requests)
        ]
        for thread in self.threads:
            thread.start()

    def join(self) -> list:
        for thread in self.threads:
            thread.join(10)
        assert not any(thread.is_alive() for thread in self.threads)
        if self.errors:
            raise self.errors[0]
        return [self.results[i] for i in range(len(self.threads))]


def test_concurrent_misses_render_a_sync_view_once(app_ext):
    app, ext = app_ext
    flights = _counting_flights(app)
    gate = threading.Event()
    renders = []

    @app.get("/slow")
    @ext.cached(ttl=60)
    def slow():
        renders.append(request.method)
        gate.wait(5)
        return f"page {len(renders)}", 200, {"X-Renders": str(len(renders))}

    # A GET leads (a HEAD renders nothing it could share); GETs and HEADs wait for it.
    methods = ["GET"] + ["GET", "HEAD"] * 8
    leader = _InThreads(app, [("GET", "/slow?a=1", {})])
    try:
        assert _wait_for(lambda: len(renders) == 1)
        sent = _InThreads(app, [(method, "/slow?a=1", {}) for method in methods[1:]])
        # Every other request is parked on the first one's render before it may finish.
        assert _wait_for(lambda: flights.waiters == 16)
    finally:
        gate.set()
    responses = leader.join() + sent.join()
    assert len(renders) == 1
    for method, response in zip(methods, responses, strict=True):
        assert response.status_code == 200
        assert response.headers["X-Renders"] == "1"
        assert response.data == (b"page 1" if method == "GET" else b"")
        assert response.headers["Content-Length"] == "6"
    assert len(flights) == 0  # nothing left in flight
    assert app.test_client().get("/slow?a=1").text == "page 1"
    assert len(renders) == 1


def test_concurrent_misses_render_an_async_view_once(app_ext):
    app, ext = app_ext
    flights = _counting_flights(app)
    gate = threading.Event()
    renders = []

    @app.get("/aslow/<name>")
    @ext.cached(ttl=60)
    async def aslow(name):
        renders.append(name)
        # Flask gives each async view its own loop and thread: wait without blocking it.
        await asyncio.get_running_loop().run_in_executor(None, gate.wait, 5)
        return {"name": name, "renders": len(renders)}

    sent = _InThreads(app, [("GET", "/aslow/ann", {})] * 16)
    try:
        assert _wait_for(lambda: flights.waiters == 15)
    finally:
        gate.set()
    responses = sent.join()
    assert renders == ["ann"]
    assert [r.json for r in responses] == [{"name": "ann", "renders": 1}] * 16
    assert len(flights) == 0


def test_concurrent_misses_of_different_pages_do_not_wait_for_each_other(app_ext):
    app, ext = app_ext
    flights = _counting_flights(app)
    together = threading.Barrier(4, timeout=5)

    @app.get("/p/<int:n>")
    @ext.cached(ttl=60)
    def page(n):
        together.wait()  # broken unless all four pages render at the same time
        return str(n)

    paths = ["/p/1", "/p/2", "/p/3?x=1", "/p/3?x=2"]
    responses = _InThreads(app, [("GET", path, {}) for path in paths]).join()
    assert [r.text for r in responses] == ["1", "2", "3", "3"]
    assert flights.waiters == 0


def _cookie(user: str):
    response = make_response(f"for {user}")
    response.set_cookie("user", user)
    return response


def _streamed(user: str):
    def body():
        yield "for "
        yield user

    return Response(body())


def _session_read(user: str):
    session.get("cart")
    return f"for {user}"


@pytest.mark.parametrize(
    "respond",
    [
        _cookie,
        lambda user: (f"for {user}", 500),
        _session_read,
        _streamed,
        lambda user: (f"for {user}", 200, {"Cache-Control": "private"}),
    ],
    ids=["set-cookie", "500", "session", "streamed", "private"],
)
def test_waiters_render_their_own_when_the_first_response_is_uncacheable(app_ext, respond):
    app, ext = app_ext
    flights = _counting_flights(app)
    gate = threading.Event()
    lock = threading.Lock()
    renders: list[str] = []

    @app.get("/mine")
    @ext.cached(ttl=60)
    def mine():
        user = request.headers["X-User"]
        with lock:
            first = not renders
            renders.append(user)
        if first:
            gate.wait(5)
        return respond(user)

    users = [f"u{i}" for i in range(16)]
    sent = _InThreads(app, [("GET", "/mine", {"X-User": user}) for user in users])
    try:
        assert _wait_for(lambda: flights.waiters == 15)
    finally:
        gate.set()
    responses = sent.join()
    assert sorted(renders) == sorted(users)  # every request rendered its own
    for user, response in zip(users, responses, strict=True):
        assert response.text == f"for {user}"
        if respond is _cookie:
            assert response.headers["Set-Cookie"].startswith(f"user={user};")
    assert len(flights) == 0


def test_waiters_render_their_own_when_the_first_render_fails(app_ext):
    app, ext = app_ext
    flights = _counting_flights(app)
    gate = threading.Event()
    lock = threading.Lock()
    renders: list[str] = []

    @app.get("/flaky")
    @ext.cached(ttl=60)
    async def flaky():
        user = request.headers["X-User"]
        with lock:
            first = not renders
            renders.append(user)
        if first:
            await asyncio.get_running_loop().run_in_executor(None, gate.wait, 5)
            abort(503)
        return f"for {user}"

    users = [f"u{i}" for i in range(8)]
    sent = _InThreads(app, [("GET", "/flaky", {"X-User": user}) for user in users])
    try:
        assert _wait_for(lambda: flights.waiters == 7)
    finally:
        gate.set()
    responses = sent.join()
    assert len(renders) == 8
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 7 + [503]
    for user, response in zip(users, responses, strict=True):
        if response.status_code == 200:
            assert response.text == f"for {user}"
    assert len(flights) == 0


def test_waiting_is_bounded_by_wait_timeout(app_ext):
    app, ext = app_ext
    flights = _counting_flights(app)
    gate = threading.Event()
    lock = threading.Lock()
    renders: list[int] = []

    @app.get("/stuck")
    @ext.cached(ttl=60, wait_timeout=0.05)
    def stuck():
        with lock:
            renders.append(1)
            n = len(renders)
        if n == 1:
            gate.wait(5)
        # Not stored: a slow-starting request must find no page and wait like the others.
        return f"render {n}", 200, {"Cache-Control": "no-store"}

    sent = _InThreads(app, [("GET", "/stuck", {})] * 4)
    try:
        # The three others gave up waiting and answered while the first is still stuck.
        assert _wait_for(lambda: len(sent.results) == 3)
        assert flights.waiters == 3
        assert len(renders) == 4
    finally:
        gate.set()
    responses = sent.join()
    assert sorted(r.status_code for r in responses) == [200] * 4


def test_wait_timeout_zero_renders_concurrent_misses_independently(app_ext):
    app, ext = app_ext
    flights = _counting_flights(app)
    together = threading.Barrier(4, timeout=5)

    @app.get("/free")
    @ext.cached(ttl=60, wait_timeout=0)
    def free():
        together.wait()  # all four render at once, or this breaks
        return "free"

    responses = _InThreads(app, [("GET", "/free", {})] * 4).join()
    assert [r.text for r in responses] == ["free"] * 4
    assert flights.waiters == 0 and len(flights) == 0


# ---- memoize ---------------------------------------------------------------------------


def test_memoize_defined_before_app_and_all_variants():
    ext = Chorde()
    calls = []

    @ext.memoize(ttl=60)
    def square(x):
        calls.append((x, current_app.name))
        return x * x

    app = make_app("memo")
    ext.init_app(app)
    with app.app_context():
        assert square(3) == 9
        assert square(3) == 9
        assert calls == [(3, "memo")]
        assert square.peek(3) == 9
        with pytest.raises(CacheMissError):
            square.peek(4)
        with pytest.raises(CacheMissError):
            square.lazy(5)
        assert square.refresh(3) == 9
        assert len(calls) == 2
        square.put(3, _cache_put=10)
        assert square(3) == 10
        square.invalidate(3)
        with pytest.raises(CacheMissError):
            square.peek(3)
        square.put(3, _cache_put=11)
        square.expire(3)
        assert square.bg()(3) == 11  # stale served, refreshed in the background
        assert square.uncached(6) == 36
        assert square.client is ext.client
        fut = square.future()(7)
        assert isinstance(fut, Future)
        # The pool thread computing it has no context of its own: it runs in the app's.
        assert fut.result(timeout=5) == 49
        assert (7, "memo") in calls
        assert _wait_for(lambda: _peek(square, 3) == 9)
        assert square.future().peek(7).result(timeout=5) == 49
        with pytest.raises(CacheMissError):
            square.bg().lazy(8)  # and starts the computation
        assert _wait_for(lambda: _peek(square, 8) == 64)


def _peek(fn, *args):
    try:
        return fn.peek(*args)
    except CacheMissError:
        return None


def test_memoize_ttl_defaults_to_config():
    ext = Chorde()
    calls = []

    @ext.memoize()
    def f(x):
        calls.append(x)
        return x

    now = [1000.0]
    client = InprocCacheClient(10, clock=lambda: now[0])
    app = make_app(CHORDE_DEFAULT_TTL=42, CHORDE_CLIENT=client)
    ext.init_app(app)
    with app.app_context():
        f(1)
        now[0] += 37  # within 42 s minus the 10% ttl spread
        f(1)
        now[0] += 5.1
        f(1)
    assert calls == [1, 1]


def test_memoize_bad_arguments_fail_at_decoration():
    ext = Chorde()
    with pytest.raises(ValueError, match="ttl"):
        ext.memoize(ttl=0)
    with pytest.raises(ValueError, match="async_ttl"):
        ext.memoize(ttl=10, async_ttl=-20)
    with pytest.raises(TypeError):
        ext.memoize(ttl=10)("not a function")


def test_memoize_needs_app_context():
    ext = Chorde()

    @ext.memoize(ttl=5)
    def f():
        return 1

    with pytest.raises(RuntimeError, match="application context"):
        f()


def test_memoize_computes_once_across_threads():
    ext = Chorde()
    app = make_app()
    ext.init_app(app)
    calls = []
    gate = threading.Event()

    @ext.memoize(ttl=60)
    def slow(x):
        calls.append(x)
        gate.wait(5)
        return x

    results = []

    def worker():
        with app.app_context():
            results.append(slow(1))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    assert _wait_for(lambda: len(calls) == 1)
    gate.set()
    for thread in threads:
        thread.join(5)
    assert results == [1] * 8
    assert calls == [1]


def test_memoized_method_binds_self():
    ext = Chorde()
    app = make_app()
    ext.init_app(app)

    class Repo:
        calls = 0

        def __init__(self, name):
            self.name = name

        @ext.memoize(ttl=60, key=lambda self, x: (self.name, x))
        def load(self, x):
            Repo.calls += 1
            return f"{self.name}/{x}"

    with app.app_context():
        a, b = Repo("a"), Repo("b")
        assert a.load(1) == "a/1"
        assert a.load(1) == "a/1"
        assert b.load(1) == "b/1"
        assert Repo.calls == 2
        assert a.load.peek(1) == "a/1"
        a.load.invalidate(1)
        with pytest.raises(CacheMissError):
            a.load.peek(1)
        assert a.load.future()(2).result(timeout=5) == "a/2"


def test_async_memoized_function_in_async_view(app_ext):
    app, ext = app_ext
    calls = []

    @ext.memoize(ttl=60)
    async def fetch(x):
        await asyncio.sleep(0)
        calls.append(current_app.name)
        return x * 2

    @app.get("/double/<int:x>")
    async def double(x):
        return str(await fetch(x))

    client = app.test_client()
    assert client.get("/double/4").text == "8"
    assert client.get("/double/4").text == "8"
    assert calls == ["app"]


def test_memoize_on_memcached_shared_between_apps(memcached):
    ext = Chorde()
    calls = []

    @ext.memoize(ttl=60)
    def compute(x):
        calls.append(current_app.name)
        return {"x": x}

    a = make_app("a", **mc_config(memcached, CHORDE_KEY_PREFIX="shared"))
    b = make_app("b", **mc_config(memcached, CHORDE_KEY_PREFIX="shared"))
    ext.init_app(a)
    ext.init_app(b)
    with a.app_context():
        assert compute(1) == {"x": 1}
    with b.app_context():
        assert compute(1) == {"x": 1}
        assert compute.future()(2).result(timeout=5) == {"x": 2}
    assert calls == ["a", "b"]


def test_async_view_cached_on_memcached(memcached):
    ext = Chorde()
    app = make_app(**mc_config(memcached))
    ext.init_app(app)
    renders = []

    @app.get("/a")
    @ext.cached(ttl=60)
    async def a():
        renders.append(1)
        return {"render": len(renders)}, 200, {"X-Extra": "yes"}

    client = app.test_client()
    first = client.get("/a")
    second = client.get("/a")
    assert first.json == second.json == {"render": 1}
    assert second.headers["X-Extra"] == "yes"
    assert renders == [1]
