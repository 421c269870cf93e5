"""Fixtures shared by the client tests."""

from __future__ import annotations

import pytest

from chorde.clients.memcached import MemcachedClient

#: The checksum key of the memcached clients made by the tests.
SECRET = "test-secret"


@pytest.fixture
def client(memcached):
    """A MemcachedClient on a fresh memcached server, closed after the test."""
    c = MemcachedClient([memcached.address], checksum_key=SECRET)
    yield c
    c.close()
