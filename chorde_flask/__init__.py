"""chorde for Flask: the ``Chorde`` extension, view caching and function memoization.

::

    from flask import Flask
    from chorde_flask import Chorde

    chorde = Chorde()                      # module level, before any app exists

    @chorde.memoize(ttl=60)
    def expensive(n): ...

    def create_app():
        app = Flask(__name__)
        app.config["CHORDE_CLIENT"] = "memcached"
        app.config["CHORDE_SERVERS"] = ["localhost:11211"]
        chorde.init_app(app)

        @app.get("/report")
        @chorde.cached(ttl=30)
        def report(): ...

        return app

Configuration (``app.config``, read once by :meth:`Chorde.init_app`; a bad value raises
:class:`~chorde.errors.ConfigurationError` naming the key, and so does an unknown
``CHORDE_*`` key, which is usually a typo):

``CHORDE_URL``
    the client by URL (:func:`chorde.clients.from_url`): ``"memcached://10.0.0.1:11211"``,
    or a list of URLs for a tiered client, L1 first (``["inproc://?size=10000&max_ttl=5",
    "memcached://cache:11211"]``). The signing key and namespace default as below
    (``CHORDE_CHECKSUM_KEY``, ``CHORDE_KEY_PREFIX``); ``CHORDE_OPTIONS`` are keyword
    options for the client(s). With a URL, ``CHORDE_CLIENT``, ``CHORDE_SERVERS``,
    ``CHORDE_SIZE`` and ``CHORDE_STORE`` are not used (an error if set).

``CHORDE_CLIENT``
    ``"inproc"`` (default: a process-private LRU cache), ``"memcached"``, ``"tiered"``
    (in-process in front of memcached), a ready :class:`~chorde.clients.base.BaseCacheClient`
    (owned by you: never closed by the extension) or a callable ``factory(app) -> client``.
``CHORDE_SERVERS``
    memcached servers, a list of ``"host:port"`` or one string separated by commas/spaces.
``CHORDE_DEFAULT_TTL``
    seconds, default 300: the ttl of ``cached``/``memoize`` when they are not given one.
``CHORDE_CHECKSUM_KEY``
    the secret (or list of secrets, first one signs) that authenticates values stored in
    memcached. Default: derived from ``SECRET_KEY`` (and ``SECRET_KEY_FALLBACKS``, which
    still verify) by :mod:`chorde.signing` (the secret itself is never used as a key).
``CHORDE_KEY_PREFIX``
    memcached namespace, default ``app.import_name``: apps sharing servers do not see each
    other's entries, and ``clear()`` clears only this app's.
``CHORDE_SIZE``
    in-process capacity (entries), default 10000 (also the first tier of ``"tiered"``).
``CHORDE_STORE``
    in-process store: ``"lru"`` (default), ``"lru-notouch"``, ``"cuckoo"``.
``CHORDE_OPTIONS``
    a dict of extra :class:`~chorde.clients.memcached.MemcachedClient` options
    (``timeout``, ``connect_timeout``, ``compress`` ...).
``CHORDE_CACHE_STATUS``
    a name, to add an RFC 9211 ``Cache-Status`` field to cached views' answers
    (``"chorde"``: ``chorde; hit; ttl=42``); default None, no field.
``CHORDE_ALLOWED_HOSTS``
    the Host names whose pages cached views store and serve (default None: any
    well-formed Host; ``".example.com"`` matches the domain and its subdomains). A request
    for another host renders uncached. The host is part of every view key either way.

One ``Chorde`` object may serve several apps: each app gets its own client and its own
computations, resolved through ``current_app`` on every call. The client is closed when the
app is garbage collected, at interpreter exit, or by :meth:`Chorde.close`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import inspect
import threading
import weakref
from collections.abc import Callable, Coroutine, Hashable, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, cast, overload

from chorde.errors import requires_extra

with requires_extra("flask"):
    from flask import Flask, Response, current_app, has_app_context

from chorde.clients.base import BaseCacheClient
from chorde.clients.urls import check_url, from_url
from chorde.decorators import cached as _cached
from chorde.decorators import check_options
from chorde.errors import ConfigurationError
from chorde.http import ResponseCache, Route, Rules
from chorde.observe import CacheInfo
from chorde.signing import derive_checksum_keys
from chorde_flask._fragments import FragmentCache, fragment_key
from chorde_flask._options import check_predicate, holds, source_digest
from chorde_flask._views import NAMESPACE, ViewCache, url_request

if TYPE_CHECKING:
    from werkzeug.local import LocalProxy

    from chorde.decorators import CachedDecorator

__all__ = ["Chorde"]

_EXT = "chorde"
_CLIENT_KINDS = ("inproc", "memcached", "tiered")
_DEFAULTS: dict[str, Any] = {
    "CHORDE_CLIENT": "inproc",
    "CHORDE_SERVERS": None,
    "CHORDE_DEFAULT_TTL": 300,
    "CHORDE_CHECKSUM_KEY": None,
    "CHORDE_KEY_PREFIX": None,
    "CHORDE_SIZE": 10000,
    "CHORDE_STORE": None,
    "CHORDE_OPTIONS": None,
    "CHORDE_ALLOWED_HOSTS": None,
    "CHORDE_URL": None,
    "CHORDE_CACHE_STATUS": None,
}


P = ParamSpec("P")
R = TypeVar("R")


class _ViewDecorator(Protocol):
    """What :meth:`Chorde.cached` returns: a view keeps its parameters; it answers what it
    returns, or a stored response."""

    @overload
    def __call__(
        self, view: Callable[P, Coroutine[Any, Any, R]], /
    ) -> Callable[P, Coroutine[Any, Any, R | Response]]: ...
    @overload
    def __call__(self, view: Callable[P, R], /) -> Callable[P, R | Response]: ...
    def __call__(self, view: Callable[..., Any], /) -> Callable[..., Any]:
        """Decorate ``view``."""
        ...


def _fragment_state() -> tuple[BaseCacheClient, float]:
    """The current app's client and default ttl, for the ``{% cache %}`` tag."""
    app = _current_app()
    state: _AppState | None = app.extensions.get(_EXT)
    if state is None:
        raise RuntimeError(f"{{% cache %}}: chorde is not initialized on app {app.name!r}")
    return state.client, state.default_ttl


def _current_app() -> Flask:
    """The app behind ``current_app``: a proxy, which Flask types as the app itself."""
    proxy = cast("LocalProxy[Flask]", current_app)
    return proxy._get_current_object()


# ---- configuration -----------------------------------------------------------------


def _number(config: dict[str, Any], name: str, *, integer: bool) -> float | int:
    raw = config.get(name, _DEFAULTS[name])
    value: Any = raw
    if isinstance(raw, str):
        try:
            value = int(raw) if integer else float(raw)
        except ValueError:
            value = None
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or not value > 0 or value != value:
        kind = "integer" if integer else "number"
        raise ConfigurationError(f"{name} must be a positive {kind}, got {raw!r}")
    number: float | int = value
    return number


def _host_port(server: Any) -> str:
    from chorde.clients.memcached import parse_server

    host, port = parse_server(server)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _servers(config: dict[str, Any]) -> list[Any]:
    raw = config.get("CHORDE_SERVERS")
    items: Any = raw.replace(",", " ").split() if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple) or not items:
        raise ConfigurationError(
            f"CHORDE_SERVERS must list memcached servers ('host:port', ...), got {raw!r}"
        )
    from chorde.clients.memcached import parse_server

    for item in items:
        try:
            parse_server(item)
        except ConfigurationError as exc:
            raise ConfigurationError(f"CHORDE_SERVERS: {exc}") from None
    return list(items)


def _checksum_key(config: dict[str, Any]) -> Any:
    key = config.get("CHORDE_CHECKSUM_KEY")
    if key is not None:
        keys = key if isinstance(key, list | tuple) else [key]
        if not keys or not all(isinstance(k, str | bytes) and k for k in keys):
            raise ConfigurationError(
                "CHORDE_CHECKSUM_KEY must be a non-empty str/bytes secret or a list of them"
            )
        return key
    secret = config.get("SECRET_KEY")
    if not secret:
        raise ConfigurationError(
            "CHORDE_CHECKSUM_KEY is not set and there is no SECRET_KEY to derive it from: "
            "values in memcached are signed, set one of them"
        )
    if not isinstance(secret, str | bytes):
        raise ConfigurationError("SECRET_KEY must be str or bytes to derive CHORDE_CHECKSUM_KEY")
    fallbacks = config.get("SECRET_KEY_FALLBACKS") or ()
    return derive_checksum_keys(secret, [f for f in fallbacks if isinstance(f, str | bytes)])


def _inproc_url(config: dict[str, Any]) -> str:
    size = _number(config, "CHORDE_SIZE", integer=True)
    store = config.get("CHORDE_STORE")
    if store is not None and not isinstance(store, str):
        raise ConfigurationError(f"CHORDE_STORE must be a store name, got {store!r}")
    url = f"inproc://?size={size}" + (f"&store={store}" if store else "")
    try:
        check_url(url)
        from_url(url).close()  # the store name is checked by building a (tiny) store once
    except (ConfigurationError, TypeError, ValueError) as exc:
        raise ConfigurationError(f"CHORDE_STORE: {exc}") from None
    return url


def _memcached(app: Flask, config: dict[str, Any], l1: str | None = None) -> BaseCacheClient:
    """The memcached client of the legacy keys (with an in-process ``l1`` in front, if given)."""
    servers = _servers(config)
    checksum_key = _checksum_key(config)
    prefix = config.get("CHORDE_KEY_PREFIX")
    if prefix is None:
        prefix = app.import_name
    if not isinstance(prefix, str):
        raise ConfigurationError(f"CHORDE_KEY_PREFIX must be a str, got {prefix!r}")
    options = config.get("CHORDE_OPTIONS") or {}
    if not isinstance(options, dict):
        raise ConfigurationError(f"CHORDE_OPTIONS must be a dict, got {options!r}")
    reserved = {"servers", "checksum_key", "namespace"} & set(options)
    if reserved:
        raise ConfigurationError(
            f"CHORDE_OPTIONS must not set {sorted(reserved)}: use CHORDE_SERVERS, "
            "CHORDE_CHECKSUM_KEY and CHORDE_KEY_PREFIX"
        )
    url = "memcached://" + ",".join(_host_port(server) for server in servers)
    try:
        return from_url(
            url if l1 is None else [l1, url], checksum_key=checksum_key, namespace=prefix, **options
        )
    except ConfigurationError as exc:
        name = "CHORDE_KEY_PREFIX" if "namespace" in str(exc) else "CHORDE_OPTIONS"
        raise ConfigurationError(f"{name}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"CHORDE_OPTIONS: {exc}") from None


def _rules(config: dict[str, Any]) -> Rules:
    hosts = config.get("CHORDE_ALLOWED_HOSTS")
    try:
        return Rules(allowed_hosts=hosts)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"CHORDE_ALLOWED_HOSTS: {exc}") from None


def _check_keys(config: dict[str, Any]) -> None:
    for name in config:
        if isinstance(name, str) and name.startswith("CHORDE_") and name not in _DEFAULTS:
            close = difflib.get_close_matches(name, _DEFAULTS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigurationError(f"unknown setting {name}{hint}; known: {sorted(_DEFAULTS)}")


def _from_url(app: Flask, config: dict[str, Any]) -> BaseCacheClient:
    """``CHORDE_URL``: a client URL, or a list of them (a tiered client, L1 first)."""
    url = config["CHORDE_URL"]
    for name in ("CHORDE_CLIENT", "CHORDE_SERVERS", "CHORDE_STORE", "CHORDE_SIZE"):
        if name in config:
            raise ConfigurationError(
                f"{name} does not go with CHORDE_URL, which names the client (put sizes and "
                "stores in the URL: 'inproc://?size=10000')"
            )
    options = config.get("CHORDE_OPTIONS") or {}
    if not isinstance(options, dict):
        raise ConfigurationError(f"CHORDE_OPTIONS must be a dict, got {options!r}")
    prefix = config.get("CHORDE_KEY_PREFIX")
    defaults: dict[str, Any] = {"namespace": app.import_name if prefix is None else prefix}
    if config.get("CHORDE_CHECKSUM_KEY") is not None or config.get("SECRET_KEY"):
        defaults["checksum_key"] = _checksum_key(config)
    try:
        return from_url(url, defaults=defaults, **options)
    except ConfigurationError as exc:
        raise ConfigurationError(f"CHORDE_URL: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"CHORDE_URL: {exc}") from None


def _build_client(app: Flask) -> tuple[BaseCacheClient, bool]:
    """The app's client from its config, and whether the extension owns (closes) it."""
    config = app.config
    _check_keys(config)
    if config.get("CHORDE_URL") is not None:
        return _from_url(app, config), True
    _number(config, "CHORDE_SIZE", integer=True)  # checked even when no tier uses it
    kind = config.get("CHORDE_CLIENT", "inproc")
    if isinstance(kind, BaseCacheClient):
        return kind, False
    if isinstance(kind, str):
        kind_name = kind.strip().lower()
        if kind_name not in _CLIENT_KINDS:
            raise ConfigurationError(
                f"CHORDE_CLIENT must be one of {list(_CLIENT_KINDS)}, a cache client or a "
                f"factory(app), got {kind!r}"
            )
        if kind_name == "inproc":
            if config.get("CHORDE_SERVERS"):
                raise ConfigurationError(
                    "CHORDE_SERVERS is set but CHORDE_CLIENT is 'inproc', which uses no "
                    "server: set CHORDE_CLIENT to 'memcached' or 'tiered'"
                )
            return from_url(_inproc_url(config)), True
        if kind_name == "memcached":
            return _memcached(app, config), True
        return _memcached(app, config, l1=_inproc_url(config)), True
    if callable(kind):
        client = kind(app)
        if not isinstance(client, BaseCacheClient):
            raise ConfigurationError(
                f"CHORDE_CLIENT factory {kind!r} returned {client!r}, not a cache client"
            )
        return client, True
    raise ConfigurationError(
        f"CHORDE_CLIENT must be one of {list(_CLIENT_KINDS)}, a cache client or a "
        f"factory(app), got {kind!r}"
    )


def _close_quietly(client: BaseCacheClient) -> None:
    # At interpreter exit or gc there is nobody left to report a failure to.
    with contextlib.suppress(Exception):
        client.close()


class _AppState:
    """What one app holds in ``app.extensions["chorde"]``."""

    def __init__(
        self, ext: Chorde, client: BaseCacheClient, ttl: float, rules: Rules, status: str | None
    ) -> None:
        self.ext = ext
        self.client = client
        self.default_ttl = ttl
        self.lock = threading.Lock()
        self.memos: dict[_Memoized, Any] = {}
        # The cached views' responses (chorde.http's policy), and their renders in flight.
        self.views = ResponseCache(client, rules=rules, ttl=ttl, cache_status=status)
        self.finalizer: weakref.finalize[[BaseCacheClient], Flask] | None = None

    def close(self) -> None:
        if self.finalizer is not None:
            self.finalizer()


# ---- memoize -----------------------------------------------------------------------


def _in_app(app: Flask, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` run inside ``app``'s context when called outside one (pool threads)."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def arun(*args: Any, **kwargs: Any) -> Any:
            if has_app_context():
                return await fn(*args, **kwargs)
            with app.app_context():
                return await fn(*args, **kwargs)

        return arun

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        if has_app_context():
            return fn(*args, **kwargs)
        with app.app_context():
            return fn(*args, **kwargs)

    return run


class _Memoized:
    """A function cached per app: each call resolves ``current_app``'s cached wrapper.

    Offers every variant of :func:`chorde.decorators.cached` (``bg()``/``async_()``,
    ``future()``, ``peek``, ``lazy``, ``refresh``, ``put``, ``invalidate``, ``expire``,
    ``uncached``, ``client``).
    """

    def __init__(
        self,
        ext: Chorde,
        fn: Callable[..., Any],
        options: dict[str, Any],
        bound: tuple[Any, ...] = (),
        unless: Callable[..., Any] | None = None,
        forced_update: Callable[..., Any] | None = None,
    ) -> None:
        functools.update_wrapper(self, fn)
        self._ext = ext
        self._fn = fn
        self._options = options
        self._bound = bound
        self._root: _Memoized = self
        self._unless = unless
        self._forced_update = forced_update

    def __get__(self, obj: Any, cls: type | None = None) -> Any:
        if obj is None:
            return self
        bound = _Memoized(
            self._ext, self._fn, self._options, (obj,), self._unless, self._forced_update
        )
        bound._root = self._root
        return bound

    def for_app(self, app: Flask | None = None) -> Any:
        """The chorde cached wrapper of this function for ``app`` (default: current_app)."""
        state = self._ext._state(app)
        root = self._root
        wrapper = state.memos.get(root)
        if wrapper is None:
            with state.lock:
                wrapper = state.memos.get(root)
                if wrapper is None:
                    options = dict(self._options)
                    if options["ttl"] is None:
                        options["ttl"] = state.default_ttl
                    the_app = app or _current_app()
                    wrapper = _cached(state.client, **options)(_in_app(the_app, self._fn))
                    state.memos[root] = wrapper
        return wrapper

    def _variant(self, name: str) -> Any:
        return getattr(self.for_app(), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        args = self._bound + args
        if self._unless is not None and holds(self._unless, self._fn, args, kwargs):
            return self.for_app().uncached(*args, **kwargs)
        if self._forced_update is not None and holds(self._forced_update, self._fn, args, kwargs):
            return self.for_app().forced()(*args, **kwargs)
        return self.for_app()(*args, **kwargs)

    def bg(self) -> _MemoVariant:
        """Serve what the cache holds (even stale) and refresh in the background."""
        return _MemoVariant(self, "bg")

    async_ = bg

    def future(self) -> _MemoVariant:
        """Return chorde Futures (awaitable) instead of results; never blocks the caller."""
        return _MemoVariant(self, "future")

    def forced(self) -> _MemoVariant:
        """Calls that recompute and store (a forced update)."""
        return _MemoVariant(self, "forced")

    def cache_info(self) -> Any:
        """The current app's counters of this function (a chorde.observe.CacheInfo)."""
        return self._variant("cache_info")()

    def invalidate_all(self) -> Any:
        """Drop every result of this function in the current app's client."""
        return self._variant("invalidate_all")()

    def peek(self, *args: Any, **kwargs: Any) -> Any:
        """The cached value or CacheMissError; never computes."""
        return self._variant("peek")(*self._bound, *args, **kwargs)

    def lazy(self, *args: Any, **kwargs: Any) -> Any:
        """The cached value or CacheMissError, never waiting."""
        return self._variant("lazy")(*self._bound, *args, **kwargs)

    def refresh(self, *args: Any, **kwargs: Any) -> Any:
        """Recompute now and store."""
        return self._variant("refresh")(*self._bound, *args, **kwargs)

    def put(self, *args: Any, **kwargs: Any) -> Any:
        """Store ``_cache_put=value`` as the result for these arguments."""
        return self._variant("put")(*self._bound, *args, **kwargs)

    def invalidate(self, *args: Any, **kwargs: Any) -> Any:
        """Delete the cached entry for these arguments."""
        return self._variant("invalidate")(*self._bound, *args, **kwargs)

    def expire(self, *args: Any, **kwargs: Any) -> Any:
        """Mark the entry stale."""
        return self._variant("expire")(*self._bound, *args, **kwargs)

    def uncached(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function itself, bypassing the cache."""
        return self._variant("uncached")(*self._bound, *args, **kwargs)

    @property
    def client(self) -> BaseCacheClient:
        """The current app's cache client."""
        return self._ext._state().client

    @property
    def namespace(self) -> str:
        """The first element of this function's cache keys (the same in every app)."""
        namespace: str = self.for_app().namespace
        return namespace

    def cache_key(self, *args: Any, **kwargs: Any) -> Hashable:
        """The cache key of a call with these arguments."""
        key: Hashable = self.for_app().cache_key(*self._bound, *args, **kwargs)
        return key

    def __repr__(self) -> str:
        return f"<chorde_flask memoized {self._fn.__module__}.{self._fn.__qualname__}>"


class _MemoVariant:
    """``memoized.bg()`` / ``.future()`` / ``.forced()`` (and their chains), resolved against
    current_app when used."""

    __slots__ = ("_memo", "_modes")

    def __init__(self, memo: _Memoized, *modes: str) -> None:
        self._memo = memo
        self._modes = modes

    def _resolve(self) -> Any:
        variant = self._memo.for_app()
        for mode in self._modes:
            variant = getattr(variant, mode)()
        return variant

    @property
    def client(self) -> BaseCacheClient:
        """The current app's cache client."""
        return self._memo.client

    def bg(self) -> _MemoVariant:
        """Serve what the cache holds (even stale) and refresh in the background."""
        return _MemoVariant(self._memo, *self._modes, "bg")

    async_ = bg

    def future(self) -> _MemoVariant:
        """Return chorde Futures instead of results."""
        return _MemoVariant(self._memo, *self._modes, "future")

    def forced(self) -> _MemoVariant:
        """Calls that recompute and store (a forced update)."""
        return _MemoVariant(self._memo, *self._modes, "forced")

    def cache_info(self) -> Any:
        """The current app's counters of this function."""
        return self._memo.cache_info()

    def invalidate_all(self) -> Any:
        """Drop every result of this function in the current app's client."""
        return self._resolve().invalidate_all()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._resolve()(*self._memo._bound, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name not in ("peek", "lazy", "refresh", "put", "invalidate", "expire", "uncached"):
            raise AttributeError(name)
        method = getattr(self._resolve(), name)
        bound = self._memo._bound
        return lambda *args, **kwargs: method(*bound, *args, **kwargs)


class Chorde:
    """The Flask extension: ``Chorde(app)`` or ``chorde = Chorde(); chorde.init_app(app)``."""

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Build ``app``'s client from its ``CHORDE_*`` config; register the extension."""
        current = app.extensions.get(_EXT)
        if current is not None:
            raise RuntimeError(
                f"chorde is already initialized on app {app.name!r}; call init_app once per app"
            )
        ttl = _number(app.config, "CHORDE_DEFAULT_TTL", integer=False)
        rules = _rules(app.config)
        client, owned = _build_client(app)
        try:
            state = _AppState(
                self, client, float(ttl), rules, app.config.get("CHORDE_CACHE_STATUS")
            )
        except ValueError as exc:
            if owned:
                _close_quietly(client)
            raise ConfigurationError(f"CHORDE_CACHE_STATUS: {exc}") from None
        if owned:
            # Runs when the app is collected, or at interpreter exit, whichever comes first.
            state.finalizer = weakref.finalize(app, _close_quietly, client)
        app.extensions[_EXT] = state
        # The {% cache %} fragment tag in the app's templates.
        app.jinja_env.add_extension(FragmentCache)

    def _state(self, app: Flask | None = None) -> _AppState:
        if app is None:
            if not has_app_context():
                raise RuntimeError(
                    "chorde needs an application context (current_app) here: call it during "
                    "a request or inside `with app.app_context():`"
                )
            app = _current_app()
        state: _AppState | None = app.extensions.get(_EXT)
        if state is None or state.ext is not self:
            raise RuntimeError(
                f"this Chorde extension is not initialized on app {app.name!r}: "
                "call chorde.init_app(app)"
            )
        return state

    @property
    def client(self) -> BaseCacheClient:
        """The current app's cache client."""
        return self._state().client

    def get_client(self, app: Flask) -> BaseCacheClient:
        """``app``'s cache client, without an application context."""
        return self._state(app).client

    def close(self, app: Flask | None = None) -> None:
        """Close the (current) app's client now, if the extension created it."""
        self._state(app).close()

    # ---- function memoization ------------------------------------------------------

    def memoize(
        self,
        ttl: float | None = None,
        async_ttl: float | None = None,
        *,
        key: Callable[..., Hashable] | None = None,
        namespace: str | None = None,
        ttl_spread: float | bool = True,
        executor: Any = None,
        tags: Any = None,
        condition: Callable[[Any], Any] | None = None,
        stale_if_error: float | None = None,
        unless: Callable[..., Any] | None = None,
        forced_update: Callable[..., Any] | None = None,
        source_check: bool = False,
    ) -> CachedDecorator:
        """Cache a function's results in the current app's client (see ``chorde.decorators``).

        ``ttl`` defaults to ``CHORDE_DEFAULT_TTL``. The function may be defined before any
        app exists; each app gets its own cached wrapper (and compute-once registry).
        Background computations run inside the app's context. ``tags``, ``condition``
        (Flask-Caching's ``response_filter``) and ``stale_if_error`` are
        :func:`chorde.decorators.cached`'s. Flask-Caching's per-call predicates:
        ``unless`` true: call the function uncached; ``forced_update`` true: recompute
        and store. Each is called with ``(fn, *args, **kwargs)`` when it takes arguments,
        else with none. ``source_check=True``: the function's source code is part of its
        namespace, so a changed function does not reuse older results.
        """
        options = {
            "ttl": ttl,
            "async_ttl": async_ttl,
            "key": key,
            "namespace": namespace,
            "ttl_spread": ttl_spread,
            "executor": executor,
            "tags": tags,
            "condition": condition,
            "stale_if_error": stale_if_error,
        }
        # Validated now, where the decorator is written (the wrapper is built per app).
        check_options(
            1.0 if ttl is None else ttl,
            None if ttl is None else async_ttl,  # checked against the app's ttl later
            key=key,
            namespace=namespace,
            ttl_spread=ttl_spread,
            executor=executor,
            tags=tags,
            condition=condition,
            stale_if_error=stale_if_error,
        )
        check_predicate(unless, "unless")
        check_predicate(forced_update, "forced_update")

        def decorate(fn: Callable[..., Any]) -> _Memoized:
            if not callable(fn):
                raise TypeError(f"@memoize decorates functions, got {fn!r}")
            fn_options = options
            if source_check:
                name = namespace or f"{fn.__module__}.{fn.__qualname__}"
                fn_options = {**options, "namespace": f"{name}:{source_digest(fn)}"}
            return _Memoized(self, fn, fn_options, (), unless, forced_update)

        # A _Memoized offers what a cached function does, with fn's parameters and result.
        return cast("CachedDecorator", decorate)

    # ---- view caching --------------------------------------------------------------

    def view_key(self, url: str) -> Hashable:
        """The cache key of a GET of ``url`` (for views with the default key).

        ``url`` is absolute (``https://example.com/path?query``) or relative to the current
        request's host (else to ``SERVER_NAME``): the host is part of every key. A response
        that varies (``Vary``, ``vary=``, ``per_user``) keeps, under this key, the marker
        naming what it varies on; deleting the marker drops every variant.
        """
        return url_request(self._state().views, url).key

    def invalidate_view(self, url: str) -> None:
        """Drop the cached responses of ``url`` (see :meth:`view_key`) for the current app."""
        state = self._state()
        state.views.delete(url_request(state.views, url).key)

    def purge_tags(self, *tags: str) -> None:
        """Drop every cached view response that named one of ``tags`` in its
        ``Surrogate-Key`` field, in every process sharing the app's client (and the
        memoized results tagged so: :func:`chorde.tags.invalidate_tags`)."""
        self._state().views.purge_tags(*tags)

    def delete_memoized(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Flask-Caching's ``delete_memoized``: ``delete_memoized(fn)`` drops every result
        of the memoized (or ``@cached``) ``fn`` (``fn.invalidate_all()``, in every process
        sharing the client), ``delete_memoized(fn, *args, **kwargs)`` the result of those
        arguments (``fn.invalidate(...)``; a bound method passes its instance). For a
        coroutine function it returns the coroutine to await."""
        if not callable(getattr(fn, "invalidate_all", None)):
            raise TypeError(f"delete_memoized: {fn!r} is not a memoized or cached function")
        if not args and not kwargs:
            return fn.invalidate_all()
        return fn.invalidate(*args, **kwargs)

    def clear(self) -> None:
        """Drop everything in the current app's client (Flask-Caching's ``cache.clear()``):
        its memoized results, cached views and fragments, and whatever else it holds."""
        self._state().client.clear()

    @staticmethod
    def fragment_key(name: str, *vary_on: Hashable) -> Hashable:
        """The key of the ``{% cache ttl, name, *vary_on %}`` template fragment (to drop it:
        ``chorde.client.delete(chorde.fragment_key(...))``)."""
        return fragment_key(name, vary_on)

    def route_info(self) -> dict[str, CacheInfo]:
        """The current app's cached views' counters, by view (``module.qualname``)."""
        return self._state().views.route_info()

    def cached(
        self,
        ttl: float | None = None,
        *,
        key: Callable[[], Hashable] | None = None,
        query_string: bool = True,
        wait_timeout: float = 30.0,
        public: bool = False,
        per_user: bool = False,
        vary: Sequence[str] = (),
        cookies: Sequence[str] = (),
        unless: Callable[..., Any] | None = None,
        forced_update: Callable[..., Any] | None = None,
        condition: Callable[[Response], Any] | None = None,
        source_check: bool = False,
    ) -> _ViewDecorator:
        """Cache a view's GET responses for ``ttl`` seconds (``CHORDE_DEFAULT_TTL`` if None).

        Flask-Caching's options: ``unless`` true: the view runs uncached; ``forced_update``
        true: the response is rendered and stored whatever is cached (each called with
        ``(view, *args, **kwargs)`` when it takes arguments, else with none);
        ``condition(response)`` false: not stored (``response_filter``);
        ``source_check=True``: the view's source code is part of its keys; ``key`` is
        ``make_cache_key``.

        What is stored and served follows :mod:`chorde.http`'s policy, the same in every
        chorde adapter: the key is the scheme, host, path and query (parameters sorted by
        name; ``query_string=False`` leaves the query out), or ``key()`` (called in the
        request context) in place of path and query; plus the request's values of every
        field the response lists in ``Vary``. Not stored: responses that are ``private``,
        ``no-store``, ``no-cache`` or whose ``Cache-Control`` cannot be parsed, that set a
        cookie, are streamed or not of a cacheable status (200, 203, 204, 300, 301, 308,
        404, 405, 410, 414, 501), from views that read or changed the session, to requests
        with ``Authorization`` (unless the response says ``public``/``s-maxage``/
        ``must-revalidate``) or with cookies (unless the response says ``public`` or
        ``Vary: Cookie``), and HEAD responses (a HEAD is answered from a stored GET).

        What the route declares about its responses changes that: ``public=True`` (the
        same for everyone, credentials and cookies notwithstanding), ``per_user=True``
        (one entry per distinct ``Authorization``/``Cookie``: the page and the session it
        reads are that user's), ``vary=("Accept-Language",)`` (request fields it depends
        on), ``cookies=("lang",)`` (the only cookies it depends on, keyed on their values).

        Concurrent misses of one page in one process render the view once: the others
        wait up to ``wait_timeout`` seconds for that render and are answered from it when
        the policy lets it answer them; otherwise (or when it fails, or on timeout) each
        renders its own. ``wait_timeout=0`` turns the waiting off. Works on ``async def``
        views. Put it below ``@app.route``.
        """
        route = Route(
            ttl=ttl,
            public=public,
            per_user=per_user,
            vary=vary,
            cookies=cookies,
            query=query_string,
            wait_timeout=wait_timeout,
        )
        if key is not None and not callable(key):
            raise TypeError(f"key must be a callable returning the cache key, got {key!r}")
        check_predicate(unless, "unless")
        check_predicate(forced_update, "forced_update")
        check_predicate(condition, "condition")

        def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
            # The view names its route's counters (chorde.observe, route_info()).
            name = f"{getattr(view, '__module__', '?')}.{getattr(view, '__qualname__', view)}"
            cache = ViewCache(
                self,
                view,
                dataclasses.replace(route, name=name),
                key,
                unless=unless,
                forced_update=forced_update,
                condition=condition,
                namespace=(NAMESPACE, source_digest(view)) if source_check else NAMESPACE,
            )
            if inspect.iscoroutinefunction(view):

                @functools.wraps(view)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    return await cache.acall(args, kwargs)

                return async_wrapper

            @functools.wraps(view)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                return cache(args, kwargs)

            return wrapper

        return cast(_ViewDecorator, decorate)
