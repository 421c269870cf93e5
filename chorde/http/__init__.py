"""HTTP response caching, framework-neutral: parse, decide, key, store (RFC 9111).

:class:`Rules` is the policy (what may be stored and served, under which key),
:class:`Route` what one route declares about itself, :class:`ResponseCache` the policy
applied over a chorde client with its lookup/store/serve flows (blocking and asyncio).
The Flask, Tornado and Starlette adapters only translate their request and response
objects into these.
"""

from __future__ import annotations

from chorde.http.cache import ARender, Conditions, Outcome, Render, Rendered, Reply, ResponseCache
from chorde.http.entry import StoredResponse
from chorde.http.fields import CacheControl, parse_cache_control, parse_vary
from chorde.http.request import CacheRequest, Headers
from chorde.http.route import Route
from chorde.http.rules import (
    DEFAULT_MAX_VARY_BYTES,
    DEFAULT_MAX_VARY_FIELDS,
    DEFAULT_STATUSES,
    Decision,
    Rules,
)

__all__ = [
    "DEFAULT_MAX_VARY_BYTES",
    "DEFAULT_MAX_VARY_FIELDS",
    "DEFAULT_STATUSES",
    "ARender",
    "CacheControl",
    "CacheRequest",
    "Conditions",
    "Decision",
    "Headers",
    "Outcome",
    "Render",
    "Rendered",
    "Reply",
    "ResponseCache",
    "Route",
    "Rules",
    "StoredResponse",
    "parse_cache_control",
    "parse_vary",
]
