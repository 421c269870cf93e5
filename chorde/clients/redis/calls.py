"""What a Redis client operation asks its driver to do.

An operation is a generator: it yields a *call* (a tuple tagged by one of the constants
below), the driver performs it with a redis-py client (blocking or asyncio) and sends the
result back, until the generator returns the operation's result. A failed call is thrown
into the operation at its ``yield``, which turns it into a miss, a dropped write or an error
of its own. So each operation's logic (keys, payloads, generations, faults) is written once.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar

__all__ = ["AWAIT", "CMD", "INFO", "NODE", "PIPE", "REFRESH", "SLEEP", "Op"]

T = TypeVar("T")

#: ``(CMD, args)``: one command (:attr:`.Topology.execute`); its reply comes back.
CMD = "cmd"
#: ``(PIPE, [args, ...])``: commands sent together (one round trip per node, no
#: transaction); a list of their replies comes back, where a failed one is its exception
#: (a node that fails fails its commands only). The key a command is routed by is its first
#: (``args[1]``), or a script's first (``args[3]``).
PIPE = "pipe"
#: ``(NODE, key)``: the name (``host:port``) of the cluster node serving ``key`` now.
NODE = "node"
#: ``(REFRESH, None)``: read the cluster's slot map again (after a fault: a failover).
REFRESH = "refresh"
#: ``(INFO, section)``: ``INFO section`` of every master, as a list of dicts.
INFO = "info"
#: ``(SLEEP, seconds)``: wait (the asyncio driver lets the loop run meanwhile).
SLEEP = "sleep"
#: ``(AWAIT, value)``: the value, awaited first if it is awaitable and an event loop runs.
AWAIT = "await"

#: An operation returning a ``T``.
Op = Generator[tuple[Any, ...], Any, T]
