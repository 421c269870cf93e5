"""What the blocking and the asyncio connections share (see :mod:`.blocking`, :mod:`.aio`)."""

from __future__ import annotations

import socket
from typing import Any

from chorde.clients.memcached.protocol import Reply

__all__ = ["RECV_SIZE", "BaseConnection", "read_size"]

#: The smallest read: most replies arrive whole in one.
RECV_SIZE = 65536
#: The largest read: a read allocates what it asks for, and the size a reply announces is
#: the server's word (a bad one could ask for gigabytes).
RECV_MAX = 4 * 1024 * 1024


def read_size(reply: Reply) -> int:
    """How much to ask the socket for next, for ``reply``."""
    return min(max(RECV_SIZE, reply.missing), RECV_MAX)


class BaseConnection:
    """A connection to ``address``: its socket while open, and its timeouts (seconds)."""

    __slots__ = ("__weakref__", "address", "connect_timeout", "sock", "timeout")

    def __init__(self, address: tuple[str, int], connect_timeout: float, timeout: float) -> None:
        self.address = address
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.sock: socket.socket | None = None

    def close(self) -> None:
        """Drop the socket (the next request reconnects)."""
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()

    def finish(self, reply: Reply) -> Any:
        """The result of a complete ``reply``; the socket is dropped if more bytes followed it,
        since the stream is then out of step with the server's replies."""
        if reply.rest:
            self.close()
        return reply.result
