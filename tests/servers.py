"""Helpers that start real servers on 127.0.0.1 for the tests (and the benchmarks).

* :class:`MemcachedServer`: a real ``memcached`` process;
* :class:`AppServer`: an example project run as a real HTTP server process;
* :class:`ConfigEndpoint`: an ElastiCache configuration endpoint (a thread);
* :func:`wait_until`: bounded polling for a condition another thread or process brings.

Every process started here is tracked in a module-level registry and killed by
:func:`stop_all` (called at pytest session end and, as a last resort, at interpreter exit),
so a failing test never leaks a process.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Self

import httpx

__all__ = [
    "MEMCACHED_ENV_VAR",
    "REPO",
    "AppServer",
    "ConfigEndpoint",
    "MemcachedServer",
    "ServerStartError",
    "find_memcached",
    "free_port",
    "memcached_install_hint",
    "starlette_example",
    "stop_all",
    "wait_until",
]

HOST = "127.0.0.1"
#: Environment variable that overrides where the ``memcached`` executable is looked up.
MEMCACHED_ENV_VAR = "MEMCACHED_BIN"

#: The checkout: example projects run from it, with it first on ``PYTHONPATH``.
REPO = Path(__file__).resolve().parent.parent

_START_ATTEMPTS = 5


_live: set[_ServerProcess] = set()
_live_lock = threading.Lock()


class ServerStartError(RuntimeError):
    """A server process exited or did not accept connections in time."""


def free_port(host: str = HOST) -> int:
    """Return a TCP port on ``host`` that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def find_memcached() -> str | None:
    """Return the path of the ``memcached`` executable, or None when it is not installed."""
    override = os.environ.get(MEMCACHED_ENV_VAR)
    if override is not None:
        return override if os.path.isfile(override) and os.access(override, os.X_OK) else None
    return shutil.which("memcached")


def memcached_install_hint() -> str:
    """Say how to get memcached, for skip and failure messages."""
    return (
        "memcached is not installed: run `apt-get install -y memcached` (or `make test`, "
        f"which installs it), or point {MEMCACHED_ENV_VAR} at the executable"
    )


def stop_all() -> None:
    """Kill every server this module started that is still running."""
    with _live_lock:
        servers = list(_live)
    for server in servers:
        server.stop()


atexit.register(stop_all)


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the test runner is killed outright its
    # servers get SIGKILL from the kernel instead of lingering (PR_SET_PDEATHSIG = 1).
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


class _ServerProcess:
    """A server process on 127.0.0.1: started with a bounded wait, stopped by its pid.

    ``port=None`` picks a free port at the first :meth:`start` (another one when a start
    fails: the port may have been taken in between); later starts reuse it, so a test can
    take the server down with :meth:`stop` and bring it back with :meth:`start`. What the
    process writes goes to a file (a pipe could fill up and block it), read by
    :meth:`output`. Usable as a context manager (started on entry, stopped on exit).
    """

    host = HOST
    #: Seconds a SIGTERM is given to work before SIGKILL; 0 sends SIGKILL at once.
    term_grace: float = 5.0

    def __init__(self, port: int | None, start_timeout: float, start_attempts: int) -> None:
        self._port = port
        self.start_timeout = start_timeout
        self.start_attempts = start_attempts
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def port(self) -> int:
        """The TCP port; fixed once the server was first started."""
        if self._port is None:
            raise RuntimeError("the server has no port until it is started")
        return self._port

    @property
    def pid(self) -> int | None:
        """The process id while the server runs, else None."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the process is alive (suspended counts as alive)."""
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        """The command line the server is started with."""
        raise NotImplementedError

    def _name(self) -> str:
        """What error messages call the server."""
        return " ".join(self.command())

    def _popen_options(self) -> dict[str, object]:
        """Extra :class:`subprocess.Popen` options (``cwd``, ``env``)."""
        return {}

    def _answers(self) -> bool:
        """True once the server answers a request."""
        raise NotImplementedError

    def start(self) -> Self:
        """Start the process (same port as before, if any) and wait until it answers."""
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        chosen_port = self._port is None
        last_error: ServerStartError | None = None
        for _ in range(self.start_attempts if chosen_port else 1):
            if chosen_port:
                self._port = free_port(self.host)
            try:
                self._spawn_and_wait()
                return self
            except ServerStartError as exc:
                last_error = exc
        if chosen_port:
            self._port = None
        assert last_error is not None
        raise last_error

    def stop(self) -> None:
        """Signal the process (SIGTERM, SIGKILL after ``term_grace`` s) and wait for it."""
        proc, self._proc = self._proc, None
        with _live_lock:
            _live.discard(self)
        if proc is not None:
            if proc.poll() is None and self.term_grace > 0:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(self.term_grace)
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> Self:
        """Stop and start again on the same port."""
        self.stop()
        return self.start()

    def output(self) -> str:
        """What the process wrote to stdout and stderr so far."""
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace").strip()

    def _spawn_and_wait(self) -> None:
        # Kept open for the life of the process, closed by stop().
        self._log = tempfile.TemporaryFile()  # noqa: SIM115
        in_main_thread = threading.current_thread() is threading.main_thread()
        proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # The kernel ties the death signal to the forking *thread*: only ask for it
            # from the main thread, or the server would die with a short-lived worker.
            preexec_fn=_die_with_parent if in_main_thread else None,
            **self._popen_options(),  # type: ignore[arg-type]
        )
        self._proc = proc
        with _live_lock:
            _live.add(self)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if proc.poll() is not None:
                problem = f"exited with {proc.returncode}"
                break
            if self._answers():
                return
            if time.monotonic() > deadline:
                problem = f"did not answer within {self.start_timeout} s"
                break
            time.sleep(0.005)
        output = self.output()[-3000:] or "(no output)"
        self.stop()
        raise ServerStartError(f"{self._name()} on port {self._port} {problem}: {output}")

    def __enter__(self) -> Self:
        return self if self.running else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        port = self._port if self._port is not None else "?"
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {self.host}:{port} {state}>"


class MemcachedServer(_ServerProcess):
    """One real ``memcached`` process listening on 127.0.0.1 (TCP only, UDP off).

    Restarted by :meth:`start` after :meth:`stop` on the same port, it comes back with an
    empty cache, as a real restart would. :meth:`suspend` / :meth:`resume` freeze the
    process instead, for tests of clients facing a hung server.
    """

    #: memcached takes ~1 s to honour SIGTERM: SIGKILL at once.
    term_grace = 0.0

    def __init__(
        self,
        port: int | None = None,
        *,
        memory_mb: int = 64,
        item_size: int | str | None = None,
        threads: int = 2,
        max_connections: int | None = None,
        extra_args: Sequence[str] = (),
        executable: str | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        if memory_mb <= 0:
            raise ValueError(f"memory_mb must be > 0, got {memory_mb!r}")
        if threads <= 0:
            raise ValueError(f"threads must be > 0, got {threads!r}")
        super().__init__(port, start_timeout, _START_ATTEMPTS)
        self.memory_mb = memory_mb
        self.item_size = item_size
        self.threads = threads
        self.max_connections = max_connections
        self.extra_args = tuple(extra_args)
        self.executable = executable or find_memcached()
        if self.executable is None:
            raise FileNotFoundError(memcached_install_hint())

    @property
    def address(self) -> str:
        """``"127.0.0.1:PORT"``, the form memcached clients take."""
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        """The command line the server is started with."""
        assert self.executable is not None
        cmd = [self.executable, "-l", self.host, "-p", str(self.port), "-U", "0"]
        cmd += ["-m", str(self.memory_mb), "-t", str(self.threads)]
        if self.item_size is not None:
            cmd += ["-I", str(self.item_size)]
        if self.max_connections is not None:
            cmd += ["-c", str(self.max_connections)]
        if os.geteuid() == 0:
            # memcached refuses to run as root unless told which user to be.
            cmd += ["-u", "root"]
        cmd += self.extra_args
        return cmd

    def _name(self) -> str:
        return "memcached"

    def suspend(self) -> None:
        """Freeze the process (SIGSTOP): connections hang instead of being refused.

        Returns once every thread of the server is stopped: the signal lands
        asynchronously, and a fast client could otherwise still get an answer.
        """
        self._signal(signal.SIGSTOP)
        pid = self.pid
        deadline = time.monotonic() + 5
        while pid is not None and time.monotonic() < deadline:
            try:
                states = [
                    Path(f"/proc/{pid}/task/{task}/stat").read_text().rsplit(")", 1)[1].split()[0]
                    for task in os.listdir(f"/proc/{pid}/task")
                ]
            except OSError:  # a thread went away meanwhile: look again
                continue
            if all(state in ("T", "t") for state in states):
                return
            time.sleep(0.001)

    def resume(self) -> None:
        """Thaw a process frozen by :meth:`suspend`."""
        self._signal(signal.SIGCONT)

    def flush(self) -> None:
        """Drop every item (``flush_all``)."""
        reply = self.command_line(b"flush_all")
        if reply != b"OK":
            raise RuntimeError(f"flush_all on {self.address} answered {reply!r}")

    def stats(self, group: str = "") -> dict[str, str]:
        """Return ``stats`` (or ``stats GROUP``) as a dict of strings."""
        line = f"stats {group}".strip().encode()
        result: dict[str, str] = {}
        with socket.create_connection((self.host, self.port), timeout=5) as sock:
            sock.sendall(line + b"\r\n")
            data = b""
            deadline = time.monotonic() + 5
            while not data.endswith(b"END\r\n"):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no complete stats reply from {self.address}")
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"{self.address} closed the connection")
                data += chunk
        for row in data.decode().splitlines():
            parts = row.split(" ", 2)
            if len(parts) == 3 and parts[0] == "STAT":
                result[parts[1]] = parts[2]
        return result

    def command_line(self, line: bytes, timeout: float = 5.0) -> bytes:
        """Send one text-protocol command and return its one-line reply (without CRLF)."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
            sock.sendall(line + b"\r\n")
            return _read_line(sock, timeout)

    def _signal(self, sig: int) -> None:
        if not self.running or self._proc is None:
            raise RuntimeError("memcached is not running")
        self._proc.send_signal(sig)

    def _answers(self) -> bool:
        try:
            return self.command_line(b"version", timeout=1.0).startswith(b"VERSION ")
        except OSError:
            return False


class AppServer(_ServerProcess):
    """An example project run as a real HTTP server process on 127.0.0.1.

    ``argv`` is the command; ``{port}`` in any of its words becomes the port. ``env`` is
    added to this process's environment, with the checkout first on ``PYTHONPATH`` so the
    app runs against this tree. :meth:`start` waits (at most ``start_timeout`` seconds)
    until ``GET ready_path`` answers 200; :meth:`stop` sends SIGTERM to the process (its
    pid), then SIGKILL if it lingers. See :class:`_ServerProcess` for ports and restarts.
    """

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        *,
        cwd: str | Path = REPO,
        ready_path: str = "/",
        start_timeout: float = 20.0,
        start_attempts: int = 3,
    ) -> None:
        if not argv:
            raise ValueError("argv must name a command")
        super().__init__(port, start_timeout, start_attempts)
        self.argv = list(argv)
        self.env = dict(env or {})
        self.cwd = Path(cwd)
        self.ready_path = ready_path

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        """The command line, with the port filled in."""
        return [word.replace("{port}", str(self.port)) for word in self.argv]

    def _popen_options(self) -> dict[str, object]:
        env = {**os.environ, **self.env}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        return {"cwd": self.cwd, "env": env}

    def _answers(self) -> bool:
        try:
            return httpx.get(self.url + self.ready_path, timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False


def starlette_example(env: Mapping[str, str] | None = None) -> AppServer:
    """The Starlette example project under uvicorn (not started yet)."""
    argv = [sys.executable, "-m", "uvicorn", "app:app"]
    argv += ["--app-dir", str(REPO / "example_projects" / "starlette_app")]
    argv += ["--host", HOST, "--port", "{port}", "--no-access-log", "--log-level", "warning"]
    return AppServer(argv, env, ready_path="/stats")


class ConfigEndpoint:
    """Speaks ElastiCache's ``config get cluster`` (or the legacy ``get``) on 127.0.0.1."""

    def __init__(self, legacy: bool = False, port: int = 0) -> None:
        self.version = 1
        self.nodes: list = []
        self.legacy = legacy
        self.requests = 0
        self._sock = socket.create_server((HOST, port))
        self._sock.settimeout(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        """``"127.0.0.1:PORT"``."""
        return f"{HOST}:{self._sock.getsockname()[1]}"

    def publish(self, servers: Sequence[MemcachedServer], version: int | None = None) -> None:
        """Announce ``servers`` as the cluster's nodes, under a new (or the given) version."""
        self.nodes = list(servers)
        self.version = self.version + 1 if version is None else version

    def body(self) -> bytes:
        """The configuration as the endpoint sends it."""
        nodes = " ".join(f"node{i}.local|{s.host}|{s.port}" for i, s in enumerate(self.nodes))
        return f"{self.version}\n{nodes}\n".encode()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                buf = b""
                try:
                    while not self._stop.is_set():
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        buf += chunk
                        while b"\r\n" in buf:
                            line, buf = buf.split(b"\r\n", 1)
                            conn.sendall(self._reply(line))
                except OSError:
                    pass

    def _reply(self, line: bytes) -> bytes:
        self.requests += 1
        body = self.body()
        if line == b"config get cluster" and not self.legacy:
            return b"CONFIG cluster 0 %d\r\n%s\r\nEND\r\n" % (len(body), body)
        if line == b"get AmazonElastiCache:cluster" and self.legacy:
            return b"VALUE AmazonElastiCache:cluster 0 %d\r\n%s\r\nEND\r\n" % (len(body), body)
        return b"ERROR\r\n"

    def close(self) -> None:
        """Stop serving and close the socket."""
        self._stop.set()
        self._sock.close()
        self._thread.join(5)


def _read_line(sock: socket.socket, timeout: float) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\r\n"):
        if time.monotonic() > deadline:
            raise TimeoutError("no complete reply line")
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("connection closed before a full reply line")
        data += chunk
    return data[:-2]
