"""ASGI middleware and key checks: body size limit (413), JSON bodies only (415), finite numbers
only (422, `FiniteJSONRoute`), request metrics, API keys."""

from __future__ import annotations

import hmac
import json
import math
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from bridgetune.serve.metrics import ServiceMetrics

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class BodyLimit:
    """Answer 413 to request bodies over `limit` bytes, declared or streamed, before parsing."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._reject(send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._reject(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    async def _reject(self, send: Send) -> None:
        await send_json(
            send,
            413,
            {
                "detail": f"request body is larger than {self.limit} bytes; send fewer texts per "
                "request or raise max_body_bytes"
            },
        )


class RequireJSON:
    """Answer 415 to a body sent to `paths` without a JSON Content-Type (missing, text/plain,
    a form...), before FastAPI would try to read it as something else."""

    def __init__(self, app: ASGIApp, paths: Iterable[str]) -> None:
        self.app = app
        self.paths = set(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.paths:
            declared = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
            media = declared.split(";", 1)[0].strip().lower()
            if media != "application/json" and not media.endswith("+json"):
                shown = repr(declared) if declared else "none"
                await send_json(
                    send,
                    415,
                    {
                        "detail": f"the body must be JSON: send Content-Type: application/json "
                        f"(this request had {shown})"
                    },
                )
                return
        await self.app(scope, receive, send)


class FiniteJSONRequest(Request):
    """A request whose JSON body holds finite numbers only. Python's parser takes NaN,
    Infinity and 1e999999 (as inf), which strict JSON has not: no validation error or response
    could then be written (a 500), and a model would get NaN as a temperature or a label."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = finite_json(await self.body())
        return self._json


class FiniteJSONRoute(APIRoute):
    """A route that reads its body as `FiniteJSONRequest`: every route of the app refuses
    non-finite numbers the same way, as a 422 naming where the number is."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def finite(request: Request) -> Response:
            return await handler(FiniteJSONRequest(request.scope, request.receive))

        return finite


# Python's limit on the digits of an integer it converts (3.10.7+; 4300 by default)
MAX_DIGITS = getattr(sys, "get_int_max_str_digits", lambda: 4300)()
NOT_FINITE = "is not a finite number: JSON bodies take finite numbers only (no NaN, Infinity or"
# a JSON string (skipped) or a number or constant Python's parser would accept
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|-?(?:Infinity|NaN)|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?')


def finite_json(body: bytes) -> Any:
    """The parsed body; NaN, infinities, numbers beyond the float range, integers too long to
    convert and a key given twice in one object are a JSONDecodeError at their position
    (FastAPI answers 422)."""
    try:
        return json.loads(
            body, parse_constant=_not_finite, parse_float=_finite, object_pairs_hook=_unique
        )
    except json.JSONDecodeError:
        raise
    except DuplicateKey as error:  # the last value would win silently: which one was meant?
        text = body.decode("utf-8", errors="replace")
        raise json.JSONDecodeError(
            f"key {error.args[0]!r} is given twice in one object; send it once",
            text,
            max(text.find(json.dumps(error.args[0])), 0),
        ) from None
    except UnicodeDecodeError as error:
        raise json.JSONDecodeError(
            f"the body is not UTF-8 (byte {error.start}); send JSON encoded as UTF-8",
            body.decode("utf-8", errors="replace"),
            error.start,
        ) from None
    except ValueError:  # from the hooks, or an integer past Python's digit limit
        text = body.decode("utf-8", errors="replace")
        position, token = _first_unreadable_number(text)
        shown = token if len(token) <= 40 else f"{token[:20]}...({len(token)} characters)"
        raise json.JSONDecodeError(
            f"{shown} {NOT_FINITE} values beyond ±1.8e308 or of over {MAX_DIGITS} digits)",
            text,
            position,
        ) from None


class DuplicateKey(ValueError):
    """A JSON object names one key twice."""


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's pairs as a dict; DuplicateKey for the first key given twice."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise DuplicateKey(key)
        result[key] = value
    return result


def _not_finite(constant: str) -> Any:
    raise ValueError(constant)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _first_unreadable_number(text: str) -> tuple[int, str]:
    """(position, token) of the first number outside strings that does not parse finite."""
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token.startswith('"'):
            continue
        if token.lstrip("-").isdigit():  # an integer: only its length can fail
            if len(token.lstrip("-")) > MAX_DIGITS:
                return match.start(), token
        elif "Infinity" in token or "NaN" in token or not math.isfinite(float(token)):
            return match.start(), token
    return 0, "a number"


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class RequestMetrics:
    """Count requests by endpoint and status and time them (unknown paths count as 'other')."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, endpoints: Iterable[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.endpoints = set(endpoints)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in self.endpoints else "other"
        status = 500
        started = time.perf_counter()

        async def send_and_record(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.latency.labels(endpoint=endpoint).observe(time.perf_counter() - started)
            self.metrics.requests.labels(
                endpoint=endpoint, method=scope["method"], status=str(status)
            ).inc()


def key_matches(given: str | None, keys: Iterable[str]) -> bool:
    """Constant-time comparison against every configured key (no early exit)."""
    if not given:
        return False
    found = False
    for key in keys:
        found |= hmac.compare_digest(given.encode(), key.encode())
    return found


def presented_key(authorization: str | None, api_key: str | None) -> str | None:
    """The key from `X-API-Key` or `Authorization: Bearer KEY`."""
    if api_key:
        return api_key
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None
