"""What the FastAPI tests (and benchmarks/fastapi.py) share: the servers they start, the
client side of the reverse-proxy setup, small helpers.

* :func:`fastapi_example`: ``example_projects/fastapi_app`` under uvicorn;
* :func:`origin_server`: ``origin_app.py``, an origin whose fields the test sets;
* :func:`proxy_server`: ``proxy_app.py``, an httpx reverse proxy wrapped in
  ``CacheMiddleware(strict=True)``, in front of an origin;
* :class:`Site`: a proxy and its origin as a test drives them.
"""

from __future__ import annotations

import sys
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.servers import REPO, AppServer, MemcachedServer

HERE = Path(__file__).resolve().parent
PURGE_TOKEN = "tests-only-purge-token"
CHECKSUM_KEY = "tests-only-secret"


@dataclass(frozen=True)
class Backend:
    """Where servers cache: ``env`` points them at it; ``memcached`` is None in process."""

    env: dict[str, str]
    memcached: MemcachedServer | None


def uvicorn(
    module: str, app_dir: Path, env: Mapping[str, str], ready: str, *extra: str
) -> AppServer:
    """``module:app`` under uvicorn on a free loopback port (not started yet)."""
    argv = [sys.executable, "-m", "uvicorn", f"{module}:app", "--app-dir", str(app_dir)]
    argv += ["--host", "127.0.0.1", "--port", "{port}", "--no-access-log"]
    argv += ["--log-level", "warning", *extra]
    return AppServer(argv, env, ready_path=ready)


def fastapi_example(env: Mapping[str, str]) -> AppServer:
    """The FastAPI example project under uvicorn (not started yet)."""
    return uvicorn("app", REPO / "example_projects" / "fastapi_app", env, "/stats")


def origin_server() -> AppServer:
    # The origin sends its own Date: uvicorn must not add a second one.
    return uvicorn("origin_app", HERE, {}, "/_ready", "--no-date-header", "--no-server-header")


def proxy_server(origin: AppServer, env: Mapping[str, str]) -> AppServer:
    env = {"ORIGIN_URL": origin.url, "PURGE_TOKEN": PURGE_TOKEN, **env}
    return uvicorn(
        "proxy_app", HERE, env, "/_chorde/ready", "--no-date-header", "--no-server-header"
    )


class Site:
    """A proxy and the origin behind it, as a test drives them."""

    def __init__(self, proxy: AppServer, origin: AppServer) -> None:
        self.proxy = proxy
        self.origin = origin
        self.http = httpx.Client(base_url=proxy.url, timeout=15.0)
        self._control = httpx.Client(base_url=origin.url, timeout=15.0)

    def close(self) -> None:
        self.http.close()
        self._control.close()

    def __enter__(self) -> Site:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, url: str, **headers: str) -> httpx.Response:
        return self.http.get(url, headers={k.replace("_", "-"): v for k, v in headers.items()})

    def set(self, path: str, **state: Any) -> None:
        """Change what the origin answers for ``path`` (see ``origin_app.py``)."""
        self._control.post(f"/_state{path}", json=state).raise_for_status()

    def log(self, path: str) -> list[dict[str, Any]]:
        """The requests the origin received for ``path``."""
        entries: list[dict[str, Any]] = self._control.get(f"/_log{path}").json()
        return entries

    def purge(self, *, tags: Sequence[str] = (), urls: Sequence[str] = ()) -> None:
        answer = self.http.post(
            "/_chorde/purge",
            json={"tags": list(tags), "urls": list(urls)},
            headers={"authorization": f"Bearer {PURGE_TOKEN}"},
        )
        answer.raise_for_status()


def url(path: str, **params: Any) -> str:
    """``path`` with a query string (a list value repeats the parameter)."""
    return f"{path}?{urllib.parse.urlencode(params, doseq=True)}" if params else path


def cache_status(response: httpx.Response) -> str:
    return response.headers.get("cache-status", "")


def status_ttl(response: httpx.Response) -> int:
    """The ``ttl`` parameter of the response's Cache-Status."""
    for part in cache_status(response).split(";"):
        name, _, value = part.strip().partition("=")
        if name == "ttl":
            return int(value)
    raise AssertionError(f"no ttl in {cache_status(response)!r}")


def wait_for(predicate: Any, timeout: float = 15.0, interval: float = 0.05) -> bool:
    """Poll ``predicate`` (bounded): True once it holds, False after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
