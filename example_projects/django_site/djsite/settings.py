"""Settings of the example site.

The cache is chorde's in-process stack by default; set ``CHORDE_DJANGO_SITE_MEMCACHED`` to
``host:port[;host:port]`` to use memcached instead (values then survive restarts of the
site and are shared by every process running it), or ``CHORDE_DJANGO_SITE_REDIS`` to a client
URL (``redis://localhost:6379/0``) to use Redis or Valkey.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent

# A development-only default; a real deployment reads its secret from the environment.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "chorde-example-site-not-a-secret-" + "x" * 20)
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.sessions",
    "chorde_django",  # runs ChordeCache's system checks at startup
    "djsite",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "djsite.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": []},
    }
]
DATABASES: dict = {}  # nothing here needs a database: sessions live in the cache
USE_TZ = True

_MEMCACHED = os.environ.get("CHORDE_DJANGO_SITE_MEMCACHED", "")
# A client URL is a LOCATION as it is (redis://, valkey://, memcached:// ...).
_MEMCACHED = os.environ.get("CHORDE_DJANGO_SITE_REDIS", "") or _MEMCACHED
if _MEMCACHED:
    CACHES = {
        "default": {
            "BACKEND": "chorde_django.ChordeCache",
            "LOCATION": _MEMCACHED,
            "KEY_PREFIX": "site",
            # clear() invalidates this namespace only, never the whole memcached.
            "OPTIONS": {"NAMESPACE": "djsite-pages"},
        },
        "sessions": {
            "BACKEND": "chorde_django.ChordeCache",
            "LOCATION": _MEMCACHED,
            "TIMEOUT": 14 * 24 * 3600,
            "OPTIONS": {"NAMESPACE": "djsite-sessions"},
        },
    }
else:
    CACHES = {
        "default": {"BACKEND": "chorde_django.ChordeCache", "KEY_PREFIX": "site"},
        "sessions": {
            "BACKEND": "chorde_django.ChordeCache",
            "LOCATION": "sessions",
            "TIMEOUT": 14 * 24 * 3600,
            "OPTIONS": {"CLIENT": "inproc", "SIZE": 100_000},
        },
    }

# Cache-backed sessions, in their own alias so clearing the page cache keeps them.
SESSION_ENGINE = "django.contrib.sessions.backends.cache"
SESSION_CACHE_ALIAS = "sessions"
