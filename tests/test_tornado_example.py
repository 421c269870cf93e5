"""The tornado example project, run as a real server process and spoken to over HTTP."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "example_projects" / "tornado_app" / "app.py"


def _pythonpath() -> str:
    # The checkout first: the example must run against this tree whatever is installed.
    return os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


class _Server:
    """``python app.py --port N`` on a free 127.0.0.1 port."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [sys.executable, str(APP), "--port", str(self.port)],
            cwd=ROOT,
            env={**os.environ, **env, "PYTHONPATH": _pythonpath()},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the example app exited:\n{self.output()}")
            try:
                httpx.get(f"{self.url}/stats", timeout=1.0)
                return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError(f"the example app did not answer in {timeout} s:\n{self.output()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


@pytest.fixture
def start_app() -> Iterator[Callable[..., _Server]]:
    started: list[_Server] = []

    def start(**env: str) -> _Server:
        server = _Server(env)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()


def _work(http: httpx.Client) -> dict[str, int]:
    return http.get("/stats").json()["work"]


def _check_cached_handlers(server: _Server) -> None:
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        gen = http.get("/gen/fib/20").json()
        assert gen == {"n": 20, "fib": 6765, "style": "gen.coroutine"}
        assert http.get("/gen/fib/20").json() == gen
        native = http.get("/native/square/12").json()
        assert native == {"n": 12, "square": 144, "style": "async def"}
        assert http.get("/native/square/12").json() == native
        assert _work(http) == {"fib": 1, "square": 1}

        page = http.get("/page").json()
        assert (page["fib10"], page["square12"]) == (55, 144)
        assert http.get("/page").json() == page  # the cached response, same "at"
        assert _work(http) == {"fib": 2, "square": 1, "page": 1}

        assert http.post("/invalidate/20", content=b"").json() == {"invalidated": 20}
        assert http.get("/gen/fib/20").json() == gen
        assert _work(http) == {"fib": 3, "square": 1, "page": 1}


def test_example_serves_cached_results(start_app):
    server = start_app()
    assert httpx.get(f"{server.url}/stats").json()["client"] == "InprocCacheClient"
    _check_cached_handlers(server)


def test_example_answers_while_a_miss_computes(start_app):
    server = start_app()

    async def race(n: int) -> list[str]:
        finished: list[str] = []
        async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as http:

            async def fetch(path: str) -> None:
                (await http.get(path)).raise_for_status()
                finished.append(path)

            miss = asyncio.ensure_future(fetch(f"/gen/fib/{n}"))
            await asyncio.sleep(0.05)  # the miss is now computing on the app's pool
            await fetch("/stats")
            await miss
        return finished

    # The IOLoop answered /stats while the 0.3 s computation of the miss was running. A
    # blocked loop never could; a starved machine might miss once, so three tries.
    orders = []
    for n in (30, 31, 32):
        orders.append(asyncio.run(race(n)))
        if orders[-1][0] == "/stats":
            break
    assert orders[-1] == ["/stats", f"/gen/fib/{n}"], orders


def test_example_on_memcached_shares_results_between_processes(start_app, memcached):
    env = {"CHORDE_MEMCACHED": memcached.address}
    one = start_app(**env)
    _check_cached_handlers(one)
    two = start_app(**env)
    with httpx.Client(base_url=two.url, timeout=10.0) as http:
        assert http.get("/stats").json()["client"] == "MemcachedClient"
        assert http.get("/gen/fib/20").json()["fib"] == 6765
        assert http.get("/native/square/12").json()["square"] == 144
        assert http.get("/page").json()["pid"] == one.proc.pid
        assert _work(http) == {}
