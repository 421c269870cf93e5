"""chorde.clients.from_url and the scheme registry: one way to build a client anywhere."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import tests.toy
from chorde import ConfigurationError
from chorde.clients import check_url, from_url, is_url, register_scheme, schemes
from chorde.clients.capped import CappedTtlClient
from chorde.clients.inproc import InprocCacheClient
from chorde.clients.tiered import TieredInclusiveClient
from tests.servers import REPO


def test_builtin_schemes_are_registered() -> None:
    assert {"inproc", "memcached", "elasticache", "files"} <= set(schemes())


def test_inproc_by_url() -> None:
    client = from_url("inproc://?size=50&store=cuckoo")
    assert isinstance(client, InprocCacheClient) and client.capacity == 50
    client.put("k", 1, 60)
    assert client.get("k") == 1
    capped = from_url("inproc://?size=50&max_ttl=5")
    assert isinstance(capped, CappedTtlClient) and capped.max_ttl == 5.0
    capped.put("k", 1, 60)
    assert capped.getTtl("k")[1] <= 5.0


def test_memcached_by_url(memcached: Any) -> None:
    url = f"memcached://{memcached.address}?timeout=0.5&compress=false&namespace=n1"
    client = from_url(url, checksum_key="secret")
    try:
        assert client.timeout == 0.5 and client.namespace == "n1"  # type: ignore[attr-defined]
        client.put("k", "v", 60)
        again = from_url(f"memcached://{memcached.address}?namespace=n1&checksum_key=secret")
        assert again.get("k") == "v"
        again.close()
        keyword_wins = from_url(url, checksum_key="secret", namespace="n2")
        assert keyword_wins.get("k", None) is None
        keyword_wins.close()
    finally:
        client.close()


def test_a_list_of_urls_is_a_tiered_client(memcached: Any) -> None:
    client = from_url(
        ["inproc://?size=10&max_ttl=5", f"memcached://{memcached.address}"],
        checksum_key="secret",
    )
    try:
        assert isinstance(client, TieredInclusiveClient)
        l1, l2 = client.clients
        assert isinstance(l1, CappedTtlClient)
        client.put("k", 1, 60)
        assert l2.get("k") == 1 and l1.get("k") == 1
    finally:
        client.close()


def test_files_by_url(tmp_path: Path) -> None:
    client = from_url(f"files://{tmp_path}/cache?size=1000000&touch_interval=2", checksum_key="k")
    try:
        client.put("k", b"v", 60)
        assert client.get("k") == b"v"
    finally:
        client.close()


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("localhost:11211", {}, "not a client URL"),
        ("mongodb://cache:27017", {}, "unknown scheme 'mongodb'"),
        ("memcachd://cache:11211", {}, "did you mean 'memcached'"),
        ("inproc://?sise=10", {}, "no option 'sise' (did you mean 'size'?)"),
        ("inproc://?size=ten", {}, "'size' must be an integer, got 'ten'"),
        ("inproc:///some/path", {}, "takes no path"),
        ("memcached://", {"checksum_key": "k"}, "needs one or more servers"),
        ("memcached://h:1?timeout=1&timeout=2", {"checksum_key": "k"}, "given 2 times"),
        ("memcached://h:1?timout=1", {"checksum_key": "k"}, "did you mean 'timeout'"),
        ("memcached://h:1?compress=maybe", {"checksum_key": "k"}, "true or false"),
        ("files://relative/path", {"checksum_key": "k"}, "absolute path"),
        ("elasticache://a:1,b:2", {"checksum_key": "k"}, "one configuration endpoint"),
        ("inproc://", {"timeout": 1}, "no option 'timeout'"),
    ],
)
def test_a_wrong_url_names_the_part_that_is_wrong(
    url: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        from_url(url, **options)
    assert message in str(caught.value)


def test_secrets_never_appear_in_errors_or_reprs() -> None:
    for url, options in [
        ("memcached://h:1?checksum_key=hunter2&timout=1", {}),
        ("memcached://user:hunter2@h:1", {}),
        ("inproc://?checksum_key=hunter2", {}),
        ("inproc://", {"checksum_key": "hunter2", "bogus": 1}),
    ]:
        with pytest.raises(ConfigurationError) as caught:
            from_url(url, **options)
        assert "hunter2" not in str(caught.value), url
    with pytest.raises(ConfigurationError) as caught:
        from_url(["inproc://", "inproc://"], checksum_key="hunter2")
    assert "hunter2" not in str(caught.value)
    client = from_url("memcached://h:1?checksum_key=hunter2")
    try:
        assert "hunter2" not in repr(client)
    finally:
        client.close()


def test_options_in_a_list_go_to_the_tiers_that_take_them() -> None:
    with pytest.raises(ConfigurationError, match="no tier"):
        from_url(["inproc://", "inproc://"], timeout=1)
    # defaults are taken where a tier accepts them and ignored elsewhere
    client = from_url("inproc://?size=5", defaults={"checksum_key": "k", "namespace": "n"})
    assert isinstance(client, InprocCacheClient)


def test_check_url_and_is_url() -> None:
    check_url(["inproc://", "memcached://h:1"])
    with pytest.raises(ConfigurationError, match="unknown scheme"):
        check_url("nope://x")
    assert is_url("inproc://") and is_url(["inproc://", "toy://x"])
    assert not is_url("localhost:11211") and not is_url([]) and not is_url(None)


def test_register_scheme() -> None:
    with pytest.raises(ConfigurationError, match="already registered"):
        register_scheme("inproc", lambda url: InprocCacheClient(1))
    with pytest.raises(ConfigurationError, match="scheme"):
        register_scheme("bad scheme", lambda url: InprocCacheClient(1))
    with pytest.raises(TypeError, match="factory"):
        register_scheme("fine", "not callable")  # type: ignore[arg-type]
    register_scheme("notaclient", lambda url: object())  # type: ignore[arg-type,return-value]
    with pytest.raises(ConfigurationError, match="not a cache client"):
        from_url("notaclient://")


def test_a_scheme_registered_outside_chorde_works_by_url() -> None:
    client = from_url("toy://urls-test?size=3")
    client.put("a", 1, 60)
    assert tests.toy.stores["urls-test"]["a"][0] == 1
    assert "toy" in schemes()


def test_an_entry_point_adds_a_scheme(tmp_path: Path) -> None:
    """A package declaring ``[project.entry-points."chorde.clients"]`` adds its scheme."""
    site = tmp_path / "site"
    (site / "ep_backend").mkdir(parents=True)
    (site / "ep_backend" / "__init__.py").write_text(
        textwrap.dedent(
            """
            from chorde.clients.inproc import InprocCacheClient

            def build(url):
                return InprocCacheClient(url.pop("size", int, 7))
            """
        )
    )
    dist = site / "ep_backend-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-backend\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[chorde.clients]\nepcache = ep_backend:build\n")
    code = (
        "from chorde.clients import from_url, schemes\n"
        "c = from_url('epcache://?size=9')\n"
        "print(type(c).__name__, c.capacity, 'epcache' in schemes())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": f"{site}:{REPO}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.split() == ["InprocCacheClient", "9", "True"]
