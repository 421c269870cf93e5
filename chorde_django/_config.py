"""Parse a ``CACHES`` entry into a chorde client stack, and share built clients per process.

Parsing never connects anywhere, so the system check can run it at startup; building a
stack happens once per process per configuration (Django creates a backend instance per
thread and per alias, and they all reuse the one client built here).
"""

from __future__ import annotations

import inspect
import numbers
import os
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from chorde.clients.base import BaseCacheClient
from chorde.clients.urls import check_url, from_url, is_url
from chorde.errors import ConfigurationError
from chorde.signing import derive_checksum_key, derive_checksum_keys

__all__ = [
    "KINDS",
    "Stack",
    "close_clients",
    "derive_checksum_key",
    "parse",
    "shared_client",
]

#: The stacks OPTIONS["CLIENT"] may name.
KINDS = ("inproc", "memcached", "tiered", "elasticache", "files")

DEFAULT_SIZE = 10_000
DEFAULT_L1_SIZE = 10_000
DEFAULT_L1_TTL = 5.0
DEFAULT_FILES_SIZE = 256 * 1024 * 1024

_REMOTE = {"CHECKSUM_KEY", "CLIENT_OPTIONS"}
_ALLOWED: dict[str, frozenset[str]] = {
    "inproc": frozenset({"CLIENT", "SIZE", "MAX_ENTRIES", "STORE"}),
    "memcached": frozenset({"CLIENT", "SERVERS", "NAMESPACE", *_REMOTE}),
    "tiered": frozenset(
        {"CLIENT", "SERVERS", "NAMESPACE", "L1_SIZE", "L1_STORE", "L1_TTL", *_REMOTE}
    ),
    "elasticache": frozenset({"CLIENT", "CONFIG_ENDPOINT", "NAMESPACE", *_REMOTE}),
    "files": frozenset({"CLIENT", "PATH", "SIZE", *_REMOTE}),
}
# Where each remote stack's client class lives, and its constructor's name in messages.
_CLASSES = {
    "memcached": ("chorde.clients.memcached", "MemcachedClient", "memcache"),
    "tiered": ("chorde.clients.memcached", "MemcachedClient", "memcache"),
    "elasticache": ("chorde.clients.elasticache", "ElastiCacheClient", "elasticache"),
    "files": ("chorde.clients.files", "FilesCacheClient", "files"),
}


def _bad(alias: str, option: str, message: str) -> ImproperlyConfigured:
    where = f"CACHES[{alias!r}]" if alias else "ChordeCache"
    return ImproperlyConfigured(f"{where} {option}: {message}")


@dataclass(frozen=True)
class Stack:
    """A parsed configuration: which stack, its arguments, and what shares one client."""

    kind: str
    #: Process-wide identity: backends with equal keys share one client (and store).
    share_key: Hashable
    build: Callable[[], BaseCacheClient] = field(compare=False)
    #: True when values live as Python objects (copied through pickle by the backend).
    local_values: bool
    #: The in-process store's name (LOCATION), for the inproc stack.
    location: str = ""
    size: int = 0
    store: str = ""


def _default_checksum_keys(alias: str) -> tuple[bytes, ...]:
    from django.conf import settings

    try:
        secret = settings.SECRET_KEY
    except ImproperlyConfigured:  # Django refuses to hand out an empty SECRET_KEY
        secret = ""
    if not secret:
        raise _bad(
            alias,
            "OPTIONS['CHECKSUM_KEY']",
            "not set and settings.SECRET_KEY is empty: values shared across processes are "
            "HMAC-signed, set one of them",
        )
    fallbacks = getattr(settings, "SECRET_KEY_FALLBACKS", ()) or ()
    # Sign with the current secret, accept values signed under a fallback during rotation.
    return tuple(derive_checksum_keys(secret, fallbacks))


def _checksum_keys(alias: str, value: Any) -> tuple[str | bytes, ...]:
    if value is None:
        return _default_checksum_keys(alias)
    keys = [value] if isinstance(value, str | bytes) else value
    if not isinstance(keys, list | tuple) or not keys:
        raise _bad(
            alias, "OPTIONS['CHECKSUM_KEY']", f"must be a str/bytes or a list of them: {value!r}"
        )
    for k in keys:
        if not isinstance(k, str | bytes) or not k:
            raise _bad(alias, "OPTIONS['CHECKSUM_KEY']", f"{k!r} is not a non-empty str/bytes")
    return tuple(keys)


def _size(alias: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise _bad(alias, f"OPTIONS[{name!r}]", f"must be a positive integer, got {value!r}")
    return int(value)


def _seconds(alias: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value) > 0:
        raise _bad(alias, f"OPTIONS[{name!r}]", f"must be a number of seconds > 0: {value!r}")
    return float(value)


def _store(alias: str, name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _bad(alias, f"OPTIONS[{name!r}]", f"must be a store name, got {value!r}")
    try:
        from_url("inproc://?size=1", store=value).close()
    except (ConfigurationError, TypeError, ValueError) as exc:
        raise _bad(alias, f"OPTIONS[{name!r}]", str(exc)) from None
    return value


def _servers(alias: str, location: Any, options: dict[str, Any]) -> tuple[str, ...]:
    given = options.get("SERVERS")
    if given is not None and location:
        raise _bad(alias, "OPTIONS['SERVERS']", "given together with LOCATION; use one of them")
    where = "OPTIONS['SERVERS']" if given is not None else "LOCATION"
    raw = given if given is not None else location
    if isinstance(raw, str):
        items = [s.strip() for s in raw.replace(",", ";").split(";")]
    elif isinstance(raw, list | tuple):
        items = list(raw)
    else:
        raise _bad(alias, where, f"must be 'host:port;host:port' or a list, got {raw!r}")
    items = [s for s in items if s != ""]
    if not items:
        raise _bad(alias, where, "names no memcached server")
    module = _import(alias, "memcached")
    for item in items:
        if not isinstance(item, str):
            raise _bad(alias, where, f"server {item!r} must be a 'host:port' string")
        try:
            module.parse_server(item)
        except ValueError as exc:
            raise _bad(alias, where, str(exc)) from None
    return tuple(items)


def _host_port(alias: str, server: Any) -> str:
    host, port = _import(alias, "memcached").parse_server(server)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _import(alias: str, kind: str) -> Any:
    import importlib

    module_name, _, extra = _CLASSES[kind]
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise _bad(
            alias,
            "OPTIONS['CLIENT']",
            f"{kind!r} needs {module_name}, which cannot be imported ({exc}); "
            f"pip install 'chorde[{extra}]'",
        ) from None


def _client_class(alias: str, kind: str) -> type:
    module = _import(alias, kind)
    cls: type = getattr(module, _CLASSES[kind][1])
    return cls


def _constructor_arguments(cls: type) -> tuple[set[str], bool]:
    """Keyword arguments ``cls(...)`` takes, following ``**options`` passed to a base class
    (``**legacy`` takes only chorde 1.x's names: it does not)."""
    named: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        params = list(inspect.signature(init).parameters.values())[1:]
        named |= {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if not any(p.kind is p.VAR_KEYWORD and p.name != "legacy" for p in params):
            return named, False
    return named, True


def _client_options(alias: str, kind: str, value: Any, reserved: set[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(alias, "OPTIONS['CLIENT_OPTIONS']", f"must be a dict, got {value!r}")
    cls = _client_class(alias, kind)
    named, accepts_any = _constructor_arguments(cls)
    for name in value:
        if not isinstance(name, str):
            raise _bad(alias, "OPTIONS['CLIENT_OPTIONS']", f"key {name!r} is not a str")
        if name in reserved:
            raise _bad(
                alias,
                f"OPTIONS['CLIENT_OPTIONS'][{name!r}]",
                "is set by ChordeCache itself; use the matching OPTIONS entry",
            )
        if not accepts_any and name not in named:
            raise _bad(
                alias,
                f"OPTIONS['CLIENT_OPTIONS'][{name!r}]",
                f"{cls.__name__} has no such argument (it takes {sorted(named - reserved)})",
            )
    return dict(value)


def _freeze(value: Any) -> Hashable:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    try:
        hash(value)
    except TypeError:
        return ("id", id(value))
    frozen: Hashable = value
    return frozen


def parse(location: Any, params: dict[str, Any], alias: str = "") -> Stack:
    """Validate a ``CACHES`` entry; raise ``ImproperlyConfigured`` naming a bad option."""
    timeout = params.get("TIMEOUT", 300)
    if timeout is not None:
        # Django's BaseCache takes int(TIMEOUT) and silently uses 300 when that fails.
        try:
            int(timeout)
        except (TypeError, ValueError, OverflowError):
            raise _bad(
                alias, "TIMEOUT", f"must be a number of seconds or None, got {timeout!r}"
            ) from None
    options = params.get("OPTIONS") or {}
    if not isinstance(options, dict):
        raise _bad(alias, "OPTIONS", f"must be a dict, got {options!r}")
    for name in options:
        if not isinstance(name, str):
            raise _bad(alias, "OPTIONS", f"key {name!r} is not a str")
    location = location if location is not None else ""
    if is_url(location):
        return _parse_url(alias, location, options)
    kind = options.get("CLIENT")
    if kind is None:
        kind = "memcached" if location or options.get("SERVERS") else "inproc"
    elif kind not in KINDS:
        raise _bad(alias, "OPTIONS['CLIENT']", f"{kind!r} is not one of {list(KINDS)}")
    allowed = _ALLOWED[kind]
    for name in options:
        if name not in allowed:
            hint = ""
            if name == "CULL_FREQUENCY":
                hint = " (chorde evicts least recently used entries one at a time, no culls)"
            raise _bad(
                alias,
                f"OPTIONS[{name!r}]",
                f"is not an option of the {kind!r} stack{hint}; it takes {sorted(allowed)}",
            )
    return _PARSERS[kind](alias, location, options)


_URL_OPTIONS = frozenset({"CHECKSUM_KEY", "NAMESPACE", "CLIENT_OPTIONS"})


def _parse_url(alias: str, location: Any, options: dict[str, Any]) -> Stack:
    """``LOCATION`` is a client URL, or a list of them (a tiered client, L1 first)."""
    for name in options:
        if name not in _URL_OPTIONS:
            raise _bad(
                alias,
                f"OPTIONS[{name!r}]",
                f"does not go with a URL LOCATION (the URL names the client); "
                f"it takes {sorted(_URL_OPTIONS)}",
            )
    urls = (location,) if isinstance(location, str) else tuple(location)
    try:
        check_url(list(urls))
    except ConfigurationError as exc:
        raise _bad(alias, "LOCATION", str(exc)) from None
    namespace = _namespace(alias, options)
    extra = options.get("CLIENT_OPTIONS") or {}
    if not isinstance(extra, dict) or not all(isinstance(k, str) for k in extra):
        raise _bad(alias, "OPTIONS['CLIENT_OPTIONS']", f"must be a dict of options: {extra!r}")
    given = options.get("CHECKSUM_KEY")
    keys: tuple[Any, ...] = ()
    if given is not None or _has_secret():
        keys = _checksum_keys(alias, given)
    defaults: dict[str, Any] = {"namespace": namespace}
    if keys:
        defaults["checksum_key"] = list(keys)

    def build() -> BaseCacheClient:
        try:
            return from_url(list(urls), defaults=defaults, **extra)
        except ConfigurationError as exc:
            raise _bad(alias, "LOCATION", str(exc)) from None

    # Values live as Python objects unless the first tier is known to serialize them.
    local = urls[0].split("://", 1)[0].lower() not in ("memcached", "elasticache", "files")
    share = ("url", urls, keys, namespace, _freeze(extra))
    return Stack("url", share, build, local)


def _has_secret() -> bool:
    from django.conf import settings

    try:
        return bool(settings.SECRET_KEY)
    except ImproperlyConfigured:
        return False


def _parse_inproc(alias: str, location: Any, options: dict[str, Any]) -> Stack:
    if not isinstance(location, str):
        raise _bad(alias, "LOCATION", f"names the in-process store, a str; got {location!r}")
    if "SIZE" in options and "MAX_ENTRIES" in options:
        raise _bad(alias, "OPTIONS['MAX_ENTRIES']", "is an alias of SIZE; give only one")
    size_name = "MAX_ENTRIES" if "MAX_ENTRIES" in options else "SIZE"
    size = _size(alias, size_name, options.get(size_name, DEFAULT_SIZE))
    store = _store(alias, "STORE", options.get("STORE", "lru"))

    def build() -> BaseCacheClient:
        return from_url("inproc://", size=size, store=store)

    return Stack("inproc", ("inproc", location), build, True, location, size, store)


def _namespace(alias: str, options: dict[str, Any]) -> str:
    namespace = options.get("NAMESPACE", "")
    if not isinstance(namespace, str):
        raise _bad(alias, "OPTIONS['NAMESPACE']", f"must be a str, got {namespace!r}")
    return namespace


def _parse_memcached(alias: str, location: Any, options: dict[str, Any]) -> Stack:
    servers = _servers(alias, location, options)
    namespace = _namespace(alias, options)
    reserved = {"servers", "checksum_key", "namespace"}
    kind = options.get("CLIENT", "memcached")
    extra = _client_options(alias, kind, options.get("CLIENT_OPTIONS"), reserved)
    keys = _checksum_keys(alias, options.get("CHECKSUM_KEY"))
    remote_key = ("memcached", servers, keys, namespace, _freeze(extra))

    url = "memcached://" + ",".join(_host_port(alias, s) for s in servers)

    def remote() -> BaseCacheClient:
        return from_url(url, checksum_key=list(keys), namespace=namespace, **extra)

    if kind == "memcached":
        return Stack("memcached", remote_key, remote, False)

    l1_size = _size(alias, "L1_SIZE", options.get("L1_SIZE", DEFAULT_L1_SIZE))
    l1_store = _store(alias, "L1_STORE", options.get("L1_STORE", "lru"))
    l1_ttl = _seconds(alias, "L1_TTL", options.get("L1_TTL", DEFAULT_L1_TTL))

    l1 = f"inproc://?size={l1_size}&store={l1_store}&max_ttl={l1_ttl!r}"

    def tiered() -> BaseCacheClient:
        return from_url([l1, url], checksum_key=list(keys), namespace=namespace, **extra)

    share = ("tiered", remote_key, l1_size, l1_store, l1_ttl)
    return Stack("tiered", share, tiered, True)


def _parse_elasticache(alias: str, location: Any, options: dict[str, Any]) -> Stack:
    endpoint = options.get("CONFIG_ENDPOINT")
    if endpoint is not None and location:
        raise _bad(alias, "OPTIONS['CONFIG_ENDPOINT']", "given together with LOCATION")
    where = "OPTIONS['CONFIG_ENDPOINT']" if endpoint is not None else "LOCATION"
    endpoint = endpoint if endpoint is not None else location
    if not isinstance(endpoint, str) or not endpoint:
        raise _bad(alias, where, f"must be the configuration endpoint 'host:port': {endpoint!r}")
    try:
        _import(alias, "elasticache").parse_server(endpoint)
    except ValueError as exc:
        raise _bad(alias, where, str(exc)) from None
    namespace = _namespace(alias, options)
    reserved = {"config_endpoint", "servers", "checksum_key", "namespace"}
    extra = _client_options(alias, "elasticache", options.get("CLIENT_OPTIONS"), reserved)
    _client_class(alias, "elasticache")
    keys = _checksum_keys(alias, options.get("CHECKSUM_KEY"))

    url = "elasticache://" + _host_port(alias, endpoint)

    def build() -> BaseCacheClient:
        return from_url(url, checksum_key=list(keys), namespace=namespace, **extra)

    share = ("elasticache", endpoint, keys, namespace, _freeze(extra))
    return Stack("elasticache", share, build, False)


def _parse_files(alias: str, location: Any, options: dict[str, Any]) -> Stack:
    path = options.get("PATH")
    if path is not None and location:
        raise _bad(alias, "OPTIONS['PATH']", "given together with LOCATION")
    where = "OPTIONS['PATH']" if path is not None else "LOCATION"
    path = path if path is not None else location
    if not isinstance(path, str) or not path:
        raise _bad(alias, where, f"must be the cache directory: {path!r}")
    size = _size(alias, "SIZE", options.get("SIZE", DEFAULT_FILES_SIZE))
    reserved = {"path", "size", "checksum_key"}
    extra = _client_options(alias, "files", options.get("CLIENT_OPTIONS"), reserved)
    keys = _checksum_keys(alias, options.get("CHECKSUM_KEY"))

    url = "files://" + os.path.abspath(path)

    def build() -> BaseCacheClient:
        return from_url(url, size=size, checksum_key=list(keys), **extra)

    return Stack("files", ("files", path, size, keys, _freeze(extra)), build, False)


_PARSERS = {
    "inproc": _parse_inproc,
    "memcached": _parse_memcached,
    "tiered": _parse_memcached,
    "elasticache": _parse_elasticache,
    "files": _parse_files,
}

_clients: dict[Hashable, BaseCacheClient] = {}
_clients_lock = threading.Lock()


def shared_client(stack: Stack, alias: str = "") -> BaseCacheClient:
    """The process-wide client for ``stack``, built on first use."""
    client = _clients.get(stack.share_key)
    if client is not None:
        return client
    with _clients_lock:
        client = _clients.get(stack.share_key)
        if client is None:
            try:
                client = stack.build()
            except ImproperlyConfigured:
                raise
            except (TypeError, ValueError) as exc:
                where = f"CACHES[{alias!r}]" if alias else "ChordeCache"
                raise ImproperlyConfigured(
                    f"{where} OPTIONS: the {stack.kind} client rejected its configuration: {exc}"
                ) from exc
            _clients[stack.share_key] = client
    return client


def close_clients() -> None:
    """Close every client built by ChordeCache backends in this process, and forget them."""
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        client.close()
