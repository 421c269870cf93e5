"""A memcached that speaks the text protocol only, as servers before 1.6 did (and managed
services or proxies without meta commands still do), for the tests of the fallback.

``TextOnlyMemcached(backend_port)`` listens on a free 127.0.0.1 port and serves each
connection from a connection of its own to a real memcached: text commands are relayed
(their data blocks and whole replies), while every meta command (``mg``, ``ms``, ``md``,
``mn``, ``ma``, ``me``) is answered ``ERROR``, as memcached 1.4 and 1.5 answer a command
they do not know; like them it then reads a meta command's data block as a command line of
its own. Nothing is mocked beyond that: values, expiries and cas live in the real server.

One thread per connection; :meth:`close` stops listening and closes every connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import IO, Self

__all__ = ["TextOnlyMemcached"]

HOST = "127.0.0.1"
_META = (b"mg", b"ms", b"md", b"mn", b"ma", b"me")
_STORAGE = (b"set", b"add", b"replace", b"append", b"prepend", b"cas")
_MULTILINE = (b"get", b"gets", b"gat", b"gats", b"stats")


def _line(stream: IO[bytes]) -> bytes:
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed mid-line")
    return line


def _relay_until_end(backend: IO[bytes], out: list[bytes]) -> None:
    """A multi-line reply (``VALUE`` blocks or ``STAT`` lines) up to ``END`` or an error."""
    while True:
        line = _line(backend)
        out.append(line)
        if line.startswith(b"VALUE "):
            size = int(line.split()[3])
            out.append(backend.read(size + 2))
        elif not line.startswith(b"STAT "):
            return  # END, or an error line


class TextOnlyMemcached:
    """A text-protocol-only front for the real memcached on ``backend_port``."""

    def __init__(self, backend_port: int, backend_host: str = HOST) -> None:
        self.backend = (backend_host, backend_port)
        self._listener = socket.create_server((HOST, 0))
        self.port: int = self._listener.getsockname()[1]
        self.address = f"{HOST}:{self.port}"
        #: Meta commands refused so far (a test can check that the client tried and fell back).
        self.refused = 0
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name="textonly-accept", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            backend_sock = socket.create_connection(self.backend, timeout=10)
        except OSError:
            conn.close()
            return
        with self._lock:
            self._conns.add(backend_sock)
        client = conn.makefile("rb")
        backend = backend_sock.makefile("rb")
        try:
            while True:
                line = _line(client)
                words = line.split()
                command = words[0] if words else b""
                if command in _META:
                    self.refused += 1
                    conn.sendall(b"ERROR\r\n")
                    continue
                request = [line]
                if command in _STORAGE and len(words) >= 5:
                    request.append(client.read(int(words[4]) + 2))
                backend_sock.sendall(b"".join(request))
                if words and words[-1] == b"noreply":
                    continue
                out: list[bytes] = []
                if command in _MULTILINE:
                    _relay_until_end(backend, out)
                else:
                    out.append(_line(backend))
                conn.sendall(b"".join(out))
        except (OSError, ValueError, IndexError):
            pass
        finally:
            for sock in (conn, backend_sock):
                with contextlib.suppress(OSError):
                    sock.close()
                with self._lock:
                    self._conns.discard(sock)

    def close(self) -> None:
        """Stop listening and close every connection."""
        with self._lock:
            self._closed = True
            conns, self._conns = list(self._conns), set()
        self._listener.close()
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
