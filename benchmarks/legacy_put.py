"""chorde 1.0.11's in-process put (and get) against ours, each normalised by ``dict.get``.

chorde 1.0.11 (the last 1.x on PyPI) shares our package name, so it lives in a venv of its
own: ``$CHORDE_BENCH_LEGACY_VENV``, else ``~/.cache/chorde-bench/venv-chorde-1.0.11``
(``$XDG_CACHE_HOME`` respected). When that venv is missing this module builds it (about two
minutes: 1.0.11 is an sdist compiled with ``Cython<3`` against ``numpy<2``, installed with
``--no-build-isolation``), unless ``CHORDE_BENCH_LEGACY_BUILD=0`` says not to; when it
cannot, the table says why instead of a figure.

The 1.0.11 figures are timed in a child process running that venv's Python, with this
package's own timing core (``harness.py`` loaded from its file) and the same statements,
keys and settings as ours; ours are timed in this process. The two processes can run at
different speeds (another process on a core, a frequency change), so both time with their
thread's CPU time (a stretch when another process has the core is not counted) and each times
``c.get(k)`` on a plain ``dict`` of the same keys too, and 1.0.11's figures are shown scaled
by ``dict_get_ours / dict_get_theirs``: the table's ratio is then
``(theirs / dict_get_theirs) / (ours / dict_get_ours)``, >1 when ours is faster. Goal
(issue 27): our put at most 0.7x 1.0.11's time, a ratio of at least 1.43. The child also
reports whether 1.0.11's ``chorde.clients.inproc`` and the LRU it stores in are compiled
extensions (they are when the build worked; the pure fallback would be an unfair peer).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from benchmarks.harness import Result

__all__ = ["LEGACY_VERSION", "N_KEYS", "TARGET_RATIO", "legacy_python", "run", "venv_dir"]

LEGACY_VERSION = "1.0.11"
N_KEYS = 10_000
TTL = 300
#: ours / theirs time at most 0.7, as the table's peer / ours ratio.
TARGET_RATIO = 1 / 0.7
_SEED = 20240503
_BENCH = "legacy_put"
_PEER = f"chorde {LEGACY_VERSION}"
_HARNESS = Path(__file__).with_name("harness.py")
_BUILD_TIMEOUT_S = 1200
_CHILD_TIMEOUT_S = 600
#: The operations: (name, statement, keys). "held": the 10,000 keys the client holds (a put
#: overwrites); "new": 20,000 keys put in one fixed order into a full client of 10,000, so
#: each put stores a key evicted 10,000 puts earlier and evicts the oldest entry.
_OPERATIONS = (
    ("put", f"c.put(k, v, {TTL})", "held"),
    ("put-new (evicting)", f"c.put(k, v, {TTL})", "new"),
    ("get-hit", "c.get(k)", "held"),
)
_NORMALISER = "c.get(k)"


def venv_dir() -> Path:
    """Where chorde 1.0.11's venv is (or would be built)."""
    configured = os.environ.get("CHORDE_BENCH_LEGACY_VENV")
    if configured:
        return Path(configured)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "chorde-bench" / f"venv-chorde-{LEGACY_VERSION}"


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _installed(python: Path) -> bool:
    if not python.exists():
        return False
    probe = "import importlib.metadata as m; print(m.version('chorde'))"
    done = subprocess.run(
        [str(python), "-I", "-c", probe], capture_output=True, text=True, timeout=60, cwd="/"
    )
    return done.returncode == 0 and done.stdout.strip() == LEGACY_VERSION


def _build(venv: Path) -> str | None:
    """Build the venv; None when it worked, else why not (the tail of pip's output)."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    python = str(_venv_python(venv))
    steps = [
        [base, "-m", "venv", "--clear", str(venv)],
        [python, "-m", "pip", "install", "-q", "Cython<3", "numpy<2", "setuptools", "wheel"],
        [
            python,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-build-isolation",
            "--no-binary",
            "chorde",
            f"chorde=={LEGACY_VERSION}",
        ],
    ]
    print(f"  legacy_put: building chorde {LEGACY_VERSION}'s venv in {venv} ...", file=sys.stderr)
    for cmd in steps:
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S, cwd="/"
            )
        except subprocess.TimeoutExpired:
            return f"`{' '.join(cmd[1:])}` took over {_BUILD_TIMEOUT_S} s"
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return f"`{' '.join(cmd[1:])}` failed: {' / '.join(tail)}"
    return None


def legacy_python() -> tuple[Path | None, str]:
    """``(python of chorde 1.0.11's venv, "")``, or ``(None, why not)``; builds the venv
    when it is missing and building is allowed."""
    venv = venv_dir()
    python = _venv_python(venv)
    if _installed(python):
        return python, ""
    if os.environ.get("CHORDE_BENCH_LEGACY_BUILD", "1") in ("", "0"):
        return None, f"no chorde {LEGACY_VERSION} venv at {venv} (CHORDE_BENCH_LEGACY_BUILD=0)"
    why = _build(venv)
    if why is not None:
        return None, f"cannot build chorde {LEGACY_VERSION}'s venv at {venv}: {why}"
    if not _installed(python):
        return None, f"chorde {LEGACY_VERSION} is not importable from {venv} after building it"
    return python, ""


# Runs in either process: this one for ours, the venv's Python for 1.0.11's. It builds the
# client and the dict, fills both with the same keys, and times every operation together
# with the normaliser (interleaved), printing JSON.
_MEASURE = textwrap.dedent(
    """
    import importlib.util, json, random, sys

    def measure(harness_path, quick, n_keys, seed, ttl, operations, normaliser):
        spec = importlib.util.spec_from_file_location("_chorde_bench_harness", harness_path)
        harness = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = harness
        spec.loader.exec_module(harness)
        harness.set_cpu_clock(True)
        from chorde.clients import inproc
        from chorde.clients.inproc import InprocCacheClient

        keys = list(range(n_keys))
        rng = random.Random(seed)
        order = rng.sample(keys, n_keys)
        new_order = rng.sample(range(2 * n_keys), 2 * n_keys)
        value = object()
        client = InprocCacheClient(n_keys)
        evicting = InprocCacheClient(n_keys)
        plain = {}
        for k in keys:
            client.put(k, value, ttl)
            plain[k] = value
        for k in new_order:
            evicting.put(k, value, ttl)
        held = sum(1 for k in keys if client.get(k, None) is value)
        if held != n_keys:
            raise RuntimeError(f"the client holds {held} of {n_keys} keys")
        config = harness.TimingConfig.for_run(quick)
        figures = {}
        for name, stmt, which in operations:
            target, sequence = (client, order) if which == "held" else (evicting, new_order)
            cases = [
                harness.Case(stmt, target, sequence, value),
                harness.Case(normaliser, plain, order, value),
            ]
            ours, dict_get = harness.measure_interleaved(cases, config)
            figures[name] = {"ns": ours.ns_per_op, "dict_get_ns": dict_get.ns_per_op,
                             "loops": ours.loops, "repeats": ours.repeats}
        store = getattr(client, "store", None)
        store_module = getattr(type(store), "__module__", "") if store is not None else ""
        store_file = getattr(sys.modules.get(store_module), "__file__", "") or ""
        return {
            "figures": figures,
            "inproc_file": inproc.__file__,
            "store_type": f"{store_module}.{type(store).__name__}" if store is not None else "",
            "store_file": store_file,
            "python": sys.version.split()[0],
        }
    """
)

_CHILD_MAIN = "\nprint(json.dumps(measure(*json.loads(sys.argv[1]))))\n"


def _measure_here(quick: bool) -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(_MEASURE, namespace)
    args = (str(_HARNESS), quick, N_KEYS, _SEED, TTL, _OPERATIONS, _NORMALISER)
    return namespace["measure"](*args)


def _measure_legacy(python: Path, quick: bool) -> dict[str, Any]:
    args = [str(_HARNESS), quick, N_KEYS, _SEED, TTL, _OPERATIONS, _NORMALISER]
    # -I: the venv's own chorde, never this checkout's (same package name).
    done = subprocess.run(
        [str(python), "-I", "-c", _MEASURE + _CHILD_MAIN, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=_CHILD_TIMEOUT_S,
        cwd="/",
    )
    if done.returncode != 0:
        raise RuntimeError(f"chorde {LEGACY_VERSION}'s measurement failed: {done.stderr[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _compiled(path: str) -> bool:
    return path.endswith(".so") or path.endswith(".pyd")


def _build_label(doc: dict[str, Any]) -> str:
    inproc = "compiled" if _compiled(doc["inproc_file"]) else "pure Python"
    store = "compiled" if _compiled(doc["store_file"]) else "pure Python"
    return f"inproc {inproc} ({Path(doc['inproc_file']).name}), store {doc['store_type']} {store}"


def run(quick: bool) -> list[Result]:
    """Measure ours here and 1.0.11's in its venv; see the module docstring."""
    python, why = legacy_python()
    ours = _measure_here(quick)
    ours_label = _build_label(ours)
    results: list[Result] = []
    theirs: dict[str, Any] | None = None
    if python is not None:
        try:
            theirs = _measure_legacy(python, quick)
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
            why = str(exc)
    for name, stmt, _which in _OPERATIONS:
        mine = ours["figures"][name]
        results.append(
            Result(
                _BENCH,
                name,
                "chorde",
                mine["ns"],
                api=stmt,
                ops=N_KEYS,
                loops=mine["loops"],
                repeats=mine["repeats"],
                note=f"{ours_label}; dict.get {mine['dict_get_ns']:.1f} ns",
                extra={"dict_get_ns": mine["dict_get_ns"]},
            )
        )
        if theirs is None:
            results.append(Result(_BENCH, name, _PEER, None, note=f"skipped: {why}"))
            continue
        fig = theirs["figures"][name]
        scale = mine["dict_get_ns"] / fig["dict_get_ns"]
        ratio = (fig["ns"] / fig["dict_get_ns"]) / (mine["ns"] / mine["dict_get_ns"])
        note = (
            f"{_build_label(theirs)}; raw {fig['ns']:.1f} ns, dict.get {fig['dict_get_ns']:.1f}"
            f" ns in its process (shown x{scale:.3f}); ours/theirs {1 / ratio:.2f}x time"
        )
        if name.startswith("put"):
            verdict = "met" if ratio >= TARGET_RATIO else "SHORT"
            note += f", goal <= 0.70x: {verdict}"
        results.append(
            Result(
                _BENCH,
                name,
                _PEER,
                fig["ns"] * scale,
                api=stmt,
                ops=N_KEYS,
                loops=fig["loops"],
                repeats=fig["repeats"],
                note=note,
                extra={
                    "raw_ns": fig["ns"],
                    "dict_get_ns": fig["dict_get_ns"],
                    "ratio": ratio,
                    "our_time_over_theirs": 1 / ratio,
                    "inproc_file": theirs["inproc_file"],
                    "store_type": theirs["store_type"],
                    "store_file": theirs["store_file"],
                },
            )
        )
    return results


if __name__ == "__main__":  # build the venv ahead of a run: python -m benchmarks.legacy_put
    found, reason = legacy_python()
    print(found or reason)
    sys.exit(0 if found else 1)
