"""The chaos suite: real faults against real processes, each test asserting the bound it
documents.

Run by ``make chaos`` and by ``make test``. Everything is on 127.0.0.1, every wait is
bounded, and a test asserts counts and bounds (generous ones where time is involved),
never how fast this machine is. The whole suite must fit in a **time budget**
(:data:`BUDGET`, 180 s; ``CHORDE_CHAOS_BUDGET`` overrides it): past it the session fails,
so keep each new test to a few seconds. The terminal summary shows the time spent per
module and the figures the tests measured (``figures.record(...)``).

Fixtures:

* ``chaos_proxy(target_port)``: a started :class:`tests.chaos.proxy.ChaosProxy` in front
  of a port (delay, blackhole, stall, reset, drop, refuse; closed at teardown);
* ``echo_server``: the port of a TCP echo server (for the proxy's own tests);
* ``broker``: ``python -m chorde.mq.broker`` as a process on a free port, to ``kill()``
  (SIGKILL), ``start()`` again on the same port, ``suspend()`` / ``resume()``;
* ``coherent_cluster(configs)``: worker processes (``tests/mq/_worker.py``: a coherent
  client over an in-process L1 and the ``memcached`` fixture's server, on the broker),
  one per config dict, with production heartbeats (1 s, timeout 3.5 s) unless a config
  says otherwise; a config's ``"broker"`` may name another endpoint (a proxy's);
* ``figures``: ``figures.record(name, value, unit="s")`` for the summary;
* memcached: the ``memcached`` / ``memcached_factory`` fixtures of ``tests/conftest.py``
  (``MemcachedServer`` has ``suspend``/``resume``/``stop``/``start``).
"""

from __future__ import annotations

import collections
import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.chaos.proxy import ChaosProxy
from tests.mq._cluster import BrokerProcess, Member, start_members
from tests.servers import free_port

#: Seconds the whole chaos suite may take (setup, call and teardown of every test).
BUDGET = float(os.environ.get("CHORDE_CHAOS_BUDGET", "180"))
SECRET = "chaos-secret"
_HERE = Path(__file__).resolve().parent

_spent: collections.Counter[str] = collections.Counter()
_figures: list[tuple[str, float, str]] = []


def _is_chaos(nodeid: str) -> bool:
    # (Redis's fault tests, which make chaos runs too, live beside their fixtures in
    # tests/redis: this conftest's hooks never see them, so they are not counted here.)
    return "chaos/" in nodeid.split("::", 1)[0].replace(os.sep, "/")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Add up the time each chaos module takes, setup and teardown included."""
    if _is_chaos(report.nodeid):
        _spent[report.nodeid.split("::", 1)[0]] += report.duration


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session when the chaos suite went over its budget."""
    total = sum(_spent.values())
    if total > BUDGET and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    """Time per chaos module against the budget, and the figures measured."""
    if not _spent:
        return
    total = sum(_spent.values())
    over = total > BUDGET
    terminalreporter.section("chaos suite", red=over, green=not over)
    for module, spent in sorted(_spent.items()):
        terminalreporter.write_line(f"{spent:7.1f} s  {module}")
    verdict = "OVER BUDGET: the session fails" if over else "within budget"
    terminalreporter.write_line(
        f"{total:7.1f} s  in all, of a {BUDGET:.0f} s budget ({verdict}; CHORDE_CHAOS_BUDGET)",
        red=over,
    )
    for name, value, unit in _figures:
        terminalreporter.write_line(f"  {name}: {value:.3f} {unit}")


class Figures:
    """What the chaos tests measured, shown in the terminal summary."""

    def record(self, name: str, value: float, unit: str = "s") -> None:
        """Remember one measured figure."""
        _figures.append((name, float(value), unit))


@pytest.fixture(scope="session")
def figures() -> Figures:
    """Record measured figures for the summary: ``figures.record("takeover", 1.9)``."""
    return Figures()


@pytest.fixture
def chaos_proxy() -> Iterator[Callable[[int], ChaosProxy]]:
    """``chaos_proxy(target_port)``: a started proxy on a free 127.0.0.1 port."""
    started: list[ChaosProxy] = []

    def make(target_port: int) -> ChaosProxy:
        proxy = ChaosProxy(target_port).start()
        started.append(proxy)
        return proxy

    try:
        yield make
    finally:
        for proxy in started:
            proxy.close()


@pytest.fixture
def echo_server() -> Iterator[int]:
    """The port of a TCP server that echoes what it receives, one thread per connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def echo(conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conns.append(conn)
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.close()


@pytest.fixture
def broker() -> Iterator[BrokerProcess]:
    """A broker process on a free loopback port (killed at teardown, even if frozen)."""
    proc = BrokerProcess(free_port())
    proc.start()
    try:
        yield proc
    finally:
        with contextlib.suppress(RuntimeError):
            proc.resume()
        proc.stop()


@pytest.fixture
def coherent_cluster(memcached, broker, tmp_path: Path) -> Iterator[Callable[..., list[Member]]]:
    """``coherent_cluster([cfg, cfg, ...])``: one worker per config, started in parallel.

    Computations are logged (one line per run) to ``tmp_path / "computations.log"``.
    """
    started: list[Member] = []
    base = {
        "memcached": memcached.address,
        "broker": broker.endpoint,
        "secret": SECRET,
        "log": str(tmp_path / "computations.log"),
        "heartbeat": 1.0,
        "heartbeat_timeout": 3.5,
    }

    def make(configs: list[dict]) -> list[Member]:
        members = start_members([{**base, **cfg} for cfg in configs])
        started.extend(members)
        return members

    try:
        yield make
    finally:
        for member in started:
            member.stop()


def computations(tmp_path: Path) -> collections.Counter[str]:
    """How many times each key was computed, by any worker of ``coherent_cluster``."""
    log = tmp_path / "computations.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return collections.Counter(line.split()[1] for line in lines)


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``predicate`` until true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.02)
