"""Chorde's futures: ``concurrent.futures.Future`` objects that asyncio code can ``await``.

Threads call ``result()`` on them; coroutines running on an event loop ``await`` them (the
completion is delivered to the awaiting loop thread-safely); tornado coroutines can
``yield`` them, since tornado accepts ``concurrent.futures.Future``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Generator
from typing import Any, TypeVar

__all__ = ["Future", "chain", "completed", "failed"]

T = TypeVar("T")


class Future(concurrent.futures.Future[T]):
    """A ``concurrent.futures.Future`` that is also awaitable on a running asyncio loop."""

    def __await__(self) -> Generator[Any, None, T]:
        if self.done():
            # Skip the loop round trip when the outcome is already known.
            return self.result()
        # shield: cancelling the awaiting task must not cancel a future others share.
        return (yield from asyncio.shield(asyncio.wrap_future(self)).__await__())


def completed(value: T) -> Future[T]:
    """Return a :class:`Future` already resolved to ``value``."""
    fut: Future[T] = Future()
    fut.set_result(value)
    return fut


def failed(exc: BaseException) -> Future[Any]:
    """Return a :class:`Future` already failed with ``exc``."""
    fut: Future[Any] = Future()
    fut.set_exception(exc)
    return fut


def chain(source: concurrent.futures.Future[T], dest: concurrent.futures.Future[T]) -> None:
    """Copy the outcome of ``source`` into ``dest`` when ``source`` completes.

    Cancelling ``dest`` does not cancel ``source``: sources are often shared.
    """

    def _copy(src: concurrent.futures.Future[T]) -> None:
        if dest.done():
            return
        try:
            if src.cancelled():
                dest.set_exception(concurrent.futures.CancelledError())
            elif (exc := src.exception()) is not None:
                dest.set_exception(exc)
            else:
                dest.set_result(src.result())
        except concurrent.futures.InvalidStateError:
            pass  # dest was cancelled meanwhile

    source.add_done_callback(_copy)
