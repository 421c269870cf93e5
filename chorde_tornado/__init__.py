"""chorde for tornado: ``yield`` chorde futures in coroutines, cache ``RequestHandler.get``.

``import chorde_tornado`` registers chorde's :class:`~chorde.futures.Future` with
``tornado.gen.convert_yielded`` (tornado's documented extension point, a
``functools.singledispatch``), so a ``@tornado.gen.coroutine`` can ``yield`` what
``fn.future()(...)`` returns, in lists and dicts too (``gen.multi``). Native coroutines
``await`` chorde futures without any registration. Nothing in tornado or asyncio is
replaced::

    import chorde_tornado  # noqa: F401

    class Handler(tornado.web.RequestHandler):
        @tornado.gen.coroutine
        def get(self):
            value = yield expensive.future()(3)   # computed on chorde's pool
            self.write({"value": value})

:func:`cache_response` caches what a ``get`` writes, by :mod:`chorde.http`'s rules.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Callable
from typing import Any, cast

from chorde.errors import requires_extra

with requires_extra("tornado"):
    import tornado.gen

from chorde.clients.asyncache import makeFutureWrapper
from chorde.futures import Future
from chorde_tornado._responses import cache_response, purge_tags

__all__ = ["cache_response", "purge_tags", "to_tornado_future"]

#: ``to_tornado_future(chorde_future)``: the same outcome as a tornado (asyncio) Future on the
#: running loop, completed thread-safely; cancelling it leaves the chorde future alone.
to_tornado_future: Callable[[concurrent.futures.Future[Any]], asyncio.Future[Any]] = (
    makeFutureWrapper(asyncio.Future)
)

# A functools.singledispatch function, which tornado types as the function it wraps.
_convert_yielded = cast("functools._SingleDispatchCallable[Any]", tornado.gen.convert_yielded)


@_convert_yielded.register(Future)
def _convert_chorde_future(future: Future[Any]) -> asyncio.Future[Any]:
    return to_tornado_future(future)
