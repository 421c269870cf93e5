"""chorde 1.x's public names and options, and what each became.

Code written for chorde 1.x meets every name and option it used here. A name whose meaning
carries over resolves to what replaced it (with a :class:`DeprecationWarning` where the old
spelling should go); every other one raises an error that names the replacement, rather
than Python's bare "no attribute" or "unexpected keyword argument". docs/migrating.md has
the same table for people.

Modules use it from a module-level ``__getattr__`` (:func:`attribute`), constructors from a
``**legacy`` catch-all (:func:`options`); :func:`install` makes importing a 1.x module that
is gone raise with its replacement.
"""

from __future__ import annotations

import importlib
import math
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from typing import Any

from chorde.errors import RemovedNameError

__all__ = ["attribute", "install", "options"]

_GUIDE = "(chorde 1.x; see docs/migrating.md)"

_EXECUTOR = (
    "cached(..., executor=) takes any concurrent.futures.Executor, and "
    "chorde.decorators.set_default_executor() sets the shared one"
)
_SERIALIZER = (
    "chorde.serialization.Serializer: pickle, compressed and HMAC-signed, verified before "
    "it is unpickled"
)
_STORES = "chorde.clients.inproc.Cache and CuckooCache (compiled when the speedups are built)"
_PURGE = "call client.purge() from your own periodic task, and read client.stats"

#: Modules of 1.x that are gone: importing one raises with its replacement.
MODULES: dict[str, str] = {
    "chorde.clients.async": "it is chorde.clients.asyncache (AsyncWriteCacheClient, "
    "makeFutureWrapper); `async` is a keyword in Python 3",
    "chorde.mq.coherence": "CoherenceManager is gone: wrap a tiered stack in "
    "chorde.clients.coherent.CoherentWrapperClient(stack, bus) over a chorde.mq bus",
    "chorde.mq.ipsub": "ipsub is gone: chorde.mq.BrokerBus (with a chorde.mq.Broker) or "
    "chorde.mq.PeerBus",
    "chorde.mq.compat": "use pyzmq directly; chorde.mq's buses need no shim",
    "chorde.external_integration": "nothing is monkey-patched any more: import chorde_tornado, "
    "whose futures Tornado coroutines await or yield as they are",
    "chorde.sPickle": _SERIALIZER,
    "chorde.serialize": _SERIALIZER,
    "chorde.threadpool": _EXECUTOR,
    "chorde.worker": _EXECUTOR,
    "chorde.dnsutils": "servers given by DNS name are resolved and re-resolved by the "
    "memcached client itself (MemcachedClient(dns=...))",
    "chorde.shmemutils": "chorde.shmem",
    "chorde.pylrucache": _STORES,
    "chorde.pycuckoocache": _STORES,
}

_Alias = Callable[[], Any]


def _identity_adapter(name: str) -> _Alias:
    def adapter(client: Any, *args: Any, **kwargs: Any) -> Any:
        # 1.x wrapped thread-unsafe clients in a lock; every client is thread-safe now.
        return client

    adapter.__name__ = adapter.__qualname__ = name
    adapter.__doc__ = f"1.x's {name}: returns ``client`` itself (every client is thread-safe)."
    return lambda: adapter


def _attr(module: str, name: str) -> _Alias:
    return lambda: getattr(importlib.import_module(module), name)


#: What a chorde Future raises when ``result(timeout)`` runs out of time (the builtin, as
#: concurrent.futures.TimeoutError is since Python 3.11) or when it was cancelled.
_ERRORS: dict[str, tuple[_Alias, str]] = {
    "TimeoutError": (lambda: TimeoutError, ""),
    "CancelledError": (_attr("concurrent.futures", "CancelledError"), ""),
}

#: Names that resolve, per module: name -> (what it resolves to, deprecation note or "").
ALIASES: dict[str, dict[str, tuple[_Alias, str]]] = {
    "chorde.clients.base": {
        "SyncAdapter": (_identity_adapter("SyncAdapter"), ""),
        "ReadWriteSyncAdapter": (_identity_adapter("ReadWriteSyncAdapter"), ""),
        "FOREVER": (lambda: math.inf, ""),
        **_ERRORS,
        "CacheMissError": (_attr("chorde.errors", "CacheMissError"), ""),
        "NONE": (_attr("chorde.sentinel", "NONE"), ""),
        "NamespaceWrapper": (_attr("chorde.clients.namespace", "NamespaceWrapper"), ""),
    },
    "chorde.clients.memcached": {
        "FastMemcachedClient": (
            _attr("chorde.clients.memcached.client", "MemcachedClient"),
            "FastMemcachedClient is MemcachedClient now (it pipelines batches and speaks "
            "asyncio natively); values are pickled and signed, not JSON",
        ),
    },
    "chorde.clients.elasticache": {
        "FastElastiCacheClient": (
            _attr("chorde.clients.elasticache", "ElastiCacheClient"),
            "FastElastiCacheClient is ElastiCacheClient now",
        ),
    },
}

#: What 1.x's ``from chorde import *`` and ``from chorde.clients import *`` gave: name ->
#: the module it lives in now.
_REEXPORTED = {
    "BaseCacheClient": "chorde.clients.base",
    "InprocCacheClient": "chorde.clients.inproc",
    "TieredInclusiveClient": "chorde.clients.tiered",
    "AsyncWriteCacheClient": "chorde.clients.asyncache",
    "MemcachedClient": "chorde.clients.memcached",
    "CoherentWrapperClient": "chorde.clients.coherent",
    "FilesCacheClient": "chorde.clients.files",
    "CuckooCache": "chorde.clients.inproc",
}


def _moved(module: str, name: str, new_name: str | None = None) -> tuple[_Alias, str]:
    return (
        _attr(module, new_name or name),
        f"import {new_name or name} from {module} (chorde.clients' modules are imported "
        "one by one now)",
    )


for _package in ("chorde", "chorde.clients"):
    _names = ALIASES.setdefault(_package, {})
    _names.update({name: _moved(module, name) for name, module in _REEXPORTED.items()})
    _names["ReadWriteSyncAdapter"] = ALIASES["chorde.clients.base"]["ReadWriteSyncAdapter"]
    _names["FastMemcachedClient"] = ALIASES["chorde.clients.memcached"]["FastMemcachedClient"]
ALIASES["chorde"]["LRUCache"] = _moved("chorde.clients.inproc", "LRUCache", "Cache")
ALIASES["chorde"].update(_ERRORS)
ALIASES["chorde.clients"].update(
    {
        "NONE": (_attr("chorde.sentinel", "NONE"), ""),
        "CacheMissError": (_attr("chorde.errors", "CacheMissError"), ""),
        **_ERRORS,
    }
)

#: Names that are gone, per module: name -> its replacement.
GONE: dict[str, dict[str, str]] = {
    "chorde.clients.base": {
        "NoServersError": "no reachable server means misses (logged), never an error; a "
        "miss raises chorde.CacheMissError",
        "DecoratedWrapper": "subclass chorde.clients.base.ClientWrapper",
        "NamespaceMirrorWrapper": "give each client its own "
        "chorde.clients.namespace.NamespaceWrapper(namespace, client): wrappers of one "
        "namespace over one shared client share its revision",
    },
    "chorde.clients.asyncache": {
        "Defer": "f.bg() and f.future() of a @cached function run its computation on an "
        "executor; " + _EXECUTOR,
        "AsyncCacheProcessor": _EXECUTOR,
    },
    "chorde.clients.coherent": {
        "CoherentDefer": "CoherentWrapperClient computes once per cluster by itself: "
        "decorate with @cached(CoherentWrapperClient(stack, bus), ttl)",
    },
    "chorde.clients.inproc": {
        name: _PURGE
        for name in ("cacheStats", "cachePurge", "cacheClear", "startCacheJanitorThread")
    },
    "chorde.clients.files": {
        name: "the files client sweeps itself every sweep_interval; " + _PURGE
        for name in ("cachePurge", "cacheClear", "startCacheJanitorThread")
    },
    "chorde.clients.memcached": {
        "MemcachedStoreClient": "MemcachedClient speaks the memcached protocol itself",
        "DynamicResolvingMemcachedClient": "MemcachedClient resolves servers given by DNS "
        "name and re-resolves them on their record's TTL",
        "AsyncDynamicResolvingMemcachedClient": "MemcachedClient resolves servers given by DNS "
        "name; wrap it in chorde.clients.asyncache.AsyncWriteCacheClient for write-behind",
    },
    "chorde": {
        "SecurePickler": _SERIALIZER,
        "SecureUnpickler": _SERIALIZER,
        "Defer": "f.bg() and f.future() of a @cached function; " + _EXECUTOR,
        "AsyncCacheProcessor": _EXECUTOR,
        "CoherentDefer": "CoherentWrapperClient computes once per cluster by itself",
    },
    "chorde.clients": {
        "Defer": "f.bg() and f.future() of a @cached function; " + _EXECUTOR,
        "AsyncCacheProcessor": _EXECUTOR,
        "CoherentDefer": "CoherentWrapperClient computes once per cluster by itself",
    },
    "chorde.decorators": {
        "coherent_cached": "cached(CoherentWrapperClient(TieredInclusiveClient(private, "
        "shared), bus), ttl) from chorde.clients.coherent and chorde.clients.tiered",
        "NO_NAMESPACE": "every cached function has a namespace: namespace= names it "
        "(default: module.qualname)",
    },
}


def attribute(module: str, name: str) -> Any:
    """What ``module.name`` is for 1.x code (a module-level ``__getattr__`` returns it).

    Raises :class:`~chorde.errors.RemovedNameError` (an ImportError, so ``from module
    import name`` shows the replacement) for a 1.x name that is gone, AttributeError for
    anything else.
    """
    alias = ALIASES.get(module, {}).get(name)
    if alias is not None:
        make, note = alias
        if note:
            warnings.warn(f"{module}.{name}: {note}", DeprecationWarning, stacklevel=3)
        value = make()
        setattr(sys.modules[module], name, value)  # resolved (and warned about) once
        return value
    replacement = GONE.get(module, {}).get(name)
    if replacement is not None:
        raise RemovedNameError(f"{module}.{name} is gone {_GUIDE}: {replacement}")
    raise AttributeError(f"module {module!r} has no attribute {name!r}")


#: 1.x options of each callable, mapped: old name -> new name (same meaning).
RENAMED: dict[str, dict[str, str]] = {
    "MemcachedClient": {
        "max_backing_value_length": "max_item_size",
        "socket_timeout": "timeout",
        "dead_retry": "retry_interval",
    },
    "FilesCacheClient": {"filemode": "file_mode"},
    "InprocCacheClient": {},
    "NamespaceWrapper": {},
    "TieredInclusiveClient": {},
    "AsyncWriteCacheClient": {
        "writer_queue_size": "queue_size",
        "writer_workers": "writer_threads",
    },
    "cached": {},
}

_FAILFAST = "put an InprocCacheClient in front with TieredInclusiveClient(inproc, shared)"
_PICKLING = (
    "values are pickled and signed by chorde.serialization.Serializer, keys encoded by "
    "chorde.keys; shape keys with @cached(key=...)"
)

#: 1.x options that are gone, per callable: option -> its replacement.
REFUSED: dict[str, dict[str, str]] = {
    "MemcachedClient": {
        "max_backing_key_length": "long keys are digested by themselves: drop it",
        "failfast_size": _FAILFAST,
        "failfast_time": _FAILFAST,
        "succeedfast_size": _FAILFAST,
        "succeedfast_time": _FAILFAST,
        "pickler": _PICKLING,
        "key_pickler": _PICKLING,
        "client_pickler": _PICKLING,
        "client_unpickler": _PICKLING,
        "client_pickler_key": _PICKLING,
        "compress_prefix": "compression is zlib above compress_threshold bytes",
        "compress_file_class": "compression is zlib above compress_threshold bytes",
        "decompress_fn": "compression is zlib above compress_threshold bytes",
        "encoding_cache": "drop it: keys are encoded by chorde.keys on each call",
        "client_class": "MemcachedClient speaks the memcached protocol itself",
        "tcp_nodelay": "drop it: sockets always set TCP_NODELAY",
    },
    "FilesCacheClient": {
        "failfast_size": _FAILFAST,
        "failfast_time": _FAILFAST,
        "counter_slots": "drop it: the space used is one shared count, reconciled with the "
        "directory",
        "key_pickler": _PICKLING,
        "value_pickler": _PICKLING,
        "value_unpickler": _PICKLING,
        "value_opener": "bytes-like values and numpy arrays are memory-mapped by themselves",
        "mmap_raw": "bytes-like values and numpy arrays are always memory-mapped",
        "dirmode": "directories are made with the process umask; file_mode sets the files'",
        "sync_purge": "the client sweeps itself every sweep_interval; purge() sweeps now",
    },
    "InprocCacheClient": {},
    "AsyncWriteCacheClient": {
        "overflow": "a full queue writes through in the caller's thread (backpressure), "
        "never dropping a write",
        "threadpool": "writer_threads= starts the client's own writers",
        "writer_threadpool": "writer_threads= starts the client's own writers",
        "defer_threadpool": _EXECUTOR,
    },
    "TieredInclusiveClient": {
        "ttl_fractions": "wrap a tier in chorde.clients.capped.CappedTtlClient(client, "
        "max_ttl) to bound how long it keeps what it is given",
    },
    "NamespaceWrapper": {
        "revmark_ttl": "the revision record lives as long as the client keeps entries; "
        "revision_refresh= sets how often other processes' changes are read",
    },
    "cached": {
        "renew_time": "a refresh is computed once per key in a process, and once in a "
        "cluster with a CoherentWrapperClient",
        "future_sync_check": "f.future() looks the value up without blocking by itself",
        "lazy_kwargs": "f.lazy() and f.bg().lazy() never wait; tiered clients promote by "
        "themselves",
        "async_lazy_recheck": "f.bg().lazy() starts the computation on a miss by itself",
        "async_lazy_recheck_kwargs": "f.bg().lazy() starts the computation on a miss by itself",
        "initialize": "initialize at startup (Django AppConfig.ready(), Flask's app factory), "
        "before the first call",
        "decorate": "decorate the function before caching it: cached(...)(decorator(fn))",
        "value_serialization_function": "convert inside the function (what it returns is "
        "stored) and after the call",
        "value_deserialization_function": "convert after the call",
        "async_writer_queue_size": "wrap the client in chorde.clients.asyncache."
        "AsyncWriteCacheClient(client, queue_size=...) yourself",
        "async_writer_workers": "AsyncWriteCacheClient(client, writer_threads=...)",
        "async_writer_threadpool": "AsyncWriteCacheClient(client, writer_threads=...)",
        "async_writer_kwargs": "wrap the client in AsyncWriteCacheClient yourself",
        "async_client": "pass the client you want as the first argument",
        "async_expire": "f.expire(*args) marks an entry stale; a refresh follows at the next call",
        "async_processor": _EXECUTOR,
        "async_processor_workers": _EXECUTOR,
        "async_processor_threadpool": _EXECUTOR,
        "async_processor_kwargs": _EXECUTOR,
        "timings": "counters are always kept (f.cache_info()); chorde.observe hooks time each call",
        "autonamespace_version_salt": "namespace= (change it to drop old results)",
    },
}


#: Attributes of 1.x's cached functions that are gone: attribute -> its replacement.
DECORATED_GONE: dict[str, str] = {
    "on_value": "condition=fn is called with each computed result (return True to store "
    "it); chorde.observe hooks see every computation",
    "on_promote": "tiered clients promote by themselves; chorde.observe hooks see every call",
}


def removed_call(name: str, replacement: str) -> Callable[..., Any]:
    """A stand-in for the 1.x callable ``name``: calling it raises with ``replacement``."""

    def removed(*args: Any, **kwargs: Any) -> Any:
        raise RemovedNameError(f"{name} is gone {_GUIDE}: {replacement}")

    removed.__name__ = removed.__qualname__ = name.rpartition(".")[2]
    return removed


def options(owner: str, legacy: Mapping[str, Any], stacklevel: int = 3) -> dict[str, Any]:
    """Translate the 1.x keyword arguments ``legacy`` of ``owner`` (``"MemcachedClient"``...).

    Return the current options they stand for (renamed ones, with a DeprecationWarning);
    raise TypeError naming the replacement for a refused one, or the plain "unexpected
    keyword argument" error for one 1.x did not have either.
    """
    renamed = RENAMED[owner]
    refused = REFUSED[owner]
    out: dict[str, Any] = {}
    for name, value in legacy.items():
        if name in renamed:
            new = renamed[name]
            warnings.warn(
                f"{owner}({name}=...) is spelled {new}= now {_GUIDE}",
                DeprecationWarning,
                stacklevel=stacklevel,
            )
            out[new] = value
        elif name in refused:
            raise TypeError(f"{owner}() has no option {name!r} {_GUIDE}: {refused[name]}")
        else:
            raise TypeError(f"{owner}() got an unexpected keyword argument {name!r}")
    return out


def store_options(size: int, legacy: Mapping[str, Any], store: Any) -> Any:
    """``InprocCacheClient``'s 1.x ``store_class``/``store_args``/``store_kwargs``: the
    store they describe (``store_class(size, *store_args, **store_kwargs)``)."""
    legacy = dict(legacy)
    store_class = legacy.pop("store_class", None)
    store_args: Sequence[Any] = legacy.pop("store_args", ())
    store_kwargs: Mapping[str, Any] = legacy.pop("store_kwargs", {})
    options("InprocCacheClient", legacy)  # anything else: unexpected
    if store_class is None:
        if store_args or store_kwargs:
            raise TypeError("InprocCacheClient(): store_args/store_kwargs need a store_class")
        return store
    if store is not None:
        raise TypeError("InprocCacheClient() got both store= and its 1.x form store_class=")
    return store_class(size, *store_args, **store_kwargs)


def write_behind_options(positional: Sequence[Any], legacy: Mapping[str, Any]) -> dict[str, Any]:
    """``AsyncWriteCacheClient``'s options: 1.x's renamed ones mapped; positional options
    refused (1.x's order was ``writer_queue_size, writer_workers``, an earlier one of this
    generation's the reverse: a number could be read either way)."""
    if positional:
        raise TypeError(
            f"AsyncWriteCacheClient takes its options by keyword, got {tuple(positional)!r} "
            "after the client: AsyncWriteCacheClient(client, writer_threads=..., "
            f"queue_size=...) {_GUIDE}"
        )
    return options("AsyncWriteCacheClient", legacy, 4)


def files_arguments(
    path: Any, size: Any, file_mode: int, legacy: Mapping[str, Any]
) -> tuple[Any, Any, int]:
    """``FilesCacheClient``'s path, size and file mode, from 1.x's argument order
    ``(size, basepath)`` (swapped, with a warning) and options (``filemode``)."""
    if isinstance(path, int) and not isinstance(path, bool) and isinstance(size, str | PathLike):
        warnings.warn(
            f"FilesCacheClient(size, basepath) is FilesCacheClient(path, size) now {_GUIDE}",
            DeprecationWarning,
            stacklevel=3,
        )
        path, size = size, path
    file_mode = options("FilesCacheClient", legacy, 4).get("file_mode", file_mode)
    return path, size, file_mode


class _RemovedModules:
    """Makes importing a 1.x module that is gone raise with its replacement (a meta path
    finder; importlib.abc is not imported for it, to keep ``import chorde`` cheap)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        replacement = MODULES.get(fullname)
        if replacement is not None:
            raise RemovedNameError(f"{fullname} is gone {_GUIDE}: {replacement}")
        return None


_FINDER = _RemovedModules()


def install() -> None:
    """Put the finder of removed modules on ``sys.meta_path`` (once)."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.append(_FINDER)
