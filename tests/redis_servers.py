"""Real Redis processes on 127.0.0.1 for the tests and benchmarks: one server, Sentinel, Cluster.

* :class:`RedisServer`: one ``redis-server`` (TCP, optionally a unix socket, TLS, a password,
  ACL users, a replica of another); :meth:`~RedisServer.suspend`/:meth:`~RedisServer.resume`
  freeze it, :meth:`~RedisServer.stop`/:meth:`~RedisServer.start` kill and restart it (empty:
  nothing is persisted).
* :class:`SentinelGroup`: a master, a replica and three sentinels watching them.
* :class:`RedisCluster`: three masters with a replica each, slots assigned by ``redis-cli
  --cluster create``.
* :func:`redis_executable`: the ``redis-server`` path, or a skip (a failure under ``CI=true``).
* :func:`start_redis` and friends: for tests outside ``tests/redis`` that need a server, with
  the teardown registered on the test's ``request``.

Every process is registered with :mod:`tests.servers`, so ``stop_all`` kills what a failing
test leaves behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

from tests.servers import ServerStartError, _ServerProcess, free_port, wait_until

__all__ = [
    "REDIS_ENV_VAR",
    "RedisCluster",
    "RedisServer",
    "SentinelGroup",
    "redis_executable",
    "redis_install_hint",
    "shared_cluster",
    "start_redis",
    "tls_files",
]

#: Environment variable overriding where ``redis-server`` is looked up.
REDIS_ENV_VAR = "REDIS_SERVER_BIN"
_START_ATTEMPTS = 5


def find_redis() -> str | None:
    """The path of ``redis-server``, or None when it is not installed."""
    override = os.environ.get(REDIS_ENV_VAR)
    if override is not None:
        return override if os.path.isfile(override) and os.access(override, os.X_OK) else None
    return shutil.which("redis-server")


def redis_install_hint() -> str:
    """Say how to get Redis, for skip and failure messages."""
    return (
        "redis-server is not installed: run `apt-get install -y redis-server` (or `make test`, "
        f"which installs it), or point {REDIS_ENV_VAR} at the executable"
    )


def redis_executable() -> str:
    """``redis-server``'s path; skips the test when missing, fails it under ``CI=true``."""
    import pytest

    path = find_redis()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(redis_install_hint() + " (CI=true: a missing server is a failure)")
        pytest.skip(redis_install_hint())
    return path


def command(address: tuple[str, int] | str, *args: str | bytes, timeout: float = 5.0) -> Any:
    """Send one command (RESP) to a server or a unix socket path; return the decoded reply."""
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(address)
    else:
        sock = socket.create_connection(address, timeout=timeout)
    with sock:
        parts = [a.encode() if isinstance(a, str) else a for a in args]
        request = b"*%d\r\n" % len(parts)
        for part in parts:
            request += b"$%d\r\n%s\r\n" % (len(part), part)
        sock.sendall(request)
        reader = sock.makefile("rb")
        return _read_reply(reader)


def _read_reply(reader: Any) -> Any:
    line = reader.readline()
    if not line:
        raise ConnectionError("the server closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        return RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else reader.read(size + 2)[:-2]
    if kind == b"*":
        size = int(rest)
        return None if size < 0 else [_read_reply(reader) for _ in range(size)]
    raise ConnectionError(f"unexpected reply {line!r}")


def tls_files(directory: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1 made with ``openssl`` in ``directory``."""
    import pytest

    openssl = shutil.which("openssl")
    if openssl is None:
        if os.environ.get("CI") == "true":
            pytest.fail("openssl is needed for the TLS tests (CI=true)")
        pytest.skip("openssl is needed to make the TLS tests' certificates")
    files = {name: directory / f"{name}.pem" for name in ("ca", "ca-key", "cert", "key")}
    if files["cert"].exists():
        return files

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

    run(
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA"),
        *("-keyout", str(files["ca-key"]), "-out", str(files["ca"])),
    )
    csr = directory / "server.csr"
    run(
        *("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1"),
        *("-keyout", str(files["key"]), "-out", str(csr)),
    )
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run(
        *("x509", "-req", "-in", str(csr), "-CA", str(files["ca"]), "-CAkey"),
        *(str(files["ca-key"]), "-CAcreateserial", "-days", "2", "-out", str(files["cert"])),
        *("-extfile", str(ext)),
    )
    return files


class RedisServer(_ServerProcess):
    """One ``redis-server`` on 127.0.0.1, persisting nothing (a restart comes back empty).

    Options: ``password`` (the default user's), ``users`` (ACL rules, ``{"alice": "on
    >secret ~* &* +@all"}``), ``unix_socket`` (also listen on a socket in its directory),
    ``tls`` (a dict from :func:`tls_files`: listen with TLS on the port, plain TCP off),
    ``replica_of`` (another server's port), ``cluster`` (cluster mode, its bus on a port of
    its own), ``extra_args``.
    """

    term_grace = 0.0  # nothing to save: SIGKILL at once

    def __init__(
        self,
        port: int | None = None,
        *,
        password: str | None = None,
        users: dict[str, str] | None = None,
        unix_socket: bool = False,
        tls: dict[str, Path] | None = None,
        replica_of: int | None = None,
        cluster: bool = False,
        cluster_node_timeout: int = 1000,
        extra_args: Sequence[str] = (),
        executable: str | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        super().__init__(port, start_timeout, _START_ATTEMPTS)
        self.executable = executable or find_redis()
        if self.executable is None:
            raise FileNotFoundError(redis_install_hint())
        self.password = password
        self.users = dict(users or {})
        self.tls = tls
        self.replica_of = replica_of
        self.cluster = cluster
        self.cluster_node_timeout = cluster_node_timeout
        self.extra_args = tuple(extra_args)
        self.dir = Path(tempfile.mkdtemp(prefix="chorde-redis-"))
        self.socket_path = str(self.dir / "redis.sock") if unix_socket else None
        self.bus_port: int | None = None

    @property
    def address(self) -> str:
        """``"127.0.0.1:PORT"``."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT`` (``rediss://`` with TLS)."""
        return f"{'rediss' if self.tls else 'redis'}://{self.address}"

    def command(self) -> list[str]:
        """The command line the server is started with."""
        assert self.executable is not None
        cmd = [self.executable, "--bind", self.host, "--save", "", "--appendonly", "no"]
        # A replica syncs at once (the default waits 5 s for more replicas to share the sync).
        cmd += ["--repl-diskless-sync-delay", "0"]
        cmd += ["--dir", str(self.dir), "--protected-mode", "no", "--daemonize", "no"]
        if self.tls:
            cmd += ["--port", "0", "--tls-port", str(self.port)]
            cmd += ["--tls-cert-file", str(self.tls["cert"])]
            cmd += ["--tls-key-file", str(self.tls["key"])]
            cmd += ["--tls-ca-cert-file", str(self.tls["ca"]), "--tls-auth-clients", "no"]
        else:
            cmd += ["--port", str(self.port)]
        if self.socket_path:
            cmd += ["--unixsocket", self.socket_path, "--unixsocketperm", "700"]
        if self.password:
            cmd += ["--requirepass", self.password]
        for name, rules in self.users.items():
            cmd += ["--user", name, *rules.split()]
        if self.replica_of is not None:
            cmd += ["--replicaof", self.host, str(self.replica_of)]
            if self.password:
                cmd += ["--masterauth", self.password]
        if self.cluster:
            if self.bus_port is None:
                self.bus_port = free_port(self.host)
            cmd += ["--cluster-enabled", "yes", "--cluster-port", str(self.bus_port)]
            cmd += ["--cluster-config-file", str(self.dir / "nodes.conf")]
            cmd += ["--cluster-node-timeout", str(self.cluster_node_timeout)]
        return [*cmd, *self.extra_args]

    def _name(self) -> str:
        return "redis-server"

    def call(self, *args: str | bytes, timeout: float = 5.0) -> Any:
        """One command to the server (authenticated as the default user when it has a
        password); the reply, an error reply as a RuntimeError value."""
        if self.tls:
            raise RuntimeError("call() speaks plain TCP; use a redis-py client for TLS")
        if self.password:
            args = ("AUTH", self.password, *args)  # (one command: see _auth_call)
            return self._auth_call(args, timeout)
        return command((self.host, self.port), *args, timeout=timeout)

    def _auth_call(self, args: tuple[str | bytes, ...], timeout: float) -> Any:
        with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
            reader = sock.makefile("rb")
            for part in ((args[0], args[1]), args[2:]):
                items = [a.encode() if isinstance(a, str) else a for a in part]
                request = b"*%d\r\n" % len(items)
                for item in items:
                    request += b"$%d\r\n%s\r\n" % (len(item), item)
                sock.sendall(request)
                reply = _read_reply(reader)
            return reply

    def _answers(self) -> bool:
        try:
            if self.tls:
                with socket.create_connection((self.host, self.port), timeout=1.0):
                    return True
            reply = command((self.host, self.port), "PING", timeout=1.0)
        except OSError:
            return False
        return reply == "PONG" or isinstance(reply, RuntimeError)

    def flush(self) -> None:
        """Drop every key (``FLUSHALL``)."""
        reply = self.call("FLUSHALL")
        if reply != "OK":
            raise RuntimeError(f"FLUSHALL on {self.address} answered {reply!r}")

    def info(self, section: str = "") -> dict[str, str]:
        """``INFO`` as a dict of strings."""
        text = self.call("INFO", *([section] if section else [])).decode()
        pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
        return {k: v for k, v in pairs}

    def suspend(self) -> None:
        """SIGSTOP: connections hang instead of being refused. Returns once every thread of
        the process is stopped (the signal lands a moment after it is sent)."""
        pid = self._signal(signal.SIGSTOP)

        def stopped() -> bool:
            try:
                tasks = os.listdir(f"/proc/{pid}/task")
                states = [
                    Path(f"/proc/{pid}/task/{t}/stat").read_text().rsplit(")", 1)[1].split()[0]
                    for t in tasks
                ]
            except OSError:
                return False
            return all(state in ("T", "t") for state in states)

        wait_until(stopped, 5)

    def resume(self) -> None:
        """SIGCONT: thaw a process frozen by :meth:`suspend`."""
        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, as a crash would (the port is kept for :meth:`start`)."""
        self.stop()

    def _signal(self, sig: int) -> int:
        if not self.running or self._proc is None:
            raise RuntimeError(f"{self!r} is not running")
        self._proc.send_signal(sig)
        return self._proc.pid


class SentinelProcess(_ServerProcess):
    """One Redis Sentinel watching ``master_port`` as ``service`` (quorum ``quorum``)."""

    term_grace = 0.0

    def __init__(
        self,
        master_port: int,
        *,
        service: str = "mymaster",
        quorum: int = 2,
        down_after_ms: int = 500,
        executable: str | None = None,
    ) -> None:
        super().__init__(None, 10.0, _START_ATTEMPTS)
        self.executable = executable or find_redis()
        self.master_port = master_port
        self.service = service
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.dir = Path(tempfile.mkdtemp(prefix="chorde-sentinel-"))

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        conf = self.dir / "sentinel.conf"
        if not conf.exists() or f"port {self.port}\n" not in conf.read_text():
            s = self.service
            conf.write_text(
                f"port {self.port}\nbind {self.host}\ndir {self.dir}\nprotected-mode no\n"
                f"sentinel monitor {s} {self.host} {self.master_port} {self.quorum}\n"
                f"sentinel down-after-milliseconds {s} {self.down_after_ms}\n"
                f"sentinel failover-timeout {s} 5000\n"
                f"sentinel parallel-syncs {s} 1\n"
            )
        assert self.executable is not None
        return [self.executable, str(conf), "--sentinel"]

    def _name(self) -> str:
        return "redis-sentinel"

    def _answers(self) -> bool:
        try:
            return command((self.host, self.port), "PING", timeout=1.0) == "PONG"
        except OSError:
            return False

    def master(self) -> tuple[str, int] | None:
        """The master this sentinel currently names."""
        reply = command((self.host, self.port), "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        if not isinstance(reply, list):
            return None
        return reply[0].decode(), int(reply[1])


class SentinelGroup:
    """A master, a replica of it and three sentinels (quorum 2), all on free ports."""

    def __init__(self, executable: str | None = None, service: str = "mymaster") -> None:
        self.service = service
        self.master = RedisServer(executable=executable)
        self.replica: RedisServer | None = None
        self.sentinels: list[SentinelProcess] = []
        self._executable = executable

    def start(self) -> Self:
        """Start everything; return once the sentinels know the replica and each other."""
        try:
            self.master.start()
            self.replica = RedisServer(replica_of=self.master.port, executable=self._executable)
            self.replica.start()
            self.sentinels = [
                SentinelProcess(self.master.port, service=self.service, executable=self._executable)
                for _ in range(3)
            ]
            for sentinel in self.sentinels:
                sentinel.start()
            if not wait_until(self._settled, 20):
                raise ServerStartError("the sentinels did not discover the replica and peers")
        except BaseException:
            self.stop()
            raise
        return self

    def _settled(self) -> bool:
        try:
            for s in self.sentinels:
                info = command((s.host, s.port), "SENTINEL", "MASTER", s.service)
                fields = dict(zip(info[::2], info[1::2], strict=True))
                if int(fields[b"num-slaves"]) < 1 or int(fields[b"num-other-sentinels"]) < 2:
                    return False
            assert self.replica is not None
            return self.replica.info("replication").get("master_link_status") == "up"
        except (OSError, KeyError, TypeError, ValueError):
            return False

    @property
    def url(self) -> str:
        """``redis+sentinel://s1,s2,s3/service``."""
        hosts = ",".join(s.address for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}"

    def current_master(self) -> tuple[str, int] | None:
        """The master the first sentinel that answers names."""
        for sentinel in self.sentinels:
            with contextlib.suppress(OSError):
                return sentinel.master()
        return None

    def servers(self) -> list[RedisServer]:
        return [s for s in (self.master, self.replica) if s is not None]

    def stop(self) -> None:
        for process in [*self.sentinels, *self.servers()]:
            process.stop()


class RedisCluster:
    """Three masters with a replica each (``redis-cli --cluster create``), on free ports."""

    def __init__(self, executable: str | None = None, masters: int = 3) -> None:
        self.executable = executable or find_redis()
        self.nodes = [
            RedisServer(cluster=True, executable=self.executable) for _ in range(2 * masters)
        ]
        self.masters = masters

    def start(self) -> Self:
        """Start the nodes, assign the slots and wait until every node says the cluster is ok."""
        cli = shutil.which("redis-cli") or str(Path(self.executable or "").with_name("redis-cli"))
        try:
            for node in self.nodes:
                node.start()
            create = [cli, "--cluster", "create", *(n.address for n in self.nodes)]
            create += ["--cluster-replicas", "1", "--cluster-yes"]
            done = subprocess.run(create, capture_output=True, timeout=60, text=True)
            if done.returncode:
                raise ServerStartError(f"redis-cli --cluster create failed: {done.stdout}")
            if not wait_until(self.healthy, 30):
                raise ServerStartError("the cluster did not reach cluster_state:ok")
        except BaseException:
            self.stop()
            raise
        return self

    def healthy(self) -> bool:
        """Every running node says ``cluster_state:ok``, as many masters as there should be
        serve slots, and every replica's link to its master is up (it can take over)."""
        try:
            for node in self.nodes:
                if not node.running:
                    continue
                info = node.call("CLUSTER", "INFO").decode()
                if "cluster_state:ok" not in info:
                    return False
                role = node.info("replication")
                if role.get("role") == "slave" and role.get("master_link_status") != "up":
                    return False
            return len(self.master_nodes()) == self.masters
        except (OSError, AttributeError):
            return False

    def master_nodes(self) -> list[RedisServer]:
        """The running nodes that are masters serving slots now."""
        found = []
        for node in self.nodes:
            if not node.running:
                continue
            with contextlib.suppress(OSError, TypeError, IndexError):
                role = node.call("ROLE")
                slots = node.call("CLUSTER", "SLOTS")
                if role[0] == b"master" and any(int(e[2][1]) == node.port for e in slots):
                    found.append(node)
        return found

    def master_of(self, slot: int) -> RedisServer:
        """The running master serving ``slot`` now (by the first node that answers)."""
        for node in self.nodes:
            if not node.running:
                continue
            with contextlib.suppress(OSError):
                for start, end, master, *_ in node.call("CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        port = int(master[1])
                        return next(n for n in self.nodes if n.port == port)
        raise RuntimeError(f"no node answers for slot {slot}")

    @property
    def url(self) -> str:
        """``redis+cluster://`` naming every node."""
        return "redis+cluster://" + ",".join(n.address for n in self.nodes)

    def flush(self) -> None:
        """FLUSHALL on every master."""
        for node in self.master_nodes():
            node.call("FLUSHALL")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


# ---- for tests outside tests/redis: servers tied to a test's request -------------------------


def start_redis(request: Any, **options: Any) -> RedisServer:
    """A fresh :class:`RedisServer` for this test, stopped at its teardown (skips, or fails
    under CI, when redis-server is missing)."""
    server = RedisServer(executable=redis_executable(), **options)
    request.addfinalizer(server.stop)
    return server.start()


_shared: dict[str, Any] = {}


def shared_cluster() -> RedisCluster:
    """A cluster shared by every test of the session that only reads and writes (flush it
    first); it is stopped with every other server at the session's end."""
    cluster = _shared.get("cluster")
    if cluster is None or not all(n.running for n in cluster.nodes):
        if cluster is not None:
            cluster.stop()
        cluster = _shared["cluster"] = RedisCluster(redis_executable()).start()
    return cluster


def stop_shared() -> None:
    """Stop the shared cluster, if one was started."""
    cluster = _shared.pop("cluster", None)
    if cluster is not None:
        cluster.stop()


def wait_for_master(group: SentinelGroup, old: tuple[str, int], timeout: float) -> bool:
    """Wait until the sentinels name a master other than ``old``."""
    return wait_until(lambda: group.current_master() not in (None, old), timeout)
