"""chorde for Django: ``ChordeCache``, a cache backend for the ``CACHES`` setting.

::

    CACHES = {"default": {"BACKEND": "chorde_django.ChordeCache"}}          # in-process
    CACHES = {"default": {"BACKEND": "chorde_django.ChordeCache",
                          "LOCATION": "10.0.0.1:11211;10.0.0.2:11211"}}      # memcached

Add ``"chorde_django"`` to ``INSTALLED_APPS`` so a misconfigured entry fails the system
checks at startup. :func:`cached` caches a function's results in a cache alias's client;
:func:`invalidate_tags` drops tagged entries, :func:`function_stats` and
:func:`cache_stats` give the counters, which ``manage.py chorde_stats`` prints.
"""

from __future__ import annotations

from chorde.errors import requires_extra

with requires_extra("django"):
    import django  # noqa: F401 (the dependency; the modules import what they use)

from chorde_django._config import close_clients, derive_checksum_key
from chorde_django.backend import ChordeCache
from chorde_django.decorators import cached, get_client
from chorde_django.stats import (
    ainvalidate_tags,
    cache_stats,
    function_stats,
    invalidate_tags,
)

__all__ = [
    "ChordeCache",
    "ainvalidate_tags",
    "cache_stats",
    "cached",
    "close_clients",
    "derive_checksum_key",
    "function_stats",
    "get_client",
    "invalidate_tags",
]

# Importing the checks registers them, even without the app in INSTALLED_APPS.
from chorde_django import checks as _checks  # noqa: F401
