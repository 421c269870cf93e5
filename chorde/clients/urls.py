"""Cache clients by URL, and the registry of URL schemes: one way to build a client anywhere.

::

    from chorde.clients import from_url

    l1 = from_url("inproc://?size=10000&max_ttl=5")
    shared = from_url("memcached://10.0.0.1:11211,10.0.0.2:11211?timeout=0.5",
                      checksum_key="secret", namespace="shop")
    stack = from_url(["inproc://?size=10000", "memcached://cache:11211"],
                     checksum_key="secret")            # a tiered client, L1 first

Built-in schemes: ``inproc://`` (``size``, ``store``, ``max_ttl``), ``memcached://host:port,...``
(a host name is resolved and followed in DNS), ``elasticache://endpoint:port`` and
``files:///absolute/path`` (``size`` in bytes); the query sets any keyword argument of the
client's constructor (converted to the type of its default). Keyword arguments of
:func:`from_url` are passed as they are and win over the query. :func:`register_scheme`, or
an entry point in the ``chorde.clients`` group (``name = "package.module:factory"``), adds a
scheme without touching chorde. A URL that cannot be read raises
:class:`~chorde.errors.ConfigurationError` naming the part that is wrong; secrets (the
``checksum_key`` and any password) never appear in an error, a log line or a repr.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeGuard
from urllib.parse import parse_qsl, urlsplit

from chorde.clients.base import BaseCacheClient
from chorde.errors import ConfigurationError

__all__ = [
    "ClientURL",
    "Factory",
    "check_url",
    "from_url",
    "is_url",
    "register_scheme",
    "schemes",
]

#: Builds a client from a parsed URL; takes the options it knows with :meth:`ClientURL.pop`
#: or :meth:`ClientURL.arguments_for`.
Factory = Callable[["ClientURL"], BaseCacheClient]

ENTRY_POINT_GROUP = "chorde.clients"
_SECRET_OPTIONS = frozenset({"checksum_key", "password"})
_REQUIRED = object()
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

_registry: dict[str, Factory] = {}
_lock = threading.Lock()
_entry_points_loaded = False


class ClientURL:
    """One parsed client URL: its scheme, hosts, path and the options still to be taken.

    Options come from the query (strings, converted when taken) and from keyword arguments
    (Python values, taken as they are). A factory takes what it knows; :func:`from_url`
    then refuses whatever is left, naming it.
    """

    def __init__(
        self, url: str, keywords: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
    ) -> None:
        if not isinstance(url, str):
            raise ConfigurationError(f"a client URL must be a str, got {type(url).__name__}")
        parts = urlsplit(url.strip())
        self.scheme = parts.scheme.lower()
        if not self.scheme or "://" not in url:
            raise ConfigurationError(
                f"{_redact(url)!r} is not a client URL: it needs a scheme, like "
                f"'memcached://host:port' (known schemes: {', '.join(schemes())})"
            )
        netloc = parts.netloc
        if "@" in netloc:
            raise ConfigurationError(
                f"{_redact(url)!r}: user or password in the URL are not supported; "
                "pass secrets as keyword options"
            )
        self.hosts: tuple[str, ...] = tuple(h.strip() for h in netloc.split(",") if h.strip())
        self.path = parts.path
        self.fragment = parts.fragment
        self.display = _redact(url)
        query: dict[str, Any] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
            if name in query:
                previous = query[name]
                query[name] = (
                    [*previous, value] if isinstance(previous, list) else [previous, value]
                )
            else:
                query[name] = value
        self._query = query
        self._keywords = dict(keywords)
        self._defaults = dict(defaults or {})
        self.taken: set[str] = set()
        #: Every option name a factory asked for or accepts (for "did you mean" hints).
        self.known: set[str] = set()

    def __repr__(self) -> str:
        return f"ClientURL({self.display!r})"

    def _error(self, message: str) -> ConfigurationError:
        return ConfigurationError(f"{self.display!r}: {message}")

    def remaining(self) -> set[str]:
        """The options nobody took yet (query and keywords, not defaults)."""
        return (set(self._query) | set(self._keywords)) - self.taken

    def has(self, name: str) -> bool:
        """Whether the option was given (query, keyword or default)."""
        return name in self._query or name in self._keywords or name in self._defaults

    def pop(self, name: str, kind: type | str = str, default: Any = _REQUIRED) -> Any:
        """Take option ``name``, converting a query string to ``kind``.

        ``kind`` is ``str``, ``int``, ``float``, ``bool`` or ``"list"`` (comma-separated or
        repeated). A keyword option is returned as given (the client validates it).
        """
        self.taken.add(name)
        self.known.add(name)
        if name in self._keywords:
            return self._keywords[name]
        if name in self._query:
            return self._convert(name, self._query[name], kind)
        if name in self._defaults:
            return self._defaults[name]
        if default is _REQUIRED:
            raise self._error(f"the {self.scheme}:// scheme needs the option {name!r}")
        return default

    def _convert(self, name: str, raw: Any, kind: type | str) -> Any:
        shown = "<secret>" if name in _SECRET_OPTIONS else repr(raw)
        if kind == "list":
            items = raw if isinstance(raw, list) else [raw]
            if name in _SECRET_OPTIONS:
                return items if len(items) > 1 else items[0]
            return [p.strip() for item in items for p in item.split(",") if p.strip()]
        if isinstance(raw, list):
            raise self._error(f"option {name!r} is given {len(raw)} times")
        try:
            if kind is bool:
                low = raw.lower()
                if low in _TRUE:
                    return True
                if low in _FALSE:
                    return False
                raise ValueError
            if kind is int:
                return int(raw)
            if kind is float:
                return float(raw)
        except ValueError:
            raise self._error(f"option {name!r} must be {_KIND_NAMES[kind]}, got {shown}") from None
        return raw

    def arguments_for(
        self, target: Callable[..., Any], *, skip: Iterable[str] = ()
    ) -> dict[str, Any]:
        """Take every remaining option that ``target`` (a class or function) accepts.

        Query strings are converted to the type of the parameter's default (or its
        annotation). Parameters reached through ``**options`` are followed up the class
        hierarchy. Options that ``target`` does not accept are left for :func:`from_url`
        to report.
        """
        params = _keyword_parameters(target)
        skipped = set(skip)
        self.known.update(set(params) - skipped)
        taken: dict[str, Any] = {}
        names = (set(self._query) | set(self._keywords) | set(self._defaults)) - self.taken
        for name in names:
            if name in skipped or name not in params:
                continue
            taken[name] = self.pop(name, params[name])
        return taken


_KIND_NAMES: dict[Any, str] = {bool: "true or false", int: "an integer", float: "a number"}


def _kind_of(param: inspect.Parameter) -> type | str:
    default = param.default
    if isinstance(default, bool):
        return bool
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return float
    annotation = str(param.annotation)
    for name, kind in (("bool", bool), ("float", float), ("int", int)):
        if name in annotation and "Sequence" not in annotation:
            return kind
    if "Sequence" in annotation or "list" in annotation:
        return "list"
    return str


def _keyword_parameters(target: Callable[..., Any]) -> dict[str, type | str]:
    """Keyword parameters of ``target``, following ``**options`` passed to a base class
    (a ``**legacy`` catch-all takes chorde 1.x's names only, see chorde._legacy: not those)."""
    found: dict[str, type | str] = {}
    if isinstance(target, type):
        chain = [k.__dict__["__init__"] for k in target.__mro__ if "__init__" in k.__dict__]
    else:
        chain = [target]
    for fn in chain:
        if fn is object.__init__:
            break
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            break
        open_ended = False
        for p in params:
            if p.name == "self" or p.kind is p.VAR_POSITIONAL:
                continue
            if p.kind is p.VAR_KEYWORD:
                open_ended = p.name != "legacy"
                continue
            found.setdefault(p.name, _kind_of(p))
        if not open_ended:
            break
    return found


def _redact(url: str) -> str:
    """``url`` with secrets (passwords, checksum keys) replaced by ``<secret>``."""
    if not isinstance(url, str):
        return "<not a str>"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unreadable URL>"
    netloc = parts.netloc
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if "@" not in netloc and not any(name in _SECRET_OPTIONS for name, _ in pairs):
        return url
    if "@" in netloc:
        netloc = "<secret>@" + netloc.rpartition("@")[2]
    query = "&".join(
        f"{name}=<secret>" if name in _SECRET_OPTIONS else f"{name}={value}"
        for name, value in pairs
    )
    rebuilt = f"{parts.scheme}://{netloc}{parts.path}"
    return rebuilt + (f"?{query}" if query else "")


# ---- the registry ------------------------------------------------------------------------


def register_scheme(name: str, factory: Factory, *, replace: bool = False) -> None:
    """Make ``name://...`` URLs build clients with ``factory(url: ClientURL)``.

    Registering a scheme twice is an error unless ``replace=True``.
    """
    if not isinstance(name, str) or not name.isascii() or not name.replace("+", "").isalnum():
        raise ConfigurationError(f"scheme must be a name like 'redis' or 'memcached+tls': {name!r}")
    if not callable(factory):
        raise TypeError(f"factory must be callable factory(url) -> client, got {factory!r}")
    name = name.lower()
    with _lock:
        if name in _registry and not replace and _registry[name] is not factory:
            raise ConfigurationError(f"scheme {name!r} is already registered")
        _registry[name] = factory


def schemes() -> list[str]:
    """The schemes :func:`from_url` knows, entry points included."""
    _load_entry_points()
    return sorted(_registry)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    with _lock:
        if _entry_points_loaded:
            return
        from importlib.metadata import entry_points  # only when a scheme is not built in

        found = list(entry_points(group=ENTRY_POINT_GROUP))
        _entry_points_loaded = True
    for ep in found:
        if ep.name.lower() in _registry:
            continue  # registered in code (or built in): that one wins
        register_scheme(ep.name, _lazy_entry_point(ep.value))


def _lazy_entry_point(target: str) -> Factory:
    def factory(url: ClientURL) -> BaseCacheClient:
        module_name, _, attr = target.partition(":")
        loaded: Any = importlib.import_module(module_name)
        for part in attr.split(".") if attr else ():
            loaded = getattr(loaded, part)
        client: BaseCacheClient = loaded(url)
        return client

    return factory


def _factory(url: ClientURL) -> Factory:
    factory = _registry.get(url.scheme)
    if factory is None:
        _load_entry_points()
        factory = _registry.get(url.scheme)
    if factory is None:
        known = schemes()
        close = difflib.get_close_matches(url.scheme, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigurationError(
            f"{url.display!r}: unknown scheme {url.scheme!r}{hint}; known: {', '.join(known)}"
        )
    return factory


def check_url(url: str | Sequence[str]) -> None:
    """Raise :class:`~chorde.errors.ConfigurationError` if ``url`` (or a list of URLs) is not
    one :func:`from_url` could read: its syntax and scheme, without building anything."""
    items = [url] if isinstance(url, str) else list(url)
    if not items:
        raise ConfigurationError("an empty list of client URLs")
    for item in items:
        _factory(ClientURL(item, {}))


def is_url(value: object) -> TypeGuard[str | Sequence[str]]:
    """Whether ``value`` looks like a client URL (or a non-empty list of them)."""
    if isinstance(value, str):
        return "://" in value
    if isinstance(value, list | tuple) and value:
        return all(isinstance(v, str) and "://" in v for v in value)
    return False


def _build(url: ClientURL) -> BaseCacheClient:
    client = _factory(url)(url)
    if not isinstance(client, BaseCacheClient):
        raise ConfigurationError(
            f"{url.display!r}: the {url.scheme}:// factory returned {type(client).__name__}, "
            "not a cache client"
        )
    return client


def _unknown_options(url: ClientURL, names: Iterable[str]) -> ConfigurationError:
    names = sorted(names)
    known = sorted(url.known)
    hints = []
    for name in names:
        close = difflib.get_close_matches(name, known, n=1)
        if close:
            hints.append(f"{name!r} (did you mean {close[0]!r}?)")
        else:
            hints.append(repr(name))
    return url._error(f"the {url.scheme}:// scheme has no option {', '.join(hints)}")


def from_url(
    url: str | Sequence[str], *, defaults: Mapping[str, Any] | None = None, **options: Any
) -> BaseCacheClient:
    """A ready client for ``url``, or a tiered client for a list of URLs (first = L1).

    ``options`` are keyword arguments for the client(s), and win over the query; with a
    list they go to every tier that takes them, and one that no tier takes is an error.
    ``defaults`` are taken by the tiers that accept them and ignored by the others
    (adapters pass a derived ``checksum_key`` and ``namespace`` this way).
    """
    if isinstance(url, str):
        parsed = ClientURL(url, options, defaults)
        client = _build(parsed)
        left = parsed.remaining()
        if left:
            client.close()
            raise _unknown_options(parsed, left)
        return client
    urls = list(url) if isinstance(url, Sequence) else None
    if not urls:
        raise ConfigurationError(
            "from_url takes a client URL or a non-empty list of them (a tiered client)"
        )
    if len(urls) == 1:
        return from_url(urls[0], defaults=defaults, **options)
    tiers: list[BaseCacheClient] = []
    parsed_tiers: list[ClientURL] = []
    try:
        for item in urls:
            parsed = ClientURL(item, options, defaults)
            parsed_tiers.append(parsed)
            tiers.append(_build(parsed))
            query_left = parsed.remaining() - set(options)
            if query_left:
                raise _unknown_options(parsed, query_left)
        unused = set(options) - set().union(*(p.taken for p in parsed_tiers))
        if unused:
            raise ConfigurationError(
                f"no tier of {[p.display for p in parsed_tiers]} takes the option(s) "
                f"{sorted(unused)}"
            )
    except BaseException:
        for tier in tiers:
            tier.close()
        raise
    from chorde.clients.tiered import TieredInclusiveClient

    return TieredInclusiveClient(*tiers)


# ---- the built-in schemes ------------------------------------------------------------------


def _no_hosts(url: ClientURL) -> None:
    if url.hosts and url.scheme == "files":
        raise url._error("files:// takes an absolute path: files:///var/cache/app")


def _inproc(url: ClientURL) -> BaseCacheClient:
    from chorde.clients.inproc import InprocCacheClient

    if url.path not in ("", "/"):
        raise url._error("inproc:// takes no path (options go in the query: ?size=10000)")
    size = url.pop("size", int, 10_000)
    store = url.pop("store", str, None)
    max_ttl = url.pop("max_ttl", float, None)
    client: BaseCacheClient = InprocCacheClient(size, store)
    if max_ttl is not None:
        from chorde.clients.capped import CappedTtlClient

        client = CappedTtlClient(client, max_ttl)
    return client


def _servers(url: ClientURL, what: str) -> list[str]:
    if not url.hosts:
        raise url._error(f"{url.scheme}:// needs {what}: {url.scheme}://host:port")
    if url.path not in ("", "/"):
        raise url._error(f"{url.scheme}:// takes no path, got {url.path!r}")
    return list(url.hosts)


def _memcached(url: ClientURL) -> BaseCacheClient:
    from chorde.clients.memcached import MemcachedClient

    servers = _servers(url, "one or more servers")
    checksum_key = url.pop("checksum_key", "list", None)
    options = url.arguments_for(MemcachedClient, skip=("servers", "checksum_key"))
    return MemcachedClient(servers, checksum_key, **options)


def _elasticache(url: ClientURL) -> BaseCacheClient:
    from chorde.clients.elasticache import ElastiCacheClient

    endpoint = _servers(url, "the configuration endpoint")
    if len(endpoint) != 1:
        raise url._error("elasticache:// takes one configuration endpoint")
    checksum_key = url.pop("checksum_key", "list", None)
    options = url.arguments_for(
        ElastiCacheClient, skip=("config_endpoint", "servers", "checksum_key", "dns")
    )
    return ElastiCacheClient(endpoint[0], checksum_key, **options)


def _files(url: ClientURL) -> BaseCacheClient:
    from chorde.clients.files import FilesCacheClient

    _no_hosts(url)
    if not url.path.startswith("/") or url.path == "/":
        raise url._error("files:// takes an absolute directory path: files:///var/cache/app")
    size = url.pop("size", int, 256 * 1024 * 1024)
    checksum_key = url.pop("checksum_key", "list", None)
    options = url.arguments_for(FilesCacheClient, skip=("path", "size", "checksum_key"))
    return FilesCacheClient(url.path, size, checksum_key, **options)


for _name, _builtin in (
    ("inproc", _inproc),
    ("memcached", _memcached),
    ("elasticache", _elasticache),
    ("files", _files),
):
    register_scheme(_name, _builtin)


# Redis and Valkey: redis://, rediss://, redis+unix://, redis+sentinel://, redis+cluster://,
# rediss+cluster:// and their valkey twins (chorde.clients.redis.schemes).
def _redis(url: ClientURL) -> BaseCacheClient:
    from chorde.clients.redis.schemes import build

    return build(url)


for _name in (
    f"{base}{suffix}"
    for base in ("redis", "valkey")
    for suffix in ("", "s", "+unix", "+sentinel", "+cluster", "s+cluster")
):
    register_scheme(_name, _redis)
