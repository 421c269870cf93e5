"""The ``redis://`` family of client URLs (registered as built-in schemes by
:mod:`chorde.clients.urls`).

========================================================  =====================================
URL                                                       client
========================================================  =====================================
``redis://host:port/db``                                  one server (``db`` optional, 0)
``rediss://host:port/db``                                 the same over TLS (``ssl_ca_certs``...)
``redis+unix:///path/to/redis.sock?db=2``                 one server on a unix socket
``redis+sentinel://s1:26379,s2:26379/service/db``         the master the sentinels name
``redis+cluster://n1:6379,n2:6379``                       a Redis Cluster (``rediss+cluster``:
                                                          TLS)
========================================================  =====================================

``valkey``, ``valkeys``, ``valkey+unix``, ``valkey+sentinel`` and ``valkey+cluster`` are the
same (Valkey speaks Redis's protocol). The query sets any option of
:class:`~chorde.clients.redis.RedisClient` (``namespace``, ``timeout``, ``username`` ...).
Passwords are options too (``password=...``, best as a keyword of ``from_url`` or a Django
``OPTIONS`` entry): a URL with ``user:password@`` is refused, so a secret never lands in a
log line or an error.
"""

from __future__ import annotations

from typing import Any

from chorde.clients.base import BaseCacheClient
from chorde.clients.urls import ClientURL

__all__ = ["SCHEMES", "build"]

_KINDS = {
    "": "server",
    "s": "tls",
    "+unix": "unix",
    "+sentinel": "sentinel",
    "+cluster": "cluster",
    "s+cluster": "tls-cluster",
}
#: Every scheme this module builds, by kind.
SCHEMES = {
    f"{base}{suffix}": kind for base in ("redis", "valkey") for suffix, kind in _KINDS.items()
}
_SKIP = ("server", "checksum_key", "sentinels", "cluster", "unix_socket_path", "async_client")


def _db(url: ClientURL, text: str) -> int:
    if url.has("db"):
        raise url._error("the database is given twice (path and db option)")
    try:
        db = int(text)
    except ValueError:
        raise url._error(f"{text!r} is not a database number") from None
    if db < 0:
        raise url._error(f"{text!r} is not a database number")
    return db


def build(url: ClientURL) -> BaseCacheClient:
    """The :class:`~chorde.clients.redis.RedisClient` a ``redis``-family URL describes."""
    from chorde.clients.redis import RedisClient

    kind = SCHEMES[url.scheme]
    checksum_key = url.pop("checksum_key", "list", None)
    where: dict[str, Any] = {}
    path = url.path.strip("/")
    if kind == "unix":
        if url.hosts or not url.path.startswith("/") or url.path == "/":
            raise url._error(f"{url.scheme}:// takes a socket path: {url.scheme}:///run/redis.sock")
        where.update(server=None, unix_socket_path=url.path)
    elif not url.hosts:
        raise url._error(f"{url.scheme}:// needs a host: {url.scheme}://host:port")
    elif kind == "sentinel":
        service, _, db = path.partition("/")
        if not service:
            raise url._error(
                f"{url.scheme}:// names its service: {url.scheme}://host:26379/mymaster"
            )
        where.update(server=None, sentinels=list(url.hosts), service_name=service)
        if db:
            where["db"] = _db(url, db)
    elif kind in ("cluster", "tls-cluster"):
        if path:
            raise url._error(f"{url.scheme}:// takes no path (a cluster has only db 0)")
        where.update(server=None, cluster=list(url.hosts), ssl=kind == "tls-cluster")
    else:
        if len(url.hosts) != 1:
            raise url._error(
                f"{url.scheme}:// takes one server; several are a cluster "
                "(redis+cluster://) or sentinels (redis+sentinel://)"
            )
        where.update(server=url.hosts[0], ssl=kind == "tls")
        if path:
            where["db"] = _db(url, path)
    skip = _SKIP + tuple(k for k in where if k in ("ssl", "db", "service_name"))
    options = url.arguments_for(RedisClient, skip=skip)
    return RedisClient(checksum_key=checksum_key, **where, **options)
