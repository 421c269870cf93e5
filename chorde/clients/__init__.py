"""Cache clients: every one honours :class:`chorde.clients.base.BaseCacheClient`.

:func:`from_url` builds any of them from a URL (a list of URLs makes a tiered client), and
:func:`register_scheme` adds a scheme; see :mod:`chorde.clients.urls`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["check_url", "from_url", "is_url", "register_scheme", "schemes"]


def __getattr__(name: str) -> Any:
    # Imported on first use: ``import chorde.clients.inproc`` stays as cheap as it was.
    if name in ("from_url", "register_scheme", "schemes", "check_url", "is_url", "ClientURL"):
        from chorde.clients import urls

        return getattr(urls, name)
    from chorde import _legacy  # chorde 1.x's names here: what replaced them

    return _legacy.attribute(__name__, name)
