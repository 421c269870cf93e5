"""Whole web apps under their real servers, cached hits loaded by ``wrk``: chorde against the
caches users of each framework would pick instead.

Each configuration is one app of ``benchmarks/_apps`` (the same 2 KB HTML page, cached for
an hour; a miss costs its view 10 ms) served on 127.0.0.1:

* Django 5.2 under gunicorn (2 sync workers), ``cache_page``: chorde's ``ChordeCache``
  (in-process, memcached, tiered, Redis) against LocMemCache, PyMemcacheCache,
  PyLibMCCache, Django's RedisCache and django-redis;
* Flask under gunicorn (2 sync workers): ``@chorde.cached`` (chorde_flask: in-process,
  memcached, tiered, Redis) against Flask-Caching's ``@cache.cached`` (SimpleCache,
  MemcachedCache, which picks pylibmc when installed, and RedisCache);
* FastAPI under uvicorn (one process): chorde's ASGI ``CacheMiddleware`` (in-process,
  memcached, tiered, Redis) against cashews' and fastapi-cache2's decorators on the same
  endpoint (in-memory and Redis).

The WSGI servers use sync workers, as gunicorn does by default: each request comes on a new
connection (they do not keep connections alive), which is most of their CPU per request.

memcached and redis-server run as real processes on free loopback ports. Every server is
started once and primed (its page fetched and checked, then a short untimed ``wrk`` run so
each worker holds it); then the configurations take turns round after round, each round a
``wrk`` run of fixed duration against ``/page``. Per run: requests/s and p99 latency as wrk
reports them (``--latency``), and the app server's CPU per request (utime + stime of the
server process and its workers from ``/proc/<pid>/stat``, before and after). Figures are
medians over the rounds. Each view run is logged to a file: the notes say how many runs
(misses) a configuration had during the timed rounds (0 expected), and how many operations
per request its cache server did (memcached: keys read or written, from ``stats``; Redis:
commands, from ``INFO commandstats``), with that server's CPU per request in the JSON.

Tables (rows: framework and backend, columns: implementations; ratio = peer / chorde, so
>1 means chorde is better for all three): ``apps`` holds wall ns per request (1e9 / req/s),
``apps-cpu`` the server's CPU ns per request, ``apps-p99`` the p99 latency in ns.

``wrk`` (Debian package ``wrk``) must be installed; without it the benchmark prints why and
returns nothing. A configuration whose library is missing is skipped with a message.
``CHORDE_BENCH_APPS=fastapi:chorde-inproc,django:LocMemCache`` runs only the configurations
named (``framework:implementation``, as the ``--quick`` note lists them).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from benchmarks.harness import Result

if TYPE_CHECKING:
    from tests.servers import AppServer

__all__ = ["CONFIGS", "Config", "run"]

_HOST = "127.0.0.1"
_ONLY_ENV = "CHORDE_BENCH_APPS"
#: Gunicorn's sync workers per WSGI app.
_WORKERS = 2
#: wrk: one thread, this many connections.
_CONNECTIONS = 8
_ROUNDS, _SECONDS = 7, 2
_QUICK_ROUNDS, _QUICK_SECONDS = 1, 1
_WARMUP_SECONDS = 1
#: The full run stops starting rounds once this much time is spent (seconds).
_BUDGET_S = 450.0
_QUICK = ("fastapi:chorde-inproc", "fastapi:cashews-memory")
_CLK_TCK = os.sysconf("SC_CLK_TCK")
#: What the cache-server operation counts are, per server.
_OPS = {"memcached": "keys", "redis": "commands"}


@dataclass(frozen=True)
class Config:
    """One app configuration: its row (framework, backend), column and requirements."""

    framework: str
    backend: str
    impl: str  # BENCH_IMPL of the app module
    column: str
    needs: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.framework}:{self.impl}"

    @property
    def row(self) -> str:
        return f"{self.framework}, {self.backend}"

    @property
    def server(self) -> str | None:
        """The cache server it needs: memcached, redis or none."""
        if self.backend in ("memcached", "tiered"):
            return "memcached"
        return "redis" if self.backend == "redis" else None


_INPROC, _MC, _TIERED, _REDIS = "in-process", "memcached", "tiered", "redis"


def _chorde_rows(framework: str, needs: tuple[str, ...]) -> list[Config]:
    return [
        Config(framework, _INPROC, "chorde-inproc", "chorde", needs),
        Config(framework, _MC, "chorde-memcached", "chorde", needs),
        Config(framework, _TIERED, "chorde-tiered", "chorde", needs),
        Config(framework, _REDIS, "chorde-redis", "chorde", (*needs, "redis")),
    ]


_DJ = ("django", "gunicorn")
_FL = ("flask", "gunicorn")
_FA = ("fastapi", "uvicorn")
CONFIGS: tuple[Config, ...] = (
    *_chorde_rows("django", _DJ),
    Config("django", _INPROC, "LocMemCache", "LocMemCache", _DJ),
    Config("django", _MC, "PyMemcacheCache", "PyMemcacheCache", (*_DJ, "pymemcache")),
    Config("django", _MC, "PyLibMCCache", "PyLibMCCache", (*_DJ, "pylibmc")),
    Config("django", _REDIS, "RedisCache", "RedisCache", (*_DJ, "redis")),
    Config("django", _REDIS, "django-redis", "django-redis", (*_DJ, "django_redis")),
    *_chorde_rows("flask", _FL),
    Config("flask", _INPROC, "Flask-Caching-simple", "Flask-Caching", (*_FL, "flask_caching")),
    Config(
        "flask", _MC, "Flask-Caching-memcached", "Flask-Caching", (*_FL, "flask_caching", "pylibmc")
    ),
    Config(
        "flask", _REDIS, "Flask-Caching-redis", "Flask-Caching", (*_FL, "flask_caching", "redis")
    ),
    *_chorde_rows("fastapi", _FA),
    Config("fastapi", _INPROC, "cashews-memory", "cashews", (*_FA, "cashews")),
    Config("fastapi", _REDIS, "cashews-redis", "cashews", (*_FA, "cashews", "redis")),
    Config("fastapi", _INPROC, "fastapi-cache2-memory", "fastapi-cache2", (*_FA, "fastapi_cache")),
    Config(
        "fastapi",
        _REDIS,
        "fastapi-cache2-redis",
        "fastapi-cache2",
        (*_FA, "fastapi_cache", "redis"),
    ),
)


@dataclass
class _Run:
    """One configuration's server and the figures of its rounds."""

    config: Config
    server: AppServer
    miss_log: Path
    rps: list[float] = field(default_factory=list)
    p99_ns: list[float] = field(default_factory=list)
    cpu_ns: list[float] = field(default_factory=list)
    cache_cpu_ns: list[float] = field(default_factory=list)
    #: Cache-server operations per request (memcached: keys read or written; Redis: commands).
    cache_ops: list[float] = field(default_factory=list)
    #: The round each figure of ``rps``/``p99_ns``/``cpu_ns`` comes from.
    round_ids: list[int] = field(default_factory=list)
    misses: int = 0
    errors: list[str] = field(default_factory=list)


# -- measuring --------------------------------------------------------------------------------


def _process_tree(root: int) -> list[int]:
    """``root`` and its descendants (gunicorn's master and its workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def _cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of ``pids`` (those still alive), in seconds."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)
    return ticks / _CLK_TCK


_UNITS = {"us": 1e3, "ms": 1e6, "s": 1e9}


def _parse_wrk(text: str) -> dict[str, Any]:
    """requests, req/s, p99 (ns) and error counts from wrk's ``--latency`` report."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    count = re.search(r"(\d+) requests in", text)
    if not (rps and p99 and count):
        raise RuntimeError(f"cannot read wrk's report:\n{text}")
    errors = 0
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if non_2xx:
        errors += int(non_2xx.group(1))
    return {
        "requests": int(count.group(1)),
        "rps": float(rps.group(1)),
        "p99_ns": float(p99.group(1)) * _UNITS[p99.group(2)],
        "errors": errors,
    }


def _wrk(wrk: str, url: str, seconds: int) -> dict[str, Any]:
    cmd = [wrk, "-t", "1", "-c", str(_CONNECTIONS), "-d", f"{seconds}s", "--latency"]
    cmd += ["--timeout", "5s", url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return _parse_wrk(done.stdout)


def _misses(log: Path) -> int:
    try:
        return len(log.read_text().splitlines())
    except FileNotFoundError:
        return 0


def _cache_ops(cache: Any) -> int:
    """Operations a cache server has done so far: memcached's keys got, set and touched;
    Redis's commands (the INFO asking included)."""
    if hasattr(cache, "stats"):
        stats = cache.stats()
        return sum(int(stats.get(name, 0)) for name in ("cmd_get", "cmd_set", "cmd_touch"))
    info = cache.call("INFO", "commandstats").decode()
    return sum(
        int(line.split("calls=", 1)[1].split(",", 1)[0])
        for line in info.splitlines()
        if line.startswith("cmdstat_")
    )


def _one_round(wrk: str, run: _Run, seconds: int, cache: Any, round_id: int) -> None:
    """One timed wrk run of ``run``'s page; ``cache`` is its cache server (or None)."""
    pids = _process_tree(run.server.pid or 0)
    cache_pid = cache.pid if cache is not None else None
    ops_before = _cache_ops(cache) if cache is not None else 0
    before, misses = _cpu_seconds(pids), _misses(run.miss_log)
    cache_before = _cpu_seconds([cache_pid]) if cache_pid else 0.0
    report = _wrk(wrk, f"{run.server.url}/page", seconds)
    cpu = _cpu_seconds(pids) - before
    cache_cpu = _cpu_seconds([cache_pid]) - cache_before if cache_pid else 0.0
    # (Redis counts the INFO that read the first figure in the second: one less.)
    ops = _cache_ops(cache) - ops_before - (0 if hasattr(cache, "stats") else 1) if cache else 0
    run.misses += _misses(run.miss_log) - misses
    if report["errors"]:
        run.errors.append(f"{report['errors']} errors")
    if report["requests"]:
        run.round_ids.append(round_id)
        run.rps.append(report["rps"])
        run.p99_ns.append(report["p99_ns"])
        run.cpu_ns.append(cpu * 1e9 / report["requests"])
        if cache_pid:
            run.cache_cpu_ns.append(cache_cpu * 1e9 / report["requests"])
            run.cache_ops.append(ops / report["requests"])


# -- servers ----------------------------------------------------------------------------------


def _app_server(config: Config, env: dict[str, str]) -> AppServer:
    from tests.servers import AppServer

    python = sys.executable
    if config.framework == "fastapi":
        argv = [python, "-m", "uvicorn", "benchmarks._apps.asgi_app:app"]
        argv += ["--host", _HOST, "--port", "{port}", "--no-access-log", "--log-level", "warning"]
    else:
        module = {"django": "django_app:application", "flask": "flask_app:app"}[config.framework]
        argv = [python, "-m", "gunicorn", f"benchmarks._apps.{module}"]
        argv += ["--workers", str(_WORKERS), "--worker-class", "sync"]
        argv += ["--bind", f"{_HOST}:{{port}}", "--log-level", "warning"]
    return AppServer(argv, env, ready_path="/ready", start_attempts=2)


def _prime(run: _Run, wrk: str) -> None:
    """Fetch the page until every worker is likely to hold it, check it, warm up with wrk."""
    from benchmarks._apps import PAGE

    for _ in range(4 * _WORKERS):
        answer = httpx.get(f"{run.server.url}/page", timeout=10.0)
        if answer.status_code != 200 or answer.text != PAGE:
            raise RuntimeError(
                f"{run.config.name}: GET /page answered {answer.status_code}, "
                f"{len(answer.content)} bytes: not the benchmark page"
            )
    _wrk(wrk, f"{run.server.url}/page", _WARMUP_SECONDS)


def _missing(config: Config) -> str | None:
    for name in config.needs:
        if importlib.util.find_spec(name) is None:
            return name
    return None


def _selected(quick: bool) -> list[Config]:
    only = os.environ.get(_ONLY_ENV)
    names = [n.strip() for n in only.split(",") if n.strip()] if only else None
    if names is None and quick:
        names = list(_QUICK)
    if names is None:
        return list(CONFIGS)
    known = {c.name: c for c in CONFIGS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"{_ONLY_ENV}: no configuration {unknown} (have: {sorted(known)})")
    return [known[n] for n in names]


@contextlib.contextmanager
def _cache_servers(needed: set[str]) -> Iterator[dict[str, Any]]:
    """The memcached and redis-server processes the configurations need (absent if not
    installed)."""
    from tests.redis_servers import RedisServer, find_redis
    from tests.servers import MemcachedServer, find_memcached

    started: dict[str, Any] = {}
    try:
        if "memcached" in needed and find_memcached() is not None:
            started["memcached"] = MemcachedServer(memory_mb=64).start()
        if "redis" in needed and find_redis() is not None:
            started["redis"] = RedisServer().start()
        yield started
    finally:
        for server in started.values():
            server.stop()


def _start(configs: Sequence[Config], caches: dict[str, Any], tmp: Path, wrk: str) -> list[_Run]:
    runs: list[_Run] = []
    try:
        for config in configs:
            missing = _missing(config)
            if missing is not None:
                print(f"apps: {config.name} skipped: {missing} is not installed", file=sys.stderr)
                continue
            if config.server is not None and config.server not in caches:
                print(
                    f"apps: {config.name} skipped: {config.server} is not installed",
                    file=sys.stderr,
                )
                continue
            log = tmp / f"{config.framework}-{config.impl}.misses"
            env = {"BENCH_IMPL": config.impl, "BENCH_MISS_LOG": str(log)}
            if "memcached" in caches:
                env["BENCH_MEMCACHED"] = caches["memcached"].address
            if "redis" in caches:
                env["BENCH_REDIS"] = caches["redis"].address
            server = _app_server(config, env)
            try:
                server.start()
            except Exception as exc:  # a peer that cannot run here is reported, not fatal
                print(
                    f"apps: {config.name} skipped: its server did not start: {exc}", file=sys.stderr
                )
                continue
            run = _Run(config, server, log)
            runs.append(run)
            try:
                _prime(run, wrk)
            except Exception as exc:
                print(f"apps: {config.name} skipped: {exc}", file=sys.stderr)
                server.stop()
                runs.remove(run)
    except BaseException:
        for run in runs:
            run.server.stop()
        raise
    return runs


# -- results ----------------------------------------------------------------------------------


def _same_round_ratios(peer: _Run, ours: _Run) -> tuple[float, float] | None:
    """Medians over the rounds both ran of (chorde req/s / peer req/s, peer CPU / chorde CPU):
    each ratio compares runs seconds apart, so load drifting during the run cancels out."""
    mine = dict(zip(ours.round_ids, zip(ours.rps, ours.cpu_ns, strict=True), strict=True))
    pairs = [
        (mine[i][0] / rps, cpu / mine[i][1])
        for i, rps, cpu in zip(peer.round_ids, peer.rps, peer.cpu_ns, strict=True)
        if i in mine and rps and mine[i][1]
    ]
    if not pairs:
        return None
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)


def _results(runs: Sequence[_Run], seconds: int) -> list[Result]:
    out: list[Result] = []
    chorde = {run.config.row: run for run in runs if run.config.column == "chorde"}
    for bench, attr in (("apps", "rps"), ("apps-cpu", "cpu_ns"), ("apps-p99", "p99_ns")):
        for run in runs:
            if not run.rps:
                continue
            rps = statistics.median(run.rps)
            cpu = statistics.median(run.cpu_ns)
            p99 = statistics.median(run.p99_ns)
            value = {"rps": 1e9 / rps, "cpu_ns": cpu, "p99_ns": p99}[attr]
            extra = {
                "config": run.config.name,
                "req_per_s": rps,
                "req_per_s_rounds": run.rps,
                "server_cpu_us_per_req": cpu / 1e3,
                "p99_ms": p99 / 1e6,
                "rounds": len(run.rps),
                "seconds_per_round": seconds,
                "misses_during_rounds": run.misses,
                "errors": run.errors,
            }
            if run.cache_cpu_ns:
                extra["cache_server_cpu_us_per_req"] = statistics.median(run.cache_cpu_ns) / 1e3
                extra["cache_ops_per_req"] = statistics.median(run.cache_ops)
            ours = chorde.get(run.config.row)
            paired = None if ours is None or ours is run else _same_round_ratios(run, ours)
            if paired is not None:
                extra["chorde_rps_ratio_same_round"] = paired[0]
                extra["chorde_cpu_ratio_same_round"] = paired[1]
            note = (
                f"{rps:,.0f} req/s, p99 {p99 / 1e6:.2f} ms, server CPU {cpu / 1e3:.0f} us/req "
                f"(median of {len(run.rps)}; {run.config.impl}; view runs {run.misses}"
                + (
                    f"; {run.config.server} {_OPS[run.config.server or '']}"
                    f"/req {statistics.median(run.cache_ops):.2f}"
                    if run.cache_ops
                    else ""
                )
                + (f"; {', '.join(run.errors)}" if run.errors else "")
                + ")"
                + (
                    f"; same-round medians: chorde req/s {paired[0]:.2f}x this, "
                    f"this CPU {paired[1]:.2f}x chorde's"
                    if paired
                    else ""
                )
            )
            out.append(
                Result(
                    bench,
                    run.config.row,
                    run.config.column,
                    value,
                    api=f"GET /page ({run.config.impl})" if bench == "apps" else "",
                    repeats=len(run.rps),
                    note=note if bench == "apps" else "",
                    extra=extra,
                )
            )
    return out


def goals(results: Sequence[Result]) -> list[str]:
    """The issue's goals against this run's figures (reported, never asserted)."""
    rows = [r for r in results if r.benchmark == "apps" and r.ns_per_op]
    rps = {(r.operation, r.extra["config"]): r.extra["req_per_s"] for r in rows}
    cpu = {(r.operation, r.extra["config"]): r.extra["server_cpu_us_per_req"] for r in rows}
    paired = {
        (r.operation, r.extra["config"]): (
            r.extra["chorde_rps_ratio_same_round"],
            r.extra["chorde_cpu_ratio_same_round"],
        )
        for r in rows
        if "chorde_rps_ratio_same_round" in r.extra
    }
    lines: list[str] = []
    for row in dict.fromkeys(r.operation for r in rows):
        ours = [k for k in rps if k[0] == row and ":chorde" in k[1]]
        peers = [k for k in rps if k[0] == row and ":chorde" not in k[1]]
        if not ours or not peers:
            continue
        best = max(peers, key=rps.__getitem__)
        leanest = min(peers, key=cpu.__getitem__)
        same = ""
        if best in paired and leanest in paired:
            same = f"; same-round medians {paired[best][0]:.2f}x, {paired[leanest][1]:.2f}x"
        lines.append(
            f"{row}: req/s {rps[ours[0]] / rps[best]:.2f}x best peer ({best[1]}), "
            f"CPU/req {cpu[leanest] / cpu[ours[0]]:.2f}x leanest peer ({leanest[1]}){same} "
            "(goal: both >= 1)"
        )
    for framework in dict.fromkeys(r.operation.split(",")[0] for r in rows):
        tiered = rps.get((f"{framework}, tiered", f"{framework}:chorde-tiered"))
        inproc = rps.get((f"{framework}, in-process", f"{framework}:chorde-inproc"))
        remote = {
            k: v
            for k, v in rps.items()
            if k[0] in (f"{framework}, memcached", f"{framework}, redis") and ":chorde" not in k[1]
        }
        if tiered and remote:
            best = max(remote, key=remote.__getitem__)
            lines.append(
                f"{framework}, tiered: {tiered / remote[best]:.2f}x best remote-only peer "
                f"({best[1]}) (goal >= 1.5)"
            )
        if tiered and inproc:
            lines.append(
                f"{framework}, tiered: {tiered / inproc:.2f}x chorde in-process (goal >= 0.8)"
            )
    mc = cpu.get(("fastapi, memcached", "fastapi:chorde-memcached"))
    cashews = cpu.get(("fastapi, redis", "fastapi:cashews-redis"))
    if mc and cashews:
        lines.append(
            f"fastapi: chorde memcached hit {mc:.0f} us CPU/req, cashews Redis hit {cashews:.0f} "
            f"us: {cashews / mc:.2f}x (goal >= 1)"
        )
    return lines


def run(quick: bool) -> list[Result]:
    """Measure the configurations above; see the module docstring."""
    configs = _selected(quick)
    wrk = shutil.which("wrk")
    if wrk is None:
        print("apps: skipped: wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return []
    rounds, seconds = (_QUICK_ROUNDS, _QUICK_SECONDS) if quick else (_ROUNDS, _SECONDS)
    started = time.monotonic()
    needed = {c.server for c in configs if c.server is not None}
    with (
        tempfile.TemporaryDirectory(prefix="chorde-apps-") as tmp,
        _cache_servers(needed) as caches,
    ):
        for name in needed - set(caches):
            print(f"apps: {name} is not installed: its configurations are skipped", file=sys.stderr)
        runs = _start(configs, caches, Path(tmp), wrk)
        # A row's contenders run back to back in each round, so they see the same load.
        order = sorted(runs, key=lambda r: [c.row for c in CONFIGS].index(r.config.row))
        try:
            round_s = len(runs) * (seconds + 0.3)
            for i in range(rounds):
                if i and time.monotonic() - started + round_s > _BUDGET_S:
                    print(f"apps: time budget spent after {i} rounds", file=sys.stderr)
                    break
                # Configurations take turns; each round starts one further along the list.
                for j in range(len(order)):
                    run_ = order[(i + j) % len(order)]
                    _one_round(wrk, run_, seconds, caches.get(run_.config.server or ""), i)
        finally:
            for run_ in runs:
                run_.server.stop()
    results = _results(runs, seconds)
    for line in goals(results):
        print(f"apps goal: {line}", file=sys.stderr)
    return results
