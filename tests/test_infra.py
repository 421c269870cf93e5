"""Tests of the test and benchmark infrastructure itself: real servers, fixtures, harness."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from benchmarks.harness import Case, TimingConfig, measure_interleaved
from tests.servers import (
    MEMCACHED_ENV_VAR,
    AppServer,
    MemcachedServer,
    ServerStartError,
    find_memcached,
    free_port,
    wait_until,
)

REPO = Path(__file__).resolve().parent.parent


def _exchange(server: MemcachedServer, payload: bytes, until: bytes) -> bytes:
    """Send raw text-protocol bytes and read until the reply ends with ``until``."""
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(payload)
        data = b""
        for _ in range(1000):
            if data.endswith(until):
                break
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still has a pid: only a process that is not yet reaped and not a zombie counts.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


# -- the memcached fixture -------------------------------------------------------------------


def test_memcached_fixture_speaks_text_protocol(memcached: MemcachedServer) -> None:
    assert memcached.host == "127.0.0.1"
    assert memcached.address == f"127.0.0.1:{memcached.port}"
    assert _exchange(memcached, b"version\r\n", b"\r\n").startswith(b"VERSION ")
    assert _exchange(memcached, b"set k1 5 0 5\r\nhello\r\n", b"\r\n") == b"STORED\r\n"
    assert _exchange(memcached, b"get k1\r\n", b"END\r\n") == (b"VALUE k1 5 5\r\nhello\r\nEND\r\n")
    assert _exchange(memcached, b"get nope\r\n", b"END\r\n") == b"END\r\n"


def test_memcached_is_fresh_per_test(memcached: MemcachedServer) -> None:
    # The previous test stored k1 on its own server; this one starts empty.
    assert _exchange(memcached, b"get k1\r\n", b"END\r\n") == b"END\r\n"
    assert memcached.stats()["curr_items"] == "0"


def test_stop_refuses_connections_and_start_reuses_port(memcached: MemcachedServer) -> None:
    port = memcached.port
    assert _exchange(memcached, b"set k 0 0 1\r\nx\r\n", b"\r\n") == b"STORED\r\n"
    memcached.stop()
    assert not memcached.running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    memcached.start()
    assert memcached.running
    assert memcached.port == port
    # A restart is a real restart: the cache comes back empty.
    assert _exchange(memcached, b"get k\r\n", b"END\r\n") == b"END\r\n"
    memcached.restart()
    assert memcached.port == port
    assert _exchange(memcached, b"version\r\n", b"\r\n").startswith(b"VERSION ")


def test_start_twice_is_an_error(memcached: MemcachedServer) -> None:
    with pytest.raises(RuntimeError, match="already running"):
        memcached.start()


def test_suspend_makes_requests_hang_until_resume(memcached: MemcachedServer) -> None:
    memcached.suspend()
    try:
        with (
            socket.create_connection((memcached.host, memcached.port), timeout=0.2) as sock,
            pytest.raises(TimeoutError),
        ):
            sock.sendall(b"version\r\n")
            sock.recv(100)
    finally:
        memcached.resume()
    assert memcached.command_line(b"version").startswith(b"VERSION ")


def test_factory_starts_distinct_servers(memcached_factory) -> None:
    a, b = memcached_factory(2)
    assert a.port != b.port
    assert a.pid != b.pid
    assert _exchange(a, b"set only_a 0 0 1\r\n1\r\n", b"\r\n") == b"STORED\r\n"
    assert _exchange(b, b"get only_a\r\n", b"END\r\n") == b"END\r\n"
    c, d = memcached_factory(2)
    assert len({a.port, b.port, c.port, d.port}) == 4


def test_factory_options_reach_the_server(memcached_factory) -> None:
    [server] = memcached_factory(memory_mb=8, item_size="2m", threads=1)
    settings = server.stats("settings")
    assert settings["maxbytes"] == str(8 * 1024 * 1024)
    assert settings["item_size_max"] == str(2 * 1024 * 1024)
    assert settings["num_threads"] == "1"
    assert settings["udpport"] == "0"


def test_factory_rejects_bad_count(memcached_factory) -> None:
    with pytest.raises(ValueError, match="n must be a positive int"):
        memcached_factory(0)


def test_bad_option_fails_start_with_server_message(memcached_bin: str) -> None:
    server = MemcachedServer(executable=memcached_bin, extra_args=["--no-such-option"])
    with pytest.raises(RuntimeError, match="exited with"):
        server.start()
    assert not server.running


def test_flush_empties_the_server(memcached: MemcachedServer) -> None:
    assert _exchange(memcached, b"set k 0 0 1\r\nx\r\n", b"\r\n") == b"STORED\r\n"
    memcached.flush()
    assert _exchange(memcached, b"get k\r\n", b"END\r\n") == b"END\r\n"


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 0 < port < 65536
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_unused_port_refuses(unused_port: int) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", unused_port), timeout=5).close()


# -- AppServer: an HTTP server process --------------------------------------------------------

_HTTP_SERVER = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "{port}"]


def test_app_server_answers_then_stops(tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("hello")
    with AppServer(_HTTP_SERVER, {"MARKER": "x"}, cwd=tmp_path, ready_path="/hello.txt") as app:
        assert app.url == f"http://127.0.0.1:{app.port}"
        pid = app.pid
        assert pid is not None and _pid_alive(pid)
        with urllib.request.urlopen(app.url + "/hello.txt", timeout=5) as reply:
            assert reply.read() == b"hello"
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read().split(b"\0")
        assert b"MARKER=x" in environ
        assert any(e.startswith(b"PYTHONPATH=" + str(REPO).encode()) for e in environ)
    assert app.pid is None and not _pid_alive(pid)


def test_app_server_restarts_on_its_port(tmp_path: Path) -> None:
    app = AppServer(_HTTP_SERVER, cwd=tmp_path).start()
    try:
        port = app.port
        app.stop()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        assert app.start().port == port
    finally:
        app.stop()


def test_app_server_that_exits_reports_its_output() -> None:
    app = AppServer([sys.executable, "-c", "print('no such app'); raise SystemExit(3)"])
    with pytest.raises(ServerStartError, match=r"(?s)exited with 3.*no such app"):
        app.start()
    assert not app.running


def test_app_server_that_never_answers_is_killed() -> None:
    argv = [sys.executable, "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(60)"]
    app = AppServer(argv, start_timeout=0.3, start_attempts=2)
    with pytest.raises(ServerStartError, match=r"did not answer within 0\.3 s") as caught:
        app.start()
    pid = int(str(caught.value).rpartition(": ")[2])  # what the last attempt printed
    assert not _pid_alive(pid)
    assert not app.running


def test_start_server_fixture_stops_at_teardown(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    result = _run_inner(
        pytester,
        f"""
        import sys
        from tests.servers import AppServer

        def test_1(start_server):
            argv = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "{{port}}"]
            app = start_server(AppServer(argv, cwd={str(tmp_path)!r}))
            open({str(pid_file)!r}, "w").write(str(app.pid))
            assert False, "deliberate failure"
        """,
    )
    result.assert_outcomes(failed=1)
    assert wait_until(lambda: not _pid_alive(int(pid_file.read_text())))


# -- no leaks, and the missing-server policy (each in a separate pytest run) -----------------

_INNER_CONFTEST = f"""
import os
import sys
sys.path.insert(0, {str(REPO)!r})
from tests.conftest import *  # noqa: F401,F403
from tests.conftest import pytest_sessionfinish  # noqa: F401
"""


def _run_inner(pytester: pytest.Pytester, body: str, extra_conftest: str = "") -> pytest.RunResult:
    pytester.makeconftest(_INNER_CONFTEST + textwrap.dedent(extra_conftest))
    pytester.makepyfile(test_inner=textwrap.dedent(body))
    return pytester.runpytest_subprocess("-ra", "-p", "no:cacheprovider", timeout=120)


def test_servers_are_killed_after_a_failing_test(
    pytester: pytest.Pytester, memcached_bin: str, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    at_exit = tmp_path / "at_exit"
    result = _run_inner(
        pytester,
        f"""
        import os
        from tests.servers import MemcachedServer

        def test_1_fails(memcached, memcached_factory):
            a, b = memcached_factory(2)
            forgotten = MemcachedServer().start()  # never stopped by any test
            with open({str(pids)!r}, "w") as f:
                f.write(f"{{memcached.pid}} {{a.pid}} {{b.pid}}\\n{{forgotten.pid}}\\n")
            assert False, "deliberate failure"

        def test_2_fixture_servers_are_gone():
            fixture_pids, forgotten = open({str(pids)!r}).read().splitlines()
            assert [p for p in fixture_pids.split() if os.path.exists(f"/proc/{{p}}")] == []
            assert os.path.exists(f"/proc/{{forgotten}}"), "killed before session end?"
        """,
        extra_conftest=f"""
        def pytest_unconfigure(config):
            forgotten = open({str(pids)!r}).read().splitlines()[1]
            alive = os.path.exists(f"/proc/{{forgotten}}")
            open({str(at_exit)!r}, "w").write("alive" if alive else "dead")
        """,
    )
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*deliberate failure*"])
    # The session-end hook killed the server no fixture owned, before the runner exited.
    assert at_exit.read_text() == "dead"
    assert [pid for pid in map(int, pids.read_text().split()) if _pid_alive(pid)] == []


@pytest.mark.parametrize(("ci", "outcome"), [("true", "errors"), ("", "skipped")])
def test_missing_memcached_skips_or_fails_under_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str, outcome: str
) -> None:
    monkeypatch.setenv(MEMCACHED_ENV_VAR, "/nonexistent/memcached")
    monkeypatch.setenv("CI", ci)
    result = _run_inner(
        pytester,
        """
        def test_needs_server(memcached):
            pass
        """,
    )
    result.assert_outcomes(**{outcome: 1})
    result.stdout.fnmatch_lines(["*apt-get install -y memcached*"])


def test_env_override_must_be_an_executable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MEMCACHED_ENV_VAR, "/nonexistent/memcached")
    assert find_memcached() is None
    monkeypatch.delenv(MEMCACHED_ENV_VAR)
    monkeypatch.setenv("PATH", "")
    assert find_memcached() is None


# -- benchmarks --------------------------------------------------------------------------------


def _run_benchmarks(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_benchmark_unknown_name_is_reported() -> None:
    proc = _run_benchmarks("no_such_benchmark", "--quick")
    assert proc.returncode == 2, proc.stderr
    assert "no_such_benchmark" in proc.stderr
    assert "skipped" in proc.stderr


def test_benchmark_list_names_inproc() -> None:
    proc = _run_benchmarks("--list")
    assert proc.returncode == 0, proc.stderr
    assert "inproc" in proc.stdout.split()


_INPROC_IMPLEMENTATIONS = {
    "chorde",
    "chorde-cuckoo",
    "dict",
    "functools.lru_cache",
    "cachetools.LRUCache",
    "cachetools.TTLCache",
    "lru.LRU",
    "django.LocMemCache",
}


@pytest.mark.skipif(
    importlib.util.find_spec("chorde.clients.inproc") is None,
    reason="chorde.clients.inproc is not written yet",
)
def test_inproc_benchmark_quick_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    proc = _run_benchmarks("inproc", "--quick", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["quick"] is True
    results = [r for r in report["results"] if r["benchmark"] == "inproc"]
    assert {r["implementation"] for r in results} == _INPROC_IMPLEMENTATIONS
    by_key = {(r["implementation"], r["operation"]): r for r in results}
    for impl in _INPROC_IMPLEMENTATIONS:
        for op in ("get-hit", "get-miss", "put"):
            ns = by_key[impl, op]["ns_per_op"]
            if (impl, op) == ("functools.lru_cache", "put"):
                assert ns is None
            else:
                assert ns > 0, (impl, op)
    assert "ratio" in proc.stdout and "chorde" in proc.stdout


def test_interleaved_samples_take_turns_each_warmed_up() -> None:
    log: list[str] = []
    config = TimingConfig(min_sample_ns=1, repeats=3, max_loops=1, max_total_ns=10**12)
    cases = [Case("c.append(k)", log, [name]) for name in "abc"]
    timings = measure_interleaved(cases, config)
    assert [t.repeats for t in timings] == [3, 3, 3]
    assert [t.ops for t in timings] == [1, 1, 1]
    calibration = ["a", "b", "c"]
    # Every round: each case's untimed warm-up pass, then its timed pass; the first case rotates.
    rounds = ["aabbcc", "bbccaa", "ccaabb"]
    assert log == calibration + [name for r in rounds for name in r]
