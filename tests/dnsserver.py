"""A tiny authoritative DNS server on 127.0.0.1 (UDP) whose records tests change at will.

Built on dnspython's message and rrset classes; it answers A, AAAA and SRV questions from an
in-memory table: a known name without records of the asked type gets an empty NOERROR
answer, an unknown name NXDOMAIN.
"""

from __future__ import annotations

import socket
import threading
from typing import Self

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

__all__ = ["DnsServer"]


def _norm(name: str) -> str:
    name = name.lower()
    return name if name.endswith(".") else name + "."


class DnsServer:
    """``with DnsServer() as d: d.set("cache.test", "A", ["127.0.0.1"]); d.address``."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, str], tuple[list[str], int]] = {}
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.queries = 0

    @property
    def port(self) -> int:
        """The UDP port it listens on."""
        assert self._sock is not None, "not started"
        return self._sock.getsockname()[1]

    @property
    def address(self) -> str:
        """``"127.0.0.1:PORT"``, as chorde's ``nameservers`` option takes it."""
        return f"127.0.0.1:{self.port}"

    def set(self, name: str, rdtype: str, values: list[str], ttl: int = 0) -> None:
        """Replace the records of ``name``/``rdtype`` (an empty list removes them)."""
        with self._lock:
            if values:
                self._records[_norm(name), rdtype.upper()] = (list(values), ttl)
            else:
                self._records.pop((_norm(name), rdtype.upper()), None)

    def start(self) -> Self:
        """Bind a free port and serve in a daemon thread."""
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.05)
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="test-dns", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._sock is not None:
            self._sock.close()

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                reply = self._answer(dns.message.from_wire(data))
            except Exception:
                continue  # not a DNS query: ignore it, as a server would
            self._sock.sendto(reply.to_wire(), peer)

    def _answer(self, query: dns.message.Message) -> dns.message.Message:
        self.queries += 1
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.AA
        for question in query.question:
            name = question.name.to_text().lower()
            rdtype = dns.rdatatype.to_text(question.rdtype)
            with self._lock:
                found = self._records.get((name, rdtype))
                known = any(n == name for n, _ in self._records)
            if found:
                values, ttl = found
                reply.answer.append(
                    dns.rrset.from_text_list(question.name, ttl, dns.rdataclass.IN, rdtype, values)
                )
            elif not known:
                reply.set_rcode(dns.rcode.NXDOMAIN)
        return reply

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
