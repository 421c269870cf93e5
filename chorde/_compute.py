"""Compute-once machinery shared by the decorators: in-flight registries and background pools.

Internal module: the public knobs are re-exported by :mod:`chorde.decorators`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, TypeVar

from chorde.futures import Future

__all__ = [
    "Flight",
    "Flights",
    "default_executor",
    "in_worker",
    "run_as_worker",
    "run_coroutine",
    "set_default_executor",
]

T = TypeVar("T")


class Flight(Future[Any]):
    """A computation in progress for one key; every caller of that key waits on it."""

    #: Thread ident of the thread running the computation (detects self-recursion).
    owner: int | None = None
    #: True when nobody asked for the result (a refresh): failures are only logged.
    background: bool = False
    #: For flights queued on a pool: runs the computation (whoever takes it first).
    runner: Callable[[], Any] | None = None


class Flights:
    """A per-key registry of in-flight computations (thread-safe)."""

    __slots__ = ("_flights", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()

        self._flights: dict[Hashable, Flight] = {}

    def claim(self, key: Hashable) -> tuple[Flight, bool]:
        """Return ``(flight, True)`` for a new flight the caller must run, else the running one."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                return flight, False
            flight = self._flights[key] = Flight()
            return flight, True

    def get(self, key: Hashable) -> Flight | None:
        """The flight running for ``key``, if any."""
        return self._flights.get(key)

    def take(self, flight: Flight) -> bool:
        """Become the thread running ``flight``; False if some thread already is."""
        with self._lock:
            if flight.owner is not None:
                return False
            flight.owner = threading.get_ident()
            return True

    def release(self, key: Hashable, flight: Flight) -> None:
        """Forget ``flight`` (done or abandoned) so the next caller starts a new one."""
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]

    def __len__(self) -> int:
        return len(self._flights)


_lock = threading.Lock()
_local = threading.local()


def in_worker() -> bool:
    """True inside a background computation run by chorde (on a pool thread)."""
    return getattr(_local, "busy", False)


def run_as_worker(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` flagged as a background computation (see :func:`in_worker`)."""
    busy = getattr(_local, "busy", False)
    _local.busy = True
    try:
        return fn()
    finally:
        _local.busy = busy


_executor: concurrent.futures.Executor | None = None
_loop: asyncio.AbstractEventLoop | None = None


def default_executor() -> concurrent.futures.Executor:
    """The shared, bounded pool that runs background computations (created on first use)."""
    global _executor
    executor = _executor
    if executor is None:
        with _lock:
            if _executor is None:
                _executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=min(32, (os.cpu_count() or 1) + 4),
                    thread_name_prefix="chorde-bg",
                )
            executor = _executor
    return executor


def set_default_executor(executor: concurrent.futures.Executor | None) -> None:
    """Replace the shared background pool (``None``: a fresh default one on next use).

    The previous pool is not shut down: work already queued on it still completes.
    """
    global _executor
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise TypeError(f"executor must have a submit() method, got {executor!r}")
    with _lock:
        _executor = executor


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="chorde-asyncio", daemon=True)
            thread.start()
            _loop = loop
        return _loop


def run_coroutine(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Run ``coro`` on chorde's background event loop thread (for callers outside a loop)."""
    return asyncio.run_coroutine_threadsafe(coro, _background_loop())
