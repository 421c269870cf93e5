"""An origin server for the reverse-proxy tests (plain ASGI, run under uvicorn).

``GET /r/...`` is a resource whose response fields come from the query string, so each test
says what the origin sends without a route of its own:

* ``cc``: ``Cache-Control``; ``cdn``: ``CDN-Cache-Control``; ``vary``; ``tags``:
  ``Surrogate-Key``; ``status``;
* ``expires`` and ``age``: one field line per occurrence (``age=10&age=100`` sends two
  ``Age`` lines);
* ``date``: the ``Date`` value (default: now; ``none``: no Date);
* ``lm_ago``: ``Last-Modified`` that many seconds before the path's first request, or
  ``lm``: its value as given (no Last-Modified by default);
* ``etag``: the ``ETag`` (default ``"<path>-v<version>"``, and the request's values of the
  fields named in ``vary``; ``none``: no ETag);
* ``size``: a body of that many bytes (default: a short line naming path and version).

Like a real origin it answers a matching ``If-None-Match`` (else an ``If-Modified-Since`` at
or after its ``Last-Modified``) with ``304`` and the same fields, and a single satisfiable
byte ``Range`` of a ``200`` with ``206``.

Per path, state the tests change: ``POST /_state/<path>`` with a JSON object sets
``version`` (part of the default ETag and of the body), ``fields`` (extra response fields,
name to value, replacing those of the same name), ``fail`` (answer this status instead) and
``hold`` (true: requests wait until it is set false again, 10 s at most).
``GET /_log/<path>`` lists the requests the path received, in order: the conditional,
range and ``Accept-Language`` fields they carried and the status they were answered.

Uvicorn must run it with ``--no-date-header`` (the origin sends its own ``Date``).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import time
import urllib.parse
from typing import Any

HOLD_LIMIT = 10.0

_state: dict[str, dict[str, Any]] = {}
_gates: dict[str, asyncio.Event] = {}
_log: dict[str, list[dict[str, Any]]] = {}


def _state_of(path: str) -> dict[str, Any]:
    return _state.setdefault(path, {"version": 1, "fields": {}, "fail": None})


def _gate(path: str) -> asyncio.Event:
    gate = _gates.get(path)
    if gate is None:
        gate = _gates[path] = asyncio.Event()
        gate.set()
    return gate


async def _read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _answer(
    send: Any, status: int, fields: list[tuple[str, str]], body: bytes = b"", length: bool = True
) -> None:
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in fields]
    if length:
        headers.append((b"content-length", b"%d" % len(body)))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _json(data: Any) -> tuple[list[tuple[str, str]], bytes]:
    return [("content-type", "application/json")], json.dumps(data).encode()


def _etag_matches(condition: str, etag: str) -> bool:
    tags = [t.strip().removeprefix("W/") for t in condition.split(",")]
    return "*" in tags or etag.removeprefix("W/") in tags


def _date(value: str) -> float | None:
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


def _single_range(value: str, length: int) -> tuple[int, int] | None:
    unit, _, spec = value.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start, end = int(first), int(last) if last else length - 1
    if start >= length or end < start:
        return None
    return start, min(end, length - 1)


async def _resource(scope: Any, send: Any) -> None:
    path = scope["path"]
    query = urllib.parse.parse_qs(scope["query_string"].decode("latin-1"), keep_blank_values=True)
    request = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    record: dict[str, Any] = {
        "inm": request.get("if-none-match"),
        "ims": request.get("if-modified-since"),
        "range": request.get("range"),
        "cc": request.get("cache-control"),
        "lang": request.get("accept-language"),
        "status": None,
    }
    _log.setdefault(path, []).append(record)
    gate = _gate(path)
    if not gate.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(gate.wait(), HOLD_LIMIT)
    state = _state_of(path)
    if state["fail"]:
        record["status"] = int(state["fail"])
        await _answer(send, record["status"], [("content-type", "text/plain")], b"origin failure")
        return

    def one(name: str, default: str | None = None) -> str | None:
        return query[name][-1] if name in query else default

    now = time.time()
    version = state["version"]
    fields: list[tuple[str, str]] = [("content-type", "text/plain")]
    date = one("date", email.utils.formatdate(now, usegmt=True))
    if date != "none":
        fields.append(("date", date or ""))
    for param, name in (("cc", "cache-control"), ("cdn", "cdn-cache-control")):
        fields += [(name, v) for v in query.get(param, [])]
    fields += [("expires", v) for v in query.get("expires", [])]
    fields += [("age", v) for v in query.get("age", [])]
    for param, name in (("vary", "vary"), ("tags", "surrogate-key")):
        if param in query:
            fields.append((name, one(param) or ""))
    modified = None
    if "lm_ago" in query:  # counted from the path's first request: a fixed date
        modified = state.setdefault("modified", now - float(one("lm_ago") or 0))
        fields.append(("last-modified", email.utils.formatdate(modified, usegmt=True)))
    elif "lm" in query:
        fields.append(("last-modified", one("lm") or ""))
    variant = [request.get(n.strip().lower(), "") for n in (one("vary") or "").split(",")]
    tag = "-".join([path.strip("/").replace("/", "-"), f"v{version}", *filter(None, variant)])
    etag = one("etag", f'"{tag}"')
    if etag != "none":
        fields.append(("etag", etag or ""))
    extra = {name.lower(): value for name, value in state["fields"].items()}
    fields = [(k, v) for k, v in fields if k not in extra] + list(extra.items())
    status = int(one("status", "200") or 200)
    size = one("size")
    if size is not None:
        pattern = f"v{version}:".encode()
        body = (pattern * (int(size) // len(pattern) + 1))[: int(size)]
    else:
        body = f"{path} v{version}".encode()

    if status == 200:
        inm = request.get("if-none-match")
        ims = request.get("if-modified-since")
        not_modified = False
        if inm is not None:
            not_modified = etag not in (None, "none") and _etag_matches(inm, etag or "")
        elif ims is not None and modified is not None:
            since = _date(ims)
            not_modified = since is not None and since >= int(modified)
        if not_modified:  # RFC 9110 section 15.4.5: the fields, no content
            record["status"] = 304
            kept = [(k, v) for k, v in fields if k != "content-type"]
            await _answer(send, 304, kept, length=False)
            return
        span = _single_range(request["range"], len(body)) if "range" in request else None
        if span is not None:
            first, last = span
            record["status"] = 206
            fields.append(("content-range", f"bytes {first}-{last}/{len(body)}"))
            await _answer(send, 206, fields, body[first : last + 1])
            return
    record["status"] = status
    await _answer(send, status, fields, body)


async def _control(scope: Any, receive: Any, send: Any) -> None:
    path = scope["path"]
    if path == "/_ready":
        await _answer(send, 200, [("content-type", "text/plain")], b"ready")
    elif path.startswith("/_log/"):
        await _answer(send, 200, *_json(_log.get(path[len("/_log") :], [])))
    elif path.startswith("/_state/") and scope["method"] == "POST":
        target = path[len("/_state") :]
        changes = json.loads(await _read_body(receive) or b"{}")
        state = _state_of(target)
        if "hold" in changes:
            gate = _gate(target)
            if changes.pop("hold"):
                gate.clear()
            else:
                gate.set()
        for key in ("version", "fail"):
            if key in changes:
                state[key] = changes.pop(key)
        state["fields"].update(changes.pop("fields", {}))
        if changes:
            await _answer(send, 400, *_json({"unknown": sorted(changes)}))
            return
        await _answer(send, 200, *_json(state))
    else:
        await _answer(send, 404, [("content-type", "text/plain")], b"no such control")


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"].startswith("/_"):
        await _control(scope, receive, send)
    else:
        await _resource(scope, send)
