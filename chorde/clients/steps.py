"""Client logic written once, run by a blocking or by an asyncio driver.

A composed client (tiered, namespace, write-behind ...) writes each operation as a
generator that yields the calls it needs from the clients it composes, as
``(client, method_name, args)``, and gets each call's result back. :func:`run` makes those
calls with the blocking methods (``client.getTtl(...)``), :func:`arun` with their awaitable
twins (``await client.agetTtl(...)``), so an operation's logic exists once and native async
survives composition: an awaitable call on a tiered client awaits its tiers' own
awaitables, and an in-process tier never touches an executor.

A call that raises is thrown back into the generator, which may handle it; batch reads
(``getMulti``, ``getTtlMulti``) come back as lists from both drivers.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any, TypeVar

__all__ = ["Call", "Steps", "arun", "on", "run"]

T = TypeVar("T")

#: One call a step asks for: ``(client, method_name, args)``.
Call = tuple[Any, str, tuple[Any, ...]]
#: An operation: yields calls, receives their results, returns the operation's result.
Steps = Generator[Call, Any, T]


def on(client: Any, steps: Generator[tuple[Any, ...], Any, T]) -> Steps[T]:
    """Steps that name only a method and its arguments (``(name, *args)``, as
    :mod:`chorde.tags` writes them), as calls of ``client``."""
    value: Any = None
    try:
        while True:
            try:
                name, *args = steps.send(value)
            except StopIteration as stop:
                result: T = stop.value
                return result
            value = yield (client, name, tuple(args))
    finally:
        steps.close()


def run(steps: Steps[T]) -> T:
    """Run ``steps`` with blocking calls."""
    value: Any = None
    error: BaseException | None = None
    try:
        while True:
            client, name, args = steps.send(value) if error is None else steps.throw(error)
            error = None
            try:
                value = getattr(client, name)(*args)
                if isinstance(value, Iterator):
                    value = list(value)
            except Exception as exc:  # handed to the operation
                error = exc
    except StopIteration as stop:
        result: T = stop.value
        return result
    finally:
        steps.close()


async def arun(steps: Steps[T]) -> T:
    """Run ``steps`` with the awaitable calls (``name`` -> ``"a" + name``)."""
    value: Any = None
    error: BaseException | None = None
    try:
        while True:
            client, name, args = steps.send(value) if error is None else steps.throw(error)
            error = None
            try:
                value = await getattr(client, "a" + name)(*args)
            except Exception as exc:  # handed to the operation
                error = exc
    except StopIteration as stop:
        result: T = stop.value
        return result
    finally:
        steps.close()
