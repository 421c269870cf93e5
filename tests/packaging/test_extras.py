"""Each adapter and optional feature, imported where its dependency is missing, raises an
ImportError that names the extra to install.

The check runs in a real venv holding nothing but a copy of chorde's packages (the copy this
session imports: the checkout or the installed wheel), like ``pip install --no-deps chorde``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest

import chorde

#: What to import, and the extra that brings its dependency.
FEATURES = {
    "chorde.dns": "dns",
    "chorde.mq.zmqbus": "mq",
    "chorde.mq.broker": "mq",
    "chorde.clients.redis": "redis",
    "chorde.shmem": "shmem",
    "chorde_django": "django",
    "chorde_django.backend": "django",
    "chorde_flask": "flask",
    "chorde_tornado": "tornado",
    "chorde_starlette": "starlette",
    "chorde_starlette.middleware": "starlette",
    "chorde.exporters.prometheus": "prometheus",
    "chorde.exporters.otel": "otel",
}
PACKAGES = ("chorde", "chorde_django", "chorde_flask", "chorde_tornado", "chorde_starlette")

_PROBE = """
import importlib, json, sys
out = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ImportError as exc:
        out[name] = [type(exc).__name__, str(exc)]
    else:
        out[name] = None
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The python of a new venv with chorde's packages in it and nothing else."""
    where = tmp_path_factory.mktemp("bare-venv")
    venv.create(where, with_pip=False)
    python = where / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    source = Path(chorde.__file__).resolve().parent.parent
    for name in PACKAGES:
        shutil.copytree(
            source / name, Path(purelib) / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    return str(python)


def test_the_bare_venv_has_none_of_the_dependencies(bare_python: str) -> None:
    deps = ("pymemcache", "dns", "zmq", "numpy", "django", "flask", "tornado", "starlette", "redis")
    code = f"import importlib.util as u; print([m for m in {deps!r} if u.find_spec(m)])"
    out = subprocess.run([bare_python, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert sysconfig.get_paths()["purelib"] not in out.stdout


def test_core_imports_without_any_extra(bare_python: str) -> None:
    code = (
        "import chorde, chorde.clients.inproc, chorde.decorators, chorde.clients.tiered,"
        " chorde.mq, chorde.clients.memcached, chorde.clients.elasticache;"  # (no pymemcache)
        " print(chorde.__version__)"
    )
    out = subprocess.run([bare_python, "-W", "error", "-c", code], capture_output=True, text=True)
    assert (out.returncode, out.stdout.strip(), out.stderr) == (0, chorde.__version__, "")


def test_each_feature_names_its_extra(bare_python: str) -> None:
    out = subprocess.run(
        [bare_python, "-c", _PROBE, *FEATURES], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)
    for name, extra in FEATURES.items():
        assert results[name] is not None, f"{name} imported without its dependency"
        kind, message = results[name]
        assert kind == "MissingDependencyError", (name, kind, message)
        assert f"pip install 'chorde[{extra}]'" in message, (name, message)


def test_the_error_is_an_import_error():
    from chorde.errors import MissingDependencyError

    assert issubclass(MissingDependencyError, ImportError)
