"""chorde_flask's Flask-Caching parity: memoize and view options (unless, forced_update,
condition/response_filter, source_check), delete_memoized, clear, the {% cache %} fragment
tag and the hook; in-process and memcached, sync and async."""

from __future__ import annotations

import asyncio

import flask
import pytest

from chorde import observe
from chorde.clients.inproc import InprocCacheClient
from chorde_flask import Chorde


@pytest.fixture(params=["inproc", "memcached"])
def app(request):
    app = flask.Flask(__name__)
    app.testing = True
    app.config["SECRET_KEY"] = "parity-tests-" + "k" * 20
    if request.param == "memcached":
        server = request.getfixturevalue("memcached")
        app.config["CHORDE_CLIENT"] = "memcached"
        app.config["CHORDE_SERVERS"] = [server.address]
    else:
        app.config["CHORDE_CLIENT"] = InprocCacheClient(1000)
    ext = Chorde(app)
    app.extensions["test_ext"] = ext
    yield app
    ext.close(app)


def _ext(app):
    return app.extensions["test_ext"]


def test_memoize_unless_forced_update_and_condition(app):
    ext = _ext(app)
    calls = []
    state = {"bypass": False, "force": False}

    @ext.memoize(
        ttl=60,
        unless=lambda: state["bypass"],
        forced_update=lambda fn, x: state["force"] and x == 1,
        condition=lambda result: result is not None,
    )
    def lookup(x):
        calls.append(x)
        return None if x == 0 else [x, len(calls)]

    with app.app_context():
        first = lookup(1)
        assert lookup(1) == first
        state["bypass"] = True
        assert lookup(1) != first  # uncached: computed, not stored
        state["bypass"] = False
        assert lookup(1) == first
        state["force"] = True
        forced = lookup(1)
        assert forced != first
        assert lookup(2) == lookup(2)  # the predicate took the arguments: 2 is not forced
        state["force"] = False
        assert lookup(1) == forced
        assert lookup(0) is None and lookup(0) is None
        assert calls.count(0) == 2  # condition false: never stored


def test_delete_memoized_whole_function_and_one_call(app):
    ext = _ext(app)
    calls = []

    @ext.memoize(ttl=60)
    def area(w, h=1):
        calls.append((w, h))
        return [w * h, len(calls)]

    class Repo:
        @ext.memoize(ttl=60, key=lambda self, x: x)
        def load(self, x):
            calls.append(("load", x))
            return [x, len(calls)]

    repo = Repo()
    with app.app_context():
        a, b, c = area(2), area(3, h=2), repo.load(1)
        ext.delete_memoized(area, 2)
        assert area(2) != a and area(3, h=2) == b
        ext.delete_memoized(repo.load, 1)  # a bound method passes its instance
        assert repo.load(1) != c
        a, b = area(2), area(3, h=2)
        ext.delete_memoized(area)  # every result of the function
        assert area(2) != a and area(3, h=2) != b
        with pytest.raises(TypeError, match="not a memoized or cached function"):
            ext.delete_memoized(len)


async def test_async_memoized_delete_and_forced(app):
    ext = _ext(app)
    calls = []

    @ext.memoize(ttl=60, forced_update=lambda: False)
    async def fetch(x):
        calls.append(x)
        await asyncio.sleep(0)
        return [x, len(calls)]

    with app.app_context():
        first = await fetch(1)
        assert await fetch(1) == first
        await ext.delete_memoized(fetch)
        second = await fetch(1)
        assert second != first
        assert await fetch.forced()(1) != second
        assert fetch.cache_info().misses == 3


def test_source_check_keys_on_the_source(app):
    ext = _ext(app)

    @ext.memoize(ttl=60, source_check=True)
    def f(x):
        return x

    @ext.memoize(ttl=60)
    def g(x):
        return x

    with app.app_context():
        assert f.namespace.startswith(f"{__name__}.") and f.namespace != g.namespace
        assert f.namespace.rsplit(":", 1)[1].isalnum()
        assert f(1) == 1


def test_tags_through_memoize(app):
    from chorde.tags import invalidate_tags

    ext = _ext(app)
    calls = []

    @ext.memoize(ttl=60, tags=lambda user: [f"user:{user}"])
    def profile(user):
        calls.append(user)
        return len(calls)

    with app.app_context():
        profile(1)
        profile(1)
        invalidate_tags(ext.client, "user:1")
        profile(1)
        assert calls == [1, 1]
        ext.purge_tags("user:1")  # the view cache's purge: the same tag records
        profile(1)
        assert calls == [1, 1, 1]


def test_view_options(app):
    ext = _ext(app)
    renders = []
    state = {"bypass": False, "force": False}

    @app.get("/page/<int:n>")
    @ext.cached(
        ttl=60,
        unless=lambda: state["bypass"],
        forced_update=lambda: state["force"],
        condition=lambda response: response.status_code == 200,
    )
    def page(n):
        renders.append(n)
        return (f"page {n} #{len(renders)}", 200 if n else 404)

    web = app.test_client()
    first = web.get("/page/1").text
    assert web.get("/page/1").text == first
    state["bypass"] = True
    assert web.get("/page/1").text != first
    state["bypass"] = False
    assert web.get("/page/1").text == first
    state["force"] = True
    forced = web.get("/page/1").text
    state["force"] = False
    assert forced != first and web.get("/page/1").text == forced
    web.get("/page/0")
    web.get("/page/0")
    assert renders.count(0) == 2  # a 404 the condition refuses: never stored


def test_view_source_check_and_clear(app):
    ext = _ext(app)
    renders = []

    @app.get("/src")
    @ext.cached(ttl=60, source_check=True)
    def src():
        renders.append(1)
        return f"src {len(renders)}"

    web = app.test_client()
    one = web.get("/src").text
    assert web.get("/src").text == one
    with app.app_context():
        ext.clear()
    assert web.get("/src").text != one


def test_fragment_tag(app):
    ext = _ext(app)
    template = (
        "{% cache 60, 'sidebar', user %}[{{ user }} {{ counter() }}]{% endcache %}"
        "{% cache None %}<{{ counter() }}>{% endcache %}"
    )
    count = {"n": 0}

    def counter():
        count["n"] += 1
        return count["n"]

    with app.test_request_context():
        first = flask.render_template_string(template, user="ann", counter=counter)
        assert flask.render_template_string(template, user="ann", counter=counter) == first
        other = flask.render_template_string(template, user="bob", counter=counter)
        assert other.startswith("[bob") and other.endswith(first[first.index("<") :])
        ext.client.delete(ext.fragment_key("sidebar", "ann"))
        assert flask.render_template_string(template, user="ann", counter=counter) != first
        dropped = flask.render_template_string(
            "{% cache 'del', 'sidebar', user %}x{{ counter() }}{% endcache %}",
            user="ann",
            counter=counter,
        )
        assert dropped.startswith("x")
        with pytest.raises(TypeError, match="fragment name must be a non-empty str"):
            flask.render_template_string("{% cache 60, 5 %}x{% endcache %}")


def test_hook_sees_memoized_functions_and_views(app):
    ext = _ext(app)

    @ext.memoize(ttl=60)
    def square(x):
        return x * x

    @app.get("/hooked")
    @ext.cached(ttl=60)
    def hooked():
        return "ok"

    events: list[observe.Event] = []
    web = app.test_client()
    with observe.hooked(events.append):
        with app.app_context():
            square(3)
            square(3)
        web.get("/hooked")
        web.get("/hooked")
    assert [(e.scope, e.kind) for e in events] == [
        ("function", "miss"),
        ("function", "hit"),
        ("route", "miss"),
        ("route", "hit"),
    ]
    with app.app_context():
        assert ext.route_info()[f"{__name__}.{hooked.__qualname__}"].hits == 1
        assert square.cache_info().hits == 1


def test_bad_predicates():
    ext = Chorde()
    with pytest.raises(TypeError, match="unless must be a callable"):
        ext.memoize(ttl=10, unless=True)
    with pytest.raises(TypeError, match="forced_update must be a callable"):
        ext.cached(ttl=10, forced_update="yes")
