"""Fixtures for the Starlette adapter: the example app under a real uvicorn process.

``example_server`` is parametrized over the cache backend (in-process, and memcached via
``CHORDE_MEMCACHED``) and module-scoped: starting uvicorn costs about a second, and tests
keep out of each other's way by using distinct URLs (a unique query string each).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import MemcachedServer, find_memcached, free_port

REPO = Path(__file__).resolve().parents[2]
APP_DIR = REPO / "example_projects" / "starlette_app"
HOST = "127.0.0.1"
START_TIMEOUT = 20.0
START_ATTEMPTS = 3


class UvicornServer:
    """The example app under ``python -m uvicorn`` on a free loopback port."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{HOST}:{self.port}"

    def start(self) -> UvicornServer:
        """Start uvicorn and wait (bounded) until the app answers; retry on a taken port."""
        error = ""
        for _ in range(START_ATTEMPTS):
            self.port = free_port()
            env = {**os.environ, **self.env}
            # The checkout first, so the app imports this tree's chorde_starlette.
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "app:app",
                    "--app-dir",
                    str(APP_DIR),
                    "--host",
                    HOST,
                    "--port",
                    str(self.port),
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=self._log,
            )
            if self._wait_ready():
                return self
            error = self.output()
            self.stop(close_log=False)
        raise RuntimeError(f"uvicorn did not start the example app: {error}")

    def _wait_ready(self) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base_url + "/stats", timeout=1.0).status_code == 200:
                    return True
            time.sleep(0.02)
        return False

    def output(self) -> str:
        """What uvicorn printed so far."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self, close_log: bool = True) -> None:
        """Terminate uvicorn (kill it when it lingers)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if close_log:
            self._log.close()


@pytest.fixture(scope="module", params=["inproc", "memcached"])
def example_server(request: pytest.FixtureRequest) -> Iterator[UvicornServer]:
    """The example app served by uvicorn, caching in process or in a real memcached."""
    env = {"SLOW_SECONDS": "0.3", "CACHE_TTL": "60", "MAX_BODY_SIZE": "65536"}
    memcached = None
    if request.param == "memcached":
        path = find_memcached()
        if path is None:
            if os.environ.get("CI") == "true":
                pytest.fail("memcached is not installed (CI=true: a missing server is a failure)")
            pytest.skip("memcached is not installed")
        memcached = MemcachedServer(executable=path).start()
        env["CHORDE_MEMCACHED"] = memcached.address
        env["CHORDE_CHECKSUM_KEY"] = "tests-only-secret"
    server = UvicornServer(env)
    try:
        server.start()
        server.backend = request.param  # type: ignore[attr-defined]
        server.memcached = memcached  # type: ignore[attr-defined]
        yield server
    finally:
        server.stop()
        if memcached is not None:
            memcached.stop()
