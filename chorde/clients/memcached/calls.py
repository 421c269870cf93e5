"""What an operation asks its driver to do.

A client operation is a generator: it yields a *call* (a tuple tagged by one of the
constants below), the driver performs it and sends the result back, until the generator
returns the operation's result. :func:`.blocking.run` performs calls on the calling thread's
sockets, :func:`.aio.run` on the event loop's, so the operation's logic (keys, payloads,
pages, generations, retries, fault handling) is written once for both.

Deadline
    An operation's requests share one deadline: ``timeout`` seconds (the servers' option)
    from its first request. What the operation waits for otherwise (:data:`SLEEP`, the
    function of a :data:`CALL`) moves the deadline back by as long, so the time a call
    spends waiting for servers is at most ``timeout`` in all, whatever else runs on the
    same servers.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar

__all__ = ["BATCH", "CALL", "IO", "PARALLEL", "SLEEP", "Op"]

T = TypeVar("T")

#: ``(IO, server, request bytes, Reply or None)``: the reply's result is sent back; a failure
#: (socket error, timeout, error reply) is thrown into the operation at the ``yield``.
IO = "io"
#: ``(BATCH, [(server, request bytes, Reply or None), ...])``: requests to several servers
#: (one each), performed at the same time; a list of their results comes back, in order,
#: where a failed request's result is the exception it raised.
BATCH = "batch"
#: ``(PARALLEL, [operation, ...])``: operations run together (each on its own servers,
#: typically one server each), under the deadline of the operation that yields this; the
#: list of what they returned comes back, an exception that escaped one as its result.
PARALLEL = "parallel"
#: ``(SLEEP, seconds)``: wait (the asyncio driver lets the loop run meanwhile).
SLEEP = "sleep"
#: ``(CALL, function, argument)``: ``function(argument)``, awaited when it returns an
#: awaitable and an event loop runs (the blocking driver returns it as it is).
CALL = "call"

#: An operation returning a ``T``.
Op = Generator[tuple, Any, T]
