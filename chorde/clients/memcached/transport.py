"""What the blocking and the asyncio connections share (see :mod:`.blocking`, :mod:`.aio`).

Two rules every transport follows, stated once here:

* **Retry** (:func:`retryable`): an attempt that failed before the server could have acted
  on it (the connect failed or timed out, or the connection was closed or reset before any
  of the reply came) is made again on a new connection, ``retries`` times at the most and
  within the call's deadline. That is a lost connect on a lossy link, or a socket opened to
  a server process that has since restarted: neither says the server is down. A request
  that timed out once connected is not retried (the deadline is gone).
* **Orphans** (:meth:`BaseConnection.drop`): a write whose reply did not come in time may
  still be sitting in the server's socket buffer (a frozen server applies it when it
  thaws). Its socket is not closed but handed to the connection's owner (its server),
  which keeps it until the server has answered it, so that what is replayed after an
  outage is never overtaken by a write made before it.

A connection tells its owner, too, each time it connects: the server may have restarted
since the last connection, so what the client knows of its content (the generation) is to
be read again.
"""

from __future__ import annotations

import socket
from typing import Any, Protocol

from chorde.clients.memcached.protocol import Reply

__all__ = ["RECV_SIZE", "BaseConnection", "Owner", "read_size", "retryable"]

#: The smallest read: most replies arrive whole in one.
RECV_SIZE = 65536
#: The largest read: a read allocates what it asks for, and the size a reply announces is
#: the server's word (a bad one could ask for gigabytes).
RECV_MAX = 4 * 1024 * 1024


class Owner(Protocol):
    """What a connection reports to (its server)."""

    def orphan(self, sock: socket.socket, reply: Reply) -> None:
        """Take a socket whose write may still be applied (see above)."""

    def connected(self) -> None:
        """A new connection was opened."""


def read_size(reply: Reply) -> int:
    """How much to ask the socket for next, for ``reply``."""
    return min(max(RECV_SIZE, reply.missing), RECV_MAX)


def retryable(exc: BaseException, reply: Reply | None, connected: bool) -> bool:
    """Whether an attempt that failed with ``exc`` may be made again on a new connection:
    the connect failed, or the connection failed (not timed out) before the reply began."""
    if not isinstance(exc, OSError):
        return False
    if not connected:
        return True
    return not isinstance(exc, TimeoutError) and (reply is None or reply.pristine)


class BaseConnection:
    """A connection to ``address``: its socket while open, its timeouts (seconds), how many
    times a failed attempt is retried, and its :class:`Owner`, if any."""

    __slots__ = (
        "__weakref__",
        "address",
        "connect_timeout",
        "owner",
        "retries",
        "sock",
        "timeout",
    )

    def __init__(
        self,
        address: tuple[str, int],
        connect_timeout: float,
        timeout: float,
        retries: int = 1,
        owner: Owner | None = None,
    ) -> None:
        self.address = address
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.retries = retries
        self.owner = owner
        self.sock: socket.socket | None = None

    def opened(self, sock: socket.socket) -> None:
        """Use the new socket ``sock`` (connected), and say so to the owner."""
        self.sock = sock
        if self.owner is not None:
            self.owner.connected()

    def close(self) -> None:
        """Drop the socket (the next request reconnects)."""
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()

    def drop(self, exc: BaseException, reply: Reply | None, sent: bool) -> None:
        """Let go of the socket after a request failed with ``exc``: closed, or handed to
        the owner when it is a write that was sent whole and timed out (the server may
        still apply it)."""
        sock, self.sock = self.sock, None
        if sock is None:
            return
        owner = self.owner
        if (
            sent
            and owner is not None
            and reply is not None
            and reply.writes
            and isinstance(exc, TimeoutError)
        ):
            owner.orphan(sock, reply)
        else:
            sock.close()

    def finish(self, reply: Reply) -> Any:
        """The result of a complete ``reply``; the socket is dropped if more bytes followed it,
        since the stream is then out of step with the server's replies."""
        if reply.rest:
            self.close()
        return reply.result
