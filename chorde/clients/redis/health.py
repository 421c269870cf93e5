"""What the Redis client remembers about faults: which nodes are down, and which writes failed.

* :class:`Node`: one server (the only one, or a cluster node by name). A node that failed is
  down for ``retry_interval`` seconds: its keys are misses and writes to it are dropped at
  once, without waiting for a timeout again; then one caller probes it.
* :class:`WriteLog`: the keys whose writes (put, delete, update ...) failed, and whether a
  ``clear``/``purge`` failed. A failed write may have landed or not, and a server that comes
  back (restarted from its persistence, or a replica promoted) may hold an older value than
  the caller last wrote: the key is deleted before it is used again, so an older value never
  comes back. Past ``limit`` keys, the log gives up on keys and asks for a new generation
  instead (every entry of the namespace goes). A failed clear is redone before anything else
  is served.
"""

from __future__ import annotations

import logging
import threading
import time

from chorde.serialization import RateLimitedLog

__all__ = ["Node", "WriteLog", "answered", "logger"]

logger = logging.getLogger("chorde.clients.redis")

# Errors by which a server said something: it is up (a wrong command, a script error, out of
# memory ...). Others (connection, timeout, loading, failover in progress) mean it is not
# usable now. Matched by name: valkey-py's exceptions are redis-py's, renamed module.
_ANSWERS = frozenset({"ResponseError", "DataError", "NoScriptError", "OutOfMemoryError"})
_NOT_USABLE = frozenset(
    {"ReadOnlyError", "ClusterDownError", "TryAgainError", "MasterDownError", "BusyLoadingError"}
)


def answered(exc: BaseException) -> bool:
    """Whether ``exc`` is a reply of a working server (not a reason to mark it down)."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & _ANSWERS) and not names & _NOT_USABLE


class Node:
    """A server's liveness as this client sees it."""

    __slots__ = ("dead_until", "log", "name", "retry_interval")

    def __init__(self, name: str, retry_interval: float, log: RateLimitedLog) -> None:
        self.name = name
        self.retry_interval = retry_interval
        self.log = log
        self.dead_until = 0.0

    def usable(self) -> bool:
        """False while down, except for the one caller that probes it after the interval."""
        dead_until = self.dead_until
        if not dead_until:
            return True
        now = time.monotonic()
        if now < dead_until:
            return False
        self.dead_until = now + self.retry_interval  # the others keep waiting meanwhile
        return True

    def failed(self, exc: BaseException, what: str) -> None:
        """``what`` failed with ``exc``: the node is down for a while unless it answered."""
        if answered(exc):
            self.log.warning(
                "chorde: Redis %s refused %s: %s: %s",
                self.name,
                what,
                type(exc).__name__,
                exc,
                kind=f"refused {self.name}",
            )
            return
        self.dead_until = time.monotonic() + self.retry_interval
        self.log.warning(
            "chorde: Redis %s failed during %s (%s: %s); treating it as down for %.1f s",
            self.name,
            what,
            type(exc).__name__,
            exc,
            self.retry_interval,
            kind=f"down {self.name}",
        )

    def back(self) -> None:
        """The node answered: no longer down."""
        if self.dead_until:
            self.dead_until = 0.0
            logger.info("chorde: Redis %s is back", self.name)

    def __repr__(self) -> str:
        return f"<Redis node {self.name}>"


class WriteLog:
    """Keys whose last write failed, and whether a clear is owed (see the module docstring).

    ``pending`` and ``keys`` are read without the lock on the hot path (an attribute read and
    a set's membership test are atomic); changes take the lock.
    """

    __slots__ = ("_lock", "clear_owed", "keys", "limit", "pending")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.keys: set[bytes] = set()
        self.clear_owed = False
        #: Anything owed: a key to delete or a clear to redo.
        self.pending = False
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return self.pending

    def _update(self) -> None:
        self.pending = self.clear_owed or bool(self.keys)

    def failed(self, keys: list[bytes]) -> None:
        """Writes of ``keys`` failed: delete them before they are used again."""
        with self._lock:
            if self.clear_owed:
                return
            self.keys.update(keys)
            if len(self.keys) > self.limit:
                logger.warning(
                    "chorde: over %d Redis writes failed; the namespace will get a new "
                    "generation (every entry goes) once the servers answer",
                    self.limit,
                )
                self._owe(True)
            self._update()

    def owe_clear(self) -> None:
        """A clear (or purge) did not reach every server: redo it before serving anything."""
        with self._lock:
            self._owe(True)

    def cleared(self) -> None:
        """A clear reached every server: nothing older can be seen any more."""
        with self._lock:
            self._owe(False)

    def settled(self, keys: list[bytes]) -> None:
        """``keys`` were deleted (or written) since they failed."""
        with self._lock:
            self.keys.difference_update(keys)
            self._update()

    def _owe(self, clear: bool) -> None:
        # Either way the keys no longer matter: a new generation hides what they held.
        self.clear_owed = clear
        self.keys.clear()
        self._update()
