"""Controller side of the multi-process tests: broker and worker processes on loopback.

Used by the tests (through fixtures in ``tests/mq/conftest.py``) and by
``benchmarks/coherence.py``. Every process is started with the repo root on its path and
killed when its owner stops it; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


class BrokerProcess:
    """``python -m chorde.mq.broker --bind tcp://127.0.0.1:PORT`` as a child process."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 10.0) -> BrokerProcess:
        """Start it and wait for its "listening" line."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chorde.mq.broker", "--bind", self.endpoint],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
            env=_env(),
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: lines.put(self.proc.stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            self.stop()
            raise TimeoutError("the broker did not start in time") from None
        if "listening" not in line:
            self.stop()
            raise RuntimeError(f"the broker failed to start: {line!r}")
        return self

    def stop(self) -> None:
        """Kill it (SIGKILL: a crash, the harshest stop); :meth:`start` brings it back on
        the same port."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()

    kill = stop

    def suspend(self) -> None:
        """Freeze it (SIGSTOP): its connections stay open and nothing is relayed."""
        _signal(self.proc, signal.SIGSTOP)

    def resume(self) -> None:
        """Thaw it (SIGCONT)."""
        _signal(self.proc, signal.SIGCONT)


def _signal(proc: subprocess.Popen | None, sig: int) -> None:
    if proc is None or proc.poll() is not None:
        raise RuntimeError("the process is not running")
    proc.send_signal(sig)


class Member:
    """One worker process (``tests.mq._worker``, or the module ``worker`` speaking the same
    lines) and its command channel."""

    def __init__(self, cfg: dict, worker: str = "tests.mq._worker") -> None:
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", worker, json.dumps(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            cwd=ROOT,
            env=_env(),
        )
        self._ids = itertools.count()
        self._replies: dict[int, dict] = {}
        self._cond = threading.Condition()
        self.events: queue.Queue[dict] = queue.Queue()
        self.ready: dict | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                if "id" in msg:
                    self._replies[msg["id"]] = msg
                elif "ready" in msg:
                    self.ready = msg
                else:
                    self.events.put(msg)
                self._cond.notify_all()

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    def stderr(self) -> str:
        """What the process wrote on stderr so far."""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def wait_ready(self, timeout: float = 20.0) -> dict:
        """Wait for the "ready" line (the bus is connected)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.ready is None:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise RuntimeError(f"worker {self.pid} not ready: {self.stderr()[-2000:]}")
                self._cond.wait(min(left, 0.1))
        return self.ready

    def send(self, op: str, **kw: Any) -> int:
        """Send a command without waiting; returns its id for :meth:`result`."""
        cid = next(self._ids)
        if op == "watch":
            kw.setdefault("since", time.monotonic())
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, "id": cid, **kw}) + "\n")
        self.proc.stdin.flush()
        return cid

    def result(self, cid: int, timeout: float = 30.0) -> dict:
        """The reply to command ``cid``; raises if it failed or did not come in time."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while cid not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise TimeoutError(
                        f"worker {self.pid}: no reply to command {cid} "
                        f"(exit={self.proc.poll()}): {self.stderr()[-2000:]}"
                    )
                self._cond.wait(min(left, 0.1))
            reply = self._replies.pop(cid)
        if not reply.get("ok"):
            raise RuntimeError(f"worker {self.pid}: {reply.get('error')}")
        return reply

    def call(self, op: str, timeout: float = 30.0, **kw: Any) -> dict:
        """Send a command and wait for its reply."""
        return self.result(self.send(op, **kw), timeout)

    def event(self, timeout: float = 30.0) -> dict:
        """The next event line (e.g. ``{"event": "computing"}``)."""
        return self.events.get(timeout=timeout)

    def suspend(self) -> None:
        """Freeze it (SIGSTOP)."""
        _signal(self.proc, signal.SIGSTOP)

    def resume(self) -> None:
        """Thaw it (SIGCONT)."""
        _signal(self.proc, signal.SIGCONT)

    def kill(self) -> None:
        """kill -9."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Ask it to quit, kill it if it does not within a few seconds."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)  # a frozen one could not quit
            with contextlib.suppress(OSError, ValueError):
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"op": "quit", "id": -1}) + "\n")
                self.proc.stdin.flush()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError, ValueError):
                if stream is not None:
                    stream.close()
        self._stderr.close()


def start_members(
    configs: list[dict], timeout: float = 30.0, worker: str = "tests.mq._worker"
) -> list[Member]:
    """Start the workers in parallel and wait until each is ready (killing all on failure)."""
    members = [Member(cfg, worker) for cfg in configs]
    try:
        for m in members:
            m.wait_ready(timeout)
    except BaseException:
        for m in members:
            m.stop()
        raise
    return members


def cached_everywhere(writer: Member, readers: list[Member], key: str, value: object) -> None:
    """Put, wait for the invalidation to land, read: each reader holds ``value`` in L1.

    A reader may decline to keep what it read when an invalidation of the key lands during
    the read (one of an earlier write, late on a loaded machine): it reads again, for up to
    5 s, until it keeps it."""
    watches = [(r, r.send("watch", keys=[key], timeout=10)) for r in readers]
    writer.call("put", key=key, value=value)
    for r, cid in watches:
        r.result(cid)
    for r in readers:
        deadline = time.monotonic() + 5
        got = r.call("get", key=key)
        while got["value"] == value and not got["l1"] and time.monotonic() < deadline:
            time.sleep(0.05)
            got = r.call("get", key=key)
        assert (got["value"], got["l1"]) == (value, True), got
