"""Views showing each way a Django site uses ChordeCache.

Each view counts how often its expensive part really ran (``/counters/``), so a cached
response can be told from a fresh one.
"""

from __future__ import annotations

import threading
from collections import Counter

from django.core.cache import cache
from django.core.cache.utils import make_template_fragment_key
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import cache_page
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from chorde_django import cached

_counts: Counter[str] = Counter()
_lock = threading.Lock()


def _count(name: str) -> int:
    with _lock:
        _counts[name] += 1
        return _counts[name]


def index(request: HttpRequest) -> HttpResponse:
    """Links to the examples."""
    links = [
        "cached-page/",
        "fragment/",
        "lowlevel/hello/",
        "async-lowlevel/hello/",
        "session/",
        "square/12/",
        "counters/",
    ]
    items = "".join(f'<li><a href="/{u}">/{u}</a></li>' for u in links)
    return HttpResponse(f"<!doctype html><title>chorde example</title><ul>{items}</ul>")


@cache_page(60)
def cached_page(request: HttpRequest) -> HttpResponse:
    """A whole response cached for a minute (per-view caching)."""
    n = _count("cached_page")
    return HttpResponse(f"cached page, view ran {n} times in this process")


@csrf_exempt
@require_POST
def invalidate_pages(request: HttpRequest) -> HttpResponse:
    """Drop every cached page and fragment (the ``default`` alias; sessions stay)."""
    cache.clear()
    return HttpResponse("cleared")


def fragment(request: HttpRequest) -> HttpResponse:
    """A page rendered on every request with a sidebar fragment cached in the template."""
    return render(
        request,
        "fragment.html",
        # A callable: the template calls it only when the fragment is really rendered.
        {"page_renders": _count("fragment_page"), "sidebar": lambda: _count("sidebar")},
    )


@csrf_exempt
@require_POST
def invalidate_fragment(request: HttpRequest) -> HttpResponse:
    """Drop the cached sidebar fragment only."""
    cache.delete(make_template_fragment_key("sidebar"))
    return HttpResponse("fragment dropped")


def _greeting(name: str) -> str:
    return f"hello {name} (computed {_count('greeting:' + name)} times)"


@csrf_exempt
def lowlevel(request: HttpRequest, name: str) -> HttpResponse:
    """The low-level API: ``get_or_set`` on GET, ``delete`` on DELETE."""
    key = f"greeting:{name}"
    if request.method == "DELETE":
        return JsonResponse({"deleted": cache.delete(key)})
    return JsonResponse({"greeting": cache.get_or_set(key, lambda: _greeting(name), 60)})


async def async_lowlevel(request: HttpRequest, name: str) -> HttpResponse:
    """The same through the async API (``aget_or_set``), from an async view."""
    key = f"agreeting:{name}"
    value = await cache.aget_or_set(key, lambda: _greeting("async " + name), 60)
    return JsonResponse({"greeting": value})


def session_visits(request: HttpRequest) -> HttpResponse:
    """Counts this visitor's requests in a cache-backed session."""
    request.session["visits"] = request.session.get("visits", 0) + 1
    return JsonResponse({"visits": request.session["visits"]})


@cached(60)
def slow_square(n: int) -> int:
    """An expensive function, computed once per argument per minute (``@cached``)."""
    _count("slow_square")
    return n * n


def square_view(request: HttpRequest, n: int) -> HttpResponse:
    """Serves ``slow_square`` and how often it really ran."""
    return JsonResponse({"square": slow_square(n), "computed": _counts["slow_square"]})


def counters(request: HttpRequest) -> HttpResponse:
    """How often each expensive part ran in this process."""
    with _lock:
        return JsonResponse(dict(_counts))
