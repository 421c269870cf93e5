"""What an operation asks its driver to do.

A client operation is a generator: it yields a *call* (a tuple tagged by one of the
constants below), the driver performs it and sends the result back, until the generator
returns the operation's result. :func:`.blocking.run` performs calls on the calling thread's
sockets, :func:`.aio.run` on the event loop's, so the operation's logic (keys, payloads,
pages, generations, retries, fault handling) is written once for both.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar

__all__ = ["AWAIT", "BATCH", "IO", "SLEEP", "Op"]

T = TypeVar("T")

#: ``(IO, server, request bytes, Reply or None)``: the reply's result is sent back; a failure
#: (socket error, timeout, error reply) is thrown into the operation at the ``yield``.
IO = "io"
#: ``(BATCH, [(server, request bytes, Reply or None), ...])``: requests to several servers,
#: performed together where the transport can; a list of their results comes back, in order,
#: where a failed request's result is the exception it raised.
BATCH = "batch"
#: ``(SLEEP, seconds)``: wait (the asyncio driver lets the loop run meanwhile).
SLEEP = "sleep"
#: ``(AWAIT, value)``: the value, awaited first if it is awaitable and an event loop runs.
AWAIT = "await"

#: An operation returning a ``T``.
Op = Generator[tuple, Any, T]
