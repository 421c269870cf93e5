"""The seed README's decorator-free examples, in Python 3, on the in-process clients.

The memcached variants of these examples live in tests/clients/test_memcached.py.
"""

from __future__ import annotations


def test_basic_usage(capsys):
    from chorde import CacheMissError
    from chorde.clients.inproc import InprocCacheClient

    c = InprocCacheClient(200)
    c.put(3, 10, 300)  # put value 10 on key 3, TTL 5min
    assert 10 == c.get(3)
    try:
        c.get(5)
    except CacheMissError:
        print("miss")
    assert capsys.readouterr().out == "miss\n"


def test_alternative_stores():
    from chorde.clients.inproc import Cache, CuckooCache, InprocCacheClient

    for store in (Cache, CuckooCache):
        c = InprocCacheClient(200, store)
        c.put(3, 10, 300)
        assert 10 == c.get(3)


def test_get_multi():
    from chorde.clients.inproc import InprocCacheClient

    c = InprocCacheClient(200)
    c.put(3, 10, 300)
    c.put(4, 20, 300)
    assert {3: 10, 4: 20, 5: None} == dict(c.getMulti([3, 4, 5], None))


def test_multilevel(capsys):
    from chorde import CacheMissError
    from chorde.clients.inproc import InprocCacheClient
    from chorde.clients.tiered import TieredInclusiveClient

    l1 = InprocCacheClient(10)
    l2 = InprocCacheClient(1000)
    c = TieredInclusiveClient(l1, l2)
    c.put(3, 10, 300)
    assert 10 == c.get(3)
    try:
        c.get(5)
    except CacheMissError:
        print("miss")
    assert capsys.readouterr().out == "miss\n"
