"""The redis:// family of URLs: what each builds, and errors that name the wrong part."""

from __future__ import annotations

import pytest

from chorde import ConfigurationError
from chorde.clients import from_url, schemes
from chorde.clients.redis import RedisClient
from chorde.clients.redis.schemes import SCHEMES

SECRET = "redis-test-secret"


def test_every_scheme_is_built_in():
    assert set(SCHEMES) <= set(schemes())
    assert {"redis", "rediss", "redis+unix", "redis+sentinel", "redis+cluster"} <= set(SCHEMES)
    assert {"valkey", "valkeys", "valkey+sentinel", "valkey+cluster"} <= set(SCHEMES)


def test_options_come_from_the_query_converted(redis_server):
    url = (
        f"redis://{redis_server.address}/4?namespace=app&timeout=0.25&compress=false"
        "&retry_interval=2&write_log_size=7"
    )
    c = from_url(url, checksum_key=SECRET)
    assert isinstance(c, RedisClient)
    assert (c.namespace, c.timeout, c.retry_interval) == ("app", 0.25, 2.0)
    c.put("k", 1, 60)
    assert redis_server.call("SELECT", "4") == "OK"
    c.close()


def test_a_list_of_urls_is_a_tiered_client(redis_server):
    c = from_url(["inproc://?size=100", f"redis://{redis_server.address}"], checksum_key=SECRET)
    c.put("k", "v", 60)
    assert c.clients[1].get("k") == "v"
    c.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://", "needs a host"),
        ("redis://a:1,b:2", "takes one server"),
        ("redis://h:1/x", "not a database number"),
        ("redis://h:1/2?db=3", "database is given twice"),
        ("redis://user:pw@h:1", "user or password in the URL"),
        ("redis+unix://h/x", "socket path"),
        ("redis+sentinel://h:26379", "names its service"),
        ("redis+cluster://h:1/0", "takes no path"),
        ("redis://h:1?timout=1", "did you mean 'timeout'"),
        ("redis://h:1?timeout=soon", "must be a number"),
        ("rediss://h:1?namespace=a{b}", "namespace"),
    ],
)
def test_wrong_urls_name_what_is_wrong(url, message):
    with pytest.raises(ConfigurationError, match=message):
        from_url(url, checksum_key=SECRET)


def test_a_password_never_shows_in_an_error():
    with pytest.raises(ConfigurationError) as info:
        from_url("redis://h:1?password=hunter2&timout=1", checksum_key=SECRET)
    assert "hunter2" not in str(info.value)


def test_no_checksum_key_is_refused():
    with pytest.raises(ConfigurationError, match="checksum_key"):
        from_url("redis://localhost:6379")


def test_sentinel_and_cluster_urls_build_without_connecting():
    # Nothing is contacted until the first call.
    s = from_url("valkey+sentinel://127.0.0.1:26379,127.0.0.2/cache/2", checksum_key=SECRET)
    assert "sentinel cache" in repr(s)
    c = from_url("redis+cluster://127.0.0.1:7000,127.0.0.2:7001", checksum_key=SECRET)
    assert "cluster 127.0.0.1:7000,127.0.0.2:7001" in repr(c)
    s.close()
    c.close()
