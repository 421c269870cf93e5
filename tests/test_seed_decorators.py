"""The seed README's "Decorators" and "Integration with other libraries" examples, in Python 3.

``.async()`` is spelled ``.bg()`` (``async`` is a keyword now); ``.async_()`` is kept as an
alias. Where the seed states timing behaviour (``async_ttl`` refreshes, ``ttl`` as an
absolute limit) it is observed with real sleeps on short ttls.
"""

from __future__ import annotations

import random
import time

import pytest
import tornado.gen
import tornado.httpclient
import tornado.httpserver
import tornado.ioloop
import tornado.netutil
import tornado.web

from chorde import CacheMissError
from chorde.clients.asyncache import makeFutureWrapper
from chorde.clients.inproc import InprocCacheClient
from chorde.decorators import cached

WAIT = 5


def _eventually(fn, predicate):
    """Call fn until predicate(result) holds (bounded), and return that result."""
    deadline = time.monotonic() + WAIT
    while True:
        result = fn()
        if predicate(result):
            return result
        assert time.monotonic() < deadline, f"still {result!r}"
        time.sleep(0.01)


def test_seed_decorator_example(capsys):
    c = InprocCacheClient(200)

    @cached(c, ttl=300, async_ttl=-60)
    def expensive_func(x):
        return x * random.random()

    print(expensive_func(1))
    print(expensive_func(1))  # Should return the same
    print(expensive_func.bg()(1))  # will refresh asynchronously every minute
    print(expensive_func.async_()(1))  # the seed's .async(), spelled for Python 3
    print(expensive_func.future()(1).result())  # same as before, but using futures
    print(expensive_func.peek(1))  # just check the cache
    print(expensive_func.put(1, _cache_put=5))  # write an explicit value
    print(expensive_func.bg().lazy(1))  # don't wait, CacheMissError if not available
    print(expensive_func.future().lazy(1).result())  # same, through futures

    lines = capsys.readouterr().out.splitlines()
    first = lines[0]
    assert 0 <= float(first) < 1
    assert lines[1:6] == [first] * 5
    assert lines[6:] == ["None", "5", "5"]


def test_async_ttl_recomputes_in_the_background():
    # ttl=1, async_ttl=-0.3: "recompute every 0.3 s" while callers keep the cached value.
    c = InprocCacheClient(200)
    calls = []

    @cached(c, ttl=1, async_ttl=-0.3, ttl_spread=False)
    def expensive_func(x):
        calls.append(time.monotonic())
        return x * random.random()

    first = expensive_func(1)
    assert expensive_func(1) == first
    time.sleep(0.35)  # older than 0.3 s: inside the refresh window, far from expiry
    assert expensive_func(1) == first  # served at once; a refresh started behind it
    second = _eventually(lambda: expensive_func.peek(1), lambda v: v != first)
    assert expensive_func(1) == second
    assert len(calls) == 2


def test_ttl_is_an_absolute_limit():
    c = InprocCacheClient(200)

    @cached(c, ttl=0.4, async_ttl=-0.2, ttl_spread=False)
    def expensive_func(x):
        return x * random.random()

    first = expensive_func(1)
    time.sleep(0.5)  # past the ttl, no call in between refreshed it
    # A plain call never returns a result older than ttl: it recomputes and waits.
    assert expensive_func(1) != first


def test_terms_lazy_peek_refresh():
    c = InprocCacheClient(200)
    calls = []

    @cached(c, ttl=300)
    def expensive_func(x):
        calls.append(x)
        return x * random.random()

    # peek: don't compute, ever.
    with pytest.raises(CacheMissError):
        expensive_func.peek(1)
    # lazy: cached result or CacheMissError, no waiting...
    with pytest.raises(CacheMissError):
        expensive_func.lazy(1)
    assert calls == []
    # ...combined with async (bg), it computes in the background.
    with pytest.raises(CacheMissError):
        expensive_func.bg().lazy(1)
    value = _eventually(lambda: expensive_func.peek(1) if c.usage else None, bool)
    assert expensive_func.lazy(1) == value
    # future().lazy: the same through a future.
    assert expensive_func.future().lazy(1).result(WAIT) == value
    # refresh: immediately recompute.
    assert expensive_func.refresh(1) != value
    assert calls == [1, 1]


# ---- Integration with other libraries ----------------------------------------------------


def _serve(handler_class):
    """Run a tornado app with one handler on 127.0.0.1 and fetch '/' once."""

    async def scenario():
        [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
        server = tornado.httpserver.HTTPServer(tornado.web.Application([("/", handler_class)]))
        server.add_sockets([sock])
        try:
            port = sock.getsockname()[1]
            client = tornado.httpclient.AsyncHTTPClient()
            response = await client.fetch(f"http://127.0.0.1:{port}/", request_timeout=WAIT)
            return response.body.decode()
        finally:
            server.stop()

    return tornado.ioloop.IOLoop.current().run_sync(scenario, timeout=WAIT * 2)


def test_seed_tornado_wrapper():
    c = InprocCacheClient(200)

    @cached(c, ttl=300)
    def some_func(some_args):
        return f"result of {some_args}"

    WF = makeFutureWrapper(tornado.web.Future)

    class Handler(tornado.web.RequestHandler):
        @tornado.gen.coroutine
        def get(self):
            some_result = yield WF(some_func.future()("args"))
            self.write(some_result)

    assert _serve(Handler) == "result of args"
    assert some_func.peek("args") == "result of args"


def test_tornado_without_monkey_patching():
    # The seed's "better way" needed monkey_patch_tornado(); tornado >= 5 accepts
    # concurrent.futures.Future, which chorde futures are, and they are awaitable too.
    c = InprocCacheClient(200)

    @cached(c, ttl=300)
    def some_func(some_args):
        return f"result of {some_args}"

    class Handler(tornado.web.RequestHandler):
        @tornado.gen.coroutine
        def get(self):
            some_result = yield some_func.future()("args")
            self.write(some_result)

    class AwaitHandler(tornado.web.RequestHandler):
        async def get(self):
            self.write(await some_func.future()("args"))

    assert _serve(Handler) == "result of args"
    assert _serve(AwaitHandler) == "result of args"
