"""The ``{% cache %}`` Jinja2 tag: template fragments cached in the app's chorde client.

::

    {% cache 300, "sidebar", user.id %} ... {% endcache %}

``ttl`` (seconds; None: ``CHORDE_DEFAULT_TTL``; ``"del"``: drop the fragment and render it
anew), then an optional name (default: the template's name and the tag's line) and any
number of values the fragment varies on. The fragment is rendered on a miss and stored
under ``("chorde_flask.fragment", name, *values)``; a failing cache renders it uncached.
:meth:`chorde_flask.Chorde.fragment_key` gives the key, to drop one from Python.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.parser import Parser

from chorde.clients.base import check_ttl

__all__: list[str] = []  # internal module

logger = logging.getLogger("chorde_flask")

NAMESPACE = "chorde_flask.fragment"
_MISS: Any = object()


def fragment_key(name: str, vary_on: Sequence[Hashable] = ()) -> tuple[Hashable, ...]:
    """The key of a fragment named ``name`` varying on ``vary_on``."""
    return (NAMESPACE, name, *vary_on)


class FragmentCache(Extension):
    """``{% cache ttl[, name[, value ...]] %} ... {% endcache %}`` (registered by
    ``Chorde.init_app``)."""

    tags = {"cache"}

    def parse(self, parser: Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        args: list[nodes.Expr] = [parser.parse_expression()]
        if parser.stream.skip_if("comma"):
            args.append(parser.parse_expression())
        else:
            args.append(nodes.Const(f"{parser.name or parser.filename or '?'}:{lineno}"))
        vary: list[nodes.Expr] = []
        while parser.stream.skip_if("comma"):
            vary.append(parser.parse_expression())
        args.append(nodes.List(vary))
        body = parser.parse_statements(("name:endcache",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_cached", args), [], [], body).set_lineno(lineno)

    def _cached(self, ttl: Any, name: Any, vary_on: list[Any], caller: Callable[[], str]) -> str:
        from chorde_flask import _fragment_state

        client, default_ttl = _fragment_state()
        if not isinstance(name, str) or not name:
            raise TypeError(
                f"{{% cache %}}: the fragment name must be a non-empty str, got {name!r}"
            )
        key = fragment_key(name, vary_on)
        if ttl == "del":
            try:
                client.delete(key)
            except Exception:
                logger.warning("{%% cache %%}: dropping %r failed", key, exc_info=True)
            return caller()
        seconds = default_ttl if ttl is None else check_ttl(ttl, "{% cache %} ttl")
        try:
            value = client.get(key, _MISS)
        except TypeError:
            raise TypeError(f"{{% cache %}}: unusable fragment key {key!r}") from None
        except Exception:
            logger.warning("{%% cache %%}: reading %r failed", key, exc_info=True)
            return caller()
        if value is not _MISS:
            return str(value)
        rendered = caller()
        if seconds > 0 and not math.isnan(seconds):
            try:
                client.put(key, rendered, seconds)
            except Exception:
                logger.warning("{%% cache %%}: storing %r failed", key, exc_info=True)
        return rendered
