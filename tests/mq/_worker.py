"""A cluster member for the multi-process tests and the coherence benchmark.

``python -m tests.mq._worker CONFIG_JSON`` builds ``CoherentWrapperClient(Tiered(inproc,
memcached or redis), bus)`` (a broker or peers bus on pyzmq, or a Redis bus) and answers one
JSON command per stdin line with one JSON line on stdout. Events the controller waits for
(``"computing"``) are printed as lines too.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import random
import sys
import threading
import time
from typing import Any

from chorde.clients.coherent import CoherentWrapperClient
from chorde.clients.inproc import InprocCacheClient
from chorde.clients.memcached import MemcachedClient
from chorde.clients.tiered import TieredInclusiveClient
from chorde.keys import encode_key
from chorde.mq import MessageType

_out_lock = threading.Lock()


def emit(obj: Any) -> None:
    """One JSON line on stdout."""
    with _out_lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def make_shared(cfg: dict) -> Any:
    """The shared tier named by the config: Redis (``"redis"``: a URL) or memcached."""
    if cfg.get("redis"):
        from chorde.clients.urls import from_url

        return from_url(cfg["redis"], checksum_key="cluster-test")
    return MemcachedClient([cfg["memcached"]], checksum_key="cluster-test")


def make_bus(cfg: dict, shared: Any) -> Any:
    """The bus named by the config: a broker, a static peer list, or Redis pub/sub (on the
    shared tier's server)."""
    # A generous timeout: a loaded test machine must not make live peers look dead.
    kw = {
        "heartbeat_interval": cfg.get("heartbeat", 0.2),
        "heartbeat_timeout": cfg.get("heartbeat_timeout", 1.5),
    }
    if cfg.get("redis"):
        from chorde.mq import RedisBus

        return RedisBus(shared, cfg["secret"], **kw)
    if cfg.get("broker"):
        from chorde.mq import BrokerBus

        return BrokerBus(cfg["broker"], cfg["secret"], **kw)
    from chorde.mq import PeerBus

    return PeerBus(cfg["bind"], cfg["peers"], cfg["secret"], **kw)


class Worker:
    """State and commands of one cluster member."""

    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        self.l1 = InprocCacheClient(10_000)
        self.l2 = make_shared(cfg)
        self.bus = make_bus(cfg, self.l2)
        stack = TieredInclusiveClient(self.l1, self.l2)
        options = {k: cfg[k] for k in ("timeout", "lease", "poll_interval") if k in cfg}
        self.client = CoherentWrapperClient(
            stack, self.bus, channel="test", **{"timeout": 5.0, **options}
        )
        self.log_path = cfg.get("log")
        self.seen: dict[bytes, float] = {}
        self.seen_cond = threading.Condition()
        self.bus.subscribe("test", self._on_message)

    def _on_message(self, msg: Any) -> None:
        # Registered after the client's handler: runs once its L1 copies are dropped.
        if msg.type is MessageType.INVALIDATE:
            now = time.monotonic()
            with self.seen_cond:
                for item in msg.items:
                    self.seen[item] = now
                self.seen_cond.notify_all()

    def expensive(self, key: Any, delay: float, tag: bool = False) -> str:
        """The computation whose runs are counted (one line per run in the log file); with
        ``tag`` its value names the process, so that two runs give different values."""
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"{os.getpid()} {key}\n".encode())
        finally:
            os.close(fd)
        emit({"event": "computing", "key": key, "t": time.monotonic(), "pid": os.getpid()})
        time.sleep(delay)
        return f"value-{key}-{os.getpid()}" if tag else f"value-{key}"

    # ---- commands ----------------------------------------------------------------

    def cmd_state(self, timeout: float = 10.0, connected: bool = True) -> dict:
        deadline = time.monotonic() + timeout
        while self.bus.connected != connected and time.monotonic() < deadline:
            time.sleep(0.01)
        return {"connected": self.bus.connected, "peers": len(self.bus.peers())}

    def cmd_synced(self, timeout: float = 10.0, synced: bool = True) -> dict:
        deadline = time.monotonic() + timeout
        while self.bus.synced != synced and time.monotonic() < deadline:
            time.sleep(0.005)
        return {"synced": self.bus.synced, "t": time.monotonic()}

    def cmd_peers(self, n: int, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while len(self.bus.peers()) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return {"peers": len(self.bus.peers())}

    def cmd_put(self, key: str, value: Any, ttl: float = 300) -> dict:
        self.client.put(key, value, ttl)
        return {}

    def cmd_get(self, key: str) -> dict:
        return {"value": self.client.get(key, None), "l1": self.l1.contains(key)}

    def cmd_delete(self, key: str) -> dict:
        t = time.monotonic()
        self.client.delete(key)
        return {"t": t}

    def cmd_put_many(self, keys: list[str], value: Any, ttl: float = 300) -> dict:
        self.client.putMulti({k: value for k in keys}, ttl)
        return {}

    def cmd_get_many(self, keys: list[str]) -> dict:
        values = dict(self.client.getMulti(keys, None))
        return {"found": sum(v is not None for v in values.values()), "in_l1": self.l1.usage}

    def cmd_l1(self, key: str) -> dict:
        return {"l1": self.l1.contains(key)}

    def cmd_watch(self, keys: list[str], since: float, timeout: float = 10.0) -> dict:
        """Wait until an invalidation of each key arrived after ``since`` (the controller's
        time.monotonic(): one clock for the whole host) and its L1 copy is gone; report
        when the last invalidation of each arrived."""
        start = since
        wanted = {encode_key(k): k for k in keys}
        deadline = start + timeout

        def done() -> bool:
            return all(
                self.seen.get(e, -1.0) >= start and not self.l1.contains(k)
                for e, k in wanted.items()
            )

        with self.seen_cond:
            while not done():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.seen_cond.wait(min(left, 0.05))
            times = {k: self.seen.get(e) for e, k in wanted.items()}
        times = {k: (t if t is not None and t >= start else None) for k, t in times.items()}
        return {"times": times, "in_l1": [k for k in keys if self.l1.contains(k)]}

    def cmd_forget_seen(self) -> dict:
        with self.seen_cond:
            self.seen.clear()
        return {}

    def cmd_delete_paced(self, keys: list[str], pause: float) -> dict:
        sent = {}
        for key in keys:
            sent[key] = time.monotonic()
            self.client.delete(key)
            time.sleep(pause)
        return {"sent": sent}

    def cmd_compute(
        self, keys: list[str], threads: int = 8, delay: float = 0.01, decorated: bool = False
    ) -> dict:
        """Request every key from ``threads`` threads at once, in a shuffled order."""
        order = list(keys)
        random.shuffle(order)
        if decorated:
            from chorde.decorators import cached

            @cached(self.client, 300, namespace="cluster")
            def f(key: str) -> str:
                return self.expensive(key, delay)

            def one(key: str) -> Any:
                return f(key)

        else:

            def one(key: str) -> Any:
                return self.client.compute_once(key, lambda: self.expensive(key, delay), 300)

        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            values = list(pool.map(one, order))
        return {"values": dict(zip(order, values, strict=True))}

    def cmd_compute_one(self, key: str, delay: float = 0.0, tag: bool = False) -> dict:
        t = time.monotonic()
        value = self.client.compute_once(key, lambda: self.expensive(key, delay, tag), 300)
        return {"value": value, "elapsed": time.monotonic() - t, "t": time.monotonic()}

    def cmd_probe(
        self, key: str, old: Any, duration: float, pause: float = 0.005, since: float = 0.0
    ) -> dict:
        """Read ``key`` every ``pause`` seconds for ``duration`` seconds, as the
        application would; report when ``old`` was served last and from which tier."""
        end = time.monotonic() + duration
        last_old = last_old_l1 = None
        reads = olds = 0
        while time.monotonic() < end:
            in_l1 = self.l1.contains(key)
            value = self.client.get(key, None)
            now = time.monotonic()
            reads += 1
            if value == old and now >= since:
                olds += 1
                last_old = now
                if in_l1:
                    last_old_l1 = now
            time.sleep(pause)
        return {
            "last_old": last_old,
            "last_old_l1": last_old_l1,
            "reads": reads,
            "olds": olds,
            "value": self.client.get(key, None),
            "synced": self.bus.synced,
        }

    def cmd_bus(self) -> dict:
        """The bus's state and counters."""
        bus = self.bus
        return {
            "synced": bus.synced,
            "connected": bus.connected,
            "gaps": bus.gaps,
            "dropped": bus.dropped,
            "rejected": bus.rejected,
            "peers": len(bus.peers()),
        }

    def cmd_quit(self) -> dict:
        return {}


def main() -> None:
    """Serve commands until ``quit`` or end of input."""
    cfg = json.loads(sys.argv[1])
    worker = Worker(cfg)
    connected = worker.bus.wait_connected(10)
    emit({"ready": True, "connected": connected, "pid": os.getpid()})
    pool = concurrent.futures.ThreadPoolExecutor(4)

    def run(cmd: dict) -> None:
        op = cmd.pop("op")
        cid = cmd.pop("id")
        try:
            result = getattr(worker, "cmd_" + op)(**cmd)
            emit({"id": cid, "ok": True, **result})
        except Exception as exc:
            emit({"id": cid, "ok": False, "error": f"{type(exc).__name__}: {exc}"})

    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        pool.submit(run, cmd)
    pool.shutdown(wait=False, cancel_futures=True)
    worker.client.close()
    worker.bus.close()


if __name__ == "__main__":
    main()
