"""chorde_django's counters and tags: function_stats/cache_stats/invalidate_tags and the
``chorde_stats`` management command, in-process and on memcached, sync and async."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import uuid
from typing import Any

import pytest
from django.core.cache import caches
from django.core.management import CommandError, call_command
from django.test import override_settings
from django_helpers import REPO, subprocess_env

import chorde_django
from chorde_django import cached

BACKEND = "chorde_django.ChordeCache"
_INPROC = {"CLIENT": "inproc"}


def _name() -> str:
    return f"stats-{uuid.uuid4().hex}"


@pytest.fixture(params=["inproc", "memcached"])
def alias(request: pytest.FixtureRequest) -> Any:
    """A settings.CACHES with a ChordeCache alias 'site' (in-process or memcached) beside
    the default one, and a non-chorde alias."""
    site: dict[str, Any] = {"BACKEND": BACKEND, "LOCATION": _name(), "OPTIONS": _INPROC}
    if request.param == "memcached":
        site = {"BACKEND": BACKEND, "LOCATION": request.getfixturevalue("memcached").address}
    settings = {
        "default": {"BACKEND": BACKEND, "LOCATION": _name(), "OPTIONS": _INPROC},
        "site": site,
        "plain": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    }
    with override_settings(CACHES=settings):
        yield "site"


def test_function_stats_tags_and_the_command(alias: str) -> None:
    calls: list[int] = []

    @cached(60, alias=alias, tags=lambda user: [f"user:{user}"])
    def profile(user: int) -> list[int]:
        calls.append(user)
        return [user, len(calls)]

    first = profile(1)
    assert profile(1) == first
    chorde_django.invalidate_tags("user:1", alias=alias)
    assert profile(1) != first
    name = f"{__name__}.{profile.__qualname__}"
    info = chorde_django.function_stats(alias)[name]
    assert (info.hits, info.misses) == (1, 2)
    summary = chorde_django.cache_stats(alias)
    assert summary["usage"] >= 1 and summary["stats"].sets >= 2

    out = io.StringIO()
    call_command("chorde_stats", stdout=out)
    text = out.getvalue()
    assert "cache 'default'" in text and f"cache '{alias}'" in text
    assert "cache 'plain'" not in text  # not a ChordeCache
    assert f"{name}: hits=1 misses=2" in text
    out = io.StringIO()
    call_command("chorde_stats", "--alias", alias, stdout=out)
    assert "cache 'default'" not in out.getvalue() and name in out.getvalue()
    with pytest.raises(CommandError, match="not a ChordeCache alias"):
        call_command("chorde_stats", "--alias", "plain", stdout=io.StringIO())


async def test_async_tags(alias: str) -> None:
    calls: list[int] = []

    @cached(60, alias=alias, tags=["catalog"])
    async def items(page: int) -> list[int]:
        calls.append(page)
        await asyncio.sleep(0)
        return [page, len(calls)]

    first = await items(1)
    assert await items(1) == first
    await chorde_django.ainvalidate_tags("catalog", alias=alias)
    assert await items(1) != first
    assert chorde_django.function_stats(alias)[f"{__name__}.{items.__qualname__}"].hits == 1


def test_helpers_refuse_other_backends(alias: str) -> None:
    assert caches["plain"] is not None
    with pytest.raises(TypeError, match=r"not a chorde_django\.ChordeCache"):
        chorde_django.function_stats("plain")
    with pytest.raises(TypeError, match=r"not a chorde_django\.ChordeCache"):
        chorde_django.invalidate_tags("x", alias="plain")


def test_manage_py_chorde_stats_on_the_example_site() -> None:
    site = REPO / "example_projects" / "django_site"
    out = subprocess.run(
        [sys.executable, "manage.py", "chorde_stats"],
        cwd=site,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "cache 'default'" in out.stdout and "cache 'sessions'" in out.stdout
    assert "client: hits=" in out.stdout
