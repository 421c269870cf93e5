"""The optional compiled build: which module is loaded, the pure fallback, stale builds, and
the compiled in-process client behaving exactly like the pure one."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import warnings

import pytest

import chorde
import chorde.clients.inproc as inproc
from chorde import _speedups
from chorde.clients.base import CacheStats

#: The in-process client of this process is the compiled one.
COMPILED = inproc.__file__.endswith(".so")
#: A current build exists (a subprocess without CHORDE_PURE_PYTHON loads it).
BUILT = os.path.exists(
    _speedups.compiled_path(
        inproc.__name__, _speedups.source_digest(_speedups.source_path(inproc.__name__))
    )
)
needs_build = pytest.mark.skipif(not COMPILED, reason="speedups not built (make build-ext) or off")


def _run(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != _speedups.ENV_VAR}
    environ.update(env)
    out = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


_PROBE = (
    "import chorde, chorde.clients.inproc as m, chorde.keys, chorde.decorators;"
    "print(chorde.speedups_enabled(), m.__file__.rsplit('.', 1)[-1],"
    " m.InprocCacheClient.__module__)"
)


def test_speedups_enabled_matches_status():
    assert chorde.speedups_enabled() is _speedups.enabled()
    assert set(_speedups.status()) == set(_speedups.MODULES)


@pytest.mark.parametrize("value", ["1", "yes"])
def test_env_var_forces_pure_python(value):
    enabled, ext, module = _run(_PROBE, CHORDE_PURE_PYTHON=value).split()
    assert (enabled, ext, module) == ("False", "py", "chorde.clients.inproc")


@pytest.mark.parametrize("value", ["", "0"])
def test_env_var_empty_or_zero_does_not_force(value):
    _, ext, _ = _run(_PROBE, CHORDE_PURE_PYTHON=value).split()
    assert ext == ("so" if BUILT else "py")


@pytest.mark.skipif(not BUILT, reason="speedups not built (make build-ext)")
def test_compiled_modules_keep_their_names():
    _, ext, module = _run(_PROBE).split()
    assert (ext, module) == ("so", "chorde.clients.inproc")


@needs_build
def test_compiled_module_is_the_imported_one():
    assert chorde.speedups_enabled() is all(v == "compiled" for v in _speedups.status().values())
    assert inproc.__name__ == "chorde.clients.inproc"
    assert inproc.__file__.startswith(os.path.dirname(_speedups.__file__))


def test_load_pure_gives_a_fresh_source_module():
    pure = _speedups.load_pure("chorde.clients.inproc")
    assert pure.__file__.endswith("inproc.py")
    assert pure.InprocCacheClient is not inproc.InprocCacheClient
    assert "chorde.clients.inproc" in sys.modules
    assert sys.modules["chorde.clients.inproc"] is inproc


def test_source_path_rejects_other_modules():
    with pytest.raises(ValueError, match=r"os\.path"):
        _speedups.source_path("os.path")


@pytest.fixture
def fake_tree(tmp_path, monkeypatch):
    """A package root with one module ``chorde.fake`` and an empty extension folder."""
    (tmp_path / "_speedups").mkdir()
    source = tmp_path / "fake.py"
    source.write_text("X = 1\n")
    monkeypatch.setattr(_speedups, "_PACKAGE_ROOT", str(tmp_path))
    monkeypatch.setattr(_speedups, "_HERE", str(tmp_path / "_speedups"))
    monkeypatch.delenv(_speedups.ENV_VAR, raising=False)
    return source


def test_status_follows_the_build_and_the_source(fake_tree, monkeypatch):
    name = "chorde.fake"
    assert _speedups.status([name]) == {name: "pure (not built)"}
    built = _speedups.compiled_path(name, _speedups.source_digest(str(fake_tree)))
    open(built, "wb").close()
    assert _speedups.status([name]) == {name: "compiled"}
    fake_tree.with_suffix(".pxd").write_text("cdef int X\n")  # C types added after the build
    assert _speedups.status([name])[name].startswith("pure (stale build")
    built = _speedups.compiled_path(name, _speedups.source_digest(str(fake_tree)))
    open(built, "wb").close()
    assert _speedups.status([name]) == {name: "compiled"}
    fake_tree.write_text("X = 2\n")  # edited after the build
    assert _speedups.status([name])[name].startswith("pure (stale build")
    monkeypatch.setenv(_speedups.ENV_VAR, "1")
    assert _speedups.status([name])[name] == f"pure ({_speedups.ENV_VAR} set)"


def test_finder_never_loads_a_stale_build_and_says_so(fake_tree):
    name = "chorde.fake"
    open(_speedups.compiled_path(name, _speedups.source_digest(str(fake_tree))), "wb").close()
    fake_tree.write_text("X = 2\n")
    finder = _speedups._Finder([name])
    with pytest.warns(RuntimeWarning, match="another version.*reinstall"):
        assert finder.find_spec(name, None) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per module
        assert finder.find_spec(name, None) is None
    assert finder.find_spec("chorde.other", None) is None


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _drive(module, store: str | None, seed: int) -> list:
    """A random sequence of operations on one client; everything observable, in order."""
    clock = _Clock()
    c = module.InprocCacheClient(50, store, clock=clock)
    rng = random.Random(seed)
    seen: list = []
    for i in range(6000):
        k = rng.randrange(120)
        op = rng.randrange(12)
        if op < 4:
            seen.append(c.get(k, None))
        elif op < 7:
            c.put(k, (k, i), rng.choice((0, 0.5, 5, 50, 1e9)))
        elif op == 7:
            seen.append(c.add(k, i, 5))
        elif op == 8:
            seen.append(c.getTtl(k, None))
        elif op == 9:
            seen.append(c.renew(k, 3) if rng.random() < 0.5 else c.expire(k))
        elif op == 10:
            seen.append((c.contains(k), c.contains(k, 2), list(c.getMulti([k, k + 1], 0))))
        else:
            c.delete(k) if rng.random() < 0.9 else c.purge(1)
        clock.now += rng.choice((0, 0.01, 0.3, 1))
    seen.append((sorted(map(repr, c.store.items())), c.usage, c.capacity, c.stats))
    return seen


@needs_build
@pytest.mark.parametrize("store", [None, "lru-notouch", "cuckoo"])
def test_compiled_client_behaves_exactly_like_the_pure_one(store):
    pure = _speedups.load_pure("chorde.clients.inproc")
    for seed in range(3):
        assert _drive(inproc, store, seed) == _drive(pure, store, seed)


@needs_build
def test_compiled_client_errors_match_the_pure_ones():
    pure = _speedups.load_pure("chorde.clients.inproc")
    for module in (inproc, pure):
        c = module.InprocCacheClient(4)
        with pytest.raises(TypeError, match="hashable"):
            c.get([1])
        with pytest.raises(TypeError, match="hashable"):
            c.put({}, 1, 1)
        with pytest.raises(TypeError, match="ttl"):
            c.put(1, 1, "10")
        with pytest.raises(ValueError, match="ttl"):
            c.put(1, 1, -1)
        with pytest.raises(chorde.CacheMissError):
            c.get("absent")
        assert c.stats == CacheStats(misses=1)


@needs_build
def test_compiled_client_is_a_base_client_and_subclassable():
    from chorde.clients.base import BaseCacheClient

    class Counting(inproc.InprocCacheClient):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.puts = 0

        def put(self, key, value, ttl):
            self.puts += 1
            super().put(key, value, ttl)

    c = Counting(10)
    assert isinstance(c, BaseCacheClient)
    c.putMulti({1: "a", 2: "b"}, 10)
    assert (c.puts, c.get(1), c.usage) == (2, "a", 2)


@needs_build
def test_compiled_key_encoding_matches_the_pure_one():
    import chorde.keys as keys

    pure = _speedups.load_pure("chorde.keys")
    samples = ["a", b"b", 1, -(2**70), 2**3000, 1.5, -0.0, float("nan"), True, None]
    samples += [("a", (1, b"x")), frozenset({1, "2"}), ("ns", (1,), (("k", 2),))]
    for key in samples:
        assert keys.encode_key(key) == pure.encode_key(key)
        assert keys.memcache_key(key, "p:") == pure.memcache_key(key, "p:")


def test_stale_build_advice_fits_where_chorde_lives(fake_tree, monkeypatch):
    name = "chorde.fake"
    package_root = fake_tree.parent
    open(_speedups.compiled_path(name, _speedups.source_digest(str(fake_tree))), "wb").close()
    fake_tree.write_text("X = 2\n")
    installed = package_root / "site-packages" / "chorde"
    installed.mkdir(parents=True)
    monkeypatch.setattr(_speedups, "_PACKAGE_ROOT", str(installed))  # no setup.py beside it
    assert "reinstall" in _speedups._advice() and "make" not in _speedups._advice()
    checkout = package_root / "checkout"
    (checkout / "chorde").mkdir(parents=True)
    (checkout / "setup.py").write_text("")
    monkeypatch.setattr(_speedups, "_PACKAGE_ROOT", str(checkout / "chorde"))
    assert "make build-ext" in _speedups._advice()
    monkeypatch.setattr(_speedups, "_PACKAGE_ROOT", str(package_root))
    with pytest.warns(RuntimeWarning, match="stale|another version") as caught:
        assert _speedups._Finder([name]).find_spec(name, None) is None
    assert str(caught[0].message).endswith(_speedups._advice())
