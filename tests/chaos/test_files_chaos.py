"""FilesCacheClient under SIGKILL and SIGSTOP: writers killed mid-put, and at random
moments; a process frozen while it holds the writers' lock.

Real writer processes share one cache directory and are killed with SIGKILL or stopped
with SIGSTOP. What the files client documents, and these tests assert:

* a dead writer's temporary file and reservation are reclaimed without waiting for a sweep:
  by the next write of any process (each looks at most every 0.1 s) or the next ``usage``
  read; asserted within 2 s of the kill on this loaded machine;
* the shared counter agrees with the directory afterwards: exactly with the cache's own
  count (sizes rounded up to blocks), and within 5% of ``du``;
* nothing a killed writer left is ever read as a value;
* a process stopped while it holds the writers' lock delays no call by more than the lock
  timeout (5 s): writes are then given up (dropped, counted) and deletes still done.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from chorde.clients import _filestore as fs
from chorde.clients.files import FilesCacheClient

SECRET = "chaos-files"
MB = 1024 * 1024
#: How long after a SIGKILL its temporary may still be there (documented: the next write,
#: at most 0.1 s later; the rest is margin for a loaded 2-CPU machine).
RECLAIM_BOUND = 2.0

# Writes values full of its own id (own-keys: numpy arrays, as big values are), or puts,
# adds and deletes bytes values made of their key on 200 keys shared by all (shared-keys),
# until a stop file appears (then prints its longest call and its errors), a bounded number
# of times.
WRITER = """
import json, os, random, sys, time
from chorde.clients.files import FilesCacheClient

path, size, wid, low, high, pause, mode = sys.argv[1:8]
size, wid, low, high, pause = int(size), int(wid), int(low), int(high), float(pause)
c = FilesCacheClient(path, size, "chaos-files")
rng = random.Random(wid)
stop = os.path.join(os.path.dirname(path), "stop")
if mode == "own-keys":
    import numpy as np
print("ready", flush=True)
longest = 0.0
for i in range(100_000):
    if os.path.exists(stop):
        break
    n = rng.randrange(low, high) // 4
    started = time.monotonic()
    if mode == "own-keys":
        c.put((wid, i % 4), np.full(n, wid, dtype=np.int32), 300)
    else:
        key = rng.randrange(200)
        value = key.to_bytes(4, "little") * n
        op = rng.random()
        if op < 0.1:
            c.delete(key)
        elif op < 0.2:
            c.add(key, value, 300)
        else:
            c.put(key, value, 300)
    longest = max(longest, time.monotonic() - started)
    if pause:
        time.sleep(pause)
print(json.dumps({"longest": longest, "errors": c.stats.errors, "calls": i}), flush=True)
"""


def start_writers(path: Path, size: int, ids, low: int, high: int, pause: float, mode: str):
    code = textwrap.dedent(WRITER)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, *map(str, (path, size, wid, low, high, pause)), mode],
            stdout=subprocess.PIPE,
            text=True,
        )
        for wid in ids
    ]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    return procs


def stop_all(procs) -> None:
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    for proc in procs:
        proc.wait(30)
        proc.stdout.close()


@pytest.fixture
def record(request):
    """``record(name, value, unit)``: a figure for the chaos suite's summary (a no-op
    without the suite's conftest)."""
    try:
        return request.getfixturevalue("figures").record
    except pytest.FixtureLookupError:
        return lambda name, value, unit="s": None


def counted(path: Path) -> int:
    """The directory's files as the cache counts them: sizes rounded up to whole blocks."""
    block = os.statvfs(path).f_frsize
    return sum(-(-st.st_size // block) * block for st in file_stats(path))


def allocated(path: Path) -> int:
    """What the directory's entry files and temporaries take on disk (st_blocks)."""
    return sum(st.st_blocks * 512 for st in file_stats(path))


def file_stats(path: Path):
    for sub in ("entries", "tmp"):
        for root, _, files in os.walk(path / sub):
            for name in files:
                with contextlib.suppress(FileNotFoundError):
                    yield os.stat(os.path.join(root, name))


def du(path: Path) -> int:
    """``du``: every block under the directory, directories and the state file included."""
    out = subprocess.run(
        ["du", "--block-size=1", "-s", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return int(out.split()[0])


def temporaries(path: Path) -> list[str]:
    return os.listdir(path / "tmp")


def writing(proc: subprocess.Popen, path: Path) -> bool:
    """Whether a writer process has a temporary in the cache now."""
    return any(name.startswith(f"{proc.pid}.") for name in temporaries(path))


def test_writers_killed_mid_put_are_reclaimed_and_counted(tmp_path, record):
    path = tmp_path / "cache"
    size = 512 * MB
    observer = FilesCacheClient(path, size, SECRET)  # opened before: it rebuilds nothing
    block = os.statvfs(path).f_frsize
    victims = start_writers(path, size, range(20), 1 * MB, 6 * MB, 0.01, "own-keys")
    # Two writers that live on, as the rest of a host would.
    survivors = start_writers(path, size, (20, 21), 64 * 1024, 512 * 1024, 0.005, "own-keys")
    alive = {proc.pid for proc in victims}
    killed: dict[int, tuple[float, str]] = {}  # pid -> (when, its temporary)
    reclaimed: dict[int, float] = {}  # pid -> seconds from its kill until its file was gone
    try:
        deadline = time.monotonic() + 15
        while len(reclaimed) < len(victims) and time.monotonic() < deadline:
            for entry in os.scandir(path / "tmp"):
                pid, _, reserved, _ = entry.name.split(".")
                if int(pid) not in alive:
                    continue
                try:
                    written = entry.stat().st_size
                except FileNotFoundError:
                    continue
                if 0 < written < int(reserved) - block:  # caught writing its value
                    os.kill(int(pid), signal.SIGKILL)
                    killed[int(pid)] = (time.monotonic(), entry.path)
                    alive.discard(int(pid))
            now = time.monotonic()
            for pid, (when, tmp) in killed.items():
                if pid not in reclaimed and not os.path.exists(tmp):
                    reclaimed[pid] = now - when
            time.sleep(0.002)
        (tmp_path / "stop").touch()
        for proc in survivors:
            assert proc.wait(30) == 0
    finally:
        stop_all(victims + survivors)

    assert len(killed) == 20, f"only {len(killed)} writers were caught mid-put"
    assert all(proc.returncode == -signal.SIGKILL for proc in victims)
    assert len(reclaimed) == 20, "some dead writers' temporaries were never reclaimed"
    slowest = max(reclaimed.values())
    assert slowest < RECLAIM_BOUND
    assert temporaries(path) == []

    usage = observer.usage
    on_disk = du(path)
    assert usage == counted(path)
    assert abs(usage - on_disk) <= 0.05 * on_disk, (usage, on_disk)
    assert abs(usage - allocated(path)) <= 0.05 * allocated(path)
    for wid in range(22):
        for k in range(4):
            got = observer.get((wid, k), None)
            assert got is None or (got == wid).all()
            del got
    assert observer.stats.errors == 0
    record("files: slowest reclaim of a SIGKILLed writer's temporary", slowest)
    record("files: median reclaim", sorted(reclaimed.values())[len(reclaimed) // 2], unit="s")
    record("files: usage after 20 kills mid-put", usage / MB, unit="MiB")
    record("files: du after 20 kills mid-put", on_disk / MB, unit="MiB")
    record("files: usage vs du", 100 * (usage - on_disk) / on_disk, unit="%")


def test_writers_killed_at_random_moments_leave_an_exact_counter(tmp_path, record):
    path = tmp_path / "cache"
    size = 48 * MB  # less than the 200 keys' values: evictions under the lock too
    observer = FilesCacheClient(path, size, SECRET)
    rng = random.Random(23)
    args = (path, size)
    writers = start_writers(*args, range(6), 4096, 1024 * 1024, 0.001, "shared-keys")
    everyone = list(writers)
    mid_write = 0
    try:
        # 30 kills wherever each writer happens to be (writing, waiting for the lock or
        # holding it), each replaced by a new writer.
        for n in range(30):
            time.sleep(rng.uniform(0.01, 0.1))
            victim = writers.pop(rng.randrange(len(writers)))
            mid_write += writing(victim, path)
            victim.kill()
            victim.wait(30)
            writers += start_writers(*args, [100 + n], 4096, 1024 * 1024, 0.001, "shared-keys")
            everyone += writers[-1:]
        for proc in writers:  # and the last ones too
            mid_write += writing(proc, path)
            proc.kill()
    finally:
        stop_all(everyone)
    assert all(proc.returncode == -signal.SIGKILL for proc in everyone)

    # No writer is left: the observer's usage read does the reclaiming.
    started = time.monotonic()
    usage = observer.usage
    took = time.monotonic() - started
    assert temporaries(path) == []
    assert usage == counted(path)
    assert abs(usage - allocated(path)) <= 0.05 * allocated(path)
    assert usage <= size
    for key in range(200):
        got = observer.get(key, None)
        assert got is None or got == key.to_bytes(4, "little") * (len(got) // 4)
    assert observer.stats.errors == 0
    record("files: random kills that caught a temporary", mid_write, unit="of 36")
    record("files: usage read reclaiming after the last kills (no writer)", took)


FROZEN_HOLDER = """
import os, signal, sys
from chorde.clients.files import FilesCacheClient
c = FilesCacheClient(sys.argv[1], 10**8, "chaos-files")
with c._store._section():
    print("holding", flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)  # frozen with the writers' lock
"""


def test_a_frozen_lock_holder_bounds_every_writer(tmp_path, record):
    path = tmp_path / "cache"
    size = 64 * MB
    observer = FilesCacheClient(path, size, SECRET)
    for key in range(200):
        observer.put(key, key.to_bytes(4, "little") * 1000, 300)
    writers = start_writers(path, size, range(4), 4096, 64 * 1024, 0.01, "shared-keys")
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(FROZEN_HOLDER), str(path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "holding\n"
        # Meanwhile every writer meets the frozen lock, gives up after LOCK_TIMEOUT and
        # tries again; so does a delete here, which is not lost for that.
        started = time.monotonic()
        observer.delete(0)
        delete_took = time.monotonic() - started
        time.sleep(1)
        holder.send_signal(signal.SIGCONT)
        assert holder.wait(30) == 0
        observer.put("after", b"thawed", 300)  # the lock is free again
        time.sleep(0.5)
        (tmp_path / "stop").touch()
        reports = [json.loads(proc.communicate(timeout=30)[0]) for proc in writers]
    finally:
        holder.kill()
        holder.wait(30)
        stop_all(writers)
    longest = max(report["longest"] for report in reports)
    assert longest <= fs.LOCK_TIMEOUT + 1.0, reports
    # Every writer met the frozen lock and waited it out: a put or add then gives up,
    # counted as an error; a delete goes ahead without the lock (as the observer's did), so a
    # writer that met the lock with a delete may have no error when the lock thaws.
    assert all(report["longest"] >= fs.LOCK_TIMEOUT - 0.05 for report in reports), reports
    assert sum(report["errors"] for report in reports) > 0, reports
    assert observer.get("after") == b"thawed" and observer.get(0, None) is None
    # Entries removed without the lock stay counted until the next rebuild: over, never under.
    assert observer.usage >= counted(path)
    assert delete_took <= fs.LOCK_TIMEOUT + 1.0
    record("files: frozen lock holder, longest writer call", longest)
    record("files: frozen lock holder, a delete", delete_took)
