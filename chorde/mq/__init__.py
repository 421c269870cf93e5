"""Messaging between the processes of a cluster, for cache coherence.

* :class:`BrokerBus` - every process connects to a broker (``python -m chorde.mq.broker
  --bind tcp://HOST:PORT``), which relays each message to every process;
* :class:`PeerBus` - no broker: each process binds an endpoint and subscribes to a static
  list of the others;
* :class:`RedisBus` - no broker either: the frames travel through Redis (or Valkey) pub/sub,
  on the server the shared tier uses already;
* :class:`LocalBus` / :class:`LocalHub` - in-process, for a single process or tests.

Messages are signed binary frames carrying encoded keys only (:mod:`chorde.mq.frames`):
nothing received is ever unpickled. They are numbered per sender and channel, so a lost one
is noticed (a *gap*, see :mod:`chorde.mq.bus`). :class:`BrokerBus`, :class:`PeerBus` and
:class:`Broker` need pyzmq (``pip install 'chorde[mq]'``), :class:`RedisBus` a Redis client
(``pip install 'chorde[redis]'``); the rest needs neither.
"""

from __future__ import annotations

from typing import Any

from chorde.mq.bus import Bus, LocalBus, LocalHub, Subscription
from chorde.mq.frames import Frames, InvalidFrame, Message, MessageType

__all__ = [
    "Broker",
    "BrokerBus",
    "Bus",
    "Frames",
    "InvalidFrame",
    "LocalBus",
    "LocalHub",
    "Message",
    "MessageType",
    "PeerBus",
    "RedisBus",
    "Subscription",
]

_ZMQ = {
    "BrokerBus": "chorde.mq.zmqbus",
    "PeerBus": "chorde.mq.zmqbus",
    "Broker": "chorde.mq.broker",
    "RedisBus": "chorde.mq.redisbus",
}


def __getattr__(name: str) -> Any:
    # A transport's module (and its library: pyzmq) is imported only when asked for.
    module = _ZMQ.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
