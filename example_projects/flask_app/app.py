"""Example Flask app using chorde_flask: a cached slow view, a memoized function, invalidation.

Run it (in-process cache)::

    flask --app example_projects/flask_app/app.py run --port 5000

or on memcached, configured through Flask's ``FLASK_*`` environment variables::

    FLASK_CHORDE_CLIENT=memcached FLASK_CHORDE_SERVERS=localhost:11211 \\
    FLASK_SECRET_KEY=change-me flask --app example_projects/flask_app/app.py run --port 5000

or on Redis, by URL: ``FLASK_CHORDE_URL=redis://localhost:6379`` instead of the two above.

Endpoints: ``GET /report?n=3`` (slow, cached 60 s), ``GET /square/3`` (memoized function),
``POST /invalidate?n=3`` (drops both cached results), ``GET /stats`` (work done by this
process, to see what the cache saved).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from flask import Flask, jsonify, request

from chorde_flask import Chorde

chorde = Chorde()

_lock = threading.Lock()
_work = {"report": 0, "square": 0}


def _count(what: str) -> None:
    with _lock:
        _work[what] += 1


@chorde.memoize(ttl=300)
def slow_square(n: int) -> int:
    """An expensive function, cached per argument."""
    time.sleep(0.2)
    _count("square")
    return n * n


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The app factory (``flask --app`` finds it by name)."""
    app = Flask(__name__)
    # A development default; production sets FLASK_SECRET_KEY (chorde derives its key from it).
    app.config["SECRET_KEY"] = "example-only-secret"
    app.config.from_prefixed_env()
    app.config.update(config or {})
    chorde.init_app(app)

    @app.get("/report")
    @chorde.cached(ttl=60)
    def report() -> Any:
        n = request.args.get("n", 1, type=int)
        time.sleep(0.3)
        _count("report")
        return jsonify(n=n, square=slow_square(n), pid=os.getpid(), rendered_at=time.time())

    @app.get("/square/<int:n>")
    def square(n: int) -> Any:
        return jsonify(n=n, square=slow_square(n))

    @app.post("/invalidate")
    def invalidate() -> Any:
        n = request.args.get("n", 1, type=int)
        chorde.invalidate_view(f"/report?n={n}")
        slow_square.invalidate(n)
        return jsonify(invalidated=n)

    @app.get("/stats")
    def stats() -> Any:
        with _lock:
            work = dict(_work)
        return jsonify(work=work, client=type(chorde.client).__name__, pid=os.getpid())

    return app
