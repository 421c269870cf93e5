"""A process of a stampede: the multi-process lease tests and ``benchmarks/stampede.py``.

``python -m tests.leases._worker CONFIG_JSON`` builds one way of caching an expensive
function on memcached and answers one JSON command per stdin line with one JSON line on
stdout (the protocol of :class:`tests.mq._cluster.Member`). ``CONFIG_JSON`` keys:

* ``memcached``: ``host:port``; ``log``: a file each computation appends a line to;
* ``mode``: ``leases`` (``@cached`` on a ``MemcachedClient``: leases), ``leases_bg`` (the
  same called through ``.bg()``: the stale value served while one caller refreshes),
  ``neither`` (``lease_ttl=0``: compute once per process), ``broker`` (``@cached`` on a
  ``CoherentWrapperClient`` over a pyzmq ``BrokerBus``, ``broker`` the endpoint, the
  memcached without leases), ``django`` (Django's ``PyMemcacheCache`` as
  ``django.core.cache.cache``, ``get_or_set``) or ``flask`` (Flask-Caching's memcached
  backend, ``@cache.memoize``);
* ``namespace``, ``lease_ttl`` (2 s), ``ttl`` (60 s), ``tiered`` (an in-process L1 in
  front), ``meta`` (the client's option).

Commands: ``stampede`` (``key``, ``threads``, ``delay``: the computation's duration, or
of the first one of the key in the log when ``then`` gives the others', ``at``: the
wall-clock time every thread calls at) answers each caller's value or error and
latency; ``expire`` (``key``) leaves the entry stale (chorde) or gone (the peers);
``quit``. A computation prints ``{"event": "computing", "key", "pid", "t"}`` (``t`` on the
monotonic clock, shared by the processes of a machine) before it sleeps.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

_out_lock = threading.Lock()
_delay = {"seconds": 0.0, "then": 0.0}


def emit(obj: Any) -> None:
    """One JSON line on stdout."""
    with _out_lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


class Worker:
    """The cached function of one mode, and the commands."""

    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        self.log_path = cfg.get("log")
        self.ttl = float(cfg.get("ttl", 60))
        self.closers: list[Callable[[], Any]] = []
        self.call, self.expire = getattr(self, "_" + cfg.get("mode", "leases"))()

    def expensive(self, key: str) -> str:
        """The computation: logged, announced, slow (the first of a key in the log takes
        ``delay``, later ones ``then``), and a value no other run returns."""
        delay = _delay["seconds"]
        if self.log_path:
            with open(self.log_path, "a+") as log:
                log.seek(0)
                if any(line.split()[0] == key for line in log if line.strip()):
                    delay = _delay["then"]
                log.write(f"{key} {os.getpid()}\n")
        emit({"event": "computing", "key": key, "pid": os.getpid(), "t": time.monotonic()})
        time.sleep(delay)
        return f"{key}:{os.getpid()}:{time.monotonic_ns()}"

    # ---- the modes ---------------------------------------------------------------------

    def _memcached(self, lease_ttl: float) -> Any:
        from chorde.clients.memcached import MemcachedClient

        options: dict[str, Any] = {"lease_ttl": lease_ttl}
        if "meta" in self.cfg:
            options["meta"] = self.cfg["meta"]
        client = MemcachedClient(
            [self.cfg["memcached"]],
            checksum_key="stampede",
            namespace=self.cfg.get("namespace", "stampede"),
            **options,
        )
        self.closers.append(client.close)
        if not self.cfg.get("tiered"):
            return client
        from chorde.clients.inproc import InprocCacheClient
        from chorde.clients.tiered import TieredInclusiveClient

        return TieredInclusiveClient(InprocCacheClient(1000), client)

    def _chorde(self, client: Any) -> tuple[Callable[[str], Any], Callable[[str], Any]]:
        from chorde.decorators import cached

        fn = cached(client, self.ttl, namespace="stampede")(self.expensive)
        return fn, fn.expire

    def _leases(self) -> tuple[Callable[[str], Any], Callable[[str], Any]]:
        return self._chorde(self._memcached(float(self.cfg.get("lease_ttl", 2.0))))

    def _leases_bg(self) -> tuple[Callable[[str], Any], Callable[[str], Any]]:
        fn, expire = self._leases()
        return fn.bg(), expire  # type: ignore[attr-defined]

    def _neither(self) -> tuple[Callable[[str], Any], Callable[[str], Any]]:
        return self._chorde(self._memcached(0))

    def _broker(self) -> tuple[Callable[[str], Any], Callable[[str], Any]]:
        from chorde.clients.coherent import CoherentWrapperClient
        from chorde.mq import BrokerBus

        bus = BrokerBus(self.cfg["broker"], "stampede")
        if not bus.wait_connected(10):
            raise RuntimeError("the bus did not connect to the broker")
        client = CoherentWrapperClient(self._memcached(0), bus, channel="stampede")
        self.closers += [bus.close, client.close]
        return self._chorde(client)

    def _django(self) -> tuple[Callable[[str], Any], Callable[[str], Any]]:
        from django.conf import settings

        # As a Django project has it: django.core.cache.cache, one backend object (and
        # pymemcache connection) per thread; a single PyMemcacheCache shared by the threads
        # would interleave their requests on one socket.
        settings.configure(
            CACHES={
                "default": {
                    "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
                    "LOCATION": self.cfg["memcached"],
                    "KEY_PREFIX": self.cfg.get("namespace", "stampede"),
                }
            }
        )
        from django.core.cache import cache

        ttl = int(self.ttl)

        def call(key: str) -> Any:
            return cache.get_or_set(key, lambda: self.expensive(key), ttl)

        return call, cache.delete

    def _flask(self) -> tuple[Callable[[str], Any], Callable[[str], Any]]:
        from flask import Flask
        from flask_caching import Cache

        app = Flask("stampede")
        cache = Cache(
            app,
            config={
                "CACHE_TYPE": "MemcachedCache",
                "CACHE_MEMCACHED_SERVERS": [self.cfg["memcached"]],
                "CACHE_KEY_PREFIX": self.cfg.get("namespace", "stampede"),
            },
        )
        memoized = cache.memoize(int(self.ttl))(self.expensive)

        def call(key: str) -> Any:
            with app.app_context():
                return memoized(key)

        def expire(key: str) -> Any:
            with app.app_context():
                return cache.delete_memoized(memoized, key)

        return call, expire

    # ---- commands ----------------------------------------------------------------------

    def op_stampede(
        self, key: str, threads: int, delay: float, at: float, then: float | None = None
    ) -> dict:
        _delay["seconds"] = delay
        _delay["then"] = delay if then is None else then
        results: list[Any] = [None] * threads

        def caller(i: int) -> None:
            wait = at - time.time()
            if wait > 0:
                time.sleep(wait)
            started = time.perf_counter()
            try:
                value = self.call(key)
            except Exception as exc:
                results[i] = {"error": f"{type(exc).__name__}: {exc}"}
            else:
                results[i] = {"value": value}
            results[i]["latency"] = time.perf_counter() - started

        pool = [threading.Thread(target=caller, args=(i,)) for i in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        return {"results": results}

    def op_expire(self, key: str) -> dict:
        self.expire(key)
        return {}

    def op_call(self, key: str, delay: float = 0.0) -> dict:
        _delay["seconds"] = _delay["then"] = delay
        return {"value": self.call(key)}


def main() -> None:
    worker = Worker(json.loads(sys.argv[1]))
    emit({"ready": True, "pid": os.getpid()})
    for line in sys.stdin:
        msg = json.loads(line)
        op = msg.pop("op")
        cid = msg.pop("id")
        if op == "quit":
            break

        def run(op: str = op, cid: int = cid, msg: dict = msg) -> None:
            try:
                reply = getattr(worker, "op_" + op)(**msg)
            except Exception as exc:
                emit({"id": cid, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
            else:
                emit({"id": cid, "ok": True, **reply})

        threading.Thread(target=run, daemon=True).start()
    for close in reversed(worker.closers):
        close()


if __name__ == "__main__":
    main()
