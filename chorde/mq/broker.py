"""The cluster broker: ``python -m chorde.mq.broker --bind tcp://127.0.0.1:5555``.

A relay, deliberately stateless and secret-free: one ROUTER socket; every frame a peer
sends is forwarded to every peer heard from in the last ``peer_timeout`` seconds (the
sender included: that echo is how a peer knows the path works). Peers register just by
sending, and they send a heartbeat every second, so a restarted broker rebuilds its whole
peer table within one heartbeat: nothing to persist, nothing to resynchronise. The broker
never parses or verifies frames (peers do, with their shared secret); it only drops frames
that are not chorde frames or are too big.

Why one ROUTER rather than an XSUB/XPUB pair: one endpoint to configure (and ``ipc://``
works), both directions on one connection, and the broker sees who is connected, so a
peer's frames reach only live peers and a slow peer's queue is bounded on its own.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from chorde.errors import ConfigurationError, require
from chorde.mq.frames import MAX_FRAME
from chorde.mq.zmqbus import check_endpoint

zmq = require("zmq", "mq")

__all__ = ["Broker", "main"]

logger = logging.getLogger("chorde.mq.broker")

_MAGIC = b"\xc4\x6d"


class Broker:
    """Relay frames between the peers connected to ``bind`` (one endpoint or several)."""

    def __init__(
        self,
        bind: str | Sequence[str],
        *,
        peer_timeout: float = 10.0,
        hwm: int = 10_000,
    ) -> None:
        binds = [bind] if isinstance(bind, str) else bind
        if not isinstance(binds, list | tuple):
            raise ConfigurationError(f"bind must be an endpoint or a list of them, got {bind!r}")
        if not binds:
            raise ConfigurationError("bind must name at least one endpoint")
        for b in binds:
            check_endpoint(b, "bind")
        if isinstance(peer_timeout, bool) or not isinstance(peer_timeout, int | float):
            raise ConfigurationError(f"peer_timeout must be a number, got {peer_timeout!r}")
        if not peer_timeout > 0:
            raise ConfigurationError(f"peer_timeout must be > 0, got {peer_timeout!r}")
        self.peer_timeout = float(peer_timeout)
        self._ctx = zmq.Context()
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, hwm)
        sock.setsockopt(zmq.RCVHWM, hwm)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME)
        self.endpoints: list[str] = []
        try:
            for b in binds:
                sock.bind(b)
                self.endpoints.append(sock.getsockopt_string(zmq.LAST_ENDPOINT))
        except zmq.ZMQError as exc:
            sock.close()
            self._ctx.term()
            raise ConfigurationError(f"broker cannot bind {b!r}: {exc}") from exc
        self._sock = sock
        self._peers: dict[bytes, float] = {}
        self._stop_r, self._stop_w = os.pipe()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.relayed = 0
        self.dropped = 0

    @property
    def peers(self) -> int:
        """How many peers the broker relays to now."""
        return len(self._peers)

    def serve_forever(self) -> None:
        """Relay until :meth:`stop` is called (from another thread or a signal handler)."""
        sock = self._sock
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._stop_r, zmq.POLLIN)
        peers = self._peers
        next_sweep = time.monotonic() + self.peer_timeout
        try:
            while not self._stopping:
                ready = dict(poller.poll(1000))
                now = time.monotonic()
                if sock in ready:
                    for _ in range(1000):
                        try:
                            parts = sock.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        if len(parts) != 2 or parts[1][:2] != _MAGIC:
                            self.dropped += 1
                            continue
                        ident, frame = parts
                        if ident not in peers:
                            logger.info("peer %s joined (%d peers)", ident.hex(), len(peers) + 1)
                        peers[ident] = now
                        for peer in list(peers):
                            try:
                                sock.send_multipart((peer, frame), zmq.NOBLOCK)
                                self.relayed += 1
                            except zmq.Again:
                                self.dropped += 1
                            except zmq.ZMQError:
                                self.dropped += 1
                if now >= next_sweep:
                    next_sweep = now + min(1.0, self.peer_timeout)
                    for peer, seen in list(peers.items()):
                        if now - seen > self.peer_timeout:
                            del peers[peer]
                            logger.info("peer %s gone (%d peers)", peer.hex(), len(peers))
        finally:
            sock.close()
            self._ctx.term()
            for fd in (self._stop_r, self._stop_w):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def start(self) -> Broker:
        """Serve on a daemon thread (for tests and embedding); returns self."""
        self._thread = threading.Thread(target=self.serve_forever, name="chorde-broker")
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (safe from a signal handler or another thread)."""
        self._stopping = True
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"\0")

    def close(self) -> None:
        """Stop and wait for the serving thread started by :meth:`start`."""
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run a broker until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m chorde.mq.broker",
        description="Relay chorde cluster messages (invalidations, heartbeats) between peers.",
    )
    parser.add_argument(
        "--bind",
        action="append",
        required=True,
        metavar="ENDPOINT",
        help="ZeroMQ endpoint to listen on, e.g. tcp://127.0.0.1:5555 (repeatable)",
    )
    parser.add_argument(
        "--peer-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="forget peers silent this long (default 10; peers beat every second)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log peers coming and going")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        broker = Broker(args.bind, peer_timeout=args.peer_timeout)
    except ConfigurationError as exc:
        print(f"chorde broker: {exc}", file=sys.stderr)
        return 2

    def _stop(signum: int, frame: Any) -> None:
        broker.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print("chorde broker listening on " + " ".join(broker.endpoints), flush=True)
    broker.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
