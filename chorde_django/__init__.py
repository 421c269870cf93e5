"""chorde for Django: ``ChordeCache``, a cache backend for the ``CACHES`` setting.

::

    CACHES = {"default": {"BACKEND": "chorde_django.ChordeCache"}}          # in-process
    CACHES = {"default": {"BACKEND": "chorde_django.ChordeCache",
                          "LOCATION": "10.0.0.1:11211;10.0.0.2:11211"}}      # memcached

Add ``"chorde_django"`` to ``INSTALLED_APPS`` so a misconfigured entry fails the system
checks at startup. :func:`cached` caches a function's results in a cache alias's client.
"""

from __future__ import annotations

from chorde.errors import requires_extra

with requires_extra("django"):
    import django  # noqa: F401 (the dependency; the modules import what they use)

from chorde_django._config import close_clients, derive_checksum_key
from chorde_django.backend import ChordeCache
from chorde_django.decorators import cached, get_client

__all__ = ["ChordeCache", "cached", "close_clients", "derive_checksum_key", "get_client"]

# Importing the checks registers them, even without the app in INSTALLED_APPS.
from chorde_django import checks as _checks  # noqa: F401
