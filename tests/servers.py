"""Helpers that start real servers on 127.0.0.1 for the tests.

Every server started here is tracked in a module-level registry and killed by
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
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import IO, Self

__all__ = [
    "MEMCACHED_ENV_VAR",
    "MemcachedServer",
    "ServerStartError",
    "find_memcached",
    "free_port",
    "memcached_install_hint",
    "stop_all",
]

HOST = "127.0.0.1"
#: Environment variable that overrides where the ``memcached`` executable is looked up.
MEMCACHED_ENV_VAR = "MEMCACHED_BIN"

_START_ATTEMPTS = 5
_live: set[MemcachedServer] = set()
_live_lock = threading.Lock()


class ServerStartError(RuntimeError):
    """A server process exited or did not accept connections in time."""


def free_port(host: str = HOST) -> int:
    """Return a TCP port on ``host`` that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


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


class MemcachedServer:
    """One real ``memcached`` process listening on 127.0.0.1 (TCP only, UDP off).

    ``port=None`` picks a free port at the first :meth:`start`; later starts reuse it, so a
    test can take the server down with :meth:`stop` and bring it back with :meth:`start`
    (with an empty cache, as a real restart would). :meth:`suspend` / :meth:`resume` freeze
    the process instead, for tests of clients facing a hung server.
    """

    host = HOST

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
        self._port = port
        self.memory_mb = memory_mb
        self.item_size = item_size
        self.threads = threads
        self.max_connections = max_connections
        self.extra_args = tuple(extra_args)
        self.executable = executable or find_memcached()
        if self.executable is None:
            raise FileNotFoundError(memcached_install_hint())
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    @property
    def port(self) -> int:
        """The TCP port; fixed once the server was first started."""
        if self._port is None:
            raise RuntimeError("the server has no port until it is started")
        return self._port

    @property
    def address(self) -> str:
        """``"127.0.0.1:PORT"``, the form memcached clients take."""
        return f"{self.host}:{self.port}"

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

    def start(self) -> Self:
        """Start the process (same port as before, if any) and wait until it answers."""
        if self.running:
            raise RuntimeError(f"memcached at {self.address} is already running")
        chosen_port = self._port is None
        last_error: ServerStartError | None = None
        for _ in range(_START_ATTEMPTS if chosen_port else 1):
            if chosen_port:
                self._port = free_port(self.host)
            try:
                self._spawn_and_wait()
                return self
            except ServerStartError as exc:
                # The port picked may have been taken in between: try another one.
                last_error = exc
        if chosen_port:
            self._port = None
        assert last_error is not None
        raise last_error

    def stop(self) -> None:
        """Kill the process at once (SIGKILL: memcached takes ~1 s to honour SIGTERM)."""
        proc, self._proc = self._proc, None
        with _live_lock:
            _live.discard(self)
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def restart(self) -> Self:
        """Stop and start again on the same port (the cache comes back empty)."""
        self.stop()
        return self.start()

    def suspend(self) -> None:
        """Freeze the process (SIGSTOP): connections hang instead of being refused."""
        self._signal(signal.SIGSTOP)

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

    def _spawn_and_wait(self) -> None:
        # Kept open for the life of the process, closed by stop().
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        in_main_thread = threading.current_thread() is threading.main_thread()
        proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            # The kernel ties the death signal to the forking *thread*: only ask for it
            # from the main thread, or the server would die with a short-lived worker.
            preexec_fn=_die_with_parent if in_main_thread else None,
        )
        self._proc = proc
        with _live_lock:
            _live.add(self)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if proc.poll() is not None:
                err = self._stderr_text()
                self.stop()
                raise ServerStartError(
                    f"memcached on port {self._port} exited with {proc.returncode}: {err}"
                )
            if self._answers_version():
                return
            if time.monotonic() > deadline:
                err = self._stderr_text()
                self.stop()
                raise ServerStartError(
                    f"memcached on port {self._port} did not answer within "
                    f"{self.start_timeout} s: {err}"
                )
            time.sleep(0.005)

    def _answers_version(self) -> bool:
        try:
            return self.command_line(b"version", timeout=1.0).startswith(b"VERSION ")
        except OSError:
            return False

    def _stderr_text(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace").strip() or "(no output)"

    def __enter__(self) -> Self:
        return self if self.running else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        port = self._port if self._port is not None else "?"
        state = "running" if self.running else "stopped"
        return f"<MemcachedServer {self.host}:{port} {state}>"


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
