"""Run Django's own ``BaseCacheTests`` (tests/cache/tests.py) against ChordeCache.

Run by tests/django/test_django_suite.py in a subprocess, so Django's global state (its
settings, test database, signal handlers) stays out of the pytest process::

    python tests/django/django_suite_runner.py DJANGO_TESTS_DIR STACK OUT.json [SERVER]

``DJANGO_TESTS_DIR`` holds ``cache/`` extracted from the Django sdist; ``STACK`` is
``inproc``, ``memcached`` or ``tiered`` (then ``SERVER`` is ``host:port``). The outcome of
every test goes to ``OUT.json``.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
import unittest
from typing import Any


def _configure(tests_dir: str) -> None:
    sys.path.insert(0, tests_dir)
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="chorde-django-suite-" + "x" * 40,
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "chorde_django",
            "cache",
        ],
        CACHES={"default": {"BACKEND": "chorde_django.ChordeCache"}},
        # As Django's own test settings (tests/test_sqlite.py, runtests.py) have them.
        USE_TZ=False,
        LANGUAGE_CODE="en",
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True,
                "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
            }
        ],
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        ROOT_URLCONF=None,
        MIDDLEWARE=[],
    )
    django.setup()


def _stack_params(stack: str, server: str | None) -> dict[str, Any]:
    if stack == "inproc":
        return {"OPTIONS": {"CLIENT": "inproc"}}
    if stack in ("memcached", "tiered"):
        if not server:
            raise SystemExit(f"the {stack} stack needs a SERVER argument")
        # A namespace of its own, so clear() in one run never touches another's entries.
        return {
            "LOCATION": server,
            "OPTIONS": {"CLIENT": stack, "NAMESPACE": f"djsuite{os.getpid()}"},
        }
    raise SystemExit(f"unknown stack {stack!r}")


# Tests of BaseCacheTests that are inherently about another backend, with the reason.
_CULL = (
    "Django's cull (drop 1/CULL_FREQUENCY of a full cache, MAX_ENTRIES) belongs to its "
    "LocMem/file/DB backends; chorde stores evict the least recently used entry one at a "
    "time instead (tested in tests/django/test_django_backend.py: test_lru_eviction_*). "
    "Django's memcached and redis runs exclude these caches too."
)
SKIPS: dict[str, dict[str, str]] = {
    "inproc": {
        "test_cull": _CULL,
        "test_zero_cull": _CULL,
        "test_cull_delete_when_store_empty": _CULL,
    },
    "memcached": {
        "test_cull": _CULL,
        "test_zero_cull": _CULL,
        "test_cull_delete_when_store_empty": _CULL,
    },
    "tiered": {
        "test_cull": _CULL,
        "test_zero_cull": _CULL,
        "test_cull_delete_when_store_empty": _CULL,
    },
}


def _suite_classes(stack: str, server: str | None) -> list[type]:
    from cache.tests import BaseCacheTests, caches_setting_for_tests
    from django.test import TestCase, override_settings

    caches = caches_setting_for_tests(
        BACKEND="chorde_django.ChordeCache",
        # Culling aliases rely on MAX_ENTRIES/CULL_FREQUENCY; see SKIPS.
        exclude={"cull", "zero_cull"},
        **_stack_params(stack, server),
    )
    namespace: dict[str, Any] = {}
    for name, reason in SKIPS[stack].items():
        namespace[name] = unittest.skip(reason)(getattr(BaseCacheTests, name))
    cls = type(f"ChordeCache_{stack}_Tests", (BaseCacheTests, TestCase), namespace)
    cls.__module__ = __name__
    return [override_settings(CACHES=caches)(cls)]


#: Django's tests of the cache middleware, ``cache_page``, ``django.utils.cache`` and
#: template responses: backend-agnostic, they run with every alias moved to ChordeCache.
MIDDLEWARE_CLASSES = (
    "CacheUtils",
    "PrefixedCacheUtils",
    "CacheHEADTest",
    "CacheI18nTest",
    "PrefixedCacheI18nTest",
    "CacheMiddlewareTest",
    "TestWithTemplateResponse",
)


def _retarget(caches: dict[str, Any], stack: str, server: str | None) -> dict[str, Any]:
    """The same aliases (LOCATION, TIMEOUT, KEY_PREFIX ...) on ChordeCache's ``stack``."""
    moved = {}
    for alias, params in caches.items():
        params = {k: v for k, v in params.items() if k not in ("BACKEND", "LOCATION")}
        base = _stack_params(stack, server)
        location = caches[alias].get("LOCATION", "")
        if stack == "inproc":
            base["LOCATION"] = location  # separate stores stay separate, as with LocMem
        else:
            base["OPTIONS"]["NAMESPACE"] += f"-{location}"
        moved[alias] = {"BACKEND": "chorde_django.ChordeCache", **params, **base}
    return moved


def _middleware_classes(stack: str, server: str | None) -> list[type]:
    import cache.tests
    from django.test import override_settings

    classes = []
    for name in MIDDLEWARE_CLASSES:
        original = getattr(cache.tests, name)
        caches = _retarget(original._overridden_settings["CACHES"], stack, server)
        cls = type(f"{name}_{stack}", (original,), {"__module__": __name__})
        classes.append(override_settings(CACHES=caches)(cls))
    return classes


class _Result(unittest.TextTestResult):
    """Records every test's outcome (subtests included) for the JSON report."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outcomes: dict[str, dict[str, Any]] = {}

    def _note(self, test: Any, outcome: str, detail: str = "") -> None:
        name = ".".join(test.id().rsplit(".", 2)[-2:]) if hasattr(test, "id") else str(test)
        record = self.outcomes.setdefault(name, {"outcome": "passed", "detail": ""})
        if outcome != "passed" or record["outcome"] == "passed":
            record["outcome"] = outcome
            record["detail"] = (record["detail"] + "\n" + detail).strip()

    def addSuccess(self, test: Any) -> None:
        super().addSuccess(test)
        self._note(test, "passed")

    def addFailure(self, test: Any, err: Any) -> None:
        super().addFailure(test, err)
        self._note(test, "failed", "".join(traceback.format_exception(*err)))

    def addError(self, test: Any, err: Any) -> None:
        super().addError(test, err)
        self._note(test, "error", "".join(traceback.format_exception(*err)))

    def addSkip(self, test: Any, reason: str) -> None:
        super().addSkip(test, reason)
        self._note(test, "skipped", reason)

    def addSubTest(self, test: Any, subtest: Any, err: Any) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._note(
                test, "failed", f"{subtest.id()}\n" + "".join(traceback.format_exception(*err))
            )

    def addExpectedFailure(self, test: Any, err: Any) -> None:
        super().addExpectedFailure(test, err)
        self._note(test, "passed")

    def addUnexpectedSuccess(self, test: Any) -> None:
        super().addUnexpectedSuccess(test)
        self._note(test, "failed", "unexpected success")


def main(argv: list[str]) -> int:
    """Run the suite for one stack; exit 0 when it ran (the JSON says how it went)."""
    if len(argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    tests_dir, stack, out = argv[:3]
    server = argv[3] if len(argv) == 4 else None
    _configure(tests_dir)
    from django.test.runner import DiscoverRunner

    runner = DiscoverRunner(verbosity=0, interactive=False)
    runner.setup_test_environment()
    old_config = runner.setup_databases()
    try:
        loader = unittest.TestLoader()
        suite = unittest.TestSuite(
            loader.loadTestsFromTestCase(cls)
            for cls in [*_suite_classes(stack, server), *_middleware_classes(stack, server)]
        )
        result = unittest.TextTestRunner(stream=sys.stderr, verbosity=1, resultclass=_Result).run(
            suite
        )
    finally:
        runner.teardown_databases(old_config)
        runner.teardown_test_environment()
    import django

    report = {
        "django": django.get_version(),
        "stack": stack,
        "tests_run": result.testsRun,
        "outcomes": result.outcomes,
    }
    with open(out, "w") as f:
        json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
