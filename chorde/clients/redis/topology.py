"""The redis-py clients a :class:`~chorde.clients.redis.RedisClient` talks through.

A :class:`Topology` builds them: one blocking client (thread-safe: redis-py hands each call a
pooled connection) and one asyncio client per event loop (redis-py's asyncio connections
belong to the loop that opened them). A loop's client is closed when the loop shuts down:
a guard, an async generator started on the loop, is finalised by the loop's own
``shutdown_asyncgens`` (``asyncio.run`` and pytest-asyncio call it) and closes the client
while the loop still runs.

The builders (:func:`standalone`, :func:`sentinel`, :func:`cluster`, :func:`given`) set what
the fault handling relies on: connect and read timeouts, no retries inside redis-py (the
client decides what a failure means, and a retry would double a hung server's wait), no
``CLIENT SETINFO`` round trips on connect, RESP2.

Commands (:attr:`Topology.execute`, the ``execute`` of :meth:`Topology.on_loop`): on one
server of our own making (no ``max_connections``) they skip ``execute_command`` and go over
connections of the client's own pool that this client keeps checked out between calls
(:class:`_Direct`, :class:`_ADirect`): redis-py's per-call checkout, retry wrapper and
bookkeeping cost more than the rest of a get. Elsewhere (a Sentinel's master, a Cluster, a
client object given) ``execute_command`` sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import threading
import weakref
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any

from chorde.errors import ConfigurationError, requires_extra

# Importing this module without redis-py fails here, naming the extra to install.
with requires_extra("redis"):
    import redis  # noqa: F401

__all__ = ["Topology", "cluster", "given", "parse_address", "sentinel", "standalone"]

DEFAULT_PORT = 6379
SENTINEL_PORT = 26379


def parse_address(spec: str | tuple[str, int], default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``"host:port"``, ``"host"``, ``"[v6]:port"`` or ``(host, port)`` to ``(host, port)``."""
    if isinstance(spec, tuple) and len(spec) == 2:
        host, port = spec
    elif isinstance(spec, str) and spec:
        host, port_text = spec, ""
        if spec.startswith("["):
            host, _, rest = spec[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else rest
        elif spec.count(":") == 1:
            host, port_text = spec.split(":")
        try:
            port = int(port_text) if port_text else default_port
        except ValueError:
            raise ConfigurationError(f"Redis address {spec!r} has a bad port") from None
    else:
        raise ConfigurationError(f"Redis address {spec!r} must be 'host:port' or (host, port)")
    if not isinstance(host, str) or not host or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigurationError(f"Redis address {spec!r} needs a host and a port in 1..65535")
    return host, port


class Topology:
    """Makes and keeps the blocking client and each event loop's asyncio client.

    ``make_async`` is None for a client object given by the user without an asyncio twin:
    the awaitable methods then run the blocking ones on an executor. A maker may return
    ``(client, companions)``: clients closed along with it (a Sentinel's own connections).
    """

    def __init__(
        self,
        make_sync: Callable[[], Any],
        make_async: Callable[[], Any] | None,
        *,
        is_cluster: bool,
        name: str,
        owned: bool = True,
        direct: bool = False,
    ) -> None:
        self._make_sync = make_sync
        self._make_async = make_async
        self.is_cluster = is_cluster
        self.name = name
        self._owned = owned
        self._direct = direct
        self._sync: Any = None
        #: ``execute(*args)``: one command on the blocking client; its (parsed) reply.
        self.execute: Callable[..., Any] = _Connect(self)
        self._lock = threading.Lock()
        # Event loop -> (its asyncio client, the guard that closes it at the loop's end,
        # ``await execute(*args)`` on the client).
        self._loops: dict[asyncio.AbstractEventLoop, tuple[Any, Any, Any]] = {}
        self.closed = False

    @property
    def native_async(self) -> bool:
        """Whether the awaitable calls have asyncio clients (no executor)."""
        return self._make_async is not None

    def sync(self) -> Any:
        """The blocking client (made on first use)."""
        client = self._sync
        if client is None:
            with self._lock:
                if self._sync is None:
                    made = self._make_sync()
                    if isinstance(made, tuple):
                        made = _Closing(*made)
                    self.execute = _Direct(made) if self._direct else made.execute_command
                    self._sync = made
                client = self._sync
        return client

    def for_loop(self, loop: asyncio.AbstractEventLoop) -> Any:
        """``loop``'s asyncio client (made on first use; ``loop`` must be running)."""
        return self.on_loop(loop)[0]

    def on_loop(self, loop: asyncio.AbstractEventLoop) -> tuple[Any, Any, Any]:
        """``(client, guard, execute)`` of ``loop`` (made on first use; ``loop`` must be
        running): its asyncio client, and ``await execute(*args)``, one command on it."""
        entry = self._loops.get(loop)
        if entry is not None:
            return entry
        assert self._make_async is not None
        with self._lock:
            for old in [lp for lp in self._loops if lp.is_closed()]:
                # Closed without shutting its async generators down: nothing can close the
                # client now; drop it (its sockets go with it).
                del self._loops[old]
            client = self._make_async()
            if isinstance(client, tuple):
                client = _Closing(*client)
            guard = self._guard(loop, client)
            execute = _ADirect(client) if self._direct else client.execute_command
            entry = self._loops[loop] = (client, guard, execute)
        # Its first step registers the guard with the loop (which holds it weakly: we keep
        # it), and runs it to its yield at once (nothing in it awaits before).
        step = guard.asend(None)
        with contextlib.suppress(StopIteration):
            step.send(None)
        return entry

    async def _guard(self, loop: asyncio.AbstractEventLoop, client: Any) -> AsyncGenerator[None]:
        try:
            yield
        finally:
            with self._lock:
                if self._loops.get(loop, (None,))[0] is client:
                    del self._loops[loop]
            if self._owned:
                with contextlib.suppress(Exception):
                    await client.aclose()

    def close(self) -> None:
        """Close the blocking client and forget the loops' clients (each closed on its loop
        when that loop runs, else dropped)."""
        self.closed = True
        with self._lock:
            client, self._sync = self._sync, None
            self.execute = _Connect(self)
            loops, self._loops = dict(self._loops), {}
        if client is not None and self._owned:
            with contextlib.suppress(Exception):
                client.close()
        for loop, (_, guard, _) in loops.items():
            # The guard closes the client when it ends: on its loop, if that one runs.
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                if _runs_in(loop):
                    loop.create_task(guard.aclose())
                elif loop.is_running():
                    loop.call_soon_threadsafe(_close_on, loop, guard)

    async def aclose(self) -> None:
        """Close the running loop's asyncio client, then everything else."""
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._loops.pop(loop, None)
        if entry is not None:
            await entry[1].aclose()  # (its guard closes it)
        self.close()


class _Connect:
    """:attr:`Topology.execute` until the blocking client is made: makes it, then sends."""

    __slots__ = ("_topology",)

    def __init__(self, topology: Topology) -> None:
        self._topology = weakref.ref(topology)  # (the topology holds this: no cycle)

    def __call__(self, *args: Any) -> Any:
        topology = self._topology()
        assert topology is not None
        topology.sync()
        return topology.execute(*args)


# Every _Direct, to forget its connections in a forked child (they are the parent's).
_directs: weakref.WeakSet[_Direct] = weakref.WeakSet()


class _Callbacks(dict[Any, Any]):
    """A client's response callback of each command name (None: the reply as it is), looked
    up in the client once per name."""

    __slots__ = ("_client",)

    def __init__(self, client: Any) -> None:
        super().__init__()
        self._client = client

    def __missing__(self, name: Any) -> Any:
        callback = self[name] = self._client.response_callbacks.get(name)
        return callback


class _Kept:
    """What :class:`_Direct` and :class:`_ADirect` hold: the client, its pool's checkout and
    release, the connections kept idle between calls, the reply callbacks."""

    __slots__ = ("_callbacks", "_checkout", "_client", "_idle", "_release")

    def __init__(self, client: Any) -> None:
        self._client = client
        pool = client.connection_pool
        self._checkout = _checkout_of(pool)
        self._release = pool.release
        self._idle: list[Any] = []  # (pop and append are atomic: no lock)
        self._callbacks = _Callbacks(client)


class _Direct(_Kept):
    """Commands of a ``redis.Redis`` sent over connections of its own pool, kept checked out
    between calls (the pool counts them in use).

    A call takes an idle connection (else one from the pool) and keeps it after a reply;
    as the pool does on a checkout, an idle one with something to read (the server closed
    it) is reconnected first. A call that raises gives its connection back to the pool (it
    disconnected itself, unless the server answered with an error), which checks it again
    before its next use. Replies go through the client's response callbacks, as with
    ``execute_command``; only redis-py's retries (we have none) and its per-command
    bookkeeping (observability events) are skipped. Used when the pool is unbounded:
    connections kept here would otherwise count against ``max_connections``.
    """

    __slots__ = ("__weakref__",)

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        _directs.add(self)

    def __call__(self, *args: Any) -> Any:
        try:
            conn = self._idle.pop()
            idle = True
        except IndexError:
            conn = self._checkout()  # (checked by the pool)
            idle = False
        try:
            if idle:
                try:
                    stale = conn.can_read()
                except Exception:  # (closed by the server)
                    stale = True
                if stale:
                    conn.disconnect()  # (sending reconnects it)
            conn.send_packed_command(_packed(conn, args), False)  # (no health checks set)
            reply = conn.read_response()
        except BaseException:
            self._release(conn)  # (the pool checks it again before its next use)
            raise
        self._idle.append(conn)
        callback = self._callbacks[args[0]]
        return reply if callback is None else callback(reply)

    def forget(self) -> None:
        self._idle = []


class _ADirect(_Kept):
    """:class:`_Direct` for an asyncio ``redis.asyncio.Redis`` (on its one event loop)."""

    __slots__ = ("_ready",)

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        # (redis-py 8 renamed can_read_destructive)
        cls = client.connection_pool.connection_class
        self._ready = "can_read" if hasattr(cls, "can_read") else "can_read_destructive"

    async def __call__(self, *args: Any) -> Any:
        try:
            conn = self._idle.pop()
            idle = True
        except IndexError:
            conn = await self._checkout()  # (checked by the pool)
            idle = False
        try:
            if idle:
                try:
                    stale = await getattr(conn, self._ready)()
                except Exception:  # (closed by the server)
                    stale = True
                if stale:
                    await conn.disconnect()  # (sending reconnects it)
            await conn.send_packed_command(_packed(conn, args), False)
            reply = await conn.read_response()
        except BaseException:
            await self._release(conn)  # (the pool checks it again before its next use)
            raise
        self._idle.append(conn)
        callback = self._callbacks[args[0]]
        return reply if callback is None else callback(reply)


try:
    from hiredis import pack_command as _pack_command
except ImportError:  # (chorde[redis] installs it)
    _pack_command = None  # type: ignore[assignment]


def _packed(conn: Any, args: tuple[Any, ...]) -> Any:
    """``args`` as the protocol's bytes: hiredis packs them as redis-py's packer does (str
    UTF-8, int and float by repr) at a fraction of its cost; anything else, or without
    hiredis, redis-py's packer (which names what it cannot send)."""
    if _pack_command is not None:
        try:
            return [_pack_command(args)]
        except TypeError:
            pass
    return conn.pack_command(*args)


def _checkout_of(pool: Any) -> Callable[[], Any]:
    """``pool.get_connection`` without arguments (redis-py < 5.3 wants a command name)."""
    named = inspect.signature(pool.get_connection).parameters.get("command_name")
    if named is not None and named.default is inspect.Parameter.empty:
        return lambda: pool.get_connection("")
    return pool.get_connection  # type: ignore[no-any-return]


def _forget_connections() -> None:
    for direct in list(_directs):
        direct.forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_connections)


class _Closing:
    """A redis-py client that closes its companions when it is closed (anything else is the
    client's own)."""

    def __init__(self, client: Any, companions: list[Any]) -> None:
        self._client = client
        self._companions = companions

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def close(self) -> None:
        for closable in [self._client, *self._companions]:
            with contextlib.suppress(Exception):
                closable.close()

    async def aclose(self) -> None:
        for closable in [self._client, *self._companions]:
            with contextlib.suppress(Exception):
                await closable.aclose()


def _close_on(loop: asyncio.AbstractEventLoop, guard: Any) -> None:
    loop.create_task(guard.aclose())


def _runs_in(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


# ---- builders ------------------------------------------------------------------------------


def _quiet(cls: Any) -> dict[str, Any]:
    """Keywords that keep ``cls`` from announcing itself with ``CLIENT SETINFO`` on connect
    (two more round trips per connection, and a hung server answers none)."""
    params = inspect.signature(cls.__init__).parameters
    if "driver_info" in params:
        return {"driver_info": None}
    if "lib_name" in params:
        return {"lib_name": None, "lib_version": None}
    return {}


def _no_retry(asyncio_variant: bool) -> Any:
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return (AsyncRetry if asyncio_variant else Retry)(NoBackoff(), 0)


def _common(options: dict[str, Any], asyncio_variant: bool, cls: Any) -> dict[str, Any]:
    kwargs = {k: v for k, v in options.items() if v is not None}
    if not kwargs.get("ssl"):
        # (Over TLS 1.3 the server's session tickets follow the handshake; the announcement's
        # reply is what reads them off the socket, which redis-py otherwise finds holding
        # unread bytes at the next command and drops: keep it there.)
        kwargs.update(_quiet(cls))
    kwargs["retry"] = _no_retry(asyncio_variant)
    kwargs.setdefault("protocol", 2)
    return kwargs


def standalone(name: str, **options: Any) -> Topology:
    """One server (TCP, TLS or a unix socket): ``options`` are redis-py's ``Redis`` keywords."""
    with requires_extra("redis"):
        import redis
        import redis.asyncio

    def make_sync() -> Any:
        return redis.Redis(**_common(options, False, redis.Redis))

    def make_async() -> Any:
        return redis.asyncio.Redis(**_common(options, True, redis.asyncio.Redis))

    direct = options.get("max_connections") is None
    return Topology(make_sync, make_async, is_cluster=False, name=name, direct=direct)


def sentinel(
    sentinels: Sequence[tuple[str, int]],
    service_name: str,
    *,
    sentinel_kwargs: dict[str, Any],
    **options: Any,
) -> Topology:
    """The master of ``service_name`` as the sentinels name it, followed through failovers."""
    with requires_extra("redis"):
        import redis
        import redis.asyncio
        import redis.asyncio.sentinel
        import redis.sentinel

    def make(module: Any, cls: Any, asyncio_variant: bool) -> Any:
        kwargs = _common(options, asyncio_variant, cls)
        watch = {**_common(sentinel_kwargs, asyncio_variant, cls)}
        watch.pop("protocol", None)
        group = module.Sentinel(list(sentinels), sentinel_kwargs=watch, **kwargs)
        return group.master_for(service_name, **kwargs), list(group.sentinels)

    name = f"sentinel {service_name} via " + ",".join(f"{h}:{p}" for h, p in sentinels)
    return Topology(
        lambda: make(redis.sentinel, redis.Redis, False),
        lambda: make(redis.asyncio.sentinel, redis.asyncio.Redis, True),
        is_cluster=False,
        name=name,
    )


def cluster(nodes: Sequence[tuple[str, int]], **options: Any) -> Topology:
    """A Redis Cluster known by some of its nodes (the others are discovered)."""
    with requires_extra("redis"):
        import redis.asyncio.cluster
        import redis.cluster

    def make(module: Any, asyncio_variant: bool) -> Any:
        kwargs = _common(options, asyncio_variant, module.RedisCluster)
        kwargs.pop("db", None)
        startup = [module.ClusterNode(host, port) for host, port in nodes]
        return module.RedisCluster(startup_nodes=startup, require_full_coverage=False, **kwargs)

    return Topology(
        lambda: make(redis.cluster, False),
        lambda: make(redis.asyncio.cluster, True),
        is_cluster=True,
        name="cluster " + ",".join(f"{h}:{p}" for h, p in nodes),
    )


def is_cluster_client(client: Any) -> bool:
    """Whether a redis-py (or valkey-py) client object is a cluster client."""
    return hasattr(client, "get_node_from_key") and hasattr(client, "nodes_manager")


def given(client: Any, async_client: Any = None) -> Topology:
    """A client object of the user's (redis-py or valkey-py, blocking), and optionally its
    asyncio twin (used from whatever loop calls; the user keeps both open and closes them)."""
    if not callable(getattr(client, "execute_command", None)):
        raise ConfigurationError(
            f"client must be a redis-py or valkey-py client (with execute_command), got {client!r}"
        )
    if async_client is not None and not callable(getattr(async_client, "execute_command", None)):
        raise ConfigurationError(f"async_client must be an asyncio client, got {async_client!r}")
    return Topology(
        lambda: client,
        None if async_client is None else (lambda: async_client),
        is_cluster=is_cluster_client(client),
        name=type(client).__name__,
        owned=False,
    )
