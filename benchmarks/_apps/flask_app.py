"""A one-page Flask app for gunicorn: ``benchmarks._apps.flask_app:app``.

The page is cached by chorde's extension (``@chorde.cached``) or by Flask-Caching
(``@cache.cached``), as ``BENCH_IMPL`` names in :data:`CONFIGS`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response

from benchmarks._apps import CHECKSUM_KEY, PAGE, TTL, VIEW_DELAY, impl, memcached, note_miss, redis

__all__ = ["CONFIGS", "app"]


def _chorde(url: str | list[str]) -> dict[str, Any]:
    return {"CHORDE_URL": url, "CHORDE_CHECKSUM_KEY": CHECKSUM_KEY}


#: Implementation name -> the app config it runs with (``CHORDE_*``: chorde, else
#: Flask-Caching's ``CACHE_*``).
CONFIGS: dict[str, Callable[[], dict[str, Any]]] = {
    "chorde-inproc": lambda: {"CHORDE_CLIENT": "inproc"},
    "chorde-memcached": lambda: _chorde(f"memcached://{memcached()}"),
    "chorde-tiered": lambda: _chorde(
        ["inproc://?size=10000&max_ttl=5", f"memcached://{memcached()}"]
    ),
    "chorde-redis": lambda: _chorde(f"redis://{redis()}"),
    "Flask-Caching-simple": lambda: {"CACHE_TYPE": "SimpleCache"},
    "Flask-Caching-memcached": lambda: {
        "CACHE_TYPE": "MemcachedCache",
        "CACHE_MEMCACHED_SERVERS": [memcached()],
    },
    "Flask-Caching-redis": lambda: {
        "CACHE_TYPE": "RedisCache",
        "CACHE_REDIS_URL": f"redis://{redis()}/0",
    },
}


def _render() -> Response:
    note_miss()
    time.sleep(VIEW_DELAY)
    return Response(PAGE, content_type="text/html; charset=utf-8")


def create_app(name: str) -> Flask:
    """The app, its page cached by implementation ``name``."""
    flask_app = Flask(__name__)
    flask_app.config.update(CONFIGS[name]())
    view: Callable[[], Response]
    if name.startswith("chorde"):
        from chorde_flask import Chorde

        chorde = Chorde(flask_app)
        view = chorde.cached(ttl=TTL)(_render)
    else:
        from flask_caching import Cache

        cache = Cache(flask_app)
        view = cache.cached(timeout=TTL)(_render)
    flask_app.add_url_rule("/page", "page", view)
    flask_app.add_url_rule("/ready", "ready", lambda: "ok")
    return flask_app


#: The WSGI application gunicorn serves.
app = create_app(impl())
