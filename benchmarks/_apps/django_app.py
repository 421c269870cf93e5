"""A one-page Django site (``cache_page``) for gunicorn: ``...django_app:application``.

The ``default`` cache is the one ``BENCH_IMPL`` names in :data:`CONFIGS`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import django
from django.conf import settings
from django.http import HttpRequest, HttpResponse

from benchmarks._apps import CHECKSUM_KEY, PAGE, TTL, VIEW_DELAY, impl, memcached, note_miss, redis

__all__ = ["CONFIGS", "application", "urlpatterns"]

_CHORDE = "chorde_django.ChordeCache"
_BACKENDS = "django.core.cache.backends"


def _chorde(client: str) -> dict[str, Any]:
    options = {"CHECKSUM_KEY": CHECKSUM_KEY}
    if client == "inproc":
        return {"BACKEND": _CHORDE}
    if client == "redis":
        return {"BACKEND": _CHORDE, "LOCATION": f"redis://{redis()}", "OPTIONS": options}
    return {"BACKEND": _CHORDE, "LOCATION": memcached(), "OPTIONS": {"CLIENT": client, **options}}


#: Implementation name -> the ``CACHES["default"]`` it runs with.
CONFIGS: dict[str, Callable[[], dict[str, Any]]] = {
    "chorde-inproc": lambda: _chorde("inproc"),
    "chorde-memcached": lambda: _chorde("memcached"),
    "chorde-tiered": lambda: _chorde("tiered"),
    "chorde-redis": lambda: _chorde("redis"),
    "LocMemCache": lambda: {"BACKEND": f"{_BACKENDS}.locmem.LocMemCache"},
    "PyMemcacheCache": lambda: {
        "BACKEND": f"{_BACKENDS}.memcached.PyMemcacheCache",
        "LOCATION": memcached(),
    },
    "PyLibMCCache": lambda: {
        "BACKEND": f"{_BACKENDS}.memcached.PyLibMCCache",
        "LOCATION": memcached(),
    },
    "RedisCache": lambda: {
        "BACKEND": f"{_BACKENDS}.redis.RedisCache",
        "LOCATION": f"redis://{redis()}",
    },
    "django-redis": lambda: {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": f"redis://{redis()}",
    },
}


settings.configure(
    DEBUG=False,
    SECRET_KEY="benchmark only, not a secret",
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[],
    MIDDLEWARE=[],
    USE_TZ=True,
    CACHES={"default": CONFIGS[impl()]()},
    LOGGING_CONFIG=None,
)
django.setup()

from django.urls import path  # noqa: E402  (after settings)
from django.views.decorators.cache import cache_page  # noqa: E402


@cache_page(TTL)
def page(request: HttpRequest) -> HttpResponse:
    """The expensive page, cached whole by ``cache_page``."""
    note_miss()
    time.sleep(VIEW_DELAY)
    return HttpResponse(PAGE, content_type="text/html; charset=utf-8")


def ready(request: HttpRequest) -> HttpResponse:
    """Start-up probe, uncached."""
    return HttpResponse("ok", content_type="text/plain")


urlpatterns = [path("page", page), path("ready", ready)]


from django.core.wsgi import get_wsgi_application  # noqa: E402  (after settings)

#: The WSGI application gunicorn serves.
application = get_wsgi_application()
