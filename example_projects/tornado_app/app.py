"""Example tornado app using chorde: cached functions through ``.future()``, a cached page.

Run it (in-process cache)::

    python example_projects/tornado_app/app.py --port 8888

or on memcached (processes then share results)::

    CHORDE_MEMCACHED=localhost:11211 CHORDE_SECRET=change-me \\
        python example_projects/tornado_app/app.py --port 8888

or on Redis (or Valkey), any client URL::

    CHORDE_REDIS=redis://localhost:6379 CHORDE_SECRET=change-me \\
        python example_projects/tornado_app/app.py --port 8888

Endpoints: ``GET /gen/fib/20`` (a ``@gen.coroutine`` handler yielding a chorde future),
``GET /native/square/12`` (an ``async def`` handler awaiting one), ``GET /page`` (a whole
response cached by :func:`chorde_tornado.cache_response`), ``POST /invalidate/20``,
``GET /stats`` (work done by this process).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import threading
import time

import tornado.gen
import tornado.web

import chorde_tornado  # noqa: F401  (lets @gen.coroutine handlers yield chorde futures)
from chorde.clients.base import BaseCacheClient
from chorde.clients.inproc import InprocCacheClient
from chorde.decorators import cached
from chorde_tornado import cache_response

_lock = threading.Lock()
work: collections.Counter[str] = collections.Counter()


def _count(what: str) -> None:
    with _lock:
        work[what] += 1


def _client_from_env() -> BaseCacheClient:
    servers = os.environ.get("CHORDE_MEMCACHED")
    redis_url = os.environ.get("CHORDE_REDIS")
    if redis_url:
        from chorde.clients import from_url

        secret = os.environ.get("CHORDE_SECRET", "example-only-secret")
        return from_url(redis_url, checksum_key=secret, namespace="tornado_example")
    if not servers:
        return InprocCacheClient(10000)
    from chorde.clients.memcached import MemcachedClient

    secret = os.environ.get("CHORDE_SECRET", "example-only-secret")
    return MemcachedClient(servers.split(","), secret, namespace="tornado_example")


client = _client_from_env()


@cached(client, ttl=300)
def slow_fib(n: int) -> int:
    """Deliberately slow; blocking, so it must run on chorde's pool (``.future()``)."""
    time.sleep(0.3)
    _count("fib")
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


@cached(client, ttl=300)
def slow_square(n: int) -> int:
    """Deliberately slow square."""
    time.sleep(0.3)
    _count("square")
    return n * n


class FibHandler(tornado.web.RequestHandler):
    """A generator-based coroutine yielding a chorde future."""

    @tornado.gen.coroutine
    def get(self, n: str):
        value = yield slow_fib.future()(int(n))
        self.write({"n": int(n), "fib": value, "style": "gen.coroutine"})


class SquareHandler(tornado.web.RequestHandler):
    """A native coroutine awaiting a chorde future."""

    async def get(self, n: str) -> None:
        value = await slow_square.future()(int(n))
        self.write({"n": int(n), "square": value, "style": "async def"})


class PageHandler(tornado.web.RequestHandler):
    """A whole response cached for 30 seconds, keyed on the URI."""

    @cache_response(30, client=client)
    @tornado.gen.coroutine
    def get(self):
        _count("page")
        fib, square = yield [slow_fib.future()(10), slow_square.future()(12)]
        self.write({"fib10": fib, "square12": square, "pid": os.getpid(), "at": time.time()})


class InvalidateHandler(tornado.web.RequestHandler):
    """Drop cached results of both functions for ``n``."""

    async def post(self, n: str) -> None:
        await slow_fib.future().invalidate(int(n))
        await slow_square.future().invalidate(int(n))
        self.write({"invalidated": int(n)})


class StatsHandler(tornado.web.RequestHandler):
    """How much work this process did."""

    def get(self) -> None:
        with _lock:
            done = dict(work)
        self.write({"work": done, "client": type(client).__name__, "pid": os.getpid()})


def make_app() -> tornado.web.Application:
    """The application and its routes."""
    return tornado.web.Application(
        [
            (r"/gen/fib/(\d+)", FibHandler),
            (r"/native/square/(\d+)", SquareHandler),
            (r"/page", PageHandler),
            (r"/invalidate/(\d+)", InvalidateHandler),
            (r"/stats", StatsHandler),
        ]
    )


async def main(port: int, address: str) -> None:
    """Serve until killed."""
    make_app().listen(port, address=address)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8888)
    parser.add_argument("--address", default="127.0.0.1")
    options = parser.parse_args()
    asyncio.run(main(options.port, options.address))
