"""The two drivers of the Redis client's operations: blocking (:func:`run`) and asyncio
(:func:`arun`), each performing the calls of :mod:`.calls` with its redis-py client."""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from typing import Any, TypeVar

from chorde.clients.redis import calls
from chorde.clients.redis.topology import Topology

__all__ = ["arun", "run"]

T = TypeVar("T")
_CMD = calls.CMD


def run(op: calls.Op[T], topology: Topology) -> T:
    """Drive ``op`` to its end on the calling thread; return its result.

    (The hot path of every blocking call: a plain loop over the generator, as in
    :func:`arun`.)
    """
    execute = topology.execute
    try:
        call = op.send(None)
        while True:
            try:
                if call[0] is _CMD:
                    result = execute(*call[1])
                else:
                    result = _other(topology.sync(), call, topology.is_cluster)
            except Exception as exc:
                call = op.throw(exc)
                continue
            call = op.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value
    finally:
        op.close()


def _routing_key(args: tuple[Any, ...]) -> Any:
    return args[3] if args[0] in ("EVALSHA", "EVAL") else args[1]


def _groups(
    client: Any, commands: list[tuple[Any, ...]], is_cluster: bool
) -> tuple[list[list[int]], list[Any]]:
    """The commands' indexes grouped by node (one group outside a cluster), and their
    results so far (an exception where a command has no node)."""
    results: list[Any] = [None] * len(commands)
    if not is_cluster:
        return [list(range(len(commands)))], results
    groups: dict[str, list[int]] = {}
    for i, args in enumerate(commands):
        try:
            name = client.get_node_from_key(_routing_key(args)).name
        except Exception as exc:
            results[i] = exc
            continue
        groups.setdefault(name, []).append(i)
    return list(groups.values()), results


def _fill(results: list[Any], indexes: list[int], replies: Any) -> None:
    if isinstance(replies, BaseException):
        replies = [replies] * len(indexes)
    for i, reply in zip(indexes, replies, strict=True):
        results[i] = reply


def _pipe(client: Any, commands: list[tuple[Any, ...]], is_cluster: bool) -> list[Any]:
    groups, results = _groups(client, commands, is_cluster)
    for indexes in groups:  # (one node after the other)
        pipe = client.pipeline(transaction=False)
        for i in indexes:
            pipe.execute_command(*commands[i])
        try:
            replies = pipe.execute(raise_on_error=False)
        except Exception as exc:
            replies = exc
        _fill(results, indexes, replies)
    return results


def _other(client: Any, call: tuple[Any, ...], is_cluster: bool) -> Any:
    kind = call[0]
    if kind is calls.PIPE:
        return _pipe(client, call[1], is_cluster)
    if kind is calls.REFRESH:
        return client.nodes_manager.initialize()
    if kind is calls.NODE:
        return client.get_node_from_key(call[1]).name
    if kind is calls.INFO:
        if is_cluster:
            return list(client.info(call[1], target_nodes=client.PRIMARIES).values())
        return [client.info(call[1])]
    if kind is calls.SLEEP:
        time.sleep(call[1])
        return None
    return call[1]  # calls.AWAIT: nothing to wait for without an event loop


async def arun(op: calls.Op[T], topology: Topology) -> T:
    """Drive ``op`` to its end on the running event loop (an executor runs it with the
    blocking client when the topology has no asyncio client)."""
    loop = asyncio.get_running_loop()
    if not topology.native_async:
        return await loop.run_in_executor(None, functools.partial(run, op, topology))
    client, _, execute = topology.on_loop(loop)
    try:
        call = op.send(None)
        while True:
            try:
                if call[0] is _CMD:
                    result = await execute(*call[1])
                else:
                    result = await _aother(client, call, topology.is_cluster)
            except Exception as exc:
                call = op.throw(exc)
                continue
            call = op.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value
    finally:
        op.close()


async def _apipe(client: Any, commands: list[tuple[Any, ...]], is_cluster: bool) -> list[Any]:
    if is_cluster:
        await client.initialize()
    groups, results = _groups(client, commands, is_cluster)

    async def send(indexes: list[int]) -> None:
        pipe = client.pipeline(transaction=False)
        for i in indexes:
            pipe.execute_command(*commands[i])
        try:
            replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            replies = exc
        _fill(results, indexes, replies)

    await asyncio.gather(*(send(indexes) for indexes in groups))  # (every node at once)
    return results


async def _aother(client: Any, call: tuple[Any, ...], is_cluster: bool) -> Any:
    kind = call[0]
    if kind is calls.PIPE:
        return await _apipe(client, call[1], is_cluster)
    if kind is calls.REFRESH:
        return await client.nodes_manager.initialize()
    if kind is calls.NODE:
        await client.initialize()
        return client.get_node_from_key(call[1]).name
    if kind is calls.INFO:
        target = {"target_nodes": client.PRIMARIES} if is_cluster else {}
        found = await client.info(call[1], **target)
        return list(found.values()) if is_cluster else [found]
    if kind is calls.SLEEP:
        await asyncio.sleep(call[1])
        return None
    value = call[1]  # calls.AWAIT
    return await value if inspect.isawaitable(value) else value
